"""Checks of the result with ``check``'s own inspector: staged before the commit, final after it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from ..checkpoint.inspection import inspect_checkpoint
from ..checkpoint.report import InspectionReport
from ..checkpoint.source import LocalCheckpoint
from .records import GraftPlan, GraftReport, partial_path


class StagedCheckpoint:
    """A checkpoint as it will look after the commit: file name -> path, plus JSON documents.

    ``inspect_checkpoint`` reads it like any other source, so the result is checked before anything
    visible changes (and an --overlay-only result is checked together with its TARGET).
    """

    def __init__(self, display: str, files: Mapping[str, Path], documents: Mapping[str, Any]) -> None:
        self.display = display
        self._files = dict(files)
        self._docs = dict(documents)

    @property
    def is_remote(self) -> bool:
        return False

    def list_files(self) -> dict[str, int]:
        out = {name: path.stat().st_size for name, path in self._files.items() if name not in self._docs}
        out.update({name: len(json.dumps(doc)) for name, doc in self._docs.items() if doc is not None})
        return out

    def read_json(self, name: str) -> Any | None:
        if name in self._docs:  # handed out as is (inspect_checkpoint only reads); a copy of a 233k-entry index costs 50 MB
            return self._docs[name]
        path = self._files.get(name)
        return json.loads(path.read_text(encoding="utf-8")) if path is not None else None

    def open(self, name: str) -> Any:
        return open(self._files[name], "rb")

    def local_path(self, name: str) -> Path | None:
        return self._files.get(name)


def staged_files(plan: GraftPlan, *, committed: bool) -> dict[str, Path]:
    """name -> path of every file the finished checkpoint (or combined overlay view) contains."""
    files: dict[str, Path] = {}
    target_dir = plan.target_dir
    hidden = {d.name for d in plan.displaced}
    if plan.mode in ("in-place", "overlay-only") and target_dir is not None:
        for entry in os.scandir(target_dir):
            if entry.is_file() and entry.name not in hidden and not entry.name.startswith("."):
                files[entry.name] = Path(entry.path)
    if plan.mode == "overlay" and target_dir is not None:
        files.update({name: target_dir / name for name in (*plan.links, *plan.small_files)})
    if plan.mode in ("overlay-only", "extract", "overlay") and plan.dest.is_dir():
        for entry in os.scandir(plan.dest):
            if entry.is_file() and not entry.name.startswith("."):
                files[entry.name] = Path(entry.path)
    for shard in plan.shards:
        files[shard.name] = plan.dest / shard.name if committed else partial_path(plan.dest, shard.name)
    return files


def check_staged(plan: GraftPlan, files: Mapping[str, Path], docs: Mapping[str, Any]) -> InspectionReport:
    view = StagedCheckpoint(str(plan.dest), files, docs)
    return inspect_checkpoint(view)


def final_check(plan: GraftPlan, report: GraftReport) -> None:
    if plan.mode == "overlay-only":
        view = StagedCheckpoint(str(plan.dest), staged_files(plan, committed=True), {})
        final = inspect_checkpoint(view)
        report.verification["final_check_view"] = "overlay combined with TARGET"
    else:
        final = inspect_checkpoint(LocalCheckpoint(plan.dest))
        report.verification["final_check_view"] = str(plan.dest)
    report.check_status = final.status
    report.check_problems = list(final.problems)
    report.verification["final_check"] = final.status
    report.verification["final_check_tensors"] = f"{final.found_tensors}/{final.expected_tensors}"
