"""Every SGLang name the plugin hooks or relies on, in one table: the only list to edit for a new SGLang.

Data only (no imports from the plugin), so registration, strict mode, the canary and the
draft hooks all read it without importing each other.
"""

from __future__ import annotations

PLUGIN_ENTRY_POINT = "glm_mtp"
DISTRIBUTION = "sglang-glm-mtp"

#: The resolution step the preflight wraps (``register_resolution_hook``).
RESOLUTION_STEP = "handle_speculative_decoding"

ADD_CLI_ARGS = "sglang.srt.server_args.ServerArgs.add_cli_args"
#: AFTER: the class SGLang is about to build; draft hooks are installed from here (scheduler only).
MODEL_ARCHITECTURE = "sglang.srt.model_loader.utils.get_model_architecture"
INTERNAL_STATE = "sglang.srt.managers.scheduler.Scheduler.get_internal_state"
#: Main process: /server_info's top-level "glm_mtp" section (server_info.py).
SERVER_INFO_TARGET = "sglang.srt.utils.common.build_server_info"
#: Every scheduler rank, once per verify step (canary.py); the scheduler module imports it already.
CANARY_TARGET = ("sglang.srt.managers.scheduler_components.metrics_reporter."
                 "SchedulerMetricsReporter.update_spec_metrics")

EAGER_TARGETS: tuple[str, ...] = (ADD_CLI_ARGS, MODEL_ARCHITECTURE, INTERNAL_STATE, SERVER_INFO_TARGET,
                                  CANARY_TARGET)

_MODELS = "sglang.srt.models"
_DSV3 = f"{_MODELS}.deepseek_nextn.DeepseekV3ForCausalLMNextN"
_GLM5 = f"{_MODELS}.glm4_moe.GlmMoeDsaForCausalLMNextN"

#: A class SGLang builds as a draft from the target checkpoint: its name ends in one of these.
DRAFT_CLASS_SUFFIXES = ("NextN", "MTP")

#: Draft classes with a ``_resolve_nextn_quant_config`` seam (subclasses that call super() go through it:
#: GLM-5.3-Flash's ``Glm5NextForConditionalGenerationNextN``).
QUANT_RESOLVERS: tuple[str, ...] = (f"{_GLM5}._resolve_nextn_quant_config", f"{_DSV3}._resolve_nextn_quant_config")

#: Draft classes without that seam -> the NextN model constructor they hand the target's quant config to,
#: which nulls ``modelopt_fp4``. Hooked AROUND to pass the draft's own config to the model only (the
#: outer lm_head keeps the target's, as on the DeepSeek path).
QUANT_CONSTRUCTORS: dict[str, str] = {
    "Glm4MoeForCausalLMNextN": f"{_MODELS}.glm4_moe_nextn.Glm4MoeModelNextN.__init__",
    "Glm4MoeLiteForCausalLMNextN": f"{_MODELS}.glm4_moe_lite_nextn.Glm4MoeLiteModelNextN.__init__",
    "GlmOcrForConditionalGenerationNextN": f"{_MODELS}.glm_ocr_nextn.GlmOcrModelNextN.__init__",
}

#: The NextN model constructors that null a ``modelopt_fp4`` config; the NVFP4-draft shield hides the name
#: from exactly these frames (draft_precision.py).
NVFP4_OVERRIDERS: tuple[str, ...] = (f"{_MODELS}.deepseek_nextn.DeepseekModelNextN.__init__",
                                     *QUANT_CONSTRUCTORS.values())

#: ``load_weights`` of the GLM/DeepSeek draft classes: hooked when built (coverage.py); any other draft
#: class's ``load_weights`` is hooked the same way when SGLang resolves it (the backstop). Strict mode
#: checks these exist on the running SGLang.
COVERAGE_TARGETS: tuple[str, ...] = (
    f"{_GLM5}.load_weights",
    f"{_DSV3}.load_weights",
    f"{_MODELS}.glm4_moe_nextn.Glm4MoeForCausalLMNextN.load_weights",
    f"{_MODELS}.glm4_moe_lite_nextn.Glm4MoeLiteForCausalLMNextN.load_weights",
    f"{_MODELS}.glm5_next_nextn.Glm5NextForConditionalGenerationNextN.load_weights",
    f"{_MODELS}.glm_ocr_nextn.GlmOcrForConditionalGenerationNextN.load_weights",
)

#: Draft classes outside the family table whose complete checkpoint the backstop has been shown to pass on the real
#: SGLang (tests/test_families_draft.py). Any gap refuses them, as for the family table. For every other draft
#: class the backstop refuses only a draft that received nothing at all; a partial gap is an ERROR naming the
#: parameters, since an unverified class may fill a parameter some way the recorder does not see.
BACKSTOP_VERIFIED: tuple[str, ...] = ("Qwen3MoeForCausalLMMTP",)

#: Draft classes whose loader the upstream coverage fix (patches/0001, ``do_load_weights``) checks itself;
#: when SGLang has that fix the plugin stands down for these only and keeps the backstop for every other.
UPSTREAM_COVERED: tuple[str, ...] = ("DeepseekV3ForCausalLMNextN", "GlmMoeDsaForCausalLMNextN")

#: Installed lazily, when the draft is built; strict mode checks they exist.
LAZY_TARGETS: tuple[str, ...] = QUANT_RESOLVERS + tuple(QUANT_CONSTRUCTORS.values()) + COVERAGE_TARGETS
#: Not hooked, but relied on: strict mode checks they exist.
REQUIRED_ATTRIBUTES: tuple[str, ...] = NVFP4_OVERRIDERS


def load_weights_target(cls: type) -> str:
    """The hook target of a draft class's ``load_weights`` (its own, or the one it inherits)."""
    return f"{cls.__module__}.{cls.__qualname__}.load_weights"


def is_draft_class(name: str) -> bool:
    return name.endswith(DRAFT_CLASS_SUFFIXES)
