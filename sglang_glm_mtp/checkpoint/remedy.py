"""What to do about a checkpoint that is not ready: the remedy's text.

Two forms of the same advice: ``text``, the one line ``check --json`` carries in ``remedy``
(the command, then why its ``--from`` is that release), and ``lines``, what the terminal
shows: each command alone on its line, so it can be copied into a shell as it is, and the
reason on a line of its own, as a shell comment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .families import ModelFamily
from .files import INDEX_FILE
from .report import DAMAGE_CODES, InspectionReport
from .source import CheckpointSource

REDOWNLOAD = "re-download the damaged or missing shard(s) named above, then run sglang-glm-mtp check again"
NO_WEIGHTS = ("the folder holds no weight files (*.safetensors, model.safetensors.index.json): download "
              "the complete checkpoint into it, or point at the folder that has them, then run check again")


@dataclass(frozen=True)
class Remedy:
    """One piece of advice: ``text`` for JSON and one-line messages, ``lines`` for the terminal."""

    text: str
    lines: tuple[str, ...]

    @classmethod
    def sentence(cls, text: str) -> Remedy:
        return cls(text, (text,))


def apply(report: InspectionReport, remedy: Remedy | None) -> None:
    report.remedy = remedy.text if remedy is not None else None
    report.remedy_lines = list(remedy.lines) if remedy is not None else []


def remedy_for(report: InspectionReport, family: ModelFamily, source: CheckpointSource, config: dict[str, Any],
               quant: Any) -> Remedy | None:
    """The fix for ``report``'s status: nothing, a re-download (damaged files), or a graft from the right release."""
    if report.status == "ready" or report.status == "not-applicable":
        return None
    codes = {p.code for p in report.errors()}
    if report.status == "invalid" and codes & DAMAGE_CODES:
        return Remedy.sentence(REDOWNLOAD)
    graft, why, comment = _graft(report, family, source, config, quant)
    if report.status == "invalid" and "unindexed-shard" in codes:
        lead = f"add the shard to {INDEX_FILE}, or re-graft the layer:"
    elif report.status == "invalid":
        lead = "re-graft the draft layer:"
    else:
        return Remedy(graft + why, (graft, comment))
    return Remedy(f"{lead} {graft}{why}", (lead, graft, comment))


def _graft(report: InspectionReport, family: ModelFamily, source: CheckpointSource, config: dict[str, Any],
           quant: Any) -> tuple[str, str, str]:
    """The graft command, why its ``--from`` (as the JSON line ends), and the same reason as a comment line."""
    from .provenance import base_model  # only a failed check pays for the model-card parser

    named = base_model(source, config, quant)
    into = source.display
    local = f"./{source.display.split('/')[-1]}" if source.is_remote else into
    force = "" if report.status == "missing" else " --force"
    if named is not None:
        graft = f"sglang-glm-mtp graft --from {named.repo_id} --into {local}{force}"
        reason = f"{named.repo_id} is the release {named.where} names"
        why, comment = f" ({reason})", f"# {reason}"
    else:
        graft = f"sglang-glm-mtp graft --from <BF16 release> --into {local}{force}"
        known = f"; {family.name} releases: {', '.join(family.releases)}" if family.releases else ""
        what = (f"the exact unquantized release this checkpoint was quantized from (its files do not say "
                f"which{known}); a draft layer from another release loads and drafts the wrong tokens")
        why, comment = f" with <BF16 release> {what}", f"# <BF16 release>: {what}"
    if source.is_remote:
        graft = f"hf download {source.display} --local-dir {local} && {graft}"
    return graft, why, comment
