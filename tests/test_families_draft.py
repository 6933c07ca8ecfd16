"""Every GLM MTP family, and the backstop for other MTP drafts, through the real SGLang 0.5.23 draft classes on CPU.

Each module fixture runs one scenario family of tests/scenarios_families.py in a fresh
subprocess. Real: plugin discovery, resolution, SGLang's loader and the real draft classes
(``Glm4MoeForCausalLMNextN``, ``Glm4MoeLiteForCausalLMNextN``,
``Glm5NextForConditionalGenerationNextN``, ``GlmOcrForConditionalGenerationNextN``,
``Qwen3MoeForCausalLMMTP``, ``Qwen3NextForCausalLMMTP``, ``MiMoV2MTP``) and SGLang's own
``WeightUpdater.update_weights_from_tensor``. Faked, because they need a GPU: see
tests/sglang_harness.py, plus the accelerator query of DeepSeek-YaRN rotary embeddings and
the ModelRunner callbacks the WeightUpdater is constructed with. Checkpoints: tiny configs
from transformers' own config classes (``synthetic.TINY_CONFIGS``).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from sglang_glm_mtp import synthetic
from sglang_glm_mtp.checkpoint import inspect_checkpoint as inspect

from sglang_glm_mtp.plugin.targets import BACKSTOP_VERIFIED
from sglang_mode import PLUGIN_ACTIVE, run_scenario

pytestmark = [pytest.mark.sglang,
              pytest.mark.skipif(importlib.util.find_spec("sglang") is None, reason="needs sglang==0.5.23"),
              pytest.mark.skipif(not PLUGIN_ACTIVE, reason="asserts on the plugin's coverage messages")]
SCENARIOS = Path(__file__).with_name("scenarios_families.py")
TRITON = ["--speculative-moe-runner-backend", "triton"]
SKIP_PREFLIGHT = {"SGLANG_GLM_MTP_SKIP_PREFLIGHT": "1"}

#: family -> (draft prefix of the tiny checkpoint, extra argv, a projection to drop, how coverage names it)
GLM: dict[str, tuple[str, list[str], str, str]] = {
    "glm4.5": ("model.layers.4.", TRITON, "self_attn.k_proj.weight",
               "model.decoder.self_attn.qkv_proj.weight (shards ['k'])"),
    "glm4.7-flash": ("model.layers.4.", TRITON, "self_attn.kv_b_proj.weight", "model.decoder.self_attn.kv_b_proj.weight"),
    "glm5.3-flash": ("model.language_model.layers.4.", TRITON + ["--disable-radix-cache"],
                     "self_attn.indexer.index_kpool_compress_gate",
                     "model.decoder.self_attn.indexer.index_kpool_compress_gate"),
    "glm-ocr": ("model.language_model.layers.4.", [], "mlp.down_proj.weight", "model.decoder.mlp.down_proj.weight"),
}
MOE = ("glm4.5", "glm4.7-flash", "glm5.3-flash")


def _checkpoints(root: Path) -> dict[str, tuple[Path, list[str], dict[str, str]]]:
    """name -> (checkpoint, argv, env) for every GLM case."""
    out: dict[str, tuple[Path, list[str], dict[str, str]]] = {}
    for family, (prefix, argv, projection, _) in GLM.items():
        def make(name: str, drop: Callable[[str], bool] | None = None, **kw: Any) -> Path:
            return synthetic.tiny_bf16(root / f"{family}-{name}", family, drop=drop, **kw)

        out[f"{family}/complete"] = (make("complete"), argv, {})
        out[f"{family}/missing_layer"] = (make("missing", with_draft=False), argv, SKIP_PREFLIGHT)
        out[f"{family}/missing_projection"] = (make("projection", lambda n, p=prefix + projection: n == p),
                                               argv, SKIP_PREFLIGHT)
        if family in MOE:
            out[f"{family}/missing_expert"] = (make("expert", lambda n, p=prefix: n.startswith(p + "mlp.experts.1.")),
                                               argv, SKIP_PREFLIGHT)
    for family in GLM:  # with the preflight on (GLM-5.3-Flash, GLM-OCR: SGLang fills in no draft path)
        out[f"{family}/missing_layer_preflight"] = (out[f"{family}/missing_layer"][0], GLM[family][1], {})
    out["glm5.3-flash/model_layers_prefix"] = (synthetic.tiny_bf16(root / "glm5.3-flash-plain", "glm5.3-flash",
                                                                   draft_prefix="model.layers.4"),
                                               GLM["glm5.3-flash"][1], {})
    return out


@pytest.fixture(scope="module")
def glm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("families")
    checkpoints = _checkpoints(root)
    cases = [{"name": name, "model": str(path), "argv": argv, "env": env} for name, (path, argv, env) in
             checkpoints.items()]
    for case in cases:
        if case["name"] == "glm4.5/complete":
            case["weight_sync"] = GLM["glm4.5"][0]
    result = run_scenario(SCENARIOS, "glm", {"cases": cases}, timeout=600)
    result["checkpoints"] = {name: str(path) for name, (path, _, _) in checkpoints.items()}
    return result


def _refused(case: dict[str, Any]) -> str:
    assert not case["ok"], "expected DraftWeightsNotLoadedError, the draft loaded"
    assert case["error_type"] == "DraftWeightsNotLoadedError", f"{case['error_type']}: {case['error']}"
    return case["error"]


@pytest.mark.parametrize("family", list(GLM))
def test_complete_draft_loads_and_every_parameter_is_covered(glm: dict[str, Any], family: str) -> None:
    case = glm["cases"][f"{family}/complete"]
    assert case["ok"], f"{case.get('error_type')}: {case.get('error')}\n{case.get('where')}"
    cov = case["coverage"]
    assert cov["covered"] == cov["parameters"] > 0 and not cov["uncovered"], cov
    assert cov["layer_prefix"] == GLM[family][0].rstrip("."), "the family table names where the draft lives"


@pytest.mark.parametrize("family", list(GLM))
def test_missing_layer_is_refused_after_load(glm: dict[str, Any], family: str) -> None:
    message = _refused(glm["cases"][f"{family}/missing_layer"])
    assert f"received no {GLM[family][0].rstrip('.')}.* tensors at all" in message
    assert "model.eh_proj.weight" in message and "SGLANG_GLM_MTP_SKIP_COVERAGE=1" in message


@pytest.mark.parametrize("family", list(GLM))
def test_missing_projection_is_named(glm: dict[str, Any], family: str) -> None:
    message = _refused(glm["cases"][f"{family}/missing_projection"])
    assert GLM[family][3] in message
    assert glm["cases"][f"{family}/missing_projection"]["coverage"]["uncovered"] == [GLM[family][3]]


@pytest.mark.parametrize("family", MOE)
def test_missing_expert_is_named(glm: dict[str, Any], family: str) -> None:
    message = _refused(glm["cases"][f"{family}/missing_expert"])
    assert "model.decoder.mlp.experts.w13_weight (experts 1)" in message
    assert "model.decoder.mlp.experts.w2_weight (experts 1)" in message


@pytest.mark.parametrize("family", sorted(GLM))
def test_preflight_refuses_a_missing_layer_and_passes_a_complete_one(glm: dict[str, Any], family: str) -> None:
    """Refused in resolution (before anything is built), naming the layer; the complete one resolved and loaded.
    For GLM-5.3-Flash and GLM-OCR SGLang sets no draft path, so the preflight judges ``--model-path``."""
    case = glm["cases"][f"{family}/missing_layer_preflight"]
    assert not case["ok"] and case["error_type"] == "DraftLayerMissingError", case
    assert f"draft layer {GLM[family][0].rstrip('.')} is missing from" in case["error"]
    assert case["coverage"] == {}, "refused before the draft was built"
    assert glm["cases"][f"{family}/complete"]["ok"]


def test_glm53_flash_also_loads_its_draft_from_model_layers(glm: dict[str, Any]) -> None:
    case = glm["cases"]["glm5.3-flash/model_layers_prefix"]
    assert case["ok"], f"{case.get('error_type')}: {case.get('error')}"
    assert case["coverage"]["covered"] == case["coverage"]["parameters"] > 0


def test_weight_sync_after_a_complete_load_is_never_judged(glm: dict[str, Any]) -> None:
    """RL weight sync: SGLang's own update_weights_from_tensor with one tensor; the first load was judged."""
    case = glm["cases"]["glm4.5/complete"]
    sync = case["weight_sync"]
    assert sync["ok"] and sync["message"] == "Success", sync
    assert sync["subset"] == ["model.layers.4.eh_proj.weight"]
    assert case["coverage_after_sync"] == case["coverage"], "the second load left the first load's verdict alone"


