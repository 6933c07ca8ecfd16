"""The ``sglang-glm-mtp`` command line: the only part of the package that talks to the terminal.

Exit codes are shared by every command: 0 success, 1 a problem found or a refusal
(the report says which), 2 unusable input (one line on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Callable, Sequence

from . import __version__
from .checkpoint.report import InspectionReport
from .errors import GlmMtpError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def _command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    def wrap(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn
    return wrap


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


# ----------------------------------------------------------------------------- check


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
            f"  tensors:    {report.found_tensors} found / {report.expected_tensors} expected"
            + (f", {len(report.missing)} missing" if report.missing else ""),
            f"  precision:  {report.draft_precision or 'n/a'}",
            f"  bytes:      {report.draft_bytes:,}",
            f"  shards:     {shards}",
        ]
    lines.append(f"status:       {report.status.upper()}")
    for problem in report.problems:
        lines.append(f"  [{problem.severity}] {problem.code}: {problem.message}")
    if report.remedy:
        lines += ["remedy:", f"  {report.remedy}"]
    return "\n".join(lines)


@_command("check")
def _check(args: argparse.Namespace) -> int:
    from .checkpoint.inspect import inspect

    report = inspect(args.model, endpoint=args.endpoint)
    if args.json:
        _emit_json(report.to_json())
    else:
        _out(format_report(report))
    return report.exit_code


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sglang-glm-mtp",
        description="Check, repair and serve the MTP/NextN draft layer of quantized GLM-5.x / DeepSeek checkpoints.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is being read (to stderr)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check", help="inspect a checkpoint's draft layer: present, complete, precision",
                           description="Reads config, index and safetensors headers only; never writes. "
                                       "Exit 0 ready/not-applicable, 1 missing/incomplete/invalid, 2 unreadable.")
    check.add_argument("model", help="local checkpoint directory or Hub id org/name[@revision]")
    check.add_argument("--json", action="store_true", help="print the machine-readable report (docs/check-json.md)")
    check.add_argument("--endpoint", default=None, help=argparse.SUPPRESS)  # Hub mirror / tests

    for register in _EXTRA_PARSERS:
        register(sub)
    return parser


#: Other modules add their sub-commands here (graft, extract, demo, bench).
_EXTRA_PARSERS: list[Callable[[Any], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    _load_command_modules()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return COMMANDS[args.command](args)
    except GlmMtpError as exc:
        sys.stderr.write(f"sglang-glm-mtp {args.command}: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"sglang-glm-mtp {args.command}: interrupted\n")
        return 130


def _load_command_modules() -> None:
    """Import the modules that register further sub-commands (kept out of ``check``'s import cost)."""
    import importlib

    for module in ("sglang_glm_mtp.cli_graft", "sglang_glm_mtp.cli_demo", "sglang_glm_mtp.cli_bench"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


if __name__ == "__main__":
    # Run as ``python -m sglang_glm_mtp.cli``, this file is ``__main__``, a second copy of the module:
    # sub-command modules register into ``sglang_glm_mtp.cli``, so dispatch through that one.
    from sglang_glm_mtp.cli import main as _package_main

    sys.exit(_package_main())
