"""The plugin in SGLang's scheduler: the real NextN draft built, loaded and checked.

Each module fixture runs one scenario family of tests/sglang_scenarios.py in a fresh
subprocess (SGLang's imports take ~10 s and leave per-process state) and the tests
assert on its ``RESULT:`` line.

Real in every test: plugin discovery through the installed ``glm_mtp`` entry point
(``SGLANG_PLUGINS=glm_mtp`` + ``load_plugins()``), ``prepare_server_args`` +
resolution with the plugin's resolution hook, ``publish``, gloo process groups,
``initialize_moe_config`` and the draft worker's three speculative contexts,
``ModelConfig(is_draft_model=True)``, SGLang's model loader (``get_model``, or the
same steps without NVFP4 post-processing), the real ``GlmMoeDsaForCausalLMNextN`` /
``DeepseekV3ForCausalLMNextN`` with their real ``load_weights`` over the real
safetensors iterator, and the plugin's lazy hooks installed from
``get_model_architecture``. Faked, because it needs a GPU: the GPU generation
(``override_platform`` + ``torch.cuda.get_device_capability``), the vLLM rotary
kernel module (forward only), NCCL for 2-rank groups, and where a test says so the
CUDA-only DSA indexer fusion switch. Nothing runs a forward pass.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from sglang_glm_mtp import synthetic

from sglang_mode import PLUGIN_ACTIVE, UPSTREAM, pick, plugin_only, run_scenario, sglang_before

pytestmark = [pytest.mark.sglang,
              pytest.mark.skipif(importlib.util.find_spec("sglang") is None, reason="needs sglang==0.5.23")]
SCENARIOS = Path(__file__).with_name("sglang_scenarios.py")

TRITON = ["--speculative-moe-runner-backend", "triton"]
CUTLASS = ["--speculative-moe-runner-backend", "flashinfer_cutlass"]
FP4 = ["--quantization", "modelopt_fp4"]
# The plugin's variable, and the patched SGLang's (tests/sglang_mode.py); each side ignores the other's.
SKIP_PREFLIGHT = {"SGLANG_GLM_MTP_SKIP_PREFLIGHT": "1", "SGLANG_SKIP_NEXTN_DRAFT_PREFLIGHT": "1"}
EXPERTS = "model.decoder.mlp.experts"


def run_family(family: str, params: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    return run_scenario(SCENARIOS, family, params, timeout=timeout)


def ok(case: dict[str, Any], name: str) -> dict[str, Any]:
    assert case.get("ok"), f"{name}: expected a loaded draft, got {case.get('error_type')}: {case.get('error')}\n" \
                           f"{case.get('where', '')}"
    return case


def refused(case: dict[str, Any], name: str) -> str:
    assert not case.get("ok"), f"{name}: expected DraftWeightsNotLoadedError, but the draft loaded"
    assert case["error_type"] == "DraftWeightsNotLoadedError", \
        f"{name}: expected DraftWeightsNotLoadedError, got {case['error_type']}: {case['error']}\n{case.get('where')}"
    return case["error"]


def coverage_passed(case: dict[str, Any], name: str) -> None:
    if not PLUGIN_ACTIVE:  # a patched SGLang's own check raises on a gap; a loaded draft passed it
        assert case.get("ok"), f"{name}: {case.get('error_type')}: {case.get('error')}"
        return
    cov = case["coverage"]
    assert cov and not cov["uncovered"] and not cov["skipped"], f"{name}: coverage not clean: {cov}"
    assert cov["covered"] == cov["parameters"] > 0, f"{name}: {cov}"
    assert any("draft coverage OK" in line for line in case["logs"]), f"{name}: no 'coverage OK' log: {case['logs']}"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("draft")
    glm = synthetic.tiny_pair(root / "glm")
    no_weights_proj = synthetic.copy_checkpoint(glm.original, root / "no-weights-proj")
    synthetic._drop_tensors(no_weights_proj, lambda n: n == "model.layers.4.self_attn.indexer.weights_proj.weight")
    dsv3 = synthetic.tiny_pair(root / "dsv3", family="deepseek-v3")
    return {
        "original": glm.original, "missing": glm.target,
        "grafted": synthetic.tiny_pair(root / "grafted", target_has_draft=True).target,
        "partial": synthetic.make_variant(root / "partial", "draft-layer-incomplete"),
        "no_weights_proj": no_weights_proj,
        "dsv3_original": dsv3.original, "dsv3_missing": dsv3.target,
        "nvfp4_draft": synthetic.tiny_pair(root / "nvfp4", target_has_draft=True, draft_storage="nvfp4").target,
        "fp8_draft": synthetic.tiny_pair(root / "fp8", target_has_draft=True, draft_storage="fp8",
                                         config_overrides=synthetic.fp8_draft_overrides()).target,
        "bf16_in_fp8_target": _fp8_target(synthetic.tiny_pair(root / "fp8-target",
                                                               config_overrides=synthetic.fp8_draft_overrides()).original),
        "glm45_original": synthetic.tiny_pair(root / "glm45", family="glm4.5").original,
        "ct_bf16": synthetic.tiny_pair(root / "ct", quant_format="compressed-tensors", target_has_draft=True).target,
    }


def _fp8_target(checkpoint: Path) -> Path:
    """A block-FP8 target (config.json quantization_config, as DeepSeek/GLM FP8 releases ship it) whose NextN layer
    is stored BF16 and excluded, as its preflight reads it (status ready). Only the draft is built, so the other
    layers' storage does not matter."""
    config = json.loads((checkpoint / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3",
                                     "weight_block_size": [128, 128], "modules_to_not_convert": ["model.layers.4*"]}
    (checkpoint / "config.json").write_text(json.dumps(config))
    return checkpoint


# ============================================================================ coverage family


@pytest.fixture(scope="module")
def cov(ckpt: dict[str, Path]) -> dict[str, Any]:
    orig = str(ckpt["original"])
    cases = [
        {"name": "bf16_triton", "model": orig, "argv": TRITON},
        {"name": "bf16_cutlass", "model": orig, "argv": CUTLASS},
        {"name": "bf16_loaders", "model": orig, "argv": TRITON, "snapshot_loaders": True},
        {"name": "grafted_fp4", "model": str(ckpt["grafted"]), "argv": FP4, "postprocess": False},
        {"name": "missing", "model": str(ckpt["missing"]), "argv": FP4, "env": SKIP_PREFLIGHT},
        {"name": "missing_skip_coverage", "model": str(ckpt["missing"]), "argv": FP4, "postprocess": False,
         "env": {**SKIP_PREFLIGHT, "SGLANG_GLM_MTP_SKIP_COVERAGE": "1",
                 "SGLANG_SKIP_NEXTN_WEIGHT_COVERAGE_CHECK": "1"}},
        {"name": "partial", "model": str(ckpt["partial"]), "argv": FP4, "env": SKIP_PREFLIGHT,
         "snapshot_loaders": True, "postprocess": False},
        {"name": "dsv3_complete", "model": str(ckpt["dsv3_original"]), "argv": TRITON},
        {"name": "dsv3_missing", "model": str(ckpt["dsv3_missing"]), "argv": FP4, "env": SKIP_PREFLIGHT},
        {"name": "shared_disabled", "model": orig, "argv": TRITON + ["--disable-shared-experts-fusion"]},
        {"name": "shared_enforced", "model": orig, "argv": TRITON + ["--enforce-shared-experts-fusion"]},
        {"name": "glm45_complete", "model": str(ckpt["glm45_original"]), "argv": TRITON},
        # process-global switch: keep these last
        {"name": "indexer_fused", "model": orig, "argv": TRITON, "emulate_cuda_indexer_fusion": True},
        {"name": "indexer_fused_missing_weights_proj", "model": str(ckpt["no_weights_proj"]), "argv": TRITON,
         "emulate_cuda_indexer_fusion": True, "env": SKIP_PREFLIGHT},
    ]
    return run_family("coverage", {"cases": cases})


@plugin_only
def test_plugin_loads_through_its_entry_point_and_hooks_lazily(cov: dict[str, Any]) -> None:
    """Real: ``load_plugins()`` with ``SGLANG_PLUGINS=glm_mtp``. The model hooks are not applied by
    ``load_plugins`` (no ``glm4_moe`` import in every process) but from ``get_model_architecture``."""
    plugins = cov["plugins"]
    assert plugins["entry_point"] == "sglang_glm_mtp.plugin:register"
    assert "sglang.srt.model_loader.utils.get_model_architecture" in plugins["patched"]
    assert not any("glm4_moe" in t or "deepseek_nextn" in t for t in plugins["patched"]), plugins["patched"]
    assert plugins["glm4_moe_imported_by_load_plugins"] is False
    for target in ("glm4_moe.GlmMoeDsaForCausalLMNextN.load_weights",
                   "glm4_moe.GlmMoeDsaForCausalLMNextN._resolve_nextn_quant_config",
                   "deepseek_nextn.DeepseekV3ForCausalLMNextN.load_weights"):
        assert f"sglang.srt.models.{target}" in cov["patched_after"], f"lazy hook {target} not applied"
    # registered outside load_plugins(), yet attributed to the plugin in SGLang's own log line
    assert cov["hook_logs"] and all("plugin=glm_mtp" in line for line in cov["hook_logs"]), cov["hook_logs"]


@pytest.mark.parametrize("name, layout", [("bf16_triton", "gate,up"), ("bf16_cutlass", "up,gate")])
def test_complete_bf16_draft_loads_with_values_in_the_backend_layout(cov: dict[str, Any], name: str,
                                                                      layout: str) -> None:
    """Real ``get_model`` end to end (incl. post-processing) on a BF16 original; the draft MoE runner is baked
    into the expert layout at construction: w13 rows are [gate, up] for triton and [up, gate] for cutlass."""
    case = ok(cov["cases"][name], name)
    coverage_passed(case, name)
    assert case["facts"]["class"] == "GlmMoeDsaForCausalLMNextN"
    assert case["facts"]["experts"]["flashinfer_cutlass"] is (layout == "up,gate")
    values = case["values"]
    assert values["expert_layout"] == {str(e): layout for e in range(4)}, values["expert_layout"]
    assert set(values["w2"].values()) == {"equal"}, values["w2"]
    bad = {k: v for k, v in values["direct"].items() if v != "equal"}
    assert not bad, f"{name}: loaded values differ from the checkpoint: {bad}"
    assert values["direct"]["fused_qkv_a = cat(q_a, kv_a)"] == "equal"
    assert values["direct"]["model.decoder.mlp.shared_experts.gate_up_proj.weight"] == "equal"
    # embed_tokens / lm_head get no tensor (shared from the target later) and are not counted or flagged
    if PLUGIN_ACTIVE:
        assert case["coverage"]["parameters"] == len(case["facts"]["params"]) - 2


def test_weight_loaders_restored_exactly_after_load(cov: dict[str, Any]) -> None:
    """Real construction and ``load_weights_only``; the per-parameter ``weight_loader`` attributes
    (instance attribute or absent) are compared before/after, after a passing and a failing load."""
    for name in ("bf16_loaders", "partial"):
        case = cov["cases"][name]
        assert case["loaders_restored"] is True, f"{name}: loaders changed: {case['loaders_changed']}"
        assert 0 < case["loaders_own"] < case["loaders_total"], case  # both kinds present: some have none


def test_grafted_bf16_draft_in_nvfp4_target_loads_unquantized(cov: dict[str, Any]) -> None:
    """Real: ``ModelOptModelLoader`` path with ``--quantization modelopt_fp4`` on the NVFP4 target carrying a
    grafted BF16 layer 4, up to ``load_weights``. Stopped before post-processing: the NVFP4 lm_head's
    ``process_weights_after_loading`` needs a GPU (``.cuda()``)."""
    case = ok(cov["cases"]["grafted_fp4"], "grafted_fp4")
    coverage_passed(case, "grafted_fp4")
    facts = case["facts"]
    assert facts["outer_quant"] == "modelopt_fp4" and facts["decoder_quant"] is None, facts
    assert facts["experts"]["method"] == "UnquantizedFusedMoEMethod"
    assert facts["params"][f"{EXPERTS}.w13_weight"] == {"shape": [4, 64, 64], "dtype": "bfloat16"}
    assert set(case["values"]["expert_layout"].values()) == {"gate,up"}


@pytest.mark.parametrize("name, streamed", [("missing", 0), ("dsv3_missing", 0)])
def test_missing_draft_layer_is_refused_naming_parameters(cov: dict[str, Any], name: str, streamed: int) -> None:
    """Real: SGLang's silent skip (no ``model.layers.4.*`` in the NVFP4 target) through the real loader with the
    preflight switched off (``SGLANG_GLM_MTP_SKIP_PREFLIGHT=1``); the plugin's coverage check raises in
    ``load_weights``, before any post-processing."""
    message = refused(cov["cases"][name], name)
    assert "received no model.layers.4.* tensors" in message, message
    for param in ("model.eh_proj.weight", "model.decoder.self_attn.fused_qkv_a_proj_with_mqa.weight"):
        assert param in message, f"{name}: {param} not named in: {message}"
    assert pick("SGLANG_GLM_MTP_SKIP_COVERAGE=1", "SGLANG_SKIP_NEXTN_WEIGHT_COVERAGE_CHECK=1") in message
    if PLUGIN_ACTIVE:
        result = cov["cases"][name]["coverage"]
        assert result["streamed_layer_tensors"] == streamed and result["covered"] == 0
        assert f"{EXPERTS}.w13_weight (experts 0, 1, 2, 3)" in result["uncovered"]


def test_skip_coverage_env_continues_with_a_warning(cov: dict[str, Any]) -> None:
    """Real loader on the target without layer 4; ``SGLANG_GLM_MTP_SKIP_COVERAGE=1`` turns the error into a
    warning (RL weight sync fills the draft later)."""
    case = ok(cov["cases"]["missing_skip_coverage"], "missing_skip_coverage")
    if PLUGIN_ACTIVE:
        assert case["coverage"]["skipped"] is True and case["coverage"]["covered"] == 0
        assert any("SGLANG_GLM_MTP_SKIP_COVERAGE=1, continuing" in line for line in case["logs"]), case["logs"]


def test_partial_layer_names_the_missing_expert(cov: dict[str, Any]) -> None:
    """Real: make_variant("draft-layer-incomplete") drops expert 3 of layer 4; everything else of the layer
    loads. Only ``w13_weight``/``w2_weight`` for expert 3 are reported."""
    message = refused(cov["cases"]["partial"], "partial")
    assert "2 of 23 NextN draft parameters" in message, message
    assert f"{EXPERTS}.w13_weight (experts 3), {EXPERTS}.w2_weight (experts 3)" in message, message
    if PLUGIN_ACTIVE:
        uncovered = cov["cases"]["partial"]["coverage"]["uncovered"]
        assert uncovered == [f"{EXPERTS}.w13_weight (experts 3)", f"{EXPERTS}.w2_weight (experts 3)"], uncovered


def test_deepseek_v3_draft_is_checked_too(cov: dict[str, Any]) -> None:
    """Real ``DeepseekV3ForCausalLMNextN`` (no indexer; the lazy hooks cover the DeepSeek class as well)."""
    case = ok(cov["cases"]["dsv3_complete"], "dsv3_complete")
    assert case["facts"]["class"] == "DeepseekV3ForCausalLMNextN"
    coverage_passed(case, "dsv3_complete")
    assert not {k: v for k, v in case["values"]["direct"].items() if v != "equal"}


def test_shared_experts_fusion(cov: dict[str, Any]) -> None:
    """Real ``resolve_shared_experts_config``: on this config (4 routed experts; SGLang allow-lists 256/384 and
    needs CUDA) fusion is off by default and with ``--disable-shared-experts-fusion``; with
    ``--enforce-shared-experts-fusion`` the shared expert becomes expert 4 of ``w13``/``w2`` and the check
    expects it there without a false alarm."""
    plain = ok(cov["cases"]["shared_disabled"], "shared_disabled")
    assert plain["facts"]["experts"]["num_fused_shared_experts"] == 0
    assert "model.decoder.mlp.shared_experts.gate_up_proj.weight" in plain["facts"]["params"]
    assert ok(cov["cases"]["bf16_triton"], "bf16_triton")["facts"]["experts"]["num_fused_shared_experts"] == 0
    fused = ok(cov["cases"]["shared_enforced"], "shared_enforced")
    coverage_passed(fused, "shared_enforced")
    experts = fused["facts"]["experts"]
    assert (experts["num_fused_shared_experts"], experts["num_experts"], experts["expected_experts"]) == \
        (1, 5, [0, 1, 2, 3, 4]), experts
    assert not any("shared_experts" in n for n in fused["facts"]["params"])
    assert fused["values"]["expert_layout"]["shared"] == "gate,up" and fused["values"]["w2"]["shared"] == "equal"


def test_indexer_wk_weights_proj_fusion(cov: dict[str, Any]) -> None:
    """Faked: the CUDA-only switch that makes the DSA indexer build one bf16 ``wk_weights_proj`` (and its SM
    count). Real: SGLang's ``_load_fused_indexer_wk`` writing it by ``copy_`` without a weight_loader. The
    check counts it covered when both sources streamed, and names it when ``weights_proj`` is missing."""
    case = ok(cov["cases"]["indexer_fused"], "indexer_fused")
    coverage_passed(case, "indexer_fused")
    params = case["facts"]["params"]
    assert "model.decoder.self_attn.indexer.wk_weights_proj.weight" in params
    assert "model.decoder.self_attn.indexer.wk.weight" not in params
    assert case["values"]["direct"]["wk_weights_proj = cat(wk, weights_proj)"] == "equal"
    message = refused(cov["cases"]["indexer_fused_missing_weights_proj"], "indexer_fused_missing_weights_proj")
    assert "model.decoder.self_attn.indexer.wk_weights_proj.weight" in message, message
    if PLUGIN_ACTIVE:
        assert cov["cases"]["indexer_fused_missing_weights_proj"]["coverage"]["uncovered"] == \
            ["model.decoder.self_attn.indexer.wk_weights_proj.weight"], message


# ============================================================================ expert parallel family


@pytest.fixture(scope="module")
def ep(ckpt: dict[str, Path]) -> dict[str, Any]:
    parallel = ["--tp-size", "2", "--ep-size", "2"] + TRITON
    cases = [
        {"name": "complete", "model": str(ckpt["original"]), "argv": parallel},
        {"name": "complete_shared_fused", "model": str(ckpt["original"]),
         "argv": parallel + ["--enforce-shared-experts-fusion"]},
        {"name": "partial", "model": str(ckpt["partial"]), "argv": parallel + FP4, "env": SKIP_PREFLIGHT,
         "postprocess": False},
        {"name": "ct_bf16_fused", "model": str(ckpt["ct_bf16"]), "argv": parallel + ["--enforce-shared-experts-fusion"]},
    ]
    return run_family("expert_parallel", {"cases": cases, "world_size": 2, "timeout": 240})


def test_two_real_ranks_build_and_load_the_draft(ep: dict[str, Any]) -> None:
    """Real: two spawned processes, gloo world of 2, ``--tp-size 2 --ep-size 2`` (so moe_tp 1, moe_ep 2), each
    rank building and loading its shard of the draft. Faked: NCCL (unavailable, gloo only)."""
    assert ep["exit_codes"] == {"0": 0, "1": 0}, ep["exit_codes"]
    for rank, payload in ep["ranks"].items():
        assert "crashed" not in payload, f"rank {rank}: {payload.get('crashed')}"
        assert (payload["backend"], payload["world"]) == ("gloo", 2)
        case = ok(payload["cases"]["complete"], f"rank {rank} complete")
        assert case["parallel"] == {"tp_rank": int(rank), "tp_size": 2, "moe_ep_rank": int(rank),
                                    "moe_ep_size": 2, "moe_tp_size": 1}, case["parallel"]
        coverage_passed(case, f"rank {rank} complete")


def test_each_rank_expects_and_holds_only_its_experts(ep: dict[str, Any]) -> None:
    """Real ``FusedMoE`` EP mapping: rank r owns experts [2r, 2r+1]; loaded values match those global experts."""
    for rank, owned in (("0", [0, 1]), ("1", [2, 3])):
        case = ep["ranks"][rank]["cases"]["complete"]
        experts = case["facts"]["experts"]
        assert (experts["num_local_experts"], experts["expected_experts"]) == (2, owned), experts
        assert case["values"]["expert_layout"] == {str(e): "gate,up" for e in owned}, case["values"]
        assert set(case["values"]["w2"].values()) == {"equal"}
        fused = ok(ep["ranks"][rank]["cases"]["complete_shared_fused"], f"rank {rank} shared fused")
        coverage_passed(fused, f"rank {rank} shared fused")
        assert fused["facts"]["experts"]["expected_experts"] == owned + [4], fused["facts"]["experts"]
        assert fused["values"]["expert_layout"]["shared"] == "gate,up"


@plugin_only
def test_compressed_tensors_bf16_draft_is_unquantized_on_every_rank(ep: dict[str, Any]) -> None:
    """A compressed-tensors NVFP4 target whose MTP layer is BF16 (no exclusion reaching model.decoder), under TP=2,
    EP=2 and shared-expert fusion: each rank builds its experts BF16 and loads every parameter it owns."""
    for rank, owned in (("0", [0, 1, 4]), ("1", [2, 3, 4])):
        case = ok(ep["ranks"][rank]["cases"]["ct_bf16_fused"], f"rank {rank} compressed-tensors")
        coverage_passed(case, f"rank {rank} compressed-tensors")
        experts = case["facts"]["experts"]
        assert experts["method"] == "UnquantizedFusedMoEMethod" and experts["expected_experts"] == owned, experts
        assert case["facts"]["outer_quant"] == "compressed_tensors" and case["facts"]["decoder_quant"] is None


def test_tp_sharding_does_not_false_alarm(ep: dict[str, Any]) -> None:
    """Real TP=2 layers: column-parallel shards on dim 0, row-parallel on dim 1, each rank's slice of the
    checkpoint tensor; every loader is called with the full tensor, so coverage names match on every rank."""
    for rank in ("0", "1"):
        direct = ep["ranks"][rank]["cases"]["complete"]["values"]["direct"]
        assert direct["model.decoder.self_attn.q_b_proj.weight"] == "shard(dim=0)"
        assert direct["model.decoder.self_attn.kv_b_proj.weight"] == "shard(dim=0)"
        assert direct["model.decoder.self_attn.o_proj.weight"] == "shard(dim=1)"
        assert direct["model.decoder.mlp.shared_experts.down_proj.weight"] == "shard(dim=1)"
        assert direct["model.decoder.mlp.shared_experts.gate_up_proj.weight"] == "equal"  # [gate_r, up_r]
        assert "mismatch" not in direct.values(), direct


def test_missing_expert_is_reported_by_the_rank_that_owns_it(ep: dict[str, Any]) -> None:
    """Real: expert 3 missing under EP=2. Rank 1 owns it and refuses; rank 0 (experts 0, 1) has everything it
    needs and loads. One failing scheduler fails the whole launch, so one report is enough."""
    rank0, rank1 = ep["ranks"]["0"]["cases"]["partial"], ep["ranks"]["1"]["cases"]["partial"]
    if not PLUGIN_ACTIVE:
        # The patched SGLang judges global expert ids (the loader offers every expert to every rank), so
        # every rank reports the checkpoint's gap, naming the same experts.
        for rank, case in (("0", rank0), ("1", rank1)):
            assert f"{EXPERTS}.w13_weight (experts 3)" in refused(case, f"rank {rank} partial")
        return
    coverage_passed(ok(rank0, "rank 0 partial"), "rank 0 partial")
    refused(rank1, "rank 1 partial")
    assert rank1["coverage"]["uncovered"] == [f"{EXPERTS}.w13_weight (experts 3)",
                                              f"{EXPERTS}.w2_weight (experts 3)"], rank1["coverage"]


# ============================================================================ draft precision family


@pytest.fixture(scope="module")
def prec(ckpt: dict[str, Path]) -> dict[str, Any]:
    nvfp4, fp8, grafted = str(ckpt["nvfp4_draft"]), str(ckpt["fp8_draft"]), str(ckpt["grafted"])
    blackwell = {"generation": "sm100", "postprocess": False, "build_on_platform": True}
    cases = [
        {"name": "bf16_draft", "model": grafted, "argv": FP4, "generation": "sm100", "postprocess": False},
        {"name": "bf16_draft_again", "model": grafted, "argv": FP4, "generation": "sm100", "postprocess": False},
        {"name": "nvfp4_draft", "model": nvfp4, "argv": FP4, "snapshot_loaders": True, **blackwell},
        {"name": "nvfp4_draft_cutlass", "model": nvfp4, "argv": FP4 + CUTLASS, **blackwell},
        {"name": "nvfp4_draft_marlin_sm90", "model": nvfp4, "argv": FP4 + ["--speculative-moe-runner-backend",
                                                                           "marlin"],
         **blackwell, "generation": "sm90"},
        {"name": "fp8_draft", "model": fp8, "argv": FP4, **blackwell},
        {"name": "fp8_draft_triton_sm90", "model": fp8, "argv": FP4 + TRITON, **blackwell, "generation": "sm90"},
        {"name": "nvfp4_draft_stock", "model": nvfp4, "argv": FP4, "stock_quant_config": True, **blackwell},
        {"name": "nvfp4_draft_no_preflight_state", "model": nvfp4, "argv": FP4, "drop_preflight_state": True,
         **blackwell},
        {"name": "bf16_in_fp8_target", "model": str(ckpt["bf16_in_fp8_target"]), "argv": TRITON, **blackwell},
        {"name": "bf16_in_fp8_target_explicit", "model": str(ckpt["bf16_in_fp8_target"]),
         "argv": TRITON + ["--speculative-draft-model-quantization", "fp8"], **blackwell},
        {"name": "bf16_in_fp8_target_stock", "model": str(ckpt["bf16_in_fp8_target"]), "argv": TRITON,
         "stock_quant_config": True, **blackwell},
        {"name": "bf16_in_fp8_target_explicit_view_fails", "model": str(ckpt["bf16_in_fp8_target"]),
         "argv": TRITON + ["--speculative-draft-model-quantization", "fp8"], "fail_resolved_view": True, **blackwell},
        {"name": "bf16_in_fp8_target_view_fails", "model": str(ckpt["bf16_in_fp8_target"]), "argv": TRITON,
         "fail_resolved_view": True, **blackwell},
    ]
    return run_family("draft_precision", {"cases": cases, "generation": "sm100", "exclusion_model": nvfp4})


def test_bf16_draft_under_nvfp4_target_is_built_unquantized_and_logged_once(prec: dict[str, Any]) -> None:
    """Real ``_resolve_nextn_quant_config`` hook on the real draft class (emulated SM100 resolution): BF16 layer
    headers -> None, experts ``UnquantizedFusedMoEMethod``; the outer config stays the target's (lm_head).
    Built twice in one process: the evidence line is logged once. Stock SGLang nulls a modelopt_fp4 draft config
    too, so the build itself is not the plugin's doing here; test_bf16_draft_in_an_fp8_target_is_built_unquantized
    is the case where only the plugin makes the BF16 draft unquantized."""
    case = ok(prec["cases"]["bf16_draft"], "bf16_draft")
    coverage_passed(case, "bf16_draft")
    facts = case["facts"]
    assert (facts["outer_quant"], facts["decoder_quant"]) == ("modelopt_fp4", None), facts
    assert facts["experts"]["method"] == "UnquantizedFusedMoEMethod"
    assert facts["methods"]["lm_head"] == "ModelOptFp4LinearMethod"
    again = ok(prec["cases"]["bf16_draft_again"], "bf16_draft_again")
    assert again["facts"]["decoder_quant"] is None
    if PLUGIN_ACTIVE:  # the plugin's evidence line (SGLang logs its own on tp rank 0)
        evidence = [line for line in case["logs"] if "is stored BF16" in line]
        assert len(evidence) == 1 and "35 tensors of model.layers.4" in evidence[0] and "unquantized" in evidence[0]
        assert not [line for line in again["logs"] if "is stored BF16" in line], again["logs"]


def test_nvfp4_draft_keeps_modelopt_fp4(prec: dict[str, Any]) -> None:
    """Real: the plugin's config survives ``DeepseekModelNextN.__init__``'s ``get_name() == "modelopt_fp4"``
    override (the frame shield) and SGLang builds ``ModelOptNvFp4FusedMoEMethod`` with uint8 ``w13_weight``;
    the real ``load_weights`` loads all 80 layer-4 tensors and coverage passes. Faked: Blackwell at
    construction (the NVFP4 MoE method refuses other platforms). Stopped before NVFP4 post-processing
    (swizzling/``.cuda()`` needs a GPU)."""
    case = ok(prec["cases"]["nvfp4_draft"], "nvfp4_draft")
    coverage_passed(case, "nvfp4_draft")
    facts = case["facts"]
    assert facts["experts"]["method"] == "ModelOptNvFp4FusedMoEMethod", facts["experts"]
    assert facts["params"][f"{EXPERTS}.w13_weight"]["dtype"] == "uint8"
    assert facts["decoder_quant"] == "modelopt_fp4"
    assert facts["decoder_marked_nvfp4_draft"] is PLUGIN_ACTIVE  # the plugin's shield; SGLang needs none
    assert facts["decoder_quant_is_outer"] is False  # a copy: the target's config is untouched
    if UPSTREAM:  # patch 0002's mapper (as #34906) names the draft's modules in the draft's own copy of the config
        assert "model.eh_proj" in facts["outer_excludes"], facts["outer_excludes"]
    else:
        assert not any(p.startswith("model.decoder") for p in facts["outer_excludes"]), facts["outer_excludes"]
    assert "model.decoder.self_attn*" in facts["decoder_excludes"]
    # excludes remapped: attention and the MTP projection stay BF16 as stored; shared experts are NVFP4
    methods = facts["methods"]
    for module in ("self_attn.fused_qkv_a_proj_with_mqa", "self_attn.q_b_proj", "self_attn.kv_b_proj",
                   "self_attn.o_proj", "self_attn.indexer.wq_b"):
        assert methods[f"model.decoder.{module}"] == "UnquantizedLinearMethod", (module, methods)
    assert methods["model.decoder.mlp.shared_experts.gate_up_proj"] == "ModelOptFp4LinearMethod"
    assert facts["eh_proj_type"] == "Linear"
    assert facts["params"]["model.eh_proj.weight"]["dtype"] == "bfloat16"
    # kv-cache scales exist (ModelOpt FP8 KV method) and are _skip_weight_check: not counted, not flagged
    assert len(facts["skip_weight_check"]) == 4
    assert case["loaders_restored"] is True, case["loaders_changed"]  # incl. ModelWeightParameter._weight_loader
    if PLUGIN_ACTIVE:
        assert case["coverage"]["parameters"] == 35
        assert any("is stored NVFP4" in line and "80 tensors" in line for line in case["logs"]), case["logs"]


def test_nvfp4_exclude_remap_is_what_keeps_attention_bf16(prec: dict[str, Any]) -> None:
    """Real ``ModelOptFp4Config.is_layer_excluded``/``is_layer_skipped`` on draft module names: with the
    checkpoint's ``model.layers.4.*`` excludes alone the draft's attention would be quantized."""
    by_prefix = prec["exclusion"]["by_prefix"]
    for prefix in ("model.decoder.self_attn.fused_qkv_a_proj_with_mqa", "model.decoder.self_attn.o_proj"):
        assert by_prefix[prefix] == {"target": False, "draft": True}, (prefix, by_prefix[prefix])
    assert by_prefix["model.decoder.mlp.experts"] == {"target": False, "draft": False}
    assert by_prefix["model.decoder.mlp.shared_experts.gate_up_proj"]["draft"] is False
    assert "model.shared_head*" in prec["exclusion"]["draft_patterns"]  # a top-level draft module, not decoder


def test_nvfp4_shield_is_invisible_outside_the_nextn_constructor(prec: dict[str, Any]) -> None:
    """Real ``ModelOptFp4Config``: the shielded copy still answers ``modelopt_fp4`` to every other caller,
    and the target config is neither the copy nor changed."""
    shield = prec["shield"]
    assert shield["draft_name_elsewhere"] == shield["target_name"] == "modelopt_fp4"
    assert shield["draft_is_copy"] and shield["target_excludes_untouched"] == ["lm_head", "model.layers.4.self_attn*"]
    assert "model.decoder.self_attn*" in shield["draft_excludes"]


@plugin_only
def test_stock_sglang_cannot_load_the_nvfp4_draft(prec: dict[str, Any]) -> None:
    """Control, real: the same checkpoint with SGLang's own ``_resolve_nextn_quant_config`` (plugin's hook
    bypassed for this build) is built BF16 and ``load_weights`` crashes on the NVFP4 scale names."""
    case = prec["cases"]["nvfp4_draft_stock"]
    assert not case["ok"] and case["error_type"] == "KeyError", case
    assert "input_scale" in case["error"] or "weight_scale" in case["error"], case["error"]


@pytest.mark.parametrize("name, layout", [("nvfp4_draft_cutlass", "up,gate"), ("nvfp4_draft_marlin_sm90", "gate,up")])
def test_nvfp4_draft_on_other_runners(prec: dict[str, Any], name: str, layout: str) -> None:
    """Real NVFP4 MoE ``create_weights`` for flashinfer_cutlass (Blackwell) and marlin (SM90 W4A16): cutlass
    adds ``*_blockscale_swizzled`` parameters derived from the scales, which the check must not flag; the
    packed uint8 experts load in the runner's row order."""
    case = ok(prec["cases"][name], name)
    coverage_passed(case, name)
    assert case["facts"]["experts"]["method"] == "ModelOptNvFp4FusedMoEMethod"
    assert set(case["values"]["expert_layout"].values()) == {layout}, case["values"]["expert_layout"]
    assert set(case["values"]["w2"].values()) == {"equal"}
    if name == "nvfp4_draft_cutlass":
        assert f"{EXPERTS}.w13_blockscale_swizzled" in case["facts"]["params"]


@pytest.mark.parametrize("name, layout", [("fp8_draft", "up,gate"), ("fp8_draft_triton_sm90", "gate,up")])
def test_fp8_draft_under_nvfp4_target_gets_block_fp8(prec: dict[str, Any], name: str, layout: str) -> None:
    """Real: FP8 layer headers -> the plugin's block-FP8 [128, 128] config; SGLang builds ``Fp8MoEMethod`` and
    ``Fp8LinearMethod`` and loads every tensor (fixture dims are whole 128-blocks, see
    ``synthetic.fp8_draft_overrides``). flashinfer_trtllm (SM100) stores w13 as [up, gate], triton as
    [gate, up]. Faked: the GPU generation at construction. On 0.5.22, whose NextN post-load reads the block
    size from the target's config, the plugin refuses the build with a clear error instead of a crash."""
    if PLUGIN_ACTIVE and sglang_before("0.5.23"):
        case = prec["cases"][name]
        assert not case["ok"] and case["error_type"] == "UnsupportedOnThisSGLang", case
        assert "needs SGLang 0.5.23+" in case["error"] and "block-FP8 draft" in case["error"], case["error"]
        return
    case = ok(prec["cases"][name], name)
    coverage_passed(case, name)
    facts = case["facts"]
    assert facts["decoder_quant"] == "fp8" and facts["experts"]["method"] == "Fp8MoEMethod"
    assert facts["params"][f"{EXPERTS}.w13_weight"]["dtype"] == "float8_e4m3fn"
    assert facts["methods"]["model.decoder.self_attn.o_proj"] == "Fp8LinearMethod"
    assert len(facts["skip_weight_check"]) == 4  # Fp8KVCacheMethod scales, not flagged
    assert set(case["values"]["expert_layout"].values()) == {layout}, case["values"]["expert_layout"]
    assert not {k: v for k, v in case["values"]["direct"].items() if v != "equal"}


# ============================================================================ added: paths no fixture above reached


def test_glm45_tensor_shapes_are_the_real_sglang_draft_s(cov: dict[str, Any]) -> None:
    """The GLM-4.5 family table's tensor shapes (which synthetic writes and ``check`` expects), anchored to
    SGLang itself: the real ``Glm4MoeForCausalLMNextN`` built from the tiny GLM-4.5 config loads the layer with
    SGLang's own weight loaders (a shape SGLang disagrees with fails the load), and every one of its parameters
    but the shared embedding and head holds exactly the checkpoint's values (fused qkv by its parts, experts by
    layout). The plugin's coverage hook does not cover this class (only GLM-5.x/DeepSeek-V3 drafts)."""
    case = ok(cov["cases"]["glm45_complete"], "glm45_complete")
    assert case["facts"]["class"] == "Glm4MoeForCausalLMNextN"
    values, params = case["values"], case["facts"]["params"]
    assert set(values["direct"].values()) == {"equal"}, values["direct"]
    assert values["expert_layout"] == {str(e): "gate,up" for e in range(4)} and set(values["w2"].values()) == {"equal"}
    checked = {n for n in values["direct"] if n.startswith("model.")} | {
        f"model.decoder.self_attn.qkv_proj.{s}" for s in ("weight", "bias") if f"qkv_proj.{s} = cat(q, k, v)" in
        values["direct"]} | {f"{EXPERTS}.w13_weight", f"{EXPERTS}.w2_weight"}
    assert set(params) - checked == {"lm_head.weight", "model.embed_tokens.weight"}, set(params) - checked


def test_scheduler_reads_the_headers_itself_when_the_preflight_record_is_absent(prec: dict[str, Any]) -> None:
    """The scheduler's fallback: no preflight result on the record it received, so the draft precision comes from
    its own header read of the checkpoint; the NVFP4 draft is still built NVFP4 (stock SGLang would build it BF16
    and fail on the scale names, see the control above)."""
    case = ok(prec["cases"]["nvfp4_draft_no_preflight_state"], "nvfp4_draft_no_preflight_state")
    coverage_passed(case, "nvfp4_draft_no_preflight_state")
    assert case["facts"]["experts"]["method"] == "ModelOptNvFp4FusedMoEMethod"
    assert case["facts"]["decoder_quant"] == "modelopt_fp4"


def test_bf16_draft_in_an_fp8_target_is_built_unquantized(prec: dict[str, Any]) -> None:
    """Where the plugin changes what SGLang builds for a BF16 draft: under an FP8 target stock SGLang 0.5.23 passes
    the target's block-FP8 config to the draft (only modelopt_fp4 is nulled), so the BF16 layer is built FP8 and
    cannot load; with the plugin the layer's BF16 headers decide and it is built unquantized and loads."""
    case = ok(prec["cases"]["bf16_in_fp8_target"], "bf16_in_fp8_target")
    coverage_passed(case, "bf16_in_fp8_target")
    facts = case["facts"]
    assert facts["outer_quant"] == "fp8" and facts["decoder_quant"] is None, facts
    assert facts["experts"]["method"] == "UnquantizedFusedMoEMethod"
    assert facts["params"][f"{EXPERTS}.w13_weight"]["dtype"] == "bfloat16"
    assert not {k: v for k, v in case["values"]["direct"].items() if v != "equal"}


@plugin_only
def test_stock_sglang_builds_the_bf16_draft_of_an_fp8_target_fp8(prec: dict[str, Any]) -> None:
    """Control, real: SGLang's own ``_resolve_nextn_quant_config`` for the same build keeps block FP8 for the
    BF16 layer, and SGLang's loader refuses to copy the BF16 weights into the FP8 parameters."""
    case = prec["cases"]["bf16_in_fp8_target_stock"]
    assert not case["ok"] and case["error_type"] == "ValueError", case
    assert "Downcasting not allowed: target.dtype=torch.float8_e4m3fn, loaded_weight.dtype=torch.bfloat16" \
        in case["error"]


@plugin_only
@pytest.mark.parametrize("key, result, same, errors", [
    ("fp8/bf16", None, False, 0),  # BF16 layer in an FP8 release: unquantized
    ("fp8/fp8", "Fp8Config", True, 0),  # FP8 passthrough: the target's own config object
    ("fp8/nvfp4", "Fp8Config", True, 1),  # NVFP4 layer under a non-NVFP4 target: nothing to build it with, said
    ("modelopt_fp8/fp8", "Fp8Config", False, 0),  # ModelOpt FP8 target, block-FP8 layer: the block config
    ("modelopt_fp8/bf16", None, False, 0),
    ("modelopt_fp8/nvfp4", "ModelOptFp8Config", True, 1),
    ("modelopt_fp4/bf16", None, False, 0),
    ("modelopt_fp4/fp8", "Fp8Config", False, 0),
    ("modelopt_fp4/nvfp4", "ModelOptFp4Config", False, 0),  # a remapped copy, never the target's own
])
def test_draft_quant_config_per_target_and_draft_storage(prec: dict[str, Any], key: str, result: str | None,
                                                         same: bool, errors: int) -> None:
    """The plugin's ``_resolve_nextn_quant_config`` hook on SGLang's real quant config classes, the draft storage
    read from the published preflight record as a scheduler does."""
    decision = prec["quant_config_decisions"][key]
    if result == "Fp8Config" and not same and sglang_before("0.5.23"):  # 0.5.22 cannot load it: refused, said so
        assert decision["refused"]["error_type"] == "UnsupportedOnThisSGLang", decision
        return
    assert "refused" not in decision, decision
    assert (decision["result"], decision["same_object"], len(decision["errors"])) == (result, same, errors), decision
    if result == "Fp8Config" and not same:
        assert decision["block"] == [128, 128]
    if errors:
        assert "is stored NVFP4 but the target is" in decision["errors"][0]


@plugin_only
def test_explicit_draft_quantization_is_left_to_sglang(prec: dict[str, Any]) -> None:
    """``--speculative-draft-model-quantization fp8`` on the BF16 layer of an FP8 release: the plugin, which builds
    that layer unquantized when nothing is said (``bf16_in_fp8_target``), leaves the user's choice to SGLang, which
    then fails exactly as stock SGLang does (``bf16_in_fp8_target_stock``)."""
    case = prec["cases"]["bf16_in_fp8_target_explicit"]
    assert not case["ok"] and "Downcasting not allowed" in case["error"], case
    assert prec["cases"]["bf16_in_fp8_target"]["ok"]


@plugin_only
def test_explicit_draft_quantization_stands_when_sglangs_view_fails(prec: dict[str, Any]) -> None:
    """The user's flag is never overridden, even when SGLang's ``resolved_view`` raises for the plugin (a renamed
    internal): the real published ServerArgs holds the flag as given, so SGLang's FP8 config stands and SGLang
    fails exactly as in ``test_explicit_draft_quantization_is_left_to_sglang``. Without the flag, the same broken
    view means "not given" (the record says so): the plugin builds the BF16 layer as stored."""
    case = prec["cases"]["bf16_in_fp8_target_explicit_view_fails"]
    assert not case["ok"] and "Downcasting not allowed" in case["error"], case
    plain = ok(prec["cases"]["bf16_in_fp8_target_view_fails"], "bf16_in_fp8_target_view_fails")
    facts = plain["facts"]
    assert facts["decoder_quant"] is None and facts["experts"]["method"] == "UnquantizedFusedMoEMethod", facts
    warnings = [line for line in plain["logs"] if "cannot read SGLang's resolved view" in line]
    assert warnings and all("simulated: resolved_view failed" in line for line in warnings), plain["logs"]
