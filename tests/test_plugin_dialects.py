"""compressed-tensors, Quark and block-FP8 targets through SGLang 0.5.23's real loader, with and without the plugin.

Two scenario processes (tests/scenarios_families.py ``dialects``): one with the ``glm_mtp``
plugin loaded through its entry point, one as stock SGLang (an ``SGLANG_PLUGINS`` allow-list
naming no installed plugin). Both build and load the real NextN draft classes from tiny
checkpoints written in each dialect; the stock process also answers SGLang's own exclusion
rules for the table that ``checkpoint/quant_match.py`` mirrors. Faked, because they need a
GPU: the GPU generation (Blackwell, which the compressed-tensors NVFP4 MoE scheme and Quark's
capability check ask for), the vLLM rotary kernel module, and NVFP4 post-processing is not
run (it moves weights to CUDA). Nothing runs a forward pass.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from sglang_glm_mtp import synthetic
from sglang_glm_mtp.checkpoint import quant_match
from sglang_glm_mtp.graft.plan import plan_graft
from sglang_glm_mtp.graft.run import execute

from sglang_mode import run_scenario, sglang_before

pytestmark = [pytest.mark.sglang, pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("sglang") is None, reason="needs sglang==0.5.23")]
SCENARIOS = Path(__file__).with_name("scenarios_families.py")
BLACKWELL = {"generation": "sm100", "postprocess": False, "build_on_platform": True}
TRITON = ["--speculative-moe-runner-backend", "triton"]
FUSED = TRITON + ["--enforce-shared-experts-fusion"]  # real 256-expert models fuse the shared expert on CUDA
DIALECTS = [("compressed-tensors", "nvfp4"), ("compressed-tensors", "fp8"), ("quark", "fp8"), ("quark", "mxfp4")]

#: (dialect, module, entries): SGLang's verdict (``_sglang_excluded``) against ours.
MATCHER_TABLE: list[tuple[str, str, list[str]]] = [
    (d, name, entries)
    for d in ("compressed-tensors", "quark", "fp8")
    for name in ("model.decoder.mlp.experts", "model.decoder.mlp.experts.0.gate_proj", "model.eh_proj",
                 "model.decoder.self_attn.fused_qkv_a_proj_with_mqa", "model.decoder.mlp.shared_experts.gate_up_proj",
                 "model.layers.4.self_attn.kv_b_proj", "model.decoder.self_attn.kv_b_proj", "lm_head")
    for entries in (["lm_head"], ["re:.*self_attn.*", "re:.*mlp\\.gate$"], ["re:model\\.decoder\\..*"],
                    ["re:model\\.layers\\.4\\..*"], ["re:model\\.(decoder\\.|eh_proj).*"], ["model.decoder"],
                    ["model.layers.4"], ["self_attn.kv_b_proj"], ["model.decoder.self_attn.q_a_proj"],
                    ["model.decoder.mlp.experts.0.gate_proj", "model.decoder.mlp.experts.0.up_proj"],
                    ["re:model\\.decoder\\.mlp\\.shared_experts\\.(gate|up)_proj"])
]


def _ours(dialect: str, name: str, entries: list[str]) -> Any:
    rule = {"compressed-tensors": quant_match.ct_ignored, "quark": quant_match.quark_ignored,
            "fp8": quant_match.fp8_skipped}[dialect]
    try:
        return rule(name, entries)
    except quant_match.FusedShardsDisagree:
        return "ValueError"


def _pair(root: Path, name: str, quant_format: str, storage: str, **kw: Any) -> synthetic.SyntheticPair:
    overrides = synthetic.fp8_draft_overrides() if storage == "fp8" else None
    return synthetic.tiny_pair(root / name, quant_format=quant_format, target_storage=storage,  # type: ignore[arg-type]
                               config_overrides=overrides, **kw)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Per dialect: a complete BF16 layer with no exclusion (as AMD's Quark releases ship it), the same after a
    real ``graft`` into the target that lacked it, and a layer stored in the target's own precision."""
    root = tmp_path_factory.mktemp("dialects")
    out: list[dict[str, Any]] = []

    def add(name: str, path: Path, argv: list[str] = TRITON) -> None:
        out.append({"name": name, "model": str(path), "argv": argv, **BLACKWELL})

    for fmt, storage in DIALECTS:
        key = f"{fmt}/{storage}"
        complete = _pair(root, f"{fmt}-{storage}-bf16", fmt, storage, target_has_draft=True).target
        add(f"{key}/bf16", complete)
        add(f"{key}/bf16/fused", complete, FUSED)
        grafted = _pair(root, f"{fmt}-{storage}-graft", fmt, storage)
        execute(plan_graft(str(grafted.original), grafted.target))
        add(f"{key}/grafted", grafted.target)
        add(f"{key}/grafted/fused", grafted.target, FUSED)
        if storage != "mxfp4":  # Quark's MXFP4 MoE needs the ROCm AITER runner: not buildable here
            add(f"{key}/stored", _pair(root, f"{fmt}-{storage}-q", fmt, storage, target_has_draft=True,
                                       draft_storage=storage).target)
    for family in ("deepseek-v3", "glm4.5"):
        complete = synthetic.tiny_pair(root / f"{family}-ct", family=family, quant_format="compressed-tensors",
                                       target_has_draft=True).target
        add(f"{family}/bf16", complete)
        grafted = synthetic.tiny_pair(root / f"{family}-ct-graft", family=family, quant_format="compressed-tensors")
        execute(plan_graft(str(grafted.original), grafted.target))
        add(f"{family}/grafted", grafted.target)
    for family in ("glm4.7-flash", "glm5.3-flash", "glm-ocr"):  # the other seams: constructor / GLM-5.3's own resolver
        complete = synthetic.tiny_pair(root / f"{family}-ct", family=family, quant_format="compressed-tensors",
                                       target_has_draft=True).target
        add(f"{family}/bf16", complete, TRITON + ["--disable-radix-cache"])
    per_layer = synthetic.tiny_pair(root / "per-layer", quant_format="compressed-tensors", target_has_draft=True,
                                    draft_storage="nvfp4").target
    config = json.loads((per_layer / "config.json").read_text())
    ignore = config["quantization_config"]["ignore"]
    ignore.remove("re:.*self_attn.*")
    ignore += [f"re:model\\.layers\\.{i}\\.self_attn.*" for i in range(5)]  # names the MTP layer's attention
    (per_layer / "config.json").write_text(json.dumps(config))
    add("compressed-tensors/nvfp4/stored/per-layer-ignore", per_layer)
    add("compressed-tensors/nvfp4/bf16/explicit-flag", out[0]["model"],
        TRITON + ["--speculative-draft-model-quantization", "compressed-tensors"])
    return out


