"""Strict mode (``--enable-plugin glm_mtp``): fail the launch instead of running half-installed.

SGLang only logs plugin and hook failures (plugins/__init__.py, apply_hooks), so a
version drift would silently disable the checks; strict mode turns that into an error
in the main process, before anything spawns.
"""

from __future__ import annotations

import importlib.metadata
import logging
import pkgutil

from ..errors import GlmMtpError
from . import settings

logger = logging.getLogger(__name__)


class PluginStrictModeError(GlmMtpError, ValueError):
    """A plugin named in --enable-plugin is missing, or glm_mtp's hooks did not all install."""


def verify_strict() -> None:
    from . import targets
    from .targets import EAGER_TARGETS, LAZY_TARGETS, REQUIRED_ATTRIBUTES

    installed = {ep.name for ep in importlib.metadata.entry_points(group="sglang.srt.plugins")}
    absent = [name for name in settings.enabled_plugins() if name not in installed]
    if absent:
        raise PluginStrictModeError(
            f"--enable-plugin names plugin(s) that are not installed: {', '.join(absent)} "
            f"(installed: {', '.join(sorted(installed)) or 'none'}); pip install the missing package(s)")
    from sglang.srt.plugins.hook_registry import HookRegistry

    from . import availability

    missing = availability.missing_targets()  # never registered: absent on this SGLang
    problems = [f"{target} (missing on SGLang {targets.sglang_version()}: "
                f"{', '.join(targets.target(target).behaviours)} unavailable)" for target in missing]
    problems += [f"{target} (not applied)" for target in EAGER_TARGETS  # under the table's name for this release
                 if target not in missing and availability.hook_name(target) not in HookRegistry._patched]
    for target in LAZY_TARGETS + REQUIRED_ATTRIBUTES:  # installed when the draft is built; check they exist on this SGLang
        if target in missing:
            continue
        owner, _, attribute = target.rpartition(".")
        try:
            if not hasattr(pkgutil.resolve_name(owner), attribute):
                problems.append(f"{target} (no such attribute)")
        except (ImportError, AttributeError, ValueError) as exc:
            problems.append(f"{target} ({type(exc).__name__}: {exc})")
    if problems:
        raise PluginStrictModeError(
            "glm_mtp is enabled with --enable-plugin but cannot hook this SGLang version: "
            + "; ".join(problems) + ". Supported versions: docs/supported-versions.md")
    logger.info("glm_mtp: strict mode, all %d hooks verified", len(EAGER_TARGETS) + len(LAZY_TARGETS))
