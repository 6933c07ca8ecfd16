"""Synthetic checkpoints with the real names, dtypes and shape rules, for tests, demo and benchmarks.

Two kinds:

* tiny pairs (``tiny_pair``): a BF16 "original" that has the MTP layer and an NVFP4
  "target" without it, at the dimensions of ``tiny_glm52_config`` (and its DeepSeek-V3 and
  GLM-4.5 siblings); plus one variant per ``check`` problem code (``make_variant``), which
  ``sglang-glm-mtp synth DIR --defect CODE`` writes for users;
* layout-only full-scale checkpoints (``full_scale_glm52``): GLM-5.2's real config, real
  headers (232,296 tensors, total_size 439,842,893,136 for the NVFP4 target) and sparse
  data regions, so scale is testable on a laptop.
"""

from __future__ import annotations

import json
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from .checkpoint.families import Config, LayerTensor, ModelFamily, family_for, layer_prefix
from .checkpoint.precision import quantized_form
from .checkpoint.safetensors_format import TensorSpec
from .checkpoint.writer import INDEX_FILE, atomic_write_json, index_document, shard_name, split_into_shards, write_shard

Storage = Literal["bf16", "nvfp4", "fp8", "mxfp4"]
#: ModelOpt (``nested`` hf_quant_config.json, or ``flat`` in config.json), compressed-tensors, Quark, block FP8.
QuantFormat = Literal["nested", "flat", "compressed-tensors", "quark", "fp8"]
#: The storages each format writes, the first being its default (``synth --quant-format``'s choices).
FORMAT_STORAGES: dict[str, tuple[Storage, ...]] = {
    "nested": ("nvfp4",), "flat": ("nvfp4",), "compressed-tensors": ("nvfp4", "fp8"),
    "quark": ("fp8", "mxfp4", "nvfp4"), "fp8": ("fp8",)}
#: How a draft layer's exclusion is spelled in the target's declaration: not at all (as AMD's Quark releases and
#: most conversions that dropped the layer), by its checkpoint names (what quantizers write), or as graft writes it.
DraftExclusion = Literal["none", "layer", "graft"]

# ----------------------------------------------------------------------------- configs

GLM52_CONFIG: dict[str, Any] = {
    "architectures": ["GlmMoeDsaForCausalLM"], "model_type": "glm_moe_dsa", "dtype": "bfloat16",
    "hidden_size": 6144, "num_hidden_layers": 78, "num_nextn_predict_layers": 1, "vocab_size": 154880,
    "intermediate_size": 12288, "moe_intermediate_size": 2048, "first_k_dense_replace": 3,
    "mlp_layer_types": ["dense"] * 3 + ["sparse"] * 75,
    "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8, "n_group": 1, "topk_group": 1,
    "topk_method": "noaux_tc", "scoring_func": "sigmoid", "routed_scaling_factor": 2.5, "norm_topk_prob": True,
    "moe_layer_freq": 1, "num_attention_heads": 64, "num_key_value_heads": 64, "q_lora_rank": 2048,
    "kv_lora_rank": 512, "qk_nope_head_dim": 192, "qk_rope_head_dim": 64, "v_head_dim": 256, "qk_head_dim": 256,
    "head_dim": 64, "index_n_heads": 32, "index_head_dim": 128, "index_topk": 2048, "index_topk_freq": 4,
    "index_skip_topk_offset": 3, "index_share_for_mtp_iteration": True, "indexer_rope_interleave": True,
    "rope_interleave": True, "rope_parameters": {"rope_theta": 8000000, "rope_type": "default"},
    "max_position_embeddings": 1048576, "rms_norm_eps": 1e-05, "tie_word_embeddings": False,
    "eos_token_id": [154820, 154827, 154829], "pad_token_id": 154820, "attention_bias": False, "hidden_act": "silu",
}
GLM52_CONFIG["indexer_types"] = ["full" if max(i - 3 + 1, 0) % 4 == 0 else "shared" for i in range(78)]


def tiny_glm52_config(**overrides: Any) -> dict[str, Any]:
    """GLM-5.2's shape rules (every ratio and flag of ``GLM52_CONFIG``) at a size of a few MB."""
    cfg = dict(GLM52_CONFIG)
    cfg.update({
        "hidden_size": 64, "vocab_size": 256, "num_hidden_layers": 4, "first_k_dense_replace": 1,
        "mlp_layer_types": ["dense", "sparse", "sparse", "sparse"], "index_topk_freq": 2,
        "index_skip_topk_offset": 2, "indexer_types": ["full", "full", "shared", "full"],
        "num_attention_heads": 4, "num_key_value_heads": 4, "q_lora_rank": 32, "kv_lora_rank": 16,
        "qk_nope_head_dim": 24, "qk_rope_head_dim": 8, "v_head_dim": 32, "qk_head_dim": 32, "head_dim": 8,
        "index_n_heads": 2, "index_head_dim": 16, "index_topk": 16, "intermediate_size": 128,
        "moe_intermediate_size": 32, "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2,
        "max_position_embeddings": 4096, "pad_token_id": 0, "bos_token_id": 0, "eos_token_id": [1],
        "rope_parameters": {"rope_theta": 8000000, "rope_type": "default"},
    })
    cfg.update(overrides)
    return cfg