@pytest.fixture(scope="module")
def plugin(cases: list[dict[str, Any]]) -> dict[str, Any]:
    return run_scenario(SCENARIOS, "dialects", {"cases": cases}, timeout=1200)["cases"]


@pytest.fixture(scope="module")
def stock(cases: list[dict[str, Any]]) -> dict[str, Any]:
    return run_scenario(SCENARIOS, "dialects", {"cases": cases, "stock": True, "matchers": MATCHER_TABLE},
                        timeout=1200)


def _ok(case: dict[str, Any], name: str) -> dict[str, Any]:
    assert case.get("ok"), f"{name}: {case.get('error_type')}: {case.get('error')}\n{case.get('where', '')}"
    return case


def _complete(case: dict[str, Any], name: str) -> None:
    coverage = _ok(case, name)["coverage"]
    assert coverage["covered"] == coverage["parameters"] > 0 and not coverage["uncovered"], (name, coverage)


BF16_CASES = [f"{fmt}/{storage}/{kind}" for fmt, storage in DIALECTS
              for kind in ("bf16", "bf16/fused", "grafted", "grafted/fused")]


@pytest.mark.parametrize("name", BF16_CASES + ["deepseek-v3/bf16", "glm4.5/bf16", "glm4.7-flash/bf16",
                                              "glm5.3-flash/bf16"])
def test_plugin_builds_a_bf16_layer_unquantized_in_every_dialect(plugin: dict[str, Any], name: str) -> None:
    """The whole draft BF16 (experts, shared experts, attention), every parameter filled, with or without an
    exclusion and with shared-expert fusion on; the outer model keeps the target's config."""
    case = plugin[name]
    _complete(case, name)
    quant = case["quant"]
    assert quant["experts"] == "UnquantizedFusedMoEMethod" and quant["o_proj"] == "UnquantizedLinearMethod", quant
    assert quant["shared_experts"] in ("UnquantizedLinearMethod", None), quant  # None: fused into the experts
    assert quant["outer"] in ("compressed_tensors", "quark")
    assert quant["fused_shared"] == (1 if name.endswith("fused") else 0)


def test_plugin_builds_a_dense_glm_ocr_draft_unquantized(plugin: dict[str, Any]) -> None:
    """GLM-OCR's draft is a dense layer (no experts): its attention and MLP are built BF16, every parameter filled."""
    case = plugin["glm-ocr/bf16"]
    _complete(case, "glm-ocr/bf16")
    assert case["quant"]["o_proj"] == "UnquantizedLinearMethod" and case["quant"]["outer"] == "compressed_tensors"


def test_plugin_says_why_the_draft_is_unquantized(plugin: dict[str, Any]) -> None:
    """(Logged once per distinct line and process: the first build of a checkpoint carries it.)"""
    logs = plugin["compressed-tensors/nvfp4/bf16"]["logs"]
    assert any("draft model.layers.4 is stored BF16" in line and "building it unquantized (target keeps "
               "compressed_tensors)" in line for line in logs), logs


