"""Expose what the plugin found and decided in ``/server_info`` (and ``/get_server_info``).

Two sections, because two processes know different things:

* top level ``glm_mtp`` (main process): the preflight result and the draft MoE runner
  decision, from the ServerArgs record the resolution step wrote them to. An AFTER hook
  on ``build_server_info``, which HTTP, the gRPC bridge and the follower gRPC server all
  call (``sglang.Engine.get_server_info()`` builds its dict itself and does not);
* ``internal_states[i]["glm_mtp"]`` (scheduler, one per DP rank): the same decisions as
  the scheduler received them, plus post-load coverage and the runtime canary. An AFTER
  hook on ``Scheduler.get_internal_state``, whose reply SGLang sends over ZMQ, so the
  section holds msgpack-safe builtins only.
"""

from __future__ import annotations

import logging
from typing import Any

from .state import plugin_state, published_state

logger = logging.getLogger(__name__)

SECTION = "glm_mtp"


def scheduler_section() -> dict[str, Any]:
    """Preflight + runner decision (from the main process), coverage and canary (this scheduler), and what this
    SGLang cannot carry (``unavailable``, ``sglang_untested``; absent when there is nothing to say)."""
    from .availability import summary
    from .canary import canary_snapshot
    from .coverage import LAST_RESULT

    state = published_state()  # None when not published: nothing decided at resolution to report
    section: dict[str, Any] = state.server_info() if state is not None else {}
    if LAST_RESULT:
        section["coverage"] = dict(LAST_RESULT)
    canary = canary_snapshot()
    if canary is not None:
        section["canary"] = canary
    section.update(summary())
    return section


def add_plugin_state(result: Any, *args: Any, **kwargs: Any) -> None:
    """AFTER hook on ``Scheduler.get_internal_state``; mutates the reply in place, returns None."""
    internal = getattr(result, "internal_state", None)
    if isinstance(internal, dict):
        try:
            internal[SECTION] = scheduler_section()
        except Exception:  # server info must never break because of the plugin
            logger.exception("glm_mtp: could not add plugin state to server info")
    return None


def main_process_section(server_args: Any) -> dict[str, Any]:
    """Plugin version plus what the resolution step recorded (empty when it had nothing to decide), and what this
    SGLang cannot carry."""
    from .. import __version__
    from .availability import summary

    return {"version": __version__, **plugin_state(server_args).server_info(), **summary()}


def add_server_info_section(result: Any, *args: Any, **kwargs: Any) -> None:
    """AFTER hook on ``build_server_info(server_args, scheduler_info)``, which always returns a dict; mutates it."""
    server_args = args[0] if args else kwargs.get("server_args")
    try:
        result[SECTION] = main_process_section(server_args)
    except Exception:  # server info must never break because of the plugin
        logger.exception("glm_mtp: could not add plugin state to server info")
    return None