def tiny_deepseek_v3_config(**overrides: Any) -> dict[str, Any]:
    """DeepSeek-V3 shape rules at tiny size: MLA, no indexer, embed/head inside the MTP layer."""
    cfg: dict[str, Any] = {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "torch_dtype": "bfloat16",
        "hidden_size": 64, "num_hidden_layers": 4, "num_nextn_predict_layers": 1, "vocab_size": 256,
        "intermediate_size": 128, "moe_intermediate_size": 32, "first_k_dense_replace": 1,
        "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2, "n_group": 1, "topk_group": 1,
        "topk_method": "noaux_tc", "scoring_func": "sigmoid", "routed_scaling_factor": 2.5, "norm_topk_prob": True,
        "moe_layer_freq": 1, "num_attention_heads": 4, "num_key_value_heads": 4, "q_lora_rank": 32,
        "kv_lora_rank": 16, "qk_nope_head_dim": 24, "qk_rope_head_dim": 8, "v_head_dim": 32,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-06, "tie_word_embeddings": False,
        "rope_theta": 10000, "attention_bias": False, "hidden_act": "silu", "bos_token_id": 0, "eos_token_id": 1,
    }
    cfg.update(overrides)
    return cfg


def tiny_glm45_config(**overrides: Any) -> dict[str, Any]:
    """GLM-4.5/4.6/4.7 shape rules at tiny size: GQA attention with q/k/v biases, no indexer."""
    cfg: dict[str, Any] = {
        "architectures": ["Glm4MoeForCausalLM"], "model_type": "glm4_moe", "torch_dtype": "bfloat16",
        "hidden_size": 64, "num_hidden_layers": 4, "num_nextn_predict_layers": 1, "vocab_size": 256,
        "intermediate_size": 128, "moe_intermediate_size": 32, "first_k_dense_replace": 1,
        "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2, "n_group": 1, "topk_group": 1,
        "routed_scaling_factor": 2.5, "norm_topk_prob": True, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "attention_bias": True, "use_qk_norm": False, "partial_rotary_factor": 0.5,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "tie_word_embeddings": False,
        "rope_theta": 1000000, "hidden_act": "silu", "pad_token_id": 0, "eos_token_id": [1],
    }
    cfg.update(overrides)
    return cfg


#: The tiny decoder fields the transformers-built families share (MLA + MoE at fixture size).
_TINY_MLA_MOE: dict[str, Any] = {
    "hidden_size": 64, "vocab_size": 256, "num_hidden_layers": 4, "num_nextn_predict_layers": 1,
    "intermediate_size": 128, "moe_intermediate_size": 32, "n_routed_experts": 4, "n_shared_experts": 1,
    "num_experts_per_tok": 2, "n_group": 1, "topk_group": 1, "num_attention_heads": 4, "num_key_value_heads": 4,
    "q_lora_rank": 32, "kv_lora_rank": 16, "qk_nope_head_dim": 24, "qk_rope_head_dim": 8, "v_head_dim": 32,
    "max_position_embeddings": 4096, "pad_token_id": 0, "bos_token_id": 0, "eos_token_id": 1,
}


def _from_transformers(model_type: str, architecture: str, fields: dict[str, Any], *,
                       text_config: bool = False) -> dict[str, Any]:
    """config.json as transformers' own config class writes it (defaults included), at tiny size."""
    from transformers import AutoConfig

    cfg = AutoConfig.for_model(model_type, **({"text_config": fields} if text_config else fields)).to_dict()
    cfg["architectures"] = [architecture]
    cfg.pop("transformers_version", None)
    for section in ("text_config", "vision_config"):  # save_pretrained leaves out a sub-config's null fields
        if isinstance(cfg.get(section), dict):
            cfg[section] = {k: v for k, v in cfg[section].items() if v is not None}
    return cfg


def tiny_glm47_flash_config(**overrides: Any) -> dict[str, Any]:
    """GLM-4.7-Flash (``glm4_moe_lite``): MLA without an indexer, MoE draft."""
    fields = {**_TINY_MLA_MOE, "mlp_layer_types": ["dense", "sparse", "sparse", "sparse"],
              "first_k_dense_replace": 1, **overrides}
    return _from_transformers("glm4_moe_lite", "Glm4MoeLiteForCausalLM", fields)


