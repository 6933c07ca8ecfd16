"""``--enable-plugin NAME[,NAME...]``: a server flag SGLang 0.5.23 does not have.

Added by an AFTER hook on ``ServerArgs.add_cli_args``. ``from_cli_args`` keeps only
record fields, so the value travels in the environment (as smg-grpc-servicer's flag
does): every spawned process inherits it, and ``sglang.Engine(...)`` users set the same
variable. The action derives from ``_StoreAction`` because SGLang's YAML ``--config``
merger accepts only plain store actions.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from . import availability
from .settings import ENABLE_PLUGIN_ENV, PLUGIN_NAME

FLAG = "--enable-plugin"


class _EnablePluginAction(argparse._StoreAction):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        super().__call__(parser, namespace, values, option_string)
        names = [n.strip() for n in str(values).split(",") if n.strip()]
        previous = [n for n in os.environ.get(ENABLE_PLUGIN_ENV, "").split(",") if n.strip()]
        os.environ[ENABLE_PLUGIN_ENV] = ",".join(dict.fromkeys(previous + names))
        if PLUGIN_NAME in names and availability.missing_targets():
            # Something is already known to be missing; on an SGLang without the resolution step (0.5.14-0.5.19)
            # this is the only place strict mode can still refuse the launch, so refuse here, naming the targets.
            from .strict import verify_strict

            verify_strict()


def add_enable_plugin_flag(result: Any, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
    """AFTER hook: ``add_cli_args(parser)`` returned ``result``; add the flag once."""
    if not isinstance(parser, argparse.ArgumentParser) or FLAG in parser._option_string_actions:
        return None  # another plugin may already provide it; argparse would refuse a duplicate
    parser.add_argument(
        FLAG, action=_EnablePluginAction, default=None, metavar="NAME[,NAME...]",
        help="Plugins that must be active (comma-separated). Startup fails if one is not installed, or if "
             f"glm_mtp cannot install all of its hooks on this SGLang. Engine API: set {ENABLE_PLUGIN_ENV}.")
    return None
