"""``check`` sub-command: the human report and ``--json``.

Exit 0 ready/not-applicable, 1 a checkpoint problem, 2 unreadable input (one line on stderr).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..checkpoint.report import InspectionReport
from ._format import count, emit_json, out, size


def format_report(report: InspectionReport) -> str:
    """The human ``check`` report: what was found, every problem, and the command that fixes it."""
    lines = [f"checkpoint:   {report.checkpoint}",
             f"architecture: {report.architecture} (family {report.family}); target precision {report.target_precision}"]
    if report.status == "not-applicable":
        lines.append("draft layer:  none declared (num_nextn_predict_layers = 0): nothing to check")
    else:
        shards = ", ".join(report.draft_shards) if report.draft_shards else "none"
        lines += [
            f"draft layer:  model.layers.{report.draft_layer}"
            + (" (standalone draft checkpoint)" if report.standalone_draft else ""),
            f"  tensors:    {count(report.found_tensors)} found / {count(report.expected_tensors)} expected"
            + (f", {count(len(report.missing))} missing" if report.missing else ""),
            f"  precision:  {report.draft_precision or 'n/a'}",
            f"  bytes:      {size(report.draft_bytes)}",
            f"  shards:     {shards}",
        ]
    lines.append(f"status:       {report.status.upper()}")
    for problem in report.problems:
        lines.append(f"  [{problem.severity}] {problem.code}: {problem.message}")
    if report.remedy:
        lines += ["remedy:", f"  {report.remedy}"]
    return "\n".join(lines)


def _check(args: argparse.Namespace) -> int:
    from ..checkpoint.inspection import inspect_checkpoint

    report = inspect_checkpoint(args.model, endpoint=args.endpoint, all_headers=args.all_headers)
    # Lineage (``--source``) plugs in here: compare TARGET with SOURCE and merge its verdict.
    if args.json:
        emit_json(report.to_json())
    else:
        out(format_report(report))
    return report.exit_code


def register(sub: Any) -> None:
    check = sub.add_parser("check", help="inspect a checkpoint's draft layer: present, complete, precision",
                           description="Reads config, index and safetensors headers only; never writes. "
                                       "Exit 0 ready/not-applicable, 1 missing/incomplete/invalid, 2 unreadable.")
    check.add_argument("model", help="local checkpoint directory or Hub id org/name[@revision]")
    check.add_argument("--json", action="store_true", help="print the machine-readable report (docs/check-json.md)")
    check.add_argument("--all-headers", action="store_true",
                       help="parse every shard's header entry by entry (default: the shards of the draft layer; "
                            "every other local shard gets a size-and-framing integrity test)")
    check.add_argument("--endpoint", default=None, help=argparse.SUPPRESS)  # Hub mirror / tests


COMMANDS = {"check": _check}