def tiny_glm53_flash_config(**overrides: Any) -> dict[str, Any]:
    """GLM-5.3-Flash (``glm5_next``): decoder fields under ``text_config``, MLA without RoPE, DSA indexer."""
    fields = {**_TINY_MLA_MOE, "qk_rope_head_dim": 0, "qk_nope_head_dim": 32, "qk_head_dim": 32, "head_dim": 0,
              "mlp_layer_types": ["dense", "sparse", "sparse", "sparse"],
              "layer_types": ["linear_attention", "linear_attention", "linear_attention", "indexed_attention"],
              "indexer_types": ["full"] * 4, "index_n_heads": 2, "index_head_dim": 16, "index_topk": 16,
              "linear_head_dim": 16, "linear_num_heads": 4, "index_kpool": 4, "index_kpool_compress": True,
              "index_kpool_always_select_tail": True, **overrides}
    return _from_transformers("glm5_next", "Glm5NextForConditionalGeneration", fields, text_config=True)


def tiny_glm_ocr_config(**overrides: Any) -> dict[str, Any]:
    """GLM-OCR (``glm_ocr``): dense GQA draft under ``text_config``."""
    fields = {"hidden_size": 64, "vocab_size": 256, "num_hidden_layers": 4, "num_nextn_predict_layers": 1,
              "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
              "max_position_embeddings": 4096, "pad_token_id": 0, "eos_token_id": 1, **overrides}
    return _from_transformers("glm_ocr", "GlmOcrForConditionalGeneration", fields, text_config=True)


# ----------------------------------------------------------------------------- tensor lists


def storage_of(tensor: LayerTensor, storage: Storage) -> Storage:
    """Which linears a quantized export quantizes.

    NVFP4 and MXFP4 (the scheme that reproduces the community GLM-5.2 NVFP4 total_size
    exactly): every MLP linear (routed, shared, dense); attention, indexer, gate stay BF16.
    FP8 (DeepSeek-V3 style): every linear but eh_proj.
    """
    if not tensor.linear or storage == "bf16":
        return "bf16"
    if storage in ("nvfp4", "mxfp4"):
        return storage if tensor.name.startswith("mlp.") else "bf16"
    return "bf16" if tensor.name.startswith("eh_proj") else "fp8"


def layout_of(quant_format: QuantFormat, storage: Storage) -> str | None:
    """The tensor layout (``precision.py``) a format writes a storage in."""
    if storage == "bf16":
        return None
    if quant_format == "compressed-tensors":
        return "ct-nvfp4" if storage == "nvfp4" else "scaled-fp8"
    if quant_format == "quark":
        return {"fp8": "quark-fp8", "mxfp4": "mxfp4", "nvfp4": "modelopt"}[storage]
    return "block-fp8" if storage == "fp8" else "modelopt"


def layer_specs(family: ModelFamily, cfg: Config, layer: int, storage: Storage, *, draft: bool = False,
                rename_to: int | None = None, quant_format: QuantFormat = "nested") -> list[TensorSpec]:
    prefix = layer_prefix(layer if rename_to is None else rename_to, family.draft_prefixes[0]) + "."
    specs: list[TensorSpec] = []
    for tensor in family.layer_tensors(cfg, layer, draft=draft):
        stored = storage_of(tensor, storage)
        for spec in quantized_form(tensor, stored, layout=layout_of(quant_format, stored)):
            specs.append(TensorSpec(prefix + spec.name, spec.dtype, spec.shape))
    return specs


def model_specs(cfg_raw: dict[str, Any], storage: Storage, *, with_draft: bool,
                draft_storage: Storage = "bf16", quant_format: QuantFormat = "nested") -> list[TensorSpec]:
    family = family_for(Config(cfg_raw).architecture)
    assert family is not None, cfg_raw.get("architectures")
    cfg = family.text_config(Config(cfg_raw))
    hidden, vocab = cfg.int("hidden_size"), cfg.int("vocab_size")
    base = family.draft_prefixes[0].split("layers.")[0]  # "model." or "model.language_model."
    specs = [TensorSpec(f"{base}embed_tokens.weight", "BF16", (vocab, hidden)),
             TensorSpec("lm_head.weight", "BF16", (vocab, hidden)),
             TensorSpec(f"{base}norm.weight", "BF16", (hidden,))]
    for layer in range(cfg.int("num_hidden_layers")):
        specs += layer_specs(family, cfg, layer, storage, quant_format=quant_format)
    if with_draft:
        specs += layer_specs(family, cfg, family.draft_layer(cfg), draft_storage, draft=True, quant_format=quant_format)
    return specs


