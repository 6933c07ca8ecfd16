"""The draft MoE runner rule table (pure logic; the SGLang-facing side is in test_plugin_resolution.py)."""

from __future__ import annotations

import pytest

from sglang_glm_mtp.runner_rules import RunnerFacts, choose_draft_runner


def facts(**kw) -> RunnerFacts:
    base = dict(draft_precision="bf16", target_precision="nvfp4", target_backend="flashinfer_trtllm", device_sm=100)
    return RunnerFacts(**{**base, **kw})


@pytest.mark.parametrize("kw, backend, rule", [
    ({}, "flashinfer_cutlass", "blackwell-bf16-draft"),
    ({"device_sm": 103}, "flashinfer_cutlass", "blackwell-bf16-draft"),
    ({"device_sm": 120, "target_backend": "flashinfer_cutlass"}, "flashinfer_cutlass", "blackwell-bf16-draft"),
    ({"device_sm": 90, "target_backend": "marlin"}, "triton", "pre-blackwell-bf16-draft"),
    ({"device_sm": 80}, "triton", "pre-blackwell-bf16-draft"),
    ({"device_sm": None}, "triton", "unknown-gpu"),
    ({"is_hip": True, "device_sm": None}, "triton", "hip-bf16-draft"),
    ({"flashinfer_available": False}, "triton", "no-flashinfer"),
    ({"tp_size": 8, "ep_size": 4}, "triton", "ep-layout"),
    ({"tp_size": 8, "ep_size": 8}, "flashinfer_cutlass", "blackwell-bf16-draft"),
    ({"moe_a2a_backend": "deepep"}, "triton", "a2a-backend"),
    ({"target_backend": "flashinfer_megamoe"}, "flashinfer_cutlass", "blackwell-bf16-draft"),
    ({"target_precision": "bf16", "target_backend": "triton"}, None, "unquantized-target"),
    ({"draft_precision": "nvfp4"}, None, "quantized-like-target"),
    ({"draft_precision": "fp8", "target_precision": "fp8", "target_backend": "flashinfer_cutlass"}, "triton",
     "fp8-no-cutlass"),
    ({"draft_precision": "fp8", "target_precision": "fp8", "target_backend": "deep_gemm"}, None,
     "quantized-like-target"),
])
def test_rule_table(kw: dict, backend: str | None, rule: str) -> None:
    decision = choose_draft_runner(facts(**kw))
    assert (decision.backend, decision.rule) == (backend, rule)
    assert decision.reason


def test_triton_draft_drops_flashinfer_all_to_all() -> None:
    decision = choose_draft_runner(facts(device_sm=90, moe_a2a_backend="flashinfer"))
    assert decision.backend == "triton" and decision.a2a_backend == "none"
    assert choose_draft_runner(facts(device_sm=90)).a2a_backend is None


def test_trtllm_evidence_is_named_in_the_reason() -> None:
    assert "#30209" in choose_draft_runner(facts()).reason
