"""The draft MoE runner rule table (pure logic; the SGLang-facing side is in test_plugin_resolution.py),
and the same rule as patch 0003 writes it for SGLang itself."""

from __future__ import annotations

import itertools
import logging
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from sglang_glm_mtp.runner_rules import RunnerFacts, choose_draft_runner


def facts(**kw) -> RunnerFacts:
    base = dict(draft_precision="bf16", target_precision="nvfp4", target_backend="flashinfer_trtllm", device_sm=100)
    return RunnerFacts(**{**base, **kw})


#: (facts, backend, rule, what the reason must name: the fact that decided, as the user reads it in the log)
@pytest.mark.parametrize("kw, backend, rule, says", [
    ({}, "flashinfer_cutlass", "blackwell-bf16-draft", "SM100: BF16 draft under a nvfp4 target"),
    ({"device_sm": 103}, "flashinfer_cutlass", "blackwell-bf16-draft", "SM103"),
    ({"device_sm": 120, "target_backend": "flashinfer_cutlass"}, "flashinfer_cutlass", "blackwell-bf16-draft",
     "inherited flashinfer_cutlass is not preferred"),
    ({"device_sm": 90, "target_backend": "marlin"}, "triton", "pre-blackwell-bf16-draft", "SM90: no evidence"),
    ({"device_sm": 80}, "triton", "pre-blackwell-bf16-draft", "SM80"),
    ({"device_sm": None}, "triton", "unknown-gpu", "sm=None"),
    ({"is_hip": True, "device_sm": None}, "triton", "hip-bf16-draft", "ROCm"),
    ({"flashinfer_available": False}, "triton", "no-flashinfer", "flashinfer is not installed"),
    ({"tp_size": 8, "ep_size": 4}, "triton", "ep-layout", "ep_size=4"),
    ({"tp_size": 8, "ep_size": 8}, "flashinfer_cutlass", "blackwell-bf16-draft", "SM100"),
    ({"moe_a2a_backend": "deepep"}, "triton", "a2a-backend", "moe_a2a_backend=deepep"),
    ({"target_backend": "flashinfer_megamoe"}, None, "megamoe-target", "flashinfer_megamoe target"),
    ({"target_precision": "bf16", "target_backend": "triton"}, None, "unquantized-target",
     "bf16 draft under an unquantized target"),
    ({"draft_precision": "nvfp4"}, None, "quantized-like-target", "nvfp4 draft keeps the target's runner "
                                                                  "(flashinfer_trtllm)"),
    ({"draft_precision": "fp8", "target_precision": "fp8", "target_backend": "flashinfer_cutlass"}, "triton",
     "fp8-no-cutlass", "no flashinfer_cutlass path"),
    ({"draft_precision": "fp8", "target_precision": "fp8", "target_backend": "deep_gemm"}, None,
     "quantized-like-target", "fp8 draft keeps the target's runner (deep_gemm)"),
])
def test_rule_table(kw: dict, backend: str | None, rule: str, says: str) -> None:
    decision = choose_draft_runner(facts(**kw))
    assert (decision.backend, decision.rule) == (backend, rule)
    assert says in decision.reason, decision.reason


def test_triton_draft_drops_flashinfer_all_to_all() -> None:
    decision = choose_draft_runner(facts(device_sm=90, moe_a2a_backend="flashinfer"))
    assert decision.backend == "triton" and decision.a2a_backend == "none"
    assert choose_draft_runner(facts(device_sm=90)).a2a_backend is None


def test_trtllm_evidence_is_named_in_the_reason() -> None:
    assert "#30209" in choose_draft_runner(facts()).reason


# ---------------------------------------------------------------------------- branches the table above misses


def test_flashinfer_all_to_all_keeps_flashinfer_cutlass() -> None:
    """The one all-to-all backend flashinfer_cutlass runs under: no triton fallback, nothing to declare."""
    decision = choose_draft_runner(facts(moe_a2a_backend="flashinfer"))
    assert (decision.backend, decision.a2a_backend, decision.rule) == ("flashinfer_cutlass", None,
                                                                       "blackwell-bf16-draft")