def nvfp4_exclude_modules(cfg_raw: dict[str, Any], *, draft_quantized: bool = False) -> list[str]:
    """The exclude list of a ModelOpt NVFP4 export that keeps attention, gate and norms BF16.

    With ``draft_quantized`` the MTP layer is treated like any other layer (its MLP
    quantized) instead of being excluded whole. Layer names follow the family's spelling
    (``model.language_model.layers.N`` for the multimodal wrappers).
    """
    family = family_for(Config(cfg_raw).architecture)
    assert family is not None, cfg_raw.get("architectures")
    cfg = family.text_config(Config(cfg_raw))
    template = family.draft_prefixes[0]
    base = template.split("layers.")[0]
    layers = cfg.int("num_hidden_layers")
    excludes = ["lm_head", f"{base}embed_tokens", f"{base}norm"]
    if draft_quantized:
        excludes += [f"{layer_prefix(layers, template)}.{m}" for m in ("eh_proj", "enorm", "hnorm", "shared_head*")]
    for i in range(layers + 1 if draft_quantized else layers):
        prefix = layer_prefix(i, template)
        excludes += [f"{prefix}.self_attn*", f"{prefix}.input_layernorm", f"{prefix}.post_attention_layernorm"]
        if i >= cfg.int("first_k_dense_replace", 0):
            excludes.append(f"{prefix}.mlp.gate")
    if not draft_quantized:
        excludes.append(layer_prefix(layers, template) + "*")
    return excludes


def write_quant_config(directory: Path, cfg_raw: dict[str, Any], fmt: QuantFormat, excludes: list[str]) -> dict[str, Any]:
    """Write the NVFP4 quant declaration in one of ModelOpt's two formats; returns config.json."""
    cfg = dict(cfg_raw)
    if fmt == "nested":
        atomic_write_json(directory / "hf_quant_config.json", {
            "producer": {"name": "modelopt", "version": "0.27.0"},
            "quantization": {"quant_algo": "NVFP4", "kv_cache_quant_algo": None, "group_size": 16,
                             "exclude_modules": excludes}})
    else:
        cfg["quantization_config"] = {
            "quant_method": "modelopt", "quant_algo": "NVFP4",
            "producer": {"name": "modelopt", "version": "0.45.0"},
            "config_groups": {"group_0": {
                "weights": {"num_bits": 4, "type": "float", "group_size": 16, "dynamic": False},
                "input_activations": {"num_bits": 4, "type": "float", "group_size": 16, "dynamic": False},
                "targets": ["Linear"]}},
            "ignore": excludes}
    return cfg


def _draft_entries(cfg_raw: dict[str, Any], quant_format: QuantFormat, how: DraftExclusion) -> list[str]:
    """The draft layer's own exclusions in a format's syntax (``DraftExclusion``)."""
    from .checkpoint.quant_config import read_quant_declaration

    family = family_for(Config(cfg_raw).architecture)
    assert family is not None
    cfg = family.text_config(Config(cfg_raw))
    prefix = layer_prefix(family.draft_layer(cfg), family.draft_prefixes[0])
    if how == "none":
        return []
    if how == "graft":
        probe = {"quantization_config": _dialect_config(quant_format, FORMAT_STORAGES[quant_format][0], [])}
        return read_quant_declaration(probe, None).bf16_draft_entries(prefix, family.quant_name_map)
    if quant_format == "compressed-tensors":
        return ["re:" + prefix.replace(".", "\\.") + "\\..*"]
    if quant_format == "quark":  # exact module names, as Quark writes them
        modules = sorted({t.module for t in family.draft_tensors(cfg) if t.linear} | {"eh_proj"})
        return [f"{prefix}.{m}" for m in modules]
    if quant_format == "fp8":
        return [prefix]
    return [prefix + "*"]


