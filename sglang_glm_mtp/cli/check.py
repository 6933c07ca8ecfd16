"""``check`` sub-command: the human report and ``--json``.

Exit 0 ready/not-applicable, 1 a checkpoint problem (or, with ``--source``, another release), 2 unreadable
input (one line on stderr) or a checkpoint with no weight files at all (status ``no-weights``).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..checkpoint.report import InspectionReport
from ._format import count, emit_json, out, size


def format_report(report: InspectionReport) -> str:
    """The human ``check`` report: what was found, every problem, and the command that fixes it."""
    dialect = (report.quant_config or {}).get("dialect")
    declared = f" ({dialect})" if dialect not in (None, "none", "modelopt") else ""  # ModelOpt: the default, unsaid
    lines = [f"checkpoint:   {report.checkpoint}",
             f"architecture: {report.architecture} (family {report.family}); target precision "
             f"{report.target_precision}{declared}"]
    if report.status == "not-applicable":
        lines.append("draft layer:  none declared (num_nextn_predict_layers = 0): nothing to check")
    elif report.status == "no-weights":
        lines.append(f"draft layer:  {report.draft_prefix} declared, but the checkpoint holds no weight files at all: "
                     "nothing to check (not a missing draft layer)")
    else:
        shards = ", ".join(report.draft_shards) if report.draft_shards else "none"
        lines += [
            f"draft layer:  {report.draft_prefix}"
            + (" (standalone draft checkpoint)" if report.standalone_draft else ""),
            f"  tensors:    {count(report.found_tensors)} found / {count(report.expected_tensors)} expected"
            + _not_found(report),
            f"  precision:  {report.draft_precision or 'n/a'}",
            f"  bytes:      {size(report.draft_bytes)}",
            f"  shards:     {shards}",
        ]
    lines.append(f"status:       {report.status.upper()}")
    for problem in report.problems:
        lines.append(f"  [{problem.severity}] {problem.code}: {problem.message}")
    if report.remedy:
        lines += ["remedy:", *(f"  {line}" for line in report.remedy_lines or [report.remedy])]
    return "\n".join(lines)


def _not_found(report: InspectionReport) -> str:
    """``, 35 missing``; tensors the index places in a damaged shard are there, only unreadable."""
    absent = len(report.missing) - len(report.damaged)
    return ((f", {count(absent)} missing" if absent else "")
            + (f", {count(len(report.damaged))} in a damaged shard" if report.damaged else ""))


def _check(args: argparse.Namespace) -> int:
    from ..checkpoint.inspection import Scope, inspect_checkpoint

    scope = Scope.INTEGRITY if args.all_headers else Scope.CHECK
    report = inspect_checkpoint(args.model, scope=scope, endpoint=args.endpoint)
    lineage = _lineage(args) if args.source else None
    if args.json:
        doc = report.to_json()
        if lineage is not None:
            doc["lineage"] = lineage.to_dict()
        emit_json(doc)
    else:
        out(format_report(report))
        if lineage is not None:
            out(f"lineage:      {lineage.summary()}")
            if lineage.verdict == "other-release":
                out(f"  [error] other-release: {lineage.refusal()}")
    other_release = lineage is not None and lineage.verdict == "other-release"
    return max(report.exit_code, 1 if other_release else 0)


def _lineage(args: argparse.Namespace) -> Any:
    """Is SOURCE the release TARGET was quantized from? The comparison graft runs before writing anything."""
    from ..checkpoint.source import open_checkpoint
    from ..checkpoint.lineage import compare_lineage

    return compare_lineage(open_checkpoint(args.model, endpoint=args.endpoint),
                           open_checkpoint(args.source, endpoint=args.endpoint))


def register(sub: Any) -> None:
    check = sub.add_parser("check", help="inspect a checkpoint's draft layer: present, complete, precision",
                           description="Reads config, index and safetensors headers only; never writes. "
                                       "Exit 0 ready/not-applicable, 1 missing/incomplete/invalid, 2 unreadable or no weight "
                                       "files.")
    check.add_argument("model", help="local checkpoint directory or Hub id org/name[@revision]")
    check.add_argument("--json", action="store_true", help="print the machine-readable report (docs/check-json.md)")
    check.add_argument("--all-headers", action="store_true",
                       help="parse every shard's header entry by entry (default: the shards of the draft layer; "
                            "every other local shard gets a size-and-framing integrity test)")
    check.add_argument("--source", default=None, metavar="SOURCE",
                       help="also check that SOURCE (local dir or Hub id) is the release this checkpoint was "
                            "quantized from, as graft does before writing: tensors both store unquantized are "
                            "compared over bounded byte windows; exit 1 if they differ")
    check.add_argument("--endpoint", default=None, help=argparse.SUPPRESS)  # Hub mirror / tests


COMMANDS = {"check": _check}
