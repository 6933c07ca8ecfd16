"""Which SGLang the behaviour tests drive, and whether the plugin takes part.

Default: the installed SGLang 0.5.23 with the ``glm_mtp`` plugin (``SGLANG_PLUGINS=glm_mtp``).

Patched mode (``patches/verify_patches.py`` sets it): ``SGLANG_GLM_MTP_SGLANG_PATH`` names
the ``python/`` folder of a patched SGLang tree. Scenario subprocesses put it first on
``PYTHONPATH`` and keep the caller's ``SGLANG_PLUGINS`` (an allow-list of entry-point names;
one naming no installed plugin disables them all). Behaviour assertions (what SGLang
refuses, builds and chooses) run in both modes; assertions about the plugin itself
(its state record, rule ids, hooks, strict mode, its own messages) are marked
``plugin_only`` and skipped when the plugin is not loaded.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from typing import Iterator

import pytest

PLUGIN = "glm_mtp"
SGLANG_PATH_ENV = "SGLANG_GLM_MTP_SGLANG_PATH"

PATCHED_SGLANG: str | None = os.environ.get(SGLANG_PATH_ENV) or None
PATCHED = PATCHED_SGLANG is not None
_ALLOW = os.environ.get("SGLANG_PLUGINS", "") if PATCHED else PLUGIN
#: Whether the scenario subprocesses load the plugin.
PLUGIN_LOADED = not _ALLOW.strip() or PLUGIN in [name.strip() for name in _ALLOW.split(",")]
#: Behaviour comes from SGLang itself: the patched tree has every fix, so a loaded plugin stands down too
#: (tests/test_patches.py checks that).
UPSTREAM = PATCHED
#: Whether the plugin acts, so that its own state, logs and messages can be asserted on.
PLUGIN_ACTIVE = PLUGIN_LOADED and not PATCHED

def _sglang_version() -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version("sglang")  # the first on sys.path: PYTHONPATH's, when one is put first
    except importlib.metadata.PackageNotFoundError:
        return None


#: The SGLang release the scenario subprocesses import (0.5.23 installed; 0.5.22 when its folder is on PYTHONPATH).
SGLANG_VERSION: str | None = _sglang_version()


def sglang_before(version: str) -> bool:
    """Is the SGLang under test older than ``version`` (where a behaviour's target first appears)?"""
    from packaging.version import Version

    return SGLANG_VERSION is not None and Version(SGLANG_VERSION) < Version(version)


plugin_only = pytest.mark.skipif(not PLUGIN_ACTIVE, reason="asserts on the plugin; this run drives a patched "
                                                          "SGLang, where the plugin does not act")


def subprocess_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a scenario subprocess in the current mode."""
    env = dict(os.environ if base is None else base)
    if PATCHED:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PATCHED_SGLANG, env.get("PYTHONPATH")) if p)
        env["SGLANG_PLUGINS"] = _ALLOW or PLUGIN
    else:
        env["SGLANG_PLUGINS"] = PLUGIN
    return env


def pick(plugin: str, upstream: str) -> str:
    """The wording of a message, as the plugin or as the patched SGLang writes it."""
    return upstream if UPSTREAM else plugin


def run_scenario(script: "os.PathLike[str] | str", family: str, params: dict, *, timeout: float = 600,
                 **env: str) -> dict:
    """Run one scenario family of ``script`` in a fresh process and return its RESULT document.

    The plugin's own switches (``SGLANG_GLM_MTP_*``, ``SGLANG_ENABLE_PLUGIN``) are cleared
    unless passed in ``env``, so a developer's shell cannot change what a test sees. The
    process gets its own session, and the whole group (rank processes included) is killed
    on every way out: a timeout, an exception, Ctrl-C, or a normal return that left
    grandchildren behind.
    """
    import json
    import sys

    base = {k: v for k, v in os.environ.items() if not k.startswith("SGLANG_GLM_MTP_") and k != "SGLANG_ENABLE_PLUGIN"}
    environment = subprocess_env({**base, **env})
    proc = run_in_own_group([sys.executable, str(script), family, json.dumps(params)], timeout=timeout,
                            env=environment)
    stdout, stderr = proc.stdout, proc.stderr
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    assert lines, f"{family}: no RESULT line (rc={proc.returncode})\nstdout:{stdout[-3000:]}\nstderr:{stderr[-4000:]}"
    result = json.loads(lines[-1][len(RESULT_PREFIX):])
    assert "crashed" not in result, f"{family} scenario crashed:\n{result.get('crashed')}"
    result["_stderr"] = stderr
    return result


RESULT_PREFIX = "RESULT:"


def kill_group(proc: "subprocess.Popen[str]", grace: float = 5.0) -> None:
    """End the session ``proc`` leads (started with ``start_new_session=True``): SIGTERM, then SIGKILL.

    SIGTERM first so that a pytest inside (patches/verify_patches.py runs one) turns it into
    KeyboardInterrupt (tests/conftest.py) and kills its own scenario groups on the way out.
    """
    import signal
    import time

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return  # nothing left in the group
        if sig == signal.SIGTERM:
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and _group_alive(proc.pid):
                if proc.poll() is None:
                    try:
                        proc.wait(timeout=0.05)
                    except subprocess.TimeoutExpired:
                        pass
                else:
                    time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


@contextlib.contextmanager
def killing_group(proc: "subprocess.Popen[str]") -> Iterator[None]:
    """Whatever leaves the block (return, exception, KeyboardInterrupt, pytest.fail), the group goes with it."""
    try:
        yield
    finally:
        kill_group(proc)
        if proc.poll() is None:
            proc.wait()


def run_in_own_group(argv: list[str], *, timeout: float, **kwargs: object) -> "subprocess.CompletedProcess[str]":
    """``subprocess.run`` whose child gets its own session, killed with all its descendants on every way out."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            **kwargs)  # type: ignore[call-overload]
    with killing_group(proc):
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            stdout, stderr = proc.communicate()
            pytest.fail(f"{' '.join(map(str, argv[:3]))}: no exit within {timeout:.0f} s\n"
                        f"stdout tail:\n{stdout[-3000:]}\nstderr tail:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def scenario_main(families: dict) -> None:
    """``python <scenario script> <family> '<json>'``: run it, print one ``RESULT:`` line, never a bare traceback."""
    import json
    import sys
    import traceback

    family, raw = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "{}"
    try:
        payload = families[family](json.loads(raw))
    except Exception:
        payload = {"crashed": traceback.format_exc()}
    sys.stdout.flush()
    sys.stdout.write(RESULT_PREFIX + json.dumps(payload, default=str) + "\n")
