"""Exclude-list matching: the fast matcher agrees with SGLang's per-glob regex rule on every input."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from sglang_glm_mtp.checkpoint.quant_config import QuantDeclaration, is_layer_excluded
from sglang_glm_mtp.checkpoint.quant_match import FUSED_TAILS as _FUSED_TAILS
from sglang_glm_mtp.synthetic import GLM52_CONFIG, nvfp4_exclude_modules


def reference(prefix: str, patterns: list[str]) -> bool:
    """SGLang 0.5.23 ``is_layer_excluded`` as written there: one compiled regex per glob."""
    candidates = [prefix] + ([prefix[len("language_model."):]] if prefix.startswith("language_model.") else [])
    for glob in patterns:
        regex = re.compile(glob.replace(".", r"\.").replace("*", ".*"))
        for candidate in candidates:
            if regex.fullmatch(candidate) or any(regex.fullmatch(part) for part in candidate.split(".")):
                return True
    last = prefix.rsplit(".", 1)[-1]
    return any(t in last for t in (g.rsplit(".", 1)[-1] for g in patterns) if t in _FUSED_TAILS)


PARTS = st.sampled_from(["model", "layers", "7", "78", "4", "mlp", "experts", "3", "self_attn", "q_a_proj",
                         "gate", "lm_head", "language_model", "shared_head", "kv_b_proj", "up_proj"])
PREFIXES = st.lists(PARTS, min_size=1, max_size=7).map(".".join)
GLOBS = st.lists(st.sampled_from(["model", "layers", "7", "78", "mlp", "experts", "self_attn", "lm_head", "*",
                                  "gate", "q_a_proj", "(1|2)", "[78]"]), min_size=1, max_size=5).map(
    lambda parts: "".join(p if p == "*" else ("." + p if i else p) for i, p in enumerate(parts)))


@settings(max_examples=400, deadline=None)
@given(prefix=PREFIXES, patterns=st.lists(GLOBS, max_size=6))
def test_matches_sglang_rule(prefix: str, patterns: list[str]) -> None:
    assert is_layer_excluded(prefix, patterns) == reference(prefix, patterns)


def test_real_sized_exclude_list() -> None:
    patterns = nvfp4_exclude_modules(GLM52_CONFIG)
    assert len(patterns) > 200
    for prefix in ("model.layers.78.mlp.experts.3.up_proj", "model.layers.12.self_attn.q_a_proj", "lm_head",
                   "model.layers.2.mlp.gate_proj", "model.layers.40.mlp.gate", "model.embed_tokens",
                   "model.layers.40.mlp.experts.7.down_proj"):
        assert is_layer_excluded(prefix, patterns) == reference(prefix, patterns), prefix


@settings(max_examples=400, deadline=None)
@given(prefix=PREFIXES, module=PREFIXES, patterns=st.lists(GLOBS, max_size=6))
def test_whole_layer_shortcut_never_claims_more_than_the_rule(prefix: str, module: str, patterns: list[str]) -> None:
    """``excludes_all_under`` (check's shortcut for a grafted layer's ``model.layers.78*``) implies SGLang's
    verdict for every module under the prefix."""
    decl = QuantDeclaration("hf_quant_config.json", "modelopt", "NVFP4", tuple(patterns))
    if decl.excludes_all_under(prefix + "."):
        assert reference(f"{prefix}.{module}", patterns)


def test_whole_layer_shortcut_takes_the_graft_pattern() -> None:
    decl = QuantDeclaration("hf_quant_config.json", "modelopt", "NVFP4", ("lm_head", "model.layers.78*"))
    assert decl.excludes_all_under("model.layers.78.")
    assert not decl.excludes_all_under("model.layers.7.")
    assert not QuantDeclaration("hf_quant_config.json", "modelopt", "NVFP4",
                                ("model.layers.78.mlp*",)).excludes_all_under("model.layers.78.")