@pytest.mark.parametrize("a2a, declared", [("deepep", "none"), ("mooncake", "none"), ("none", None), (None, None)])
def test_a_triton_draft_declares_no_all_to_all(a2a: str | None, declared: str | None) -> None:
    decision = choose_draft_runner(facts(moe_a2a_backend=a2a, device_sm=90))
    assert (decision.backend, decision.a2a_backend) == ("triton", declared)


def test_fp8_draft_under_flashinfer_cutedsl_gets_triton() -> None:
    decision = choose_draft_runner(facts(draft_precision="fp8", target_backend="flashinfer_cutedsl",
                                         moe_a2a_backend="deepep"))
    assert (decision.backend, decision.a2a_backend, decision.rule) == ("triton", "none", "fp8-no-cutlass")


@pytest.mark.parametrize("sm, rule", [(75, "unknown-gpu"), (79, "unknown-gpu"), (80, "pre-blackwell-bf16-draft"),
                                      (99, "pre-blackwell-bf16-draft"), (100, "blackwell-bf16-draft")])
def test_sm80_and_sm100_bounds(sm: int, rule: str) -> None:
    assert choose_draft_runner(facts(device_sm=sm)).rule == rule


def test_no_flashinfer_is_checked_on_blackwell_only() -> None:
    assert choose_draft_runner(facts(device_sm=120, flashinfer_available=False)).rule == "no-flashinfer"
    assert choose_draft_runner(facts(device_sm=90, flashinfer_available=False)).rule == "pre-blackwell-bf16-draft"


@pytest.mark.parametrize("draft", ["mixed", "unknown"])
def test_drafts_the_plugin_cannot_build_keep_the_target_runner(draft: str) -> None:
    decision = choose_draft_runner(facts(draft_precision=draft, target_backend="flashinfer_cutlass"))
    assert (decision.backend, decision.rule) == (None, "quantized-like-target")


# ---------------------------------------------------------------------------- the same rule in patch 0003

PATCH_0003 = Path(__file__).resolve().parents[1] / "patches" / "sglang-v0.5.23" / "0003-nextn-draft-moe-runner.patch"
PATCH_FUNCTION = "_bf16_nextn_draft_moe_runner_default"
#: The target's ``--quantization`` per precision label, as SGLang spells it.
QUANTIZATION = {"bf16": None, "nvfp4": "modelopt_fp4", "fp8": "fp8"}


def _added_hunk(patch: str, path: str, needle: str) -> str:
    """The lines a hunk of ``path`` adds, where the hunk contains ``needle``: the patch's new code, verbatim."""
    diff = patch.split(f"diff --git a/{path} b/{path}\n", 1)[1].split("\ndiff --git ", 1)[0]
    for hunk in diff.split("\n@@ ")[1:]:
        added = [line[1:] for line in hunk.splitlines()[1:] if line.startswith("+")]
        if any(needle in line for line in added):
            return "\n".join(added) + "\n"
    raise AssertionError(f"{PATCH_0003.name}: no hunk of {path} adds {needle}")


