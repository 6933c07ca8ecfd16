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

import os

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
    process gets its own session: on a timeout the whole group goes, rank processes included.
    """
    import json
    import signal
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if not k.startswith("SGLANG_GLM_MTP_") and k != "SGLANG_ENABLE_PLUGIN"}
    environment = subprocess_env({**base, **env})
    proc = subprocess.Popen([sys.executable, str(script), family, json.dumps(params)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{family}: no result within {timeout:.0f} s\nstderr tail:\n{stderr[-4000:]}")
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT:")]
    assert lines, f"{family}: no RESULT line (rc={proc.returncode})\nstdout:{stdout[-3000:]}\nstderr:{stderr[-4000:]}"
    result = json.loads(lines[-1][len("RESULT:"):])
    assert "crashed" not in result, f"{family} scenario crashed:\n{result.get('crashed')}"
    result["_stderr"] = stderr
    return result


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
    sys.stdout.write("RESULT:" + json.dumps(payload, default=str) + "\n")