def test_draft_hooks_cover_exactly_the_classes_built(glm: dict[str, Any]) -> None:
    patched = glm["patched"]
    for cls in ("glm4_moe_nextn.Glm4MoeForCausalLMNextN.load_weights",
                "glm4_moe_lite_nextn.Glm4MoeLiteForCausalLMNextN.load_weights",
                "glm5_next_nextn.Glm5NextForConditionalGenerationNextN.load_weights",
                "glm_ocr_nextn.GlmOcrForConditionalGenerationNextN.load_weights",
                "glm4_moe_nextn.Glm4MoeModelNextN.__init__"):
        assert f"sglang.srt.models.{cls}" in patched
    assert not any("DeepseekV4" in t or "MiMo" in t for t in patched), "no hooks on classes never built"


@pytest.mark.parametrize("family", list(GLM))
def test_check_judges_each_family(glm: dict[str, Any], family: str) -> None:
    complete = inspect(glm["checkpoints"][f"{family}/complete"])
    assert complete.status == "ready" and complete.draft_prefix == GLM[family][0].rstrip(".")
    missing = inspect(glm["checkpoints"][f"{family}/missing_layer"])
    assert missing.status == "missing" and missing.found_tensors == 0
    partial = inspect(glm["checkpoints"][f"{family}/missing_projection"])
    assert partial.status == "incomplete" and partial.missing == [GLM[family][0] + GLM[family][2]]


