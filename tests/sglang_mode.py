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
