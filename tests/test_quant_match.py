"""Rules of SGLang 0.5.23's exclusion matchers that the dialect tests' checkpoints never exercise, in process.

Each case is one rule of SGLang's own function (quoted in ``quant_match``'s docstrings) at the
module names the NextN draft is built with; a matcher that drops the rule gives another answer.
"""

from __future__ import annotations

import pytest

from sglang_glm_mtp.checkpoint import quant_match
from sglang_glm_mtp.checkpoint.quant_match import FusedShardsDisagree

EXPERTS = "model.decoder.mlp.experts"


def test_quark_one_excluded_expert_excludes_the_fused_experts_module() -> None:
    """Quark exports name experts one by one; SGLang asks about ``…mlp.experts`` (quark/utils.py)."""
    assert quant_match.quark_ignored(EXPERTS, [f"{EXPERTS}.3.gate_proj"])
    assert not quant_match.quark_ignored(EXPERTS, ["model.decoder.mlp.gate"])
    assert not quant_match.quark_ignored(EXPERTS, [f"{EXPERTS}_extra.3.gate_proj"])  # under it, not beside it


@pytest.mark.parametrize("ignored", [quant_match.ct_ignored, quant_match.quark_ignored])
def test_a_fused_module_half_excluded_is_refused_as_sglang_refuses_it(ignored) -> None:
    with pytest.raises(FusedShardsDisagree, match="q_proj, k_proj, v_proj"):
        ignored("model.decoder.self_attn.qkv_proj", ["model.decoder.self_attn.q_proj"])
    every = [f"model.decoder.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")]
    assert ignored("model.decoder.self_attn.qkv_proj", every)
    assert not ignored("model.decoder.self_attn.qkv_proj", [])


def test_fp8_half_excluded_fused_module_is_refused() -> None:
    with pytest.raises(FusedShardsDisagree):
        quant_match.fp8_skipped("model.decoder.mlp.gate_up_proj", ["model.decoder.mlp.gate_proj"])


@pytest.mark.parametrize("prefix, entries", [
    ("lm_head", ["model.lm_head"]),  # the model.-less twin matches a bare prefix
    ("model.lm_head", ["lm_head"]),
])
def test_fp8_entries_match_with_and_without_model_prefix(prefix: str, entries: list[str]) -> None:
    """``Fp8Config.from_config`` keeps both spellings of every modules_to_not_convert entry."""
    assert quant_match.fp8_normalized(entries) == ("lm_head", "model.lm_head")
    assert quant_match.fp8_skipped(prefix, entries)