@pytest.fixture(scope="module")
def patch_rule() -> Any:
    """The patch's ``_bf16_nextn_draft_moe_runner_default``, executed from the patch text itself.

    SGLang's module globals it reads are supplied: the platform and the model config per
    call, the DeepSeek-family set, and the NextN header reader the previous patch adds
    (answering with the draft storage under test).
    """
    code = _added_hunk(PATCH_0003.read_text(), "python/sglang/srt/arg_groups/overrides.py", f"def {PATCH_FUNCTION}(")
    current: dict[str, Any] = {}
    namespace: dict[str, Any] = {
        "Any": Any, "logging": logging, "logger": logging.getLogger("patch-0003"),
        "_DEEPSEEK_FAMILY_ARCHS": frozenset({"GlmMoeDsaForCausalLM", "DeepseekV3ForCausalLM"}),
        "get_platform": lambda: current["platform"], "model_config_of": lambda view: current["model_config"],
    }
    exec(compile(code, f"{PATCH_0003.name}:{PATCH_FUNCTION}", "exec"), namespace)
    reader = types.ModuleType("sglang.srt.utils.nextn_checkpoint")
    reader.local_checkpoint_dir = lambda path, revision: path  # type: ignore[attr-defined]
    reader.read_nextn_layer = lambda model_dir, layer: types.SimpleNamespace(  # type: ignore[attr-defined]
        storage=lambda: current["draft"])
    saved = sys.modules.get(reader.__name__)
    sys.modules[reader.__name__] = reader  # found before any parent package is imported: no SGLang needed
    try:
        def run(f: RunnerFacts) -> dict[str, str]:
            current.update(draft=f.draft_precision,
                           platform=types.SimpleNamespace(is_hip=f.is_hip, device_sm=f.device_sm,
                                                          has_flashinfer=f.flashinfer_available),
                           model_config=types.SimpleNamespace(
                               hf_config=types.SimpleNamespace(architectures=["GlmMoeDsaForCausalLM"],
                                                               num_hidden_layers=78),
                               quantization=QUANTIZATION[f.target_precision]))
            view = types.SimpleNamespace(
                model_path="/ckpt", revision=None, speculative_algorithm="EAGLE", speculative_draft_model_path=None,
                speculative_moe_runner_backend=None, speculative_moe_a2a_backend=None,
                quantization=QUANTIZATION[f.target_precision], moe_runner_backend=f.target_backend,
                moe_a2a_backend=f.moe_a2a_backend, tp_size=f.tp_size, ep_size=f.ep_size)
            return namespace[PATCH_FUNCTION](view)

        yield run
    finally:
        if saved is None:
            sys.modules.pop(reader.__name__, None)
        else:
            sys.modules[reader.__name__] = saved


def _as_fields(decision: Any) -> dict[str, str]:
    """A rule-table decision as the SGLang fields it sets ({}: the draft inherits the target's runner)."""
    if decision.backend is None:
        return {}
    fields = {"speculative_moe_runner_backend": decision.backend}
    if decision.a2a_backend is not None:
        fields["speculative_moe_a2a_backend"] = decision.a2a_backend
    return fields


def test_patch_0003_and_the_rule_table_decide_alike_on_every_fact(patch_rule: Any) -> None:
    """Full cross product of the facts both know. Out of scope, by design: HIP (the patch leaves it to SGLang's
    ``_deepseek_spec_moe_resolution``) and the plugin-only draft labels ``mixed``/``unknown`` (the patch's header
    reader has no such label)."""
    grid = itertools.product(
        ("bf16", "nvfp4", "fp8"), ("bf16", "nvfp4", "fp8"),
        ("flashinfer_trtllm", "flashinfer_cutlass", "flashinfer_cutedsl", "flashinfer_megamoe", "triton", "deep_gemm",
         "marlin"),
        (None, 75, 80, 90, 100, 103, 110, 120), (True, False), ((1, 1), (8, 1), (8, 8), (8, 4)),
        (None, "none", "flashinfer", "deepep"))
    checked, differ = 0, []
    for draft, target, backend, sm, flashinfer, (tp, ep), a2a in grid:
        f = RunnerFacts(draft_precision=draft, target_precision=target, target_backend=backend, device_sm=sm,
                        flashinfer_available=flashinfer, tp_size=tp, ep_size=ep, moe_a2a_backend=a2a)
        plugin, patch = _as_fields(choose_draft_runner(f)), patch_rule(f)
        checked += 1
        if plugin != patch:
            differ.append(f"{f}: rule table {plugin}, patch {patch}")
    assert checked == 3 * 3 * 7 * 8 * 2 * 4 * 4
    assert not differ, f"{len(differ)} of {checked} differ, e.g.\n" + "\n".join(differ[:5])