def test_check_accepts_glm53_flash_under_either_prefix(glm: dict[str, Any]) -> None:
    report = inspect(glm["checkpoints"]["glm5.3-flash/model_layers_prefix"])
    assert report.status == "ready" and report.draft_prefix == "model.layers.4"


# ============================================================================ backstop (non-GLM drafts)


def _qwen3_moe(directory: Path, *, complete: bool) -> Path:
    """A tiny Qwen3-MoE checkpoint whose MTP block (``mtp.*``) is complete, or holds only fc and its norms."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig

    hidden, heads, kv, head_dim, experts, inter = 64, 4, 2, 16, 4, 32
    cfg = AutoConfig.for_model("qwen3_moe", hidden_size=hidden, vocab_size=256, num_hidden_layers=2,
                               num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim,
                               intermediate_size=128, moe_intermediate_size=inter, num_experts=experts,
                               num_experts_per_tok=2, max_position_embeddings=4096,
                               num_nextn_predict_layers=1).to_dict()
    cfg["architectures"] = ["Qwen3MoeForCausalLM"]
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (256, hidden), "lm_head.weight": (256, hidden),
                                          "mtp.fc.weight": (hidden, 2 * hidden),
                                          "mtp.pre_fc_norm_embedding.weight": (hidden,),
                                          "mtp.pre_fc_norm_hidden.weight": (hidden,)}
    if complete:
        layer = "mtp.layers.0."
        shapes.update({f"{layer}self_attn.q_proj.weight": (heads * head_dim, hidden),
                       f"{layer}self_attn.k_proj.weight": (kv * head_dim, hidden),
                       f"{layer}self_attn.v_proj.weight": (kv * head_dim, hidden),
                       f"{layer}self_attn.o_proj.weight": (hidden, heads * head_dim),
                       f"{layer}self_attn.q_norm.weight": (head_dim,), f"{layer}self_attn.k_norm.weight": (head_dim,),
                       f"{layer}input_layernorm.weight": (hidden,), f"{layer}post_attention_layernorm.weight": (hidden,),
                       f"{layer}mlp.gate.weight": (experts, hidden), "mtp.norm.weight": (hidden,)})
        for e in range(experts):
            shapes.update({f"{layer}mlp.experts.{e}.gate_proj.weight": (inter, hidden),
                           f"{layer}mlp.experts.{e}.up_proj.weight": (inter, hidden),
                           f"{layer}mlp.experts.{e}.down_proj.weight": (hidden, inter)})
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(cfg))
    save_file({k: torch.ones(v, dtype=torch.bfloat16) for k, v in shapes.items()}, str(directory / "model.safetensors"))
    return directory


def _qwen3_next(directory: Path, *, mtp: bool = True) -> Path:
    """A tiny Qwen3-Next checkpoint whose MTP block holds only fc and its norms (``mtp=False``: no MTP block)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig

    cfg = AutoConfig.for_model("qwen3_next", hidden_size=64, vocab_size=256, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=16, intermediate_size=128,
                               moe_intermediate_size=32, shared_expert_intermediate_size=32, num_experts=4,
                               num_experts_per_tok=2, max_position_embeddings=4096, num_nextn_predict_layers=1,
                               linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
                               linear_value_head_dim=16, layer_types=["linear_attention", "full_attention"]).to_dict()
    cfg["architectures"] = ["Qwen3NextForCausalLM"]
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(cfg))
    shapes = {"model.embed_tokens.weight": (256, 64), "lm_head.weight": (256, 64)}
    if mtp:
        shapes.update({"mtp.fc.weight": (64, 128), "mtp.pre_fc_norm_embedding.weight": (64,),
                       "mtp.pre_fc_norm_hidden.weight": (64,)})
    save_file({k: torch.ones(v, dtype=torch.bfloat16) for k, v in shapes.items()}, str(directory / "model.safetensors"))
    return directory


