"""The plugin's step in SGLang's server-args resolution (main process, before anything spawns).

Wraps ``handle_speculative_decoding``: after SGLang's own step has mapped NEXTN to
EAGLE, set the draft path and inherited the draft MoE runner, this runs the preflight
and, unless the user chose one, declares the draft MoE runner from the rule table.
What it found and decided is the plugin's record on ServerArgs (``state.PluginState``),
which travels to the schedulers inside the pickled ServerArgs.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import replace
from typing import Any, Callable

from ..checkpoint.quant_config import precision_of_method
from ..runner_rules import RunnerDecision, RunnerFacts, choose_draft_runner
from . import settings, upstream
from .preflight import PreflightResult, run_preflight
from .state import PluginState, RunnerChoice, set_plugin_state

logger = logging.getLogger(__name__)

DECLARATION_SOURCE = "glm_mtp"


def speculative_step(server_args: Any, previous: Callable[[Any], None]) -> None:
    """``register_resolution_hook("handle_speculative_decoding")`` wrapper; always calls ``previous``."""
    previous(server_args)
    from sglang.srt.arg_groups.model_override_base import model_config_of, resolving_view

    if settings.strict_mode():
        from .strict import verify_strict

        verify_strict()
    view = resolving_view(server_args)
    draft_path, draft_revision = _draft_source(view)
    if view.speculative_algorithm != "EAGLE" or not draft_path:
        return
    architecture = _architecture(model_config_of(server_args).hf_config)
    state = PluginState(architecture=architecture, draft_path=draft_path, draft_revision=draft_revision)
    set_plugin_state(server_args, state)

    result: PreflightResult | None = None
    if upstream.has_fix("preflight"):
        logger.info("glm_mtp: this SGLang already runs a draft preflight; the plugin's preflight stands down")
    else:
        result = run_preflight(draft_path, draft_revision, architecture, getattr(view, "load_format", None))
    if result is None and architecture and not upstream.has_fix("preflight"):
        from ..checkpoint.families import family_for

        if family_for(architecture) is None:
            return  # not a family this plugin knows: leave everything to SGLang
    if result is not None:
        state = replace(state, preflight=result)
        set_plugin_state(server_args, state)

    if upstream.has_fix("moe_runner"):
        logger.info("glm_mtp: this SGLang already picks the draft MoE runner; the plugin's choice stands down")
        return
    decision = decide_runner(server_args, view, result)
    runner = RunnerChoice(decision.backend or view.speculative_moe_runner_backend, decision.rule, decision.reason)
    set_plugin_state(server_args, replace(state, moe_runner=runner))


def _architecture(hf_config: Any) -> str:
    """config.json's first architecture; "" for anything malformed (SGLang judges its own inputs)."""
    archs = getattr(hf_config, "architectures", None)
    return archs[0] if isinstance(archs, (list, tuple)) and archs and isinstance(archs[0], str) else ""


def _draft_source(view: Any) -> tuple[str | None, str | None]:
    """Where the draft loads from. SGLang fills in no draft path for some families (GLM-5.3-Flash, GLM-OCR);
    the draft then loads from the target (``model_config.py``), so the preflight judges ``--model-path``."""
    if view.speculative_draft_model_path:
        return view.speculative_draft_model_path, view.speculative_draft_model_revision
    return view.model_path, getattr(view, "revision", None)


def decide_runner(server_args: Any, view: Any, result: PreflightResult | None) -> RunnerDecision:
    """Declare the draft's MoE runner, unless the user passed --speculative-moe-runner-backend."""
    if server_args.speculative_moe_runner_backend is not None:  # raw field: the user's own flag
        decision = RunnerDecision(None, None, "user-flag",
                                  f"--speculative-moe-runner-backend {server_args.speculative_moe_runner_backend} "
                                  "was given; left untouched")
        logger.info("glm_mtp: draft MoE runner %s (%s)", server_args.speculative_moe_runner_backend, decision.reason)
        return decision
    from sglang.srt.arg_groups.overrides import declare_resolution
    from sglang.srt.runtime_context import get_platform

    platform = get_platform()
    draft = (result.draft_precision if result else None) or "bf16"
    target = (result.target_precision if result else None) or precision_of_method(view.quantization)
    facts = RunnerFacts(
        draft_precision=draft, target_precision=target, target_backend=str(view.moe_runner_backend),
        device_sm=_device_sm(platform), is_hip=bool(platform.is_hip),
        flashinfer_available=bool(platform.has_flashinfer) and importlib.util.find_spec("flashinfer") is not None,
        tp_size=int(view.tp_size or 1), ep_size=int(view.ep_size or 1), moe_a2a_backend=view.moe_a2a_backend)
    decision = choose_draft_runner(facts)
    fields: dict[str, Any] = {}
    if decision.backend is not None:
        fields["speculative_moe_runner_backend"] = decision.backend
    if decision.a2a_backend is not None:
        if server_args.speculative_moe_a2a_backend is None:  # raw field: not the user's own flag
            fields["speculative_moe_a2a_backend"] = decision.a2a_backend
        elif server_args.speculative_moe_a2a_backend != decision.a2a_backend:
            logger.warning("glm_mtp: --speculative-moe-a2a-backend %s was given and is left untouched, although "
                           "the %s draft runner expects %s", server_args.speculative_moe_a2a_backend,
                           decision.backend, decision.a2a_backend)
    if fields:
        declare_resolution(server_args, DECLARATION_SOURCE, **fields)
    chosen = decision.backend or view.speculative_moe_runner_backend
    logger.info("glm_mtp: draft MoE runner %s [rule %s]: %s", chosen, decision.rule, decision.reason)
    return decision


def _device_sm(platform: Any) -> int | None:
    """The GPU generation, or None (the rule table's "unknown GPU"); a failed probe is a warning, not a silence."""
    try:
        sm = int(platform.device_sm)
    except Exception as exc:  # NVML absent, no GPU, or a driver error: the decision falls back to unknown-gpu
        logger.warning("glm_mtp: cannot read the GPU generation (%s: %s); the draft MoE runner is chosen as for an "
                       "unknown GPU (docs/moe-runner.md); pass --speculative-moe-runner-backend to choose it",
                       type(exc).__name__, exc)
        logger.debug("glm_mtp: the GPU generation probe failed here", exc_info=True)
        return None
    return sm or None