@pytest.mark.parametrize("name, error", [
    ("compressed-tensors/nvfp4/bf16", "KeyError"), ("compressed-tensors/fp8/bf16", "ValueError"),
    ("quark/fp8/bf16", "ValueError"), ("quark/mxfp4/bf16", "NotImplementedError"),
    ("deepseek-v3/bf16", "KeyError"), ("glm4.5/bf16", "AttributeError"),
    # 0.5.22's loader looks the fused qkv_a weight up by name (KeyError); 0.5.23 reads the attribute (issue 20)
    ("compressed-tensors/nvfp4/stored/per-layer-ignore", "KeyError" if sglang_before("0.5.23") else "AttributeError"),
])
def test_stock_sglang_builds_the_same_layers_quantized_and_fails(stock: dict[str, Any], name: str,
                                                                  error: str) -> None:
    """The control: without the plugin the same checkpoints crash (KeyError on the shared expert's BF16 weight,
    FP8 'Downcasting not allowed', a missing attribute where a quantized linear has no ``weight``)."""
    case = stock["cases"][name]
    assert not case.get("ok") and case["error_type"] == error, (name, case.get("error_type"), case.get("error"))


def test_stock_sglang_silently_builds_quantized_experts_with_fusion_on(stock: dict[str, Any],
                                                                      plugin: dict[str, Any]) -> None:
    """SGLang #35797: a layer-agnostic ignore list with shared-expert fusion loads 'successfully' with the routed
    experts built NVFP4 over BF16 tensors (their quantized parameters never filled). The plugin builds them BF16."""
    silent = _ok(stock["cases"]["compressed-tensors/nvfp4/bf16/fused"], "stock fused")
    assert silent["quant"]["experts"] == "CompressedTensorsFusedMoEMethod"
    assert plugin["compressed-tensors/nvfp4/bf16/fused"]["quant"]["experts"] == "UnquantizedFusedMoEMethod"


@pytest.mark.parametrize("name", [f"{fmt}/{storage}/grafted" for fmt, storage in DIALECTS]
                         + [f"{fmt}/{storage}/grafted/fused" for fmt, storage in DIALECTS]
                         + ["deepseek-v3/grafted", "glm4.5/grafted"])
def test_stock_sglang_loads_what_graft_wrote(stock: dict[str, Any], name: str) -> None:
    """graft's exclusion, in the dialect's own syntax, reaches the draft's modules with no plugin at all."""
    quant = _ok(stock["cases"][name], name)["quant"]
    assert quant["experts"] == "UnquantizedFusedMoEMethod" and quant["o_proj"] == "UnquantizedLinearMethod", quant
    if name.startswith("quark"):
        assert quant["eh_proj"] == "UnquantizedLinearMethod", quant  # Quark builds eh_proj quantized otherwise


@pytest.mark.parametrize("name, method", [
    ("compressed-tensors/nvfp4/stored", "CompressedTensorsFusedMoEMethod"),
    ("compressed-tensors/fp8/stored", "CompressedTensorsFusedMoEMethod"),
    ("compressed-tensors/nvfp4/stored/per-layer-ignore", "CompressedTensorsFusedMoEMethod"),
])
def test_plugin_builds_a_quantized_layer_in_the_dialects_scheme(plugin: dict[str, Any], name: str,
                                                                method: str) -> None:
    """A layer stored NVFP4/FP8 is built with the target's scheme, its checkpoint exclusions translated to the
    draft's names: attention ignored as ``model.layers.4.self_attn`` stays BF16 (stock builds it NVFP4)."""
    case = plugin[name]
    _complete(case, name)
    assert case["quant"]["experts"] == method, case["quant"]
    if "per-layer" in name or "nvfp4" in name:
        assert case["quant"]["o_proj"] == "UnquantizedLinearMethod", case["quant"]
    if name.endswith("stored"):  # the per-layer case repeats the same line (logged once per process)
        assert any("translated to the draft's module names" in line for line in case["logs"]), case["logs"]


def test_an_explicit_draft_quantization_stays_the_users(plugin: dict[str, Any], stock: dict[str, Any]) -> None:
    name = "compressed-tensors/nvfp4/bf16/explicit-flag"
    case = plugin[name]
    assert any("--speculative-draft-model-quantization compressed-tensors was given" in line
               for line in case["logs"]), case["logs"]
    assert case.get("error_type") == stock["cases"][name].get("error_type") == "KeyError"


def test_quant_match_agrees_with_sglangs_own_rules(stock: dict[str, Any]) -> None:
    theirs = stock["matchers"]
    assert len(theirs) == len(MATCHER_TABLE)
    for (dialect, name, entries), verdict in zip(MATCHER_TABLE, theirs):
        expected = "ValueError" if isinstance(verdict, str) and verdict.startswith("ValueError") else verdict
        assert _ours(dialect, name, entries) == expected, (dialect, name, entries, verdict)
