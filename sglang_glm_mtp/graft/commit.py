"""Commit and clean-up: shards renamed, configs replaced, the index last (the commit point).

A state file written just before the index records what clean-up remains, so a run
stopped after the commit is finished by the next one (``interrupted_commit``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..checkpoint.writer import INDEX_FILE, atomic_file, atomic_write_bytes, atomic_write_json, make_temp
from .records import (BACKUP_SUFFIX, JOURNAL_SUFFIX, PARTIAL_SUFFIX, STATE_FILE, GraftPlan, GraftReport, Mode,
                      journal_path, partial_path)
from .shards import is_our_unfinished_file


def aside_name(root: Path, name: str) -> str:
    candidate = name + BACKUP_SUFFIX
    k = 1
    while (root / candidate).exists():
        k += 1
        candidate = f"{name}{BACKUP_SUFFIX}.{k}"
    return candidate


def sha256_file(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def interrupted_commit(dest: Path) -> dict[str, Any] | None:
    """A state file whose index was committed: the run died during clean-up; finish it."""
    try:
        state = json.loads((dest / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    if sha256_file(dest / INDEX_FILE) == state.get("index_sha256"):
        return state
    return None  # the index was never replaced: plan again, reusing the verified shards


def finish_plan(mode: Mode, source: str, target_dir: Path, dest: Path, state: dict[str, Any]) -> GraftPlan:
    plan = GraftPlan(mode=state.get("mode", mode), source=state.get("source", source), target=str(target_dir),
                     dest=dest, family=state.get("family", ""), architecture=state.get("architecture", ""),
                     draft_layer=int(state.get("draft_layer", -1)), output_layer=int(state.get("output_layer", -1)),
                     draft_precision=None, draft_tensors=0, draft_bytes=0, source_ranges={}, shards=[],
                     config_edits=[], index={}, finish_only=True, target_dir=target_dir,
                     pending_moves=[tuple(m) for m in state.get("moves", [])])  # type: ignore[misc]
    plan.notes.append("a previous run committed the graft but was stopped during clean-up; this run finishes it")
    return plan


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _replace_link(link: Path, target: Path) -> None:
    tmp = link.parent / f".{link.name}.link.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _copy_small(plan: GraftPlan, name: str) -> None:
    with atomic_file(plan.dest / name) as out:
        if plan.small_file_origin == "target":
            assert plan.target_dir is not None
            with open(plan.target_dir / name, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
        else:
            assert plan.source_obj is not None
            with plan.source_obj.open(name) as src:
                shutil.copyfileobj(src, out, 1 << 20)


def commit(plan: GraftPlan, report: GraftReport) -> None:
    """Shards to final names, then links and small files, then configs, the index last."""
    dest = plan.dest
    for shard in plan.shards:
        os.replace(partial_path(dest, shard.name), dest / shard.name)
    fsync_dir(dest)
    if plan.mode == "overlay":
        assert plan.target_dir is not None
        for name in plan.links:
            link_to = plan.target_dir / name
            if plan.target_cache:  # the blob itself: the snapshot's own links are relative to the snapshot
                link_to = Path(os.path.realpath(link_to))
            _replace_link(dest / name, link_to)
        report.links = len(plan.links)
    for name in plan.small_files:
        _copy_small(plan, name)
    report.small_files = list(plan.small_files)
    index_tmp, index_sha = _stage_json(dest / INDEX_FILE, plan.index)
    try:
        moves = [(d.name, d.moved_to or "") for d in plan.displaced if d.moved_to or d.delete]
        atomic_write_json(dest / STATE_FILE, {
            "version": 1, "mode": plan.mode, "source": plan.source, "family": plan.family,
            "architecture": plan.architecture, "draft_layer": plan.draft_layer, "output_layer": plan.output_layer,
            "index_sha256": index_sha, "moves": moves,
            "journals": [journal_path(dest, s.name).name for s in plan.shards]})
        for edit in plan.config_edits:
            path = dest / edit.file
            if edit.backup and path.is_file() and not (dest / edit.backup).exists():
                atomic_write_bytes(dest / edit.backup, path.read_bytes())
                report.backups.append(edit.backup)
            if edit.file == INDEX_FILE:
                _commit_index(index_tmp, path)  # the commit point
            else:
                atomic_write_json(path, edit.document)
            report.config_edits += [f"{edit.file}: {c}" for c in edit.changes]
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(index_tmp)
    fsync_dir(dest)


def _stage_json(path: Path, doc: Any) -> tuple[str, str]:
    """Write ``doc`` as indented JSON to a temp file next to ``path``, streamed; returns (temp, sha256)."""
    digest = hashlib.sha256()
    fd, tmp = make_temp(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            for piece in json.JSONEncoder(indent=2).iterencode(doc):
                data = piece.encode("utf-8")
                digest.update(data)
                handle.write(data)
            digest.update(b"\n")
            handle.write(b"\n")
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp, digest.hexdigest()


def _commit_index(tmp: str, path: Path) -> None:
    os.replace(tmp, path)


def finish(plan: GraftPlan, report: GraftReport) -> None:
    """After the commit: move displaced files aside, drop journals, the state file and stale temporaries."""
    dest = plan.dest
    moves = plan.pending_moves or [(d.name, d.moved_to or "") for d in plan.displaced if d.moved_to or d.delete]
    root = plan.target_dir if plan.mode == "in-place" else None
    if root is not None:
        for name, aside in moves:
            if not (root / name).exists():
                continue
            if aside:
                os.replace(root / name, root / aside)
                report.moved_aside.append(f"{name} -> {aside}")
            else:
                (root / name).unlink()
                report.notes.append(f"deleted {name}: an unfinished shard of an earlier interrupted run")
    for entry in os.scandir(dest):
        name = entry.name
        if name.startswith(".") and (name.endswith(JOURNAL_SUFFIX) or name.endswith(PARTIAL_SUFFIX)) \
                and is_our_unfinished_file(name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
    with contextlib.suppress(FileNotFoundError):
        (dest / STATE_FILE).unlink()
    fsync_dir(dest)

