"""The ``sglang-glm-mtp`` command line: the only part of the package that talks to the terminal.

One module per sub-command (``check``, ``graft``/``extract``, ``synth``, ``demo``, ``bench``);
each exposes ``register(subparsers)`` and ``COMMANDS`` (name -> handler). Only the module of
the command being run is imported, so ``check`` does not pay for graft, demo or bench.

Exit codes are shared by every command: 0 success, 1 a problem found or a refusal
(the report says which), 2 unusable input (one line on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from types import ModuleType
from typing import Sequence

from .. import __version__
from ..errors import GlmMtpError
from ._format import error_line

#: sub-command -> (module under sglang_glm_mtp.cli, one-line help for the top-level listing)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "check": ("check", "inspect a checkpoint's draft layer: present, complete, precision"),
    "graft": ("graft", "copy the draft layer from the original release into a checkpoint that lacks it"),
    "extract": ("graft", "write a standalone draft checkpoint for --speculative-draft-model-path"),
    "synth": ("synth", "write a tiny synthetic checkpoint (optionally broken) to try check and graft on"),
    "demo": ("demo", "end to end on a tiny GLM-5.2-like pair: check, graft, SGLang resolution"),
    "bench": ("bench", "benchmark a running SGLang server: GSM8K, concurrency sweep, accept length"),
}


def _requested(argv: Sequence[str]) -> str | None:
    """The sub-command named on the command line, without parsing the rest."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in SUBCOMMANDS else None
    return None


def build_parser(argv: Sequence[str] = ()) -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    """The parser, with full sub-parsers for the requested command (all of them when none is named)."""
    parser = argparse.ArgumentParser(
        prog="sglang-glm-mtp",
        description="Check, repair and serve the MTP/NextN draft layer of quantized GLM-5.x / DeepSeek checkpoints.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is being read (to stderr)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    requested = _requested(argv)
    wanted = {SUBCOMMANDS[requested][0]} if requested else {module for module, _ in SUBCOMMANDS.values()}
    modules: dict[str, ModuleType] = {}
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if module_name in wanted:
            if module_name not in modules:
                modules[module_name] = importlib.import_module(f"{__name__}.{module_name}")
                modules[module_name].register(sub)
        else:
            sub.add_parser(name, help=help_text, add_help=False)  # listed in --help, never parsed
    for command in sub.choices.values():  # ``-v`` also after the sub-command
        if not any("-v" in action.option_strings for action in command._actions):
            command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                 help="log what is being read (to stderr)")
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, modules = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    handler = modules[SUBCOMMANDS[args.command][0]].COMMANDS[args.command]
    try:
        return handler(args)
    except GlmMtpError as exc:
        sys.stderr.write(error_line(args.command, str(exc)))
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"sglang-glm-mtp {args.command}: interrupted\n")
        return 130
    except Exception as exc:  # last resort: a bug must still be one line, and say where to report it
        if args.verbose:
            traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        sys.stderr.write(error_line(args.command, f"unexpected {type(exc).__name__}: {first} — this is a bug in "
                                                  "sglang-glm-mtp; please report it with the command you ran "
                                                  "(-v shows the traceback)"))
        return 2
