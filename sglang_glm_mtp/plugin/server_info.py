"""Expose what the plugin found and decided in ``/get_server_info`` (``internal_states[i]["glm_mtp"]``).

The scheduler's ``get_internal_state`` reply is what SGLang's HTTP server merges into
server info, one entry per DP rank; an AFTER hook adds one msgpack-safe section to it.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

SECTION = "glm_mtp"


def plugin_state() -> dict[str, Any]:
    """Preflight + runner decision (from the main process), coverage and canary (this scheduler)."""
    from .canary import canary_snapshot
    from .coverage import LAST_RESULT
    from .resolution import STATE_ATTR

    state: dict[str, Any] = {}
    try:
        from sglang.srt.runtime_context import get_context

        state.update(getattr(get_context().server_args, STATE_ATTR, None) or {})
    except Exception:  # not published: nothing decided at resolution to report
        pass
    if LAST_RESULT:
        state["coverage"] = dict(LAST_RESULT)
    canary = canary_snapshot()
    if canary is not None:
        state["canary"] = canary
    return state


def add_plugin_state(result: Any, *args: Any, **kwargs: Any) -> None:
    """AFTER hook on ``Scheduler.get_internal_state``; mutates the reply in place, returns None."""
    internal = getattr(result, "internal_state", None)
    if isinstance(internal, dict):
        try:
            internal[SECTION] = plugin_state()
        except Exception:  # server info must never break because of the plugin
            logger.exception("glm_mtp: could not add plugin state to server info")
    return None
