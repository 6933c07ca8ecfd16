"""The demo's SGLang child process, from the parent's side: start it, ask it for a resolution, read its replies.

The child is ``resolver.py`` (``python -m sglang_glm_mtp.demo.resolver GENERATION``); the protocol (one JSON
request per stdin line, every reply one stdout line after ``resolver.PREFIX``) has its one home there.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from ..errors import GlmMtpError
from ..plugin.settings import SKIP_PREFLIGHT_ENV
from ..plugin.state import PluginState
from . import resolver
from .results import ResolutionOutcome, SglangSession

logger = logging.getLogger(__name__)

#: The module the child runs (``python -m``).
RESOLVER_MODULE = resolver.__name__
#: Seconds to wait for the SGLang child (import + one resolution); generous for a busy 2-core machine.
SGLANG_TIMEOUT = 240.0


def sglang_available() -> bool:
    return importlib.util.find_spec("sglang") is not None


class SglangResolver:
    """The child that imports SGLang once and answers resolution requests (JSON lines)."""

    def __init__(self, generation: str, log: Path) -> None:
        self.log = log
        self._log_handle: IO[str] = open(log, "w")
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        if env.pop(SKIP_PREFLIGHT_ENV, None) is not None:  # the demo shows the default behaviour
            logger.info("demo: %s is ignored for the demo's SGLang process", SKIP_PREFLIGHT_ENV)
        self.process = subprocess.Popen([sys.executable, "-m", RESOLVER_MODULE, generation], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self._log_handle, text=True, bufsize=1,
                                        env=env)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(resolver.PREFIX):
                self._lines.put(line[len(resolver.PREFIX):])
        self._lines.put(None)

    def reply(self, timeout: float = SGLANG_TIMEOUT) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise GlmMtpError(f"SGLang did not answer within {timeout:.0f} s; see {self.log}") from None
        if line is None:
            raise GlmMtpError(f"the SGLang process ended unexpectedly (exit {self.process.wait()}); see {self.log}")
        doc = json.loads(line)
        if doc.get("event") == "failed":
            raise GlmMtpError(f"SGLang failed: {doc['error'].strip().splitlines()[-1]}; see {self.log}")
        return doc

    def session(self, gpu: str) -> SglangSession:
        """The child's first reply (once its import is done): what it runs on."""
        ready = self.reply()
        return SglangSession(
            sglang_version=ready["sglang_version"], real_gpu=ready["real_gpu"], gpu=ready.get("gpu_name") or gpu,
            generation=ready["generation"], installed_plugins=list(ready["installed_plugins"]),
            plugin_active=bool(ready["plugin_active"]), import_seconds=float(ready["seconds"]), log=self.log)

    def resolve(self, argv: list[str], command: str) -> ResolutionOutcome:
        """One resolution of ``argv``; ``command`` is the launch it stands for (what the demo prints)."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"argv": argv}) + "\n")
        self.process.stdin.flush()
        doc = self.reply()
        return ResolutionOutcome(
            command=command, ok=bool(doc.get("ok")), error_type=doc.get("error_type"), error=doc.get("error"),
            algorithm=doc.get("algorithm"), draft_runner=doc.get("draft_runner"),
            target_runner=doc.get("target_runner"), num_steps=doc.get("num_steps"),
            num_draft_tokens=doc.get("num_draft_tokens"), state=PluginState.from_dict(doc.get("state")),
            children=doc.get("children"), seconds=float(doc.get("seconds", 0.0)))

    def close(self) -> None:
        """EOF ends the child; it leaves without interpreter teardown (seconds with SGLang loaded)."""
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
            self.process.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            self._log_handle.close()
