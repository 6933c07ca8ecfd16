"""Preflight: refuse a missing or incomplete draft layer before SGLang spawns anything.

Runs inside SGLang's ``handle_speculative_decoding`` resolution step in the main
process, after NEXTN has become EAGLE and the draft path is known, and before any
scheduler process exists or any GPU memory is taken: an 8-GPU launch fails in a
second instead of loading 440 GB and serving garbage drafts.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from ..checkpoint.families import family_for
from ..checkpoint.inspection import Scope, inspect_checkpoint
from ..checkpoint.report import InspectionReport
from ..checkpoint.source import CheckpointSource
from ..errors import CheckpointUnreadable, GlmMtpError
from ..text import listed
from . import settings
from .draft_source import open_draft_source

logger = logging.getLogger(__name__)


class DraftCheckpointError(GlmMtpError, ValueError):
    """The draft checkpoint cannot serve MTP; a ValueError, as SGLang's own argument errors are."""


class DraftLayerMissingError(DraftCheckpointError):
    """The checkpoint declares a NextN layer but holds none, or only part, of its tensors."""


@dataclass(frozen=True)
class PreflightResult:
    """What the preflight saw; part of the plugin's record on ServerArgs (``state.PluginState``)."""

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
    #: the draft layer as this checkpoint spells it (families.py: ``model.language_model.layers.16`` for GLM-OCR)
    draft_prefix: str | None = None

    @classmethod
    def from_report(cls, report: InspectionReport) -> "PreflightResult":
        return cls(report.checkpoint, report.status, report.architecture, report.draft_layer, report.found_tensors,
                   report.expected_tensors, report.draft_precision, report.target_precision,
                   list(report.draft_shards), draft_prefix=report.draft_prefix)

    @classmethod
    def not_run(cls, checkpoint: str, architecture: str) -> "PreflightResult":
        """The skip switch was set: nothing was read, and server info and the canary say so."""
        return cls(checkpoint, "skipped", architecture, None, 0, 0, None, None, [], skipped=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Load formats that read the draft layer from the checkpoint's safetensors files (what the preflight judges).
#: Any other (``dummy``, ``pt``, ``remote``, ...) reads none of them: the preflight stands down.
PREFLIGHT_LOAD_FORMATS = ("auto", "safetensors", "fastsafetensors")


def run_preflight(draft_path: str, revision: str | None, architecture: str,
                  load_format: str | None = None) -> PreflightResult | None:
    """Inspect the draft layer; raise only when its absence or damage is proven. None: not judged.

    Never raises anything but ``DraftCheckpointError``: a file the plugin cannot read or
    understand is a warning, and the post-load coverage check still verifies the draft.
    It stands down (one INFO line, None) when there is nothing to judge: a ``load_format``
    that reads no safetensors files, or a checkpoint folder with no weight files at all.
    """
    if family_for(architecture) is None:
        return None
    load_format = str(getattr(load_format, "value", load_format) or "auto")
    if load_format not in PREFLIGHT_LOAD_FORMATS:
        logger.info("glm_mtp: preflight stands down: --load-format %s does not load the draft layer from %s's "
                    "safetensors files", load_format, draft_path)
        return None
    if settings.skip_preflight():
        logger.warning("glm_mtp: %s=1, starting anyway: the startup preflight is skipped (nothing read); the "
                       "post-load coverage check still verifies the draft", settings.SKIP_PREFLIGHT_ENV)
        return PreflightResult.not_run(draft_path, architecture)
    try:
        return _judge(draft_path, revision)
    except DraftCheckpointError:
        raise
    except CheckpointUnreadable as exc:
        logger.warning("glm_mtp: preflight could not read the draft checkpoint %s: %s; the post-load coverage "
                       "check will verify the draft", draft_path, exc)
    except Exception as exc:  # a plugin bug must never stop a launch SGLang itself accepts
        logger.warning("glm_mtp: preflight failed on %s (%s: %s); starting without it, the post-load coverage "
                       "check will verify the draft", draft_path, type(exc).__name__, exc, exc_info=True)
    return None


def _judge(draft_path: str, revision: str | None) -> PreflightResult | None:
    found = open_draft_source(draft_path, revision)
    if found.source is None:
        logger.warning("glm_mtp: cannot judge the draft of %s before launch: %s; the post-load coverage check "
                       "will verify it", draft_path, found.why)
        return None
    report = inspect_draft(found.source)
    if report.status == "no-weights":
        logger.info("glm_mtp: preflight stands down: %s holds no weight files (no *.safetensors, no index); "
                    "SGLang's loader reports that itself", draft_path)
        return None
    logger.info("glm_mtp: preflight read %s from %s", draft_path, found.why)
    if report.status not in ("ready", "not-applicable") and found.hub is not None:
        # A complete cache may hold an older revision than the one SGLang is about to fetch: confirm on the Hub.
        logger.info("glm_mtp: the cached snapshot of %s is %s; confirming on the Hub", draft_path, report.status)
        try:
            report = inspect_draft(found.hub)
        except CheckpointUnreadable as exc:
            logger.warning("glm_mtp: the cached snapshot of %s is %s, but the Hub cannot confirm it (%s); "
                           "starting, the post-load coverage check will verify the draft",
                           draft_path, report.status, exc)
            return None
    if report.status in ("ready", "not-applicable"):
        logger.info("glm_mtp: draft layer %s of %s is %s: %d/%d tensors, %s, in %s",
                    report.draft_prefix or report.draft_layer, report.checkpoint, report.status, report.found_tensors,
                    report.expected_tensors, report.draft_precision, ", ".join(report.draft_shards) or "-")
        for problem in report.problems:
            logger.warning("glm_mtp: %s: %s", problem.code, problem.message)
        return PreflightResult.from_report(report)
    error = DraftLayerMissingError if report.status in ("missing", "incomplete") else DraftCheckpointError
    raise error(format_refusal(report))


def inspect_draft(source: CheckpointSource) -> InspectionReport:
    """The draft layer alone: its shards' headers and, of a local index, its own entries. The rest is SGLang's
    loader's to judge, and it does: safetensors refuses a truncated shard, and SGLang an index naming a shard
    that is not on disk. Reading every header, or decoding a 232k-entry index, would cost the launch the
    time the preflight must not. A layer that is not ready is judged on the whole index (as ``check`` does)."""
    return inspect_checkpoint(source, scope=Scope.PREFLIGHT)


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
    damaged = set(report.damaged)  # indexed in a damaged shard: the problem names the shard
    absent = [name for name in report.missing if name not in damaged]
    if absent:
        lines.append(f"First missing: {listed(absent)}.")
    for problem in report.errors():
        if problem.code not in ("draft-layer-missing", "draft-layer-incomplete"):
            lines.append(f"{problem.code}: {problem.message}")
    lines.append("SGLang would load nothing into these draft parameters and serve garbage drafts "
                 "(accept length ~1) without an error.")
    if report.remedy:  # each command on a line of its own, so it pastes into a shell as it is
        first, *rest = report.remedy_lines or [report.remedy]
        lines += [f"Fix: {first}", *(f"     {line}" for line in rest)]
    lines.append(f"Details: sglang-glm-mtp check {report.checkpoint}")
    lines.append(f"To start anyway (e.g. RL weight sync fills the draft later): {settings.SKIP_PREFLIGHT_ENV}=1")
    return "\n".join(lines)
