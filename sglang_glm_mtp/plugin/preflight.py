"""Preflight: refuse a missing or incomplete draft layer before SGLang spawns anything.

Runs inside SGLang's ``handle_speculative_decoding`` resolution step in the main
process, after NEXTN has become EAGLE and the draft path is known, and before any
scheduler process exists or any GPU memory is taken: an 8-GPU launch fails in a
second instead of loading 440 GB and serving garbage drafts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..checkpoint.families import family_for
from ..checkpoint.inspect import inspect
from ..checkpoint.report import InspectionReport
from ..checkpoint.source import CheckpointSource, HubCheckpoint, LocalCheckpoint, resolve_cached_hub_snapshot
from ..errors import CheckpointUnreadable
from . import settings

logger = logging.getLogger(__name__)

#: How many missing tensor names the error message lists.
FIRST_MISSING = 8


class DraftCheckpointError(ValueError):
    """The draft checkpoint cannot serve MTP; a ValueError, as SGLang's own argument errors are."""


class DraftLayerMissingError(DraftCheckpointError):
    """The checkpoint declares a NextN layer but holds none, or only part, of its tensors."""


@dataclass(frozen=True)
class PreflightResult:
    """What the preflight saw; stored on the ServerArgs record for the scheduler and server info."""

    checkpoint: str
    status: str
    architecture: str
    draft_layer: int | None
    found_tensors: int
    expected_tensors: int
    draft_precision: str | None
    target_precision: str | None
    draft_shards: list[str]
    skipped: bool = False

    @classmethod
    def from_report(cls, report: InspectionReport, *, skipped: bool = False) -> "PreflightResult":
        return cls(report.checkpoint, report.status, report.architecture, report.draft_layer, report.found_tensors,
                   report.expected_tensors, report.draft_precision, report.target_precision, report.draft_shards,
                   skipped)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_draft_source(path: str, revision: str | None) -> CheckpointSource | None:
    """A local dir, the local Hub cache of a Hub id, or (online) the Hub itself, headers only."""
    if os.path.isdir(path):
        return LocalCheckpoint(Path(path).resolve())
    if "/" not in path or path.startswith((".", "/", "~")):
        return None
    cached = resolve_cached_hub_snapshot(path, revision)
    if cached is not None and (cached / "config.json").exists():
        return LocalCheckpoint(cached)
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes"):
        return None
    return HubCheckpoint(path, revision)


def run_preflight(draft_path: str, revision: str | None, architecture: str) -> PreflightResult | None:
    """Inspect the draft layer; raise when it cannot serve. None: not ours to judge."""
    if family_for(architecture) is None:
        return None
    source = open_draft_source(draft_path, revision)
    if source is None:
        logger.warning("glm_mtp: cannot read %s before launch (not a local dir, not in the Hub cache, offline); "
                       "the post-load coverage check will still verify the draft", draft_path)
        return None
    try:
        report = inspect(source)
    except CheckpointUnreadable as exc:
        logger.warning("glm_mtp: preflight could not read the draft checkpoint: %s", exc)
        return None
    if report.status in ("ready", "not-applicable"):
        logger.info("glm_mtp: draft layer %s of %s is %s: %d/%d tensors, %s, in %s",
                    report.draft_prefix or report.draft_layer, report.checkpoint, report.status, report.found_tensors,
                    report.expected_tensors, report.draft_precision, ", ".join(report.draft_shards) or "-")
        for problem in report.problems:
            logger.warning("glm_mtp: %s: %s", problem.code, problem.message)
        return PreflightResult.from_report(report)
    message = format_refusal(report)
    if settings.skip_preflight():
        logger.warning("glm_mtp: %s=1, starting anyway although: %s", settings.SKIP_PREFLIGHT_ENV,
                       message.splitlines()[0])
        return PreflightResult.from_report(report, skipped=True)
    error = DraftLayerMissingError if report.status in ("missing", "incomplete") else DraftCheckpointError
    raise error(message)


def format_refusal(report: InspectionReport) -> str:
    layer = report.draft_prefix or f"layer {report.draft_layer}"  # families.py spells it (model.language_model.…)
    missing = len(report.missing)
    if report.status == "missing":
        head = (f"glm_mtp: the NextN/MTP draft layer {layer} is missing from {report.checkpoint}: "
                f"{missing} of {report.expected_tensors} expected tensors are absent")
    elif report.status == "incomplete":
        head = (f"glm_mtp: the NextN/MTP draft layer {layer} in {report.checkpoint} is incomplete: "
                f"{missing} of {report.expected_tensors} expected tensors are missing")
    else:
        head = f"glm_mtp: the NextN/MTP draft layer {layer} in {report.checkpoint} cannot be loaded correctly"
    lines = [head + "."]
    if report.missing:
        shown = ", ".join(report.missing[:FIRST_MISSING])
        more = f" (+{missing - FIRST_MISSING} more)" if missing > FIRST_MISSING else ""
        lines.append(f"First missing: {shown}{more}.")
    for problem in report.errors():
        if problem.code not in ("draft-layer-missing", "draft-layer-incomplete"):
            lines.append(f"{problem.code}: {problem.message}")
    lines.append("SGLang would load nothing into these draft parameters and serve garbage drafts "
                 "(accept length ~1) without an error.")
    if report.remedy:
        lines.append(f"Fix: {report.remedy}")
    lines.append(f"Details: sglang-glm-mtp check {report.checkpoint}")
    lines.append(f"To start anyway (e.g. RL weight sync fills the draft later): {settings.SKIP_PREFLIGHT_ENV}=1")
    return "\n".join(lines)
