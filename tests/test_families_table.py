"""The family table without SGLang: where each GLM family's draft lives and what ``check`` makes of it.

Checkpoints are tiny configs from transformers' own config classes (``synthetic.TINY_CONFIGS``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sglang_glm_mtp import synthetic
from sglang_glm_mtp.checkpoint.families import (FAMILIES, Config, family_for, family_for_draft_class,
                                                 supported_architectures)
from sglang_glm_mtp.checkpoint import inspect_checkpoint as inspect

NEW = {"glm4.7-flash": ("Glm4MoeLiteForCausalLM", "model.layers.4"),
       "glm5.3-flash": ("Glm5NextForConditionalGeneration", "model.language_model.layers.4"),
       "glm-ocr": ("GlmOcrForConditionalGeneration", "model.language_model.layers.4")}


@pytest.mark.parametrize("family", list(NEW))
def test_new_families_are_recognised_with_their_prefix(tmp_path: Path, family: str) -> None:
    architecture, prefix = NEW[family]
    report = inspect(str(synthetic.tiny_bf16(tmp_path / family, family)))
    assert report.architecture == architecture and report.status == "ready", report.problems
    assert report.draft_prefix == prefix and report.to_json()["draft_prefix"] == prefix
    assert report.found_tensors == report.expected_tensors > 0


def test_text_config_fields_are_read_under_text_config() -> None:
    cfg = Config(synthetic.tiny_glm_ocr_config())
    assert "num_hidden_layers" not in cfg.raw, "the tiny GLM-OCR config keeps its decoder fields in text_config"
    family = family_for(cfg.architecture)
    assert family is not None and family.draft_layer(cfg) == 4
    assert family.draft_prefixes_for(cfg) == ("model.language_model.layers.4.", "model.layers.4.")


def test_glm53_flash_mtp_is_on_even_when_config_says_zero(tmp_path: Path) -> None:
    """SGLang forces num_nextn_predict_layers = 1 for GLM-5.3-Flash: a missing draft is still missing."""
    d = synthetic.tiny_bf16(tmp_path / "zero", "glm5.3-flash", with_draft=False, num_nextn_predict_layers=0)
    report = inspect(str(d))
    assert report.status == "missing" and report.draft_prefix == "model.language_model.layers.4"


def test_glm53_flash_tensors_its_draft_drops_are_warnings(tmp_path: Path) -> None:
    """mHC tensors in the draft layer: SGLang's draft has no parameters for them; never a refusal."""
    d = synthetic.tiny_bf16(tmp_path / "hc", "glm5.3-flash")
    _add_tensors(d, {"model.language_model.layers.4.hc_attn_fn": (4, 64)})
    report = inspect(str(d))
    assert report.status == "ready"
    assert [p.code for p in report.problems if p.severity == "warning"] == ["unexpected-tensor"]


def test_glm47_flash_embed_and_head_in_the_draft_layer_are_warnings(tmp_path: Path) -> None:
    d = synthetic.tiny_bf16(tmp_path / "eh", "glm4.7-flash")
    _add_tensors(d, {"model.layers.4.embed_tokens.weight": (256, 64),
                     "model.layers.4.shared_head.head.weight": (256, 64)})
    report = inspect(str(d))
    assert report.status == "ready" and report.unexpected == ["model.layers.4.embed_tokens.weight",
                                                              "model.layers.4.shared_head.head.weight"]


def test_draft_classes_map_to_their_family() -> None:
    for architecture, draft in (("Glm4MoeForCausalLM", "Glm4MoeForCausalLMNextN"),
                                ("Glm4MoeLiteForCausalLM", "Glm4MoeLiteForCausalLMNextN"),
                                ("Glm5NextForConditionalGeneration", "Glm5NextForConditionalGenerationNextN"),
                                ("GlmOcrForConditionalGeneration", "GlmOcrForConditionalGenerationNextN")):
        assert family_for_draft_class(draft) is family_for(architecture) is not None
    assert family_for_draft_class("Qwen3NextForCausalLMMTP") is None


def _add_tensors(directory: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """More BF16 tensors in one extra indexed shard."""
    import torch
    from safetensors.torch import save_file

    save_file({n: torch.zeros(s, dtype=torch.bfloat16) for n, s in shapes.items()}, str(directory / "extra.safetensors"))
    index_path = directory / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"].update({name: "extra.safetensors" for name in shapes})
    index.pop("metadata", None)
    index_path.write_text(json.dumps(index))


#: Every architecture the table supports, spelt out (not read from FAMILIES: a row dropped from the table must fail
#: here), with the tiny family whose config it is written over.
SUPPORTED = {"GlmMoeDsaForCausalLM": "glm5", "DeepseekV3ForCausalLM": "deepseek-v3",
             "DeepseekV32ForCausalLM": "deepseek-v3", "Glm4MoeForCausalLM": "glm4.5",
             "Glm4MoeLiteForCausalLM": "glm4.7-flash", "Glm5NextForConditionalGeneration": "glm5.3-flash",
             "GlmOcrForConditionalGeneration": "glm-ocr"}
DRAFTS = {"GlmMoeDsaForCausalLMNextN": "glm5", "DeepseekV3ForCausalLMNextN": "deepseek-v3",
          "Glm4MoeForCausalLMNextN": "glm4.5", "Glm4MoeLiteForCausalLMNextN": "glm4.7-flash",
          "Glm5NextForConditionalGenerationNextN": "glm5.3-flash", "GlmOcrForConditionalGenerationNextN": "glm-ocr"}


def test_the_table_supports_exactly_these_architectures() -> None:
    assert sorted(supported_architectures()) == sorted(SUPPORTED)
    assert sorted(a for f in FAMILIES for a in f.draft_architectures) == sorted(DRAFTS)


@pytest.mark.parametrize("architecture", [*SUPPORTED, *DRAFTS])
def test_every_architecture_synthesises_to_ready(tmp_path: Path, architecture: str) -> None:
    """A complete tiny checkpoint that names ``architecture``: recognised, and its draft layer ready."""
    family = {**SUPPORTED, **DRAFTS}[architecture]
    overrides = {"index_topk": 16, "index_n_heads": 2, "index_head_dim": 16} if architecture.endswith("V32ForCausalLM") \
        else {}
    directory = synthetic.tiny_bf16(tmp_path / "ckpt", family, **overrides)
    config = json.loads((directory / "config.json").read_text())
    config["architectures"] = [architecture]
    (directory / "config.json").write_text(json.dumps(config))
    report = inspect(str(directory))
    assert report.architecture == architecture
    assert report.status == "ready" and not report.missing and report.expected_tensors > 0, report.problems
