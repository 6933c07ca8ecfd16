"""Every GLM MTP family and the backstop for other MTP drafts, against the real SGLang 0.5.23 on CPU.

Run as ``python tests/scenarios_families.py <family> '<json params>'`` in a fresh process;
the last stdout line is ``RESULT:<json>`` (tests/test_families_draft.py asserts on it).
What is real and what is faked is listed in tests/sglang_harness.py (only GPU facts are
faked). Families:

* ``glm``: for GLM-4.5, GLM-4.7-Flash, GLM-5.3-Flash and GLM-OCR tiny checkpoints, the real
  draft class built and loaded through SGLang's loader (complete / missing layer / missing
  expert or projection), then a second real ``load_weights`` carrying a subset (RL weight
  sync) through SGLang's own ``WeightUpdater.update_weights_from_tensor``.
* ``backstop``: non-GLM draft classes (``Qwen3MoeForCausalLMMTP``, ``Qwen3NextForCausalLMMTP``, ``MiMoV2MTP``)
  built from checkpoints that lack draft tensors.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sglang_harness as harness  # noqa: E402  (path set above; this file runs as a script)
from sglang_mode import scenario_main  # noqa: E402


def _error(exc: BaseException) -> dict[str, Any]:
    from sglang_glm_mtp.demo.gpu_emulation import error_fields

    return {**error_fields(exc), "where": "".join(traceback.format_exception(exc)[-8:])}


def _build(case: dict[str, Any], logs: harness.LogCapture) -> tuple[dict[str, Any], Any]:
    from sglang_glm_mtp.plugin import coverage

    logs.clear()
    coverage.LAST_RESULT.clear()
    with harness.environment(case.get("env")):
        model = None
        try:
            postprocess = case.get("postprocess", True)
            model = harness.build_draft(case["model"], case.get("argv", []), generation=case.get("generation", "sm90"),
                                        via="get_model" if postprocess else "steps", postprocess=postprocess,
                                        build_on_platform=case.get("build_on_platform", False))
            out: dict[str, Any] = {"ok": True, "class": type(model).__name__,
                                   "params": sorted(n for n, _ in model.named_parameters()),
                                   "quant": _quant_facts(model)}
        except Exception as exc:  # the test asserts on what SGLang / the plugin raised
            out = _error(exc)
    out["coverage"] = dict(coverage.LAST_RESULT)
    out["logs"] = logs.messages("glm_mtp")
    return out, model


def _quant_facts(model: Any) -> dict[str, Any]:
    """What SGLang built: the outer (lm_head) config, the decoder's expert and attention methods."""
    def name(module: Any) -> str | None:
        method = getattr(module, "quant_method", None)
        return None if method is None else type(method).__name__

    decoder = getattr(model.model, "decoder", None)
    if decoder is None:  # not a NextN layout (Qwen MTP classes): nothing GLM-specific to report
        return {}
    experts = getattr(getattr(decoder, "mlp", None), "experts", None)
    shared = getattr(getattr(decoder, "mlp", None), "shared_experts", None)
    outer = getattr(model, "quant_config", None)
    return {"outer": None if outer is None else outer.get_name(), "lm_head": name(model.lm_head),
            "experts": name(experts) if experts is not None else None,
            "shared_experts": name(shared.gate_up_proj) if shared is not None else None,
            "o_proj": name(decoder.self_attn.o_proj), "eh_proj": name(model.model.eh_proj),
            "fused_shared": int(getattr(experts, "num_fused_shared_experts", 0) or 0)}


def _weight_sync(model: Any, model_dir: str, prefix: str) -> dict[str, Any]:
    """A second load carrying a subset, through SGLang's own update path (the ModelRunner is faked: it needs a GPU)."""
    from sglang.srt.model_executor.model_runner_components.weight_updater import WeightUpdater

    tensors = harness.checkpoint_tensors(model_dir, prefix)
    subset = [(name, t) for name, t in sorted(tensors.items()) if name.endswith("eh_proj.weight")]
    runner = WeightUpdater(tp_rank=0, device="cpu", gpu_id=0, model_config=None, custom_weight_loaders={},
                           get_model=lambda: model, update_model_fields=lambda *a, **k: None,
                           recapture_cuda_graph=lambda: None, get_model_runner=lambda: None)
    try:
        ok, message = runner.update_weights_from_tensor(subset)
        return {"ok": bool(ok), "message": message, "subset": [n for n, _ in subset]}
    except Exception as exc:
        return _error(exc)


