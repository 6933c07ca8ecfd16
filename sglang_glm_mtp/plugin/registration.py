"""Install the plugin into SGLang: eager hooks at ``register()``, draft hooks when a draft class is built.

SGLang calls ``register()`` in every process that runs ``load_plugins()`` (main,
schedulers, detokenizer, DP controller). Eager targets live in modules those processes
import anyway, so they cost nothing extra. The draft-model hooks are *lazy*: they are
registered the moment SGLang resolves a draft class in ``get_model_architecture``
(scheduler only), so no process imports a model module just to hook it. Every target
name lives in ``targets.py``.

Which draft classes: every class whose name ends in NextN/MTP gets the post-load
coverage recorder on its ``load_weights`` (the backstop: no per-family list needed);
the GLM/DeepSeek classes also get the draft-precision seams.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from . import targets
from .targets import CANARY_TARGET, EAGER_TARGETS, LAZY_TARGETS, SERVER_INFO_TARGET  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_registered = False
_hooked: set[str] = set()


def register() -> None:
    """Idempotent: a second call in the same process does nothing.

    Every target is checked on the running SGLang before it is registered (``availability``):
    a missing one is skipped with one WARNING naming the behaviour it carries, never handed
    to SGLang's registry (whose failure is an ERROR traceback in every process).
    """
    global _registered
    with _lock:
        if _registered:
            return
        _registered = True
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from . import availability
    from .canary import register_canary
    from .cli_flag import add_enable_plugin_flag
    from .resolution import speculative_step
    from .server_info import add_plugin_state, add_server_info_section

    availability.version_warning()
    _register_resolution_step(speculative_step)
    eager = ((targets.ADD_CLI_ARGS, add_enable_plugin_flag), (targets.MODEL_ARCHITECTURE, _on_model_architecture),
             (targets.INTERNAL_STATE, add_plugin_state), (targets.SERVER_INFO_TARGET, add_server_info_section))
    for target, hook in eager:
        name = availability.hook_name(target, every_process=True)  # the table's other name on an older release
        if name is not None:
            HookRegistry.register(name, hook, HookType.AFTER)
    if availability.present(targets.CANARY_TARGET, every_process=True):
        register_canary()


def _register_resolution_step(step: Callable[..., Any]) -> None:
    """``register_resolution_hook(RESOLUTION_STEP)``; an SGLang without that API (or that step) loses the
    preflight, the runner choice and strict mode's check, and keeps everything else."""
    from . import availability

    if not availability.present(targets.RESOLUTION_HOOKS, every_process=True):
        return
    from sglang.srt.arg_groups.resolution_hooks import register_resolution_hook

    try:
        register_resolution_hook(targets.RESOLUTION_STEP)(step)
    except Exception as exc:  # e.g. the step was renamed: SGLang refuses an unknown name (ValueError on 0.5.22-23)
        logger.debug("glm_mtp: registering the resolution step failed here", exc_info=True)
        availability.mark_unavailable(targets.RESOLUTION_HOOKS, f"{targets.RESOLUTION_STEP!r}: {type(exc).__name__}: "
                                      f"{exc}", warn=availability.is_main_process())


def _on_model_architecture(result: Any, *args: Any, **kwargs: Any) -> None:
    """AFTER ``get_model_architecture``: hook a draft class right before SGLang builds it."""
    model_class = result[0] if isinstance(result, tuple) and result else None
    if isinstance(model_class, type) and targets.is_draft_class(model_class.__name__):
        install_draft_hooks(model_class)
    return None


def install_draft_hooks(model_class: type | None = None) -> list[str]:
    """Register and apply the draft hooks of ``model_class`` (its precision seam, its coverage); returns
    the targets now hooked. Without a class: the GLM/DeepSeek classes of ``targets.COVERAGE_TARGETS``."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookSource, HookType

    from . import availability, upstream
    from .coverage import load_weights_with_coverage
    from .draft_precision import init_with_draft_quant_config, resolve_nextn_quant_config

    wanted: list[tuple[str, Callable[..., Any]]] = []
    with _lock:
        if not upstream.has_fix("draft_precision"):
            wanted += [(t, resolve_nextn_quant_config) for t in targets.QUANT_RESOLVERS if _owns(model_class, t)]
            wanted += [(t, init_with_draft_quant_config) for draft, t in targets.QUANT_CONSTRUCTORS.items()
                       if model_class is None or draft in {c.__name__ for c in model_class.__mro__}]
        coverage = [targets.load_weights_target(model_class)] if model_class is not None \
            else list(targets.COVERAGE_TARGETS)
        if upstream.has_fix("coverage"):  # SGLang checks the DeepSeek loader itself; the backstop stays
            coverage = [t for t in coverage if t.rsplit(".", 2)[-2] not in targets.UPSTREAM_COVERED]
        wanted += [(t, load_weights_with_coverage) for t in coverage]
        wanted = [(t, hook) for t, hook in wanted if t not in _hooked]
        wanted = [(t, hook) for t, hook in wanted if availability.present(t)]  # missing: one WARNING, not hooked
        _hooked.update(t for t, _ in wanted)
        # Registered outside load_plugins(), so SGLang cannot attribute them by itself ("from: unknown").
        source = HookSource(plugin_name=targets.PLUGIN_ENTRY_POINT, dist_name=targets.DISTRIBUTION)
        for target, hook in wanted:
            if target not in HookRegistry._patched:
                HookRegistry.register(target, hook, HookType.AROUND, source=source)
        HookRegistry.apply_hooks()  # idempotent; SGLang's load_plugins ran it before these existed
    failed = [t for t, _ in wanted if t not in HookRegistry._patched]
    if failed:
        logger.error("glm_mtp: could not hook %s on this SGLang version; draft checks are incomplete "
                     "(docs/supported-versions.md)", ", ".join(failed))
    return [t for t, _ in wanted if t in HookRegistry._patched]


def _owns(model_class: type | None, target: str) -> bool:
    """Is ``target`` a method of ``model_class`` or one of its bases (all targets when no class)?

    Keeps the scheduler from importing model modules of families it is not building.
    """
    if model_class is None:
        return True
    owner = target.rsplit(".", 2)[-2]
    return any(base.__name__ == owner for base in model_class.__mro__)
