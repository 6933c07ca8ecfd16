"""Environment switches of the plugin: one place, one name each, documented in docs/plugin.md.

Environment variables are the only channel that reaches every SGLang process (main,
schedulers, detokenizer) and the ``sglang.Engine(...)`` Python API alike.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ..text import truthy

logger = logging.getLogger(__name__)

PLUGIN_NAME = "glm_mtp"

#: ``--enable-plugin NAME[,NAME...]`` writes here; Engine users set it directly.
ENABLE_PLUGIN_ENV = "SGLANG_ENABLE_PLUGIN"
#: Skip the startup preflight (e.g. RL weight sync fills the draft after launch).
SKIP_PREFLIGHT_ENV = "SGLANG_GLM_MTP_SKIP_PREFLIGHT"
#: Skip the post-load coverage check of the draft's parameters.
SKIP_COVERAGE_ENV = "SGLANG_GLM_MTP_SKIP_COVERAGE"
#: Runtime accept-length canary: "0" switches it off.
CANARY_ENV = "SGLANG_GLM_MTP_CANARY"
CANARY_MIN_ACCEPT_ENV = "SGLANG_GLM_MTP_CANARY_MIN_ACCEPT_LENGTH"
CANARY_WARMUP_ENV = "SGLANG_GLM_MTP_CANARY_WARMUP_STEPS"


def enabled_plugins() -> list[str]:
    """Plugin names given with ``--enable-plugin`` or ``SGLANG_ENABLE_PLUGIN``."""
    raw = os.environ.get(ENABLE_PLUGIN_ENV, "")
    return [name.strip() for name in raw.split(",") if name.strip()]


def strict_mode() -> bool:
    """``--enable-plugin glm_mtp``: missing hooks or a missing named plugin fail the launch."""
    return PLUGIN_NAME in enabled_plugins()


def skip_preflight() -> bool:
    return truthy(os.environ.get(SKIP_PREFLIGHT_ENV))


def skip_coverage() -> bool:
    return truthy(os.environ.get(SKIP_COVERAGE_ENV))


@dataclass(frozen=True)
class CanarySettings:
    enabled: bool = True
    min_accept_length: float = 1.2
    warmup_steps: int = 200
    min_draft_tokens: int = 2


def canary_settings() -> CanarySettings:
    defaults = CanarySettings()
    enabled = os.environ.get(CANARY_ENV, "1").strip().lower() not in ("0", "false", "no", "off")
    try:
        threshold = float(os.environ.get(CANARY_MIN_ACCEPT_ENV, defaults.min_accept_length))
        warmup = int(os.environ.get(CANARY_WARMUP_ENV, defaults.warmup_steps))
    except ValueError:
        logger.error("glm_mtp: %s / %s must be numbers; using the defaults %.1f / %d",
                     CANARY_MIN_ACCEPT_ENV, CANARY_WARMUP_ENV, defaults.min_accept_length, defaults.warmup_steps)
        return CanarySettings(enabled=enabled)
    return CanarySettings(enabled=enabled, min_accept_length=threshold, warmup_steps=max(1, warmup))