def _cpu_rope_device() -> None:
    """GPU fact: DeepSeek-YaRN rotary embeddings (MLA with rope_parameters: GLM-4.7-Flash) ask for an accelerator
    at construction; on CPU they are built on the CPU (only a forward pass would use them)."""
    from sglang.srt.layers.rotary_embedding import rope_variant

    rope_variant.get_device = lambda *a, **k: "cpu"


def family_glm(params: dict[str, Any]) -> dict[str, Any]:
    harness.install_shims("sm90")
    _cpu_rope_device()
    harness.load_plugins_real()
    logs = harness.capture_logs("sglang_glm_mtp")
    result: dict[str, Any] = {"cases": {}}
    for case in params["cases"]:
        out, model = _build(case, logs)
        if case.get("weight_sync") and model is not None:
            out["weight_sync"] = _weight_sync(model, case["model"], case["weight_sync"])
            from sglang_glm_mtp.plugin import coverage

            out["coverage_after_sync"] = dict(coverage.LAST_RESULT)
        result["cases"][case["name"]] = out
    from sglang.srt.plugins.hook_registry import HookRegistry

    result["patched"] = sorted(HookRegistry._patched)
    return result


def family_dialects(params: dict[str, Any]) -> dict[str, Any]:
    """compressed-tensors, Quark and FP8 targets, built by SGLang's real loader; ``stock``: with no plugin at all
    (an ``SGLANG_PLUGINS`` allow-list that names no installed plugin, as an operator would disable it)."""
    import os

    if params.get("stock"):
        os.environ["SGLANG_PLUGINS"] = "no-installed-plugin"
    harness.install_shims(params.get("generation", "sm100"))
    harness.emulate_quark_capability(params.get("generation", "sm100"))
    _cpu_rope_device()
    harness.load_plugins_real()
    from sglang.srt.plugins.hook_registry import HookRegistry

    logs = harness.capture_logs("sglang_glm_mtp")
    result: dict[str, Any] = {"cases": {}, "patched": sorted(HookRegistry._patched)}
    for case in params["cases"]:
        out, _ = _build(case, logs)
        result["cases"][case["name"]] = out
    result["matchers"] = [_sglang_excluded(*query) for query in params.get("matchers", [])]
    return result


def _sglang_excluded(dialect: str, name: str, entries: list[str]) -> Any:
    """SGLang's own exclusion rule of ``dialect`` for module ``name`` (checkpoint/quant_match.py mirrors these)."""
    from sglang.srt.layers.quantization.compressed_tensors.utils import should_ignore_layer as ct_ignored
    from sglang.srt.layers.quantization.fp8 import Fp8Config
    from sglang.srt.layers.quantization.quark.utils import should_ignore_layer as quark_ignored
    from sglang.srt.layers.quantization.utils import is_layer_skipped

    from sglang_glm_mtp.checkpoint.quant_match import PACKED_MODULES

    fused = {name: list(shards) for name, shards in PACKED_MODULES.items()}  # what DeepSeek/GLM models declare
    try:
        if dialect == "compressed-tensors":
            return bool(ct_ignored(name, ignore=entries, fused_mapping=fused))
        if dialect == "quark":
            return bool(quark_ignored(name, entries, fused_mapping=fused))
        config = Fp8Config.from_config({"quant_method": "fp8", "activation_scheme": "dynamic",
                                        "modules_to_not_convert": entries})
        return bool(is_layer_skipped(name, config.ignored_layers, fused_mapping=fused))
    except ValueError as exc:
        return f"ValueError: {exc}"


FAMILIES = {"glm": family_glm, "backstop": family_glm, "dialects": family_dialects}

if __name__ == "__main__":
    scenario_main(FAMILIES)
