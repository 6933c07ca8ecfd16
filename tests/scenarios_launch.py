"""Launches as users start them, against the real SGLang 0.5.23: Hub ids, cold and partial caches, odd files.

Run as ``python tests/scenarios_launch.py <family> '<json params>'`` in a fresh process; prints
one ``RESULT:`` JSON line. The Hub is the loopback fake Hub the test process runs
(``HF_ENDPOINT``), the cache is a real huggingface_hub cache on disk (``HF_HUB_CACHE``),
and offline mode is SGLang's and huggingface_hub's own ``HF_HUB_OFFLINE``; the caller sets
all three for the whole process. Faked, because it needs a GPU: the GPU generation
(tests/scenarios_resolution.py's ``resolve``).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Callable

from scenarios_resolution import _resolved, resolve

from sglang_glm_mtp.demo.gpu_emulation import error_fields


class _Warnings(logging.Handler):
    """Collects the plugin's warnings per case, so a test can assert exactly one was given."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("sglang_glm_mtp"):
            self.messages.append(record.getMessage())


def _outcome_with_frames(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``_outcome`` plus the plugin's frames in the traceback: a refusal raised by the plugin has them,
    an error SGLang raises on its own inputs must not."""
    import traceback

    try:
        return {"ok": True, **fn(), "plugin_frames": []}
    except Exception as exc:
        frames = [f"{f.filename}:{f.lineno}" for f in traceback.extract_tb(exc.__traceback__)
                  if "sglang_glm_mtp" in f.filename]
        return {**error_fields(exc), "plugin_frames": frames}


def family_launch(params: dict[str, Any]) -> dict[str, Any]:
    """One resolution per case (``model``: a Hub id or a directory; ``argv``: extra flags), warnings recorded."""
    import psutil
    from sglang.srt.plugins import load_plugins

    load_plugins()
    handler = _Warnings()
    logging.getLogger("sglang_glm_mtp").addHandler(handler)
    cases: dict[str, Any] = {}
    for case in params["cases"]:
        handler.messages = []
        argv = ["--model-path", case["model"], "--device", "cuda", *case.get("argv", [])]
        outcome = _outcome_with_frames(lambda: _resolved(resolve(argv, case.get("generation", "sm100"))))
        outcome["children"] = len(psutil.Process().children(recursive=True))
        outcome["warnings"] = handler.messages
        cases[case["name"]] = outcome
    return {"cases": cases}


FAMILIES = {"launch": family_launch}

if __name__ == "__main__":
    sys.path.insert(0, __import__("os").path.dirname(__file__))
    from sglang_mode import scenario_main

    scenario_main(FAMILIES)
