"""Everything the plugin installs into SGLang, in one table: the only list to edit for a new SGLang.

SGLang calls ``register()`` in every process that runs ``load_plugins()`` (main,
schedulers, detokenizer, DP controller). Eager targets live in modules those processes
import anyway (``server_args``, ``model_loader.utils``, ``managers.scheduler`` and the
``metrics_reporter`` it imports, ``utils.common``), so they cost nothing extra. The
draft-model hooks are *lazy*: they are registered the moment SGLang resolves a NextN
draft class in ``get_model_architecture`` (scheduler only), so no process imports
``glm4_moe``/``deepseek_nextn`` just to hook them.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

logger = logging.getLogger(__name__)

_GLM = "sglang.srt.models.glm4_moe.GlmMoeDsaForCausalLMNextN"
_DSV3 = "sglang.srt.models.deepseek_nextn.DeepseekV3ForCausalLMNextN"

PLUGIN_ENTRY_POINT = "glm_mtp"
DISTRIBUTION = "sglang-glm-mtp"

#: Draft classes whose construction triggers the lazy hooks.
DRAFT_CLASSES = ("GlmMoeDsaForCausalLMNextN", "DeepseekV3ForCausalLMNextN")

#: Main process: /server_info's top-level "glm_mtp" section (server_info.py).
SERVER_INFO_TARGET = "sglang.srt.utils.common.build_server_info"
#: Every scheduler rank, once per verify step (canary.py); the scheduler module imports it already.
CANARY_TARGET = ("sglang.srt.managers.scheduler_components.metrics_reporter."
                 "SchedulerMetricsReporter.update_spec_metrics")

EAGER_TARGETS: tuple[str, ...] = (
    "sglang.srt.server_args.ServerArgs.add_cli_args",
    "sglang.srt.model_loader.utils.get_model_architecture",
    "sglang.srt.managers.scheduler.Scheduler.get_internal_state",
    SERVER_INFO_TARGET,
    CANARY_TARGET,
)
LAZY_TARGETS: tuple[str, ...] = (
    f"{_GLM}._resolve_nextn_quant_config",
    f"{_GLM}.load_weights",
    f"{_DSV3}._resolve_nextn_quant_config",
    f"{_DSV3}.load_weights",
)
#: Not hooked, but the NVFP4-draft shield (draft_precision.py) relies on it: strict mode checks it exists.
REQUIRED_ATTRIBUTES: tuple[str, ...] = ("sglang.srt.models.deepseek_nextn.DeepseekModelNextN.__init__",)

_lock = threading.Lock()
_registered = False
_draft_hooks_installed = False


def register() -> None:
    """Idempotent: a second call in the same process does nothing."""
    global _registered
    with _lock:
        if _registered:
            return
        _registered = True
    from sglang.srt.arg_groups.resolution_hooks import register_resolution_hook
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from .cli_flag import add_enable_plugin_flag
    from .resolution import speculative_step
    from .server_info import add_plugin_state, add_server_info_section

    register_resolution_hook("handle_speculative_decoding")(speculative_step)
    HookRegistry.register(EAGER_TARGETS[0], add_enable_plugin_flag, HookType.AFTER)
    HookRegistry.register(EAGER_TARGETS[1], _on_model_architecture, HookType.AFTER)
    HookRegistry.register(EAGER_TARGETS[2], add_plugin_state, HookType.AFTER)
    HookRegistry.register(SERVER_INFO_TARGET, add_server_info_section, HookType.AFTER)
    from .canary import register_canary

    register_canary()


def _on_model_architecture(result: Any, *args: Any, **kwargs: Any) -> None:
    """AFTER ``get_model_architecture``: install the draft hooks right before a NextN draft is built."""
    model_class = result[0] if isinstance(result, tuple) and result else None
    if getattr(model_class, "__name__", None) in DRAFT_CLASSES:
        install_draft_hooks()
    return None


def install_draft_hooks() -> list[str]:
    """Register and apply the lazy hooks once per process; returns the targets now hooked."""
    global _draft_hooks_installed
    from sglang.srt.plugins.hook_registry import HookRegistry, HookSource, HookType

    from . import upstream
    from .coverage import load_weights_with_coverage
    from .draft_precision import resolve_nextn_quant_config

    with _lock:
        if _draft_hooks_installed:
            return [t for t in LAZY_TARGETS if t in HookRegistry._patched]
        _draft_hooks_installed = True
        wanted: list[tuple[str, Callable[..., Any]]] = []
        if not upstream.has_fix("draft_precision"):
            wanted += [(LAZY_TARGETS[0], resolve_nextn_quant_config), (LAZY_TARGETS[2], resolve_nextn_quant_config)]
        if not upstream.has_fix("coverage"):
            wanted += [(LAZY_TARGETS[1], load_weights_with_coverage), (LAZY_TARGETS[3], load_weights_with_coverage)]
        # Registered outside load_plugins(), so SGLang cannot attribute them by itself ("from: unknown").
        source = HookSource(plugin_name=PLUGIN_ENTRY_POINT, dist_name=DISTRIBUTION)
        for target, hook in wanted:
            HookRegistry.register(target, hook, HookType.AROUND, source=source)
        HookRegistry.apply_hooks()  # idempotent; SGLang's load_plugins ran it before these existed
    failed = [t for t, _ in wanted if t not in HookRegistry._patched]
    if failed:
        logger.error("glm_mtp: could not hook %s on this SGLang version; draft checks are incomplete "
                     "(docs/supported-versions.md)", ", ".join(failed))
    return [t for t, _ in wanted if t in HookRegistry._patched]