def _dialect_config(quant_format: QuantFormat, storage: Storage, entries: list[str]) -> dict[str, Any]:
    """config.json ``quantization_config`` of a compressed-tensors, Quark or block-FP8 export."""
    if quant_format == "compressed-tensors":
        if storage == "nvfp4":
            fmt = "nvfp4-pack-quantized"
            weights = {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16,
                       "symmetric": True, "dynamic": False}
            inputs = {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16,
                      "symmetric": True, "dynamic": "local"}
        else:
            fmt = "float-quantized"
            weights = {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True, "dynamic": False}
            inputs = {"num_bits": 8, "type": "float", "strategy": "token", "symmetric": True, "dynamic": True}
        return {"quant_method": "compressed-tensors", "format": fmt, "quantization_status": "compressed",
                "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights,
                                              "input_activations": inputs, "output_activations": None,
                                              "format": fmt}},
                "ignore": entries, "kv_cache_scheme": None, "sparsity_config": {}, "version": "0.12.2"}
    if quant_format == "quark":
        if storage == "fp8":
            weight: Any = {"dtype": "fp8_e4m3", "qscheme": "per_channel", "ch_axis": 0, "is_dynamic": False}
            inputs = {"dtype": "fp8_e4m3", "qscheme": "per_channel", "ch_axis": 1, "is_dynamic": True}
        elif storage == "mxfp4":
            weight = {"dtype": "fp4", "qscheme": "per_group", "group_size": 32, "is_dynamic": False,
                      "scale_format": "e8m0"}
            inputs = {"dtype": "fp4", "qscheme": "per_group", "group_size": 32, "is_dynamic": True,
                      "scale_format": "e8m0"}
        else:
            weight = [{"dtype": "fp4", "qscheme": "per_group", "group_size": 16, "is_dynamic": False,
                       "scale_format": "fp8_e4m3"},
                      {"dtype": "fp8_e4m3", "qscheme": "per_tensor", "is_dynamic": False}]
            inputs = [{"dtype": "fp4", "qscheme": "per_group", "group_size": 16, "is_dynamic": True,
                       "scale_format": "fp8_e4m3"},
                      {"dtype": "fp8_e4m3", "qscheme": "per_tensor", "is_dynamic": False}]
        return {"quant_method": "quark", "export": {"kv_cache_group": [], "pack_method": "reorder",
                                                    "weight_format": "real_quantized"},
                "global_quant_config": {"weight": weight, "input_tensors": inputs, "output_tensors": None,
                                        "bias": None},
                "layer_quant_config": {}, "layer_type_quant_config": {}, "exclude": entries,
                "quant_mode": "eager_mode"}
    return {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3", "weight_block_size": [128, 128],
            "modules_to_not_convert": entries}


def write_dialect_config(cfg_raw: dict[str, Any], quant_format: QuantFormat, storage: Storage, *,
                         draft_quantized: bool, draft_exclusion: DraftExclusion) -> dict[str, Any]:
    """config.json with a compressed-tensors, Quark or block-FP8 declaration.

    Layer-agnostic exclusions, as llm-compressor recipes and AMD's exports write them:
    the LM head, and where the storage keeps them BF16, attention and the router gate.
    A BF16 draft layer is excluded as ``draft_exclusion`` says.
    """
    entries = ["lm_head"]
    if storage in ("nvfp4", "mxfp4"):
        entries += ["re:.*self_attn.*", "re:.*mlp\\.gate$"]
    if not draft_quantized:
        entries += _draft_entries(cfg_raw, quant_format, draft_exclusion)
    if quant_format == "fp8":  # dotted prefixes, not regexes
        entries = [e for e in entries if not e.startswith("re:")]
    return {**cfg_raw, "quantization_config": _dialect_config(quant_format, storage, entries)}


# ----------------------------------------------------------------------------- data