def _mimo_v2(directory: Path) -> Path:
    """A tiny MiMo-V2-Flash checkpoint whose MTP layer holds only ``enorm`` and the attention sink bias.

    transformers' ``mimo_v2_flash`` config plus the fields SGLang's MiMo-V2 classes read (the release's
    own config spells them so); the sink bias is the parameter SGLang writes with ``param.data.copy_()``.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig

    cfg = AutoConfig.for_model("mimo_v2_flash", hidden_size=64, vocab_size=256, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=16, v_head_dim=16,
                               intermediate_size=128, moe_intermediate_size=32, n_routed_experts=4,
                               num_experts_per_tok=2, max_position_embeddings=4096, sliding_window=16,
                               layer_types=["full_attention", "sliding_attention"],
                               mlp_layer_types=["dense", "sparse"]).to_dict()
    cfg.update({"architectures": ["MiMoV2FlashForCausalLM"], "swa_head_dim": 16, "swa_v_head_dim": 16,
                "swa_num_attention_heads": 4, "swa_num_key_value_heads": 2, "sliding_window_size": 16,
                "layernorm_epsilon": 1e-5, "add_swa_attention_sink_bias": True, "hybrid_layer_pattern": [0, 1],
                "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}, "partial_rotary_factor": 1.0,
                "num_nextn_predict_layers": 1})
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(cfg))
    shapes = {"model.embed_tokens.weight": (256, 64), "lm_head.weight": (256, 64),
              "model.mtp.layers.0.self_attn.attention_sink_bias": (4,), "model.mtp.layers.0.enorm.weight": (64,)}
    save_file({k: torch.ones(v, dtype=torch.bfloat16) for k, v in shapes.items()}, str(directory / "model.safetensors"))
    return directory


@pytest.fixture(scope="module")
def backstop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("backstop")
    cases = [
        {"name": "qwen3moe_complete", "model": str(_qwen3_moe(root / "qwen3moe-complete", complete=True)),
         "argv": TRITON},
        {"name": "qwen3moe_partial", "model": str(_qwen3_moe(root / "qwen3moe-partial", complete=False)),
         "argv": TRITON},
        {"name": "qwen3moe_partial_skip", "model": str(root / "qwen3moe-partial"), "argv": TRITON,
         "env": {"SGLANG_GLM_MTP_SKIP_COVERAGE": "1"}},
        {"name": "qwen3next_partial", "model": str(_qwen3_next(root / "qwen3next-partial")),
         "argv": TRITON + ["--disable-radix-cache"]},
        {"name": "mimo_v2_partial", "model": str(_mimo_v2(root / "mimo-v2-partial")), "argv": ["--disable-radix-cache"]},
        {"name": "qwen3next_absent", "model": str(_qwen3_next(root / "qwen3next-absent", mtp=False)),
         "argv": TRITON + ["--disable-radix-cache"]},
    ]
    return run_scenario(SCENARIOS, "backstop", {"cases": cases}, timeout=600)


def test_backstop_passes_a_complete_qwen3_moe_mtp(backstop: dict[str, Any]) -> None:
    case = backstop["cases"]["qwen3moe_complete"]
    assert case["ok"] and case["class"] == "Qwen3MoeForCausalLMMTP", f"{case.get('error_type')}: {case.get('error')}"
    assert case["coverage"]["covered"] == case["coverage"]["parameters"] > 0


@pytest.mark.parametrize("name, draft_class, absent, present", [
    ("qwen3moe_partial", "Qwen3MoeForCausalLMMTP", "model.layers.0.mlp.experts.w13_weight (experts 0, 1, 2, 3)",
     "fc.weight"),
    ("qwen3next_partial", "Qwen3NextForCausalLMMTP", "model.layers.0.mlp.shared_expert.gate_up_proj.weight",
     "fc.weight"),
    ("mimo_v2_partial", "MiMoV2MTP", "model.mtp_block.self_attn.qkv_proj.weight", "model.enorm.weight"),
])
def test_backstop_names_the_draft_parameters_that_got_nothing(backstop: dict[str, Any], name: str,
                                                              draft_class: str, absent: str, present: str) -> None:
    case = backstop["cases"][name]
    if draft_class in BACKSTOP_VERIFIED:  # a class whose complete checkpoint is shown to pass: any gap refuses
        message = _refused(case)
    else:  # unverified class, partial gap: one ERROR naming the parameters, the launch goes on
        assert case["ok"], f"{case.get('error_type')}: {case.get('error')}"
        assert case["coverage"]["unverified"] is True
        message = next(line for line in case["logs"] if "received no checkpoint tensor" in line)
        assert "Not refused" in message
    assert f"parameters of the MTP draft {draft_class} received no checkpoint tensor" in message
    uncovered = case["coverage"]["uncovered"]
    assert absent in uncovered and any(n.endswith("input_layernorm.weight") for n in uncovered)
    assert present not in uncovered, "what the checkpoint holds is not reported"
    assert "sglang-glm-mtp check" not in message, "check does not know this architecture"


def test_backstop_refuses_an_unverified_class_that_received_nothing(backstop: dict[str, Any]) -> None:
    """No MTP tensor at all is proven absence, whatever the class: refused like the family table."""
    message = _refused(backstop["cases"]["qwen3next_absent"])
    assert "parameters of the MTP draft Qwen3NextForCausalLMMTP received no checkpoint tensor" in message
    assert "Qwen3NextForCausalLMMTP" not in BACKSTOP_VERIFIED


def test_backstop_sees_parameters_written_with_copy(backstop: dict[str, Any]) -> None:
    """MiMo-V2 writes its attention sink bias with ``param.data.copy_()``, no weight_loader: not a gap."""
    coverage = backstop["cases"]["mimo_v2_partial"]["coverage"]
    assert "model.mtp_block.self_attn.attention_sink_bias" not in coverage["uncovered"]
    assert coverage["covered"] == 2, coverage


def test_backstop_has_the_same_opt_out(backstop: dict[str, Any]) -> None:
    case = backstop["cases"]["qwen3moe_partial_skip"]
    assert case["ok"] and case["coverage"]["skipped"] and case["coverage"]["uncovered"]
    assert any("SGLANG_GLM_MTP_SKIP_COVERAGE=1, continuing although" in line for line in case["logs"])


# ============================================================================ draft precision without a resolver seam


@pytest.fixture(scope="module")
def prec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """GLM-4.5 and GLM-4.7-Flash NVFP4 targets with BF16 and NVFP4 draft layers (emulated SM100 construction)."""
    root = tmp_path_factory.mktemp("precision")
    blackwell = {"generation": "sm100", "postprocess": False, "build_on_platform": True}
    fp4 = ["--quantization", "modelopt_fp4"]
    cases = []
    for family in ("glm4.5",):
        for storage in ("bf16", "nvfp4"):
            pair = synthetic.tiny_pair(root / f"{family}-{storage}", family=family, target_has_draft=True,
                                       draft_storage=storage)
            cases.append({"name": f"{family}/{storage}", "model": str(pair.target), "argv": fp4, **blackwell})
    return run_scenario(SCENARIOS, "glm", {"cases": cases}, timeout=600)


def test_glm45_bf16_draft_under_nvfp4_target_is_built_unquantized(prec: dict[str, Any]) -> None:
    case = prec["cases"]["glm4.5/bf16"]
    assert case["ok"], f"{case.get('error_type')}: {case.get('error')}\n{case.get('where')}"
    assert case["quant"]["experts"] == "UnquantizedFusedMoEMethod" and case["quant"]["outer"] == "modelopt_fp4"
    assert any("draft model.layers.4 is stored BF16" in line for line in case["logs"]), case["logs"]


def test_glm45_nvfp4_draft_is_built_nvfp4_through_the_constructor_seam(prec: dict[str, Any]) -> None:
    """Stock SGLang nulls modelopt_fp4 in Glm4MoeModelNextN.__init__ and the U8 weights fail to load."""
    case = prec["cases"]["glm4.5/nvfp4"]
    assert case["ok"], f"{case.get('error_type')}: {case.get('error')}\n{case.get('where')}"
    assert case["quant"]["experts"] == "ModelOptNvFp4FusedMoEMethod", case["quant"]
    assert case["coverage"]["covered"] == case["coverage"]["parameters"] > 0
    assert any("stored NVFP4" in line and "keeping modelopt_fp4" in line for line in case["logs"]), case["logs"]