def deterministic_fill(spec: TensorSpec, handle: Any) -> None:
    """Bytes that depend only on the tensor name: valid BF16/F32/F8 values, no NaN."""
    seed = zlib.crc32(spec.name.encode())
    n = spec.nbytes
    if spec.dtype == "F32":
        unit = (0x3F800000 + (seed & 0xFFFF)).to_bytes(4, "little")  # ~1.0
    elif spec.dtype in ("BF16", "F16"):
        unit = (0x3C00 + (seed & 0x3FF)).to_bytes(2, "little") + (0xBC00 + ((seed >> 10) & 0x3FF)).to_bytes(2, "little")
    elif spec.dtype == "F8_E4M3":
        unit = bytes([0x30 + (seed % 16), 0x38 + ((seed >> 4) % 8)])  # finite, positive scales
    else:
        unit = bytes((seed + i * 37) & 0xFF for i in range(251))
    block = (unit * (65536 // len(unit) + 1))[: 65536 - 65536 % len(unit)]
    written = 0
    while written < n:
        chunk = block[: min(len(block), n - written)]
        handle.write(chunk)
        written += len(chunk)


#: Byte map that clears the top exponent bit of a value's high byte: finite BF16/F32/F8 values.
_FINITE = bytes(b & 0xBF for b in range(256))


def release_fill(release: str) -> Callable[[TensorSpec, Any], None]:
    """Pseudo-random tensor bytes of one "release": two releases share no weights, but a
    quantized copy of a release stores its unquantized tensors byte-identical (same name,
    dtype and shape give the same bytes), as ModelOpt exports do."""
    import random

    def fill(spec: TensorSpec, handle: Any) -> None:
        key = f"{release}|{spec.name}|{spec.dtype}|{spec.shape}".encode()
        rng = random.Random(zlib.crc32(key) ^ (len(key) << 32))
        data = bytearray(rng.randbytes(spec.nbytes))
        width = {"BF16": 2, "F16": 2, "F32": 4}.get(spec.dtype, 1)
        if spec.dtype in ("BF16", "F16", "F32", "F8_E4M3"):
            data[width - 1::width] = data[width - 1::width].translate(_FINITE)  # no NaN/Inf
        handle.write(data)
    return fill


def write_checkpoint(directory: Path, cfg_raw: dict[str, Any], specs: list[TensorSpec], *, num_shards: int,
                     sparse: bool = False, fill: Callable[[TensorSpec, Any], None] | None = None) -> dict[str, str]:
    """Write config.json, the shards and the index; returns the weight map (``fill`` defaults to name-only bytes)."""
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(directory / "config.json", cfg_raw)
    groups = split_into_shards(specs, num_shards)
    weight_map: dict[str, str] = {}
    total = 0
    for i, group in enumerate(groups, start=1):
        name = shard_name(i, len(groups))
        write_shard(directory / name, group, None if sparse else fill or deterministic_fill)
        for spec in group:
            weight_map[spec.name] = name
            total += spec.nbytes
    atomic_write_json(directory / INDEX_FILE, index_document(weight_map, total))
    (directory / "generation_config.json").write_text(json.dumps({"_from_model_config": True}) + "\n")
    return weight_map


# ----------------------------------------------------------------------------- pairs and variants


@dataclass(frozen=True)
class SyntheticPair:
    original: Path  # BF16, with the draft layer
    target: Path  # quantized, draft layer dropped (config still declares it)


TINY_CONFIGS: dict[str, Callable[..., dict[str, Any]]] = {
    "glm5": tiny_glm52_config, "deepseek-v3": tiny_deepseek_v3_config, "glm4.5": tiny_glm45_config,
    "glm4.7-flash": tiny_glm47_flash_config, "glm5.3-flash": tiny_glm53_flash_config, "glm-ocr": tiny_glm_ocr_config}
#: Families ``tiny_pair`` builds as a BF16 original plus an NVFP4 target (the others: ``tiny_bf16``).
NVFP4_PAIR_FAMILIES = ("glm5", "deepseek-v3", "glm4.5")
#: The real release each tiny original stands in for; the tiny target's config.json names it in
#: ``_name_or_path``, as a conversion made with ``from_pretrained(<id>)`` does (check's remedy reads it).
TINY_STANDS_IN_FOR = {"glm5": "zai-org/GLM-5.2", "deepseek-v3": "deepseek-ai/DeepSeek-V3", "glm4.5": "zai-org/GLM-4.7"}


def tiny_bf16(directory: Path, family: str, *, with_draft: bool = True, drop: Callable[[str], bool] | None = None,
              draft_prefix: str | None = None, **overrides: Any) -> Path:
    """One BF16 checkpoint of a tiny ``TINY_CONFIGS`` family; ``drop`` leaves out the tensors it matches;
    ``draft_prefix`` spells the draft layer with another accepted prefix (GLM-5.3-Flash accepts two)."""
    cfg = TINY_CONFIGS[family](**overrides)
    specs = [s for s in model_specs(cfg, "bf16", with_draft=with_draft) if not (drop and drop(s.name))]
    if draft_prefix is not None:
        fam = family_for(Config(cfg).architecture)
        assert fam is not None
        old = fam.draft_prefixes_for(Config(cfg))[0]
        specs = [TensorSpec(draft_prefix + "." + s.name[len(old):], s.dtype, s.shape) if s.name.startswith(old)
                 else s for s in specs]
    write_checkpoint(directory, cfg, specs, num_shards=3)
    return directory


def tiny_pair(workdir: Path, *, family: str = "glm5", quant_format: QuantFormat = "nested",
              target_has_draft: bool = False, draft_storage: Storage = "bf16",
              config_overrides: dict[str, Any] | None = None, release: str | None = None,
              target_storage: Storage | None = None, draft_exclusion: DraftExclusion | None = None) -> SyntheticPair:
    """The problem in miniature: a BF16 original and a quantized target that dropped the MTP layer.

    ``quant_format`` picks the dialect (``FORMAT_STORAGES`` lists the storages each writes;
    ``target_storage`` defaults to its first). ``config_overrides`` changes the tiny config
    (e.g. ``fp8_draft_overrides()`` for a block-FP8 draft that SGLang can construct).
    ``release`` fills both with that release's random weights (``release_fill``); by default
    bytes depend on the tensor name only. ``draft_exclusion`` spells a BF16 draft layer's
    exclusion (default: ModelOpt ``layer``, the others ``none``).
    """
    overrides = config_overrides or {}
    cfg = TINY_CONFIGS[family](**overrides)
    storage = target_storage or FORMAT_STORAGES[quant_format][0]
    if storage not in FORMAT_STORAGES[quant_format]:
        raise ValueError(f"{quant_format} writes {', '.join(FORMAT_STORAGES[quant_format])}, not {storage}")
    original, target = workdir / "original-bf16", workdir / f"target-{storage}"
    fill = release_fill(release) if release is not None else None
    write_checkpoint(original, cfg, model_specs(cfg, "bf16", with_draft=True), num_shards=6, fill=fill)
    target.mkdir(parents=True, exist_ok=True)
    draft_quantized = target_has_draft and draft_storage != "bf16"
    if quant_format in ("nested", "flat"):
        if draft_exclusion not in (None, "layer"):
            raise ValueError("ModelOpt targets spell the draft exclusion as model.layers.N* (draft_exclusion='layer')")
        excludes = nvfp4_exclude_modules(cfg, draft_quantized=draft_quantized)
        quantized_cfg = write_quant_config(target, cfg, quant_format, excludes)
    else:
        quantized_cfg = write_dialect_config(cfg, quant_format, storage, draft_quantized=draft_quantized,
                                             draft_exclusion=draft_exclusion or "none")
    stands_in = TINY_STANDS_IN_FOR.get(family)
    target_cfg = {**({"_name_or_path": stands_in} if stands_in else {}), **quantized_cfg}
    write_checkpoint(target, target_cfg, model_specs(cfg, storage, with_draft=target_has_draft,
                                                     draft_storage=draft_storage, quant_format=quant_format),
                     num_shards=3, fill=fill)
    return SyntheticPair(original, target)


def fp8_draft_overrides() -> dict[str, Any]:
    """Tiny-config changes for a block-FP8 [128, 128] draft layer.

    SGLang's FP8 methods refuse, at construction, merged weights (expert and shared
    gate/up) whose parts are not whole 128-row blocks; 32 is the tiny default. The
    loader concatenates the q_a and kv_a scale blocks, so q_lora_rank must be whole
    blocks too (1536 in DeepSeek-V3/GLM-5.2).
    """
    return {"moe_intermediate_size": 128, "q_lora_rank": 128}


def full_scale_glm52(directory: Path, *, with_draft: bool = False, storage: Storage = "nvfp4",
                     num_shards: int | None = None, quant_format: QuantFormat = "nested") -> dict[str, str]:
    """Layout-only GLM-5.2 (real headers, sparse data): 45 NVFP4 shards or 282 BF16 shards.

    ``quant_format`` writes the NVFP4 target in another dialect's tensor names and declaration
    (``compressed-tensors``, or ``quark`` with ``storage`` its NVFP4 or FP8); a draft layer is BF16
    and excluded as graft excludes it.
    """
    cfg = dict(GLM52_CONFIG)
    directory.mkdir(parents=True, exist_ok=True)
    if storage != "bf16" and quant_format in ("nested", "flat"):
        cfg = write_quant_config(directory, cfg, quant_format, nvfp4_exclude_modules(cfg))
    elif storage != "bf16":
        cfg = write_dialect_config(cfg, quant_format, storage, draft_quantized=False,
                                   draft_exclusion="graft" if with_draft else "none")
    specs = model_specs(GLM52_CONFIG, storage, with_draft=with_draft, quant_format=quant_format)
    shards = num_shards or (45 if storage != "bf16" else 282)
    return write_checkpoint(directory, cfg, specs, num_shards=shards, sparse=True)


# Each variant turns a *complete* tiny GLM target (draft layer grafted, BF16) into one that
# shows exactly one problem code. The demo and the tests share them.


def _load_index(d: Path) -> dict[str, Any]:
    return json.loads((d / INDEX_FILE).read_text())


def _draft_shard(index: dict[str, Any], layer: int = 4) -> str:
    return next(v for k, v in index["weight_map"].items() if k.startswith(f"{layer_prefix(layer)}."))


def _rewrite_shard(d: Path, shard: str, edit: Callable[[list[TensorSpec]], list[TensorSpec]]) -> list[TensorSpec]:
    from .checkpoint.safetensors_format import read_header

    with open(d / shard, "rb") as handle:
        header = read_header(handle, (d / shard).stat().st_size)
    specs = edit([TensorSpec(e.name, e.dtype, e.shape) for e in header.tensors.values()])
    write_shard(d / shard, specs, deterministic_fill)
    return specs


def _drop_tensors(d: Path, predicate: Callable[[str], bool]) -> None:
    index = _load_index(d)
    for shard in sorted(set(index["weight_map"].values())):
        _rewrite_shard(d, shard, lambda specs: [s for s in specs if not predicate(s.name)])
    _reindex(d, {k: v for k, v in index["weight_map"].items() if not predicate(k)})


def _reindex(d: Path, weight_map: dict[str, str]) -> None:
    from .checkpoint.safetensors_format import read_header

    total = 0
    for shard in sorted(set(weight_map.values())):
        if (d / shard).exists():
            with open(d / shard, "rb") as handle:
                total += read_header(handle, (d / shard).stat().st_size).payload_bytes
    atomic_write_json(d / INDEX_FILE, index_document(weight_map, total))


def _variant_incomplete(d: Path) -> None:
    _drop_tensors(d, lambda n: n.startswith(f"{layer_prefix(4)}.mlp.experts.3."))


def _variant_shape(d: Path) -> None:
    shard = _draft_shard(_load_index(d))
    _rewrite_shard(d, shard, lambda specs: [TensorSpec(s.name, s.dtype, (64, 64)) if s.name.endswith(
        "4.eh_proj.weight") else s for s in specs])
    _reindex(d, _load_index(d)["weight_map"])


def _variant_dtype(d: Path) -> None:
    shard = _draft_shard(_load_index(d))
    _rewrite_shard(d, shard, lambda specs: [TensorSpec(s.name, "F8_E4M3", s.shape) if s.name.endswith(
        "4.enorm.weight") else s for s in specs])
    _reindex(d, _load_index(d)["weight_map"])


def _variant_index_missing_shard(d: Path) -> None:
    index = _load_index(d)
    index["weight_map"][f"{layer_prefix(0)}.mlp.extra.weight"] = shard_name(9, 9)
    atomic_write_json(d / INDEX_FILE, index)


def _variant_index_tensor_not_in_shard(d: Path) -> None:
    index = _load_index(d)
    index["weight_map"][f"{layer_prefix(4)}.ghost.weight"] = _draft_shard(index)
    atomic_write_json(d / INDEX_FILE, index)


def _variant_tensor_not_in_index(d: Path) -> None:
    index = _load_index(d)
    del index["weight_map"][f"{layer_prefix(4)}.hnorm.weight"]
    atomic_write_json(d / INDEX_FILE, index)


def _variant_unindexed_shard(d: Path) -> None:
    """The hand-made mtp.safetensors case: the layer sits in a file the index doesn't name."""
    cfg = Config(json.loads((d / "config.json").read_text()))
    family = family_for(cfg.architecture)
    assert family is not None
    layer = family.draft_layer(cfg)
    _drop_tensors(d, lambda n: n.startswith(f"{layer_prefix(layer)}."))
    write_shard(d / "mtp.safetensors", layer_specs(family, cfg, layer, "bf16", draft=True), deterministic_fill)


def _variant_total_size(d: Path) -> None:
    index = _load_index(d)
    index["metadata"]["total_size"] += 4096
    atomic_write_json(d / INDEX_FILE, index)


def _variant_corrupt_header(d: Path) -> None:
    path = d / _draft_shard(_load_index(d))
    data = bytearray(path.read_bytes())
    data[8:12] = b"\xff\xfe[1"
    path.write_bytes(bytes(data))


def _variant_truncated(d: Path) -> None:
    path = d / _draft_shard(_load_index(d))
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 100)


def _variant_quant_mismatch(d: Path) -> None:
    quant = json.loads((d / "hf_quant_config.json").read_text())
    quant["quantization"]["exclude_modules"].remove(f"{layer_prefix(4)}*")
    atomic_write_json(d / "hf_quant_config.json", quant)


VARIANTS: dict[str, Callable[[Path], None]] = {
    "ready": lambda d: None,
    "draft-layer-incomplete": _variant_incomplete,
    "shape-mismatch": _variant_shape,
    "dtype-mismatch": _variant_dtype,
    "index-missing-shard": _variant_index_missing_shard,
    "index-tensor-not-in-shard": _variant_index_tensor_not_in_shard,
    "tensor-not-in-index": _variant_tensor_not_in_index,
    "unindexed-shard": _variant_unindexed_shard,
    "total-size-mismatch": _variant_total_size,
    "corrupt-header": _variant_corrupt_header,
    "truncated-shard": _variant_truncated,
    "quant-config-mismatch": _variant_quant_mismatch,
}


def make_variant(workdir: Path, code: str) -> Path:
    """A tiny GLM NVFP4 checkpoint whose only defect is ``code``.

    ``draft-layer-missing`` is the plain target; ``draft-precision-unsupported`` has an
    NVFP4 draft layer; the rest start from a complete BF16-draft target.
    """
    if code == "draft-layer-missing":
        return tiny_pair(workdir).target
    if code == "draft-precision-unsupported":
        return tiny_pair(workdir, target_has_draft=True, draft_storage="nvfp4").target
    target = tiny_pair(workdir, target_has_draft=True).target
    VARIANTS[code](target)
    return target


def copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst
