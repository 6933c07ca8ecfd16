"""Model families: where each architecture keeps its MTP/NextN draft layer, and what it holds.

Every tensor list here is derived from config.json alone, in the checkpoint's
*unquantized* form (names, shapes, dtypes as the BF16 release stores them). Quantized
forms of the same linears are derived in ``precision.py``. Adding a family means
adding one ``ModelFamily`` entry to ``FAMILIES`` at the bottom of this file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import GlmMtpError
from .files import CONFIG_FILE


@dataclass(frozen=True)
class LayerTensor:
    """One tensor of a decoder/draft layer in its unquantized form.

    ``linear`` marks a ``<module>.weight`` that quantized exports may replace with
    NVFP4 or FP8 tensors; norms, biases, the router gate and its bias are never
    quantized.
    """

    name: str  # relative to the layer prefix, e.g. "self_attn.q_a_proj.weight"
    shape: tuple[int, ...]
    dtype: str = "BF16"
    linear: bool = False

    @property
    def module(self) -> str:
        return self.name.rsplit(".", 1)[0]


#: The one home of config.json size bounds: about 100x the largest real model (DeepSeek-V3 and
#: GLM-5.x: 256 experts, GLM-5.3-Flash 288; vocab ~155k; hidden 7168; ~100 layers). A value
#: beyond them is a corrupt file, not a model, and would cost minutes to enumerate.
CONFIG_LIMITS: dict[str, tuple[int, int]] = {
    "n_routed_experts": (0, 30_000), "n_shared_experts": (0, 1_000), "num_hidden_layers": (0, 10_000),
    "num_nextn_predict_layers": (0, 1_000), "first_k_dense_replace": (0, 10_000),
    "num_attention_heads": (1, 20_000), "num_key_value_heads": (1, 20_000), "index_n_heads": (0, 20_000),
    "vocab_size": (0, 20_000_000),
}
#: Bounds of every other integer field read through ``Config.int`` (dimensions, ranks, head sizes).
DEFAULT_INT_LIMITS = (0, 1 << 24)
#: Integer fields checked when the config is read, whichever accessor later reads them.
INT_FIELDS = (*CONFIG_LIMITS, "hidden_size", "intermediate_size", "moe_intermediate_size", "q_lora_rank",
              "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "head_dim", "index_head_dim",
              "index_topk_freq", "index_skip_topk_offset")


class ConfigError(GlmMtpError, ValueError):
    """A config.json field that is missing, of the wrong type, or absurd; the message names it (and ``key``)."""


#: The draft layer's tensor prefix in most checkpoints; ``{N}`` is the draft layer id. The only spelling
#: of ``model.layers`` in the package: everything else asks a family (or ``layer_prefix``).
LAYER_PREFIX = "model.layers.{N}"


def layer_prefix(layer: int | str, template: str = LAYER_PREFIX) -> str:
    """``model.layers.78`` for layer 78 (no trailing dot); ``layer="*"`` gives the all-layers glob."""
    return template.replace("{N}", str(layer))


def draft_layer_id(num_hidden_layers: int) -> int:
    """SGLang's NextN rule, shared by every family: the layer after the last decoder layer."""
    return 0 if num_hidden_layers == 1 else num_hidden_layers


class Config:
    """Read-only view of config.json with the defaults the HF config classes apply.

    Every accessor validates what it returns, so a malformed file surfaces as one
    ``ConfigError`` naming the field, never as a TypeError deep inside a tensor list.
    """

    def __init__(self, raw: Mapping[str, Any]) -> None:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"config.json must be a JSON object, got {type(raw).__name__}", file=CONFIG_FILE)
        self.raw = dict(raw)
        for key in INT_FIELDS:  # fail fast, before any tensor list is built
            if self.raw.get(key) is not None:
                self.int(key)

    def get(self, key: str, default: Any = None) -> Any:
        value = self.raw.get(key, default)
        return default if value is None else value

    def int(self, key: str, default: int | None = None) -> int:
        value = self.raw.get(key)
        if value is None:
            value = default
        if value is None:
            raise ConfigError(f"config.json has no {key!r}, which this architecture needs", file=CONFIG_FILE, key=key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config.json field {key!r} must be an integer, got {value!r}", file=CONFIG_FILE,
                              key=key)
        low, high = CONFIG_LIMITS.get(key, DEFAULT_INT_LIMITS)
        if not low <= value <= high:
            raise ConfigError(f"config.json field {key!r} = {value:,} is outside {low:,}..{high:,}; "
                              "the file is corrupt (no real model comes near this)", file=CONFIG_FILE, key=key)
        return value

    @property
    def architecture(self) -> str:
        archs = self.raw.get("architectures")
        if isinstance(archs, str):
            return archs
        if isinstance(archs, list) and archs and isinstance(archs[0], str):
            return archs[0]
        return ""


# ----------------------------------------------------------------------------- building blocks


def _linear(name: str, out_features: int, in_features: int) -> LayerTensor:
    return LayerTensor(f"{name}.weight", (out_features, in_features), linear=True)


def _norm(name: str, size: int, *, bias: bool = False) -> list[LayerTensor]:
    tensors = [LayerTensor(f"{name}.weight", (size,))]
    if bias:
        tensors.append(LayerTensor(f"{name}.bias", (size,)))
    return tensors


def mla_attention(cfg: Config) -> list[LayerTensor]:
    """DeepSeek-style multi-head latent attention (GLM-5.x, DeepSeek-V3)."""
    hidden, heads = cfg.int("hidden_size"), cfg.int("num_attention_heads")
    nope, rope, v_dim = cfg.int("qk_nope_head_dim"), cfg.int("qk_rope_head_dim"), cfg.int("v_head_dim")
    kv_lora = cfg.int("kv_lora_rank")
    tensors: list[LayerTensor] = []
    q_lora = cfg.get("q_lora_rank")
    if q_lora:
        tensors += [_linear("self_attn.q_a_proj", q_lora, hidden), *_norm("self_attn.q_a_layernorm", q_lora),
                    _linear("self_attn.q_b_proj", heads * (nope + rope), q_lora)]
    else:
        tensors.append(_linear("self_attn.q_proj", heads * (nope + rope), hidden))
    tensors += [
        _linear("self_attn.kv_a_proj_with_mqa", kv_lora + rope, hidden),
        *_norm("self_attn.kv_a_layernorm", kv_lora),
        _linear("self_attn.kv_b_proj", heads * (nope + v_dim), kv_lora),
        _linear("self_attn.o_proj", hidden, heads * v_dim),
    ]
    return tensors


def dsa_indexer(cfg: Config) -> list[LayerTensor]:
    """The DeepSeek sparse-attention indexer (GLM-5.x, DeepSeek-V3.2)."""
    hidden, q_lora = cfg.int("hidden_size"), cfg.int("q_lora_rank")
    n_heads, head_dim = cfg.int("index_n_heads", 64), cfg.int("index_head_dim", 128)
    return [
        _linear("self_attn.indexer.wq_b", n_heads * head_dim, q_lora),
        _linear("self_attn.indexer.wk", head_dim, hidden),
        *_norm("self_attn.indexer.k_norm", head_dim, bias=True),
        _linear("self_attn.indexer.weights_proj", n_heads, hidden),
        *indexer_kpool(cfg),
    ]


def indexer_kpool(cfg: Config) -> list[LayerTensor]:
    """GLM-5.3-Flash's ``IndexerKPool`` (``index_kpool > 1``): two more parameters, loaded by name.

    Inferred from SGLang's class (no release header seen): the APE is built F32, the gate BF16;
    declared BF16 here because ``check`` accepts F32 where BF16 is expected, never the reverse.
    """
    pool = cfg.int("index_kpool", 1)
    if pool <= 1:
        return []
    head_dim = cfg.int("index_head_dim", 128)
    return [LayerTensor("self_attn.indexer.index_kpool_compress_ape", (pool, head_dim)),
            LayerTensor("self_attn.indexer.index_kpool_compress_gate", (head_dim, cfg.int("hidden_size")))]


def gqa_attention(cfg: Config) -> list[LayerTensor]:
    """Grouped-query attention with q/k/v biases and optional q/k norms (GLM-4.5/4.6/4.7)."""
    hidden, heads = cfg.int("hidden_size"), cfg.int("num_attention_heads")
    kv_heads = cfg.int("num_key_value_heads", heads)
    head_dim = cfg.int("head_dim", hidden // heads)
    tensors = [
        _linear("self_attn.q_proj", heads * head_dim, hidden),
        _linear("self_attn.k_proj", kv_heads * head_dim, hidden),
        _linear("self_attn.v_proj", kv_heads * head_dim, hidden),
        _linear("self_attn.o_proj", hidden, heads * head_dim),
    ]
    if cfg.get("attention_bias", False):
        tensors += [LayerTensor(f"self_attn.{p}.bias", (n * head_dim,))
                    for p, n in (("q_proj", heads), ("k_proj", kv_heads), ("v_proj", kv_heads))]
    if cfg.get("use_qk_norm", False):
        tensors += [*_norm("self_attn.q_norm", head_dim), *_norm("self_attn.k_norm", head_dim)]
    return tensors


def moe_mlp(cfg: Config) -> list[LayerTensor]:
    hidden, experts = cfg.int("hidden_size"), cfg.int("n_routed_experts")
    inter = cfg.int("moe_intermediate_size")
    shared = cfg.int("n_shared_experts", 0) * inter
    tensors = [LayerTensor("mlp.gate.weight", (experts, hidden)),
               LayerTensor("mlp.gate.e_score_correction_bias", (experts,), dtype="F32")]
    for e in range(experts):
        tensors += _gated_mlp(f"mlp.experts.{e}", hidden, inter)
    if shared:
        tensors += _gated_mlp("mlp.shared_experts", hidden, shared)
    return tensors


def dense_mlp(cfg: Config) -> list[LayerTensor]:
    return _gated_mlp("mlp", cfg.int("hidden_size"), cfg.int("intermediate_size"))


def fused_dense_mlp(cfg: Config) -> list[LayerTensor]:
    """GLM-4 dense MLP as checkpoints store it: one ``gate_up_proj`` (gate rows first), one ``down_proj``."""
    hidden, inter = cfg.int("hidden_size"), cfg.int("intermediate_size")
    return [_linear("mlp.gate_up_proj", 2 * inter, hidden), _linear("mlp.down_proj", hidden, inter)]


def moe_or_dense(cfg: Config, layer: int, draft: bool) -> list[LayerTensor]:
    """A draft layer is always MoE in the MoE families; target layers follow the dense/sparse split."""
    return moe_mlp(cfg) if (draft or is_moe_layer(cfg, layer)) else dense_mlp(cfg)


def always_fused_dense(cfg: Config, layer: int, draft: bool) -> list[LayerTensor]:
    return fused_dense_mlp(cfg)


def _gated_mlp(prefix: str, hidden: int, inter: int) -> list[LayerTensor]:
    return [_linear(f"{prefix}.gate_proj", inter, hidden), _linear(f"{prefix}.up_proj", inter, hidden),
            _linear(f"{prefix}.down_proj", hidden, inter)]


def layer_norms(cfg: Config) -> list[LayerTensor]:
    hidden = cfg.int("hidden_size")
    return [*_norm("input_layernorm", hidden), *_norm("post_attention_layernorm", hidden)]


def sandwich_norms(cfg: Config) -> list[LayerTensor]:
    """GLM-4 (dense) layers: a norm before and after both attention and MLP."""
    hidden = cfg.int("hidden_size")
    return [*layer_norms(cfg), *_norm("post_self_attn_layernorm", hidden), *_norm("post_mlp_layernorm", hidden)]


def gqa_attention_biased(cfg: Config) -> list[LayerTensor]:
    """GLM-4 dense attention: q/k/v biases unless ``attention_bias`` is false (SGLang's default: true)."""
    return gqa_attention(Config({**cfg.raw, "attention_bias": cfg.get("attention_bias", True)}))


def mtp_extras(cfg: Config, *, embed_and_head: bool) -> list[LayerTensor]:
    """The tensors only an MTP layer has: the two input norms, eh_proj, the shared head."""
    hidden, vocab = cfg.int("hidden_size"), cfg.int("vocab_size")
    tensors = [*_norm("enorm", hidden), *_norm("hnorm", hidden),
               LayerTensor("eh_proj.weight", (hidden, 2 * hidden)), *_norm("shared_head.norm", hidden)]
    if embed_and_head:
        tensors += [LayerTensor("embed_tokens.weight", (vocab, hidden)),
                    LayerTensor("shared_head.head.weight", (vocab, hidden))]
    return tensors


def is_moe_layer(cfg: Config, layer: int) -> bool:
    types = cfg.get("mlp_layer_types")
    if isinstance(types, list) and layer < len(types):
        return types[layer] != "dense"
    return layer >= cfg.int("first_k_dense_replace", 0)


def has_full_indexer(cfg: Config, layer: int) -> bool:
    """Which target layers store indexer tensors (GLM-5.2 shares the indexer on most layers)."""
    types = cfg.get("indexer_types")
    if isinstance(types, list) and layer < len(types):
        return types[layer] == "full"
    freq = cfg.get("index_topk_freq")
    if not freq:
        return True
    offset = cfg.int("index_skip_topk_offset", 2)
    return max(layer - offset + 1, 0) % freq == 0


# ----------------------------------------------------------------------------- families


@dataclass(frozen=True)
class ModelFamily:
    """Everything ``check``/``graft``/the plugin need to know about one architecture family."""

    name: str
    architectures: tuple[str, ...]  # target architectures
    draft_architectures: tuple[str, ...]  # what SGLang rewrites them to for the draft
    attention: Callable[[Config], list[LayerTensor]]
    indexer: Callable[[Config], bool]  # does this config have a DSA indexer?
    draft_embed_and_head: bool  # does the draft layer store embed_tokens/shared_head.head?
    #: SGLang's maybe_add_mtp_safetensors appends an un-indexed ``mtp.safetensors`` for these.
    loads_unindexed_mtp_file: bool = False
    #: where the draft layer's tensors live (``{N}`` = draft layer); the first is what graft/extract write
    draft_prefixes: tuple[str, ...] = (LAYER_PREFIX,)
    #: the decoder fields sit under this key of config.json (multimodal wrappers), else at top level
    config_section: str | None = None
    #: SGLang builds an MTP draft even when config.json says ``num_nextn_predict_layers: 0``
    forces_mtp: bool = False
    #: where the unquantized original usually lives ("e.g." in graft's messages)
    source_hint: str = "<the BF16 release this checkpoint was quantized from>"
    #: the family's BF16 releases, listed by check's remedy when the checkpoint does not name its own
    releases: tuple[str, ...] = ()
    #: the layer's MLP: (config, layer, is draft) -> tensors
    mlp: Callable[[Config, int, bool], list[LayerTensor]] = moe_or_dense
    norms: Callable[[Config], list[LayerTensor]] = layer_norms
    #: tensors beyond attention/indexer/MLP on the draft layer that SGLang's draft consumes (GLM-5.3-Flash)
    draft_extras: Callable[[Config], list[LayerTensor]] = lambda cfg: []
    #: the draft class's ``hf_to_sglang_mapper`` as (substring, replacement) pairs, which the loader applies to
    #: the quant config's exclusions before building the draft (empty for every GLM class)
    quant_name_map: tuple[tuple[str, str], ...] = ()
    #: the draft class rewrites exact Quark exclusions of its layer to draft names itself (GLM-5's
    #: ``_resolve_nextn_quant_config``)
    quark_remaps_layer: bool = False

    def text_config(self, cfg: Config) -> Config:
        """The view the layer rules read: ``config_section`` merged over the top level (architectures kept)."""
        section = cfg.raw.get(self.config_section) if self.config_section else None
        if not isinstance(section, Mapping):
            return cfg
        merged = dict(cfg.raw)
        merged.update({k: v for k, v in section.items() if v is not None and k != "architectures"})
        return Config(merged)

    def nextn_layers(self, cfg: Config) -> int:
        """How many NextN layers SGLang builds a draft from (0: MTP off)."""
        declared = self.text_config(cfg).int("num_nextn_predict_layers", 0)
        return max(declared, 1) if self.forces_mtp else declared

    def draft_prefixes_for(self, cfg: Config) -> tuple[str, ...]:
        """Every prefix (with trailing dot) under which SGLang loads this config's draft layer."""
        return self.prefixes_for_layer(self.draft_layer(cfg))

    def prefixes_for_layer(self, layer: int) -> tuple[str, ...]:
        """The accepted prefixes (trailing dot) for a known draft layer id (the plugin's view)."""
        return tuple(layer_prefix(layer, template) + "." for template in self.draft_prefixes)

    def draft_layer(self, cfg: Config) -> int:
        """SGLang's rule: ``0 if num_hidden_layers == 1 else num_hidden_layers``."""
        return draft_layer_id(self.text_config(cfg).int("num_hidden_layers"))

    def is_standalone_draft(self, cfg: Config) -> bool:
        return cfg.architecture in self.draft_architectures or self.text_config(cfg).int("num_hidden_layers") == 1

    def layer_tensors(self, cfg: Config, layer: int, *, draft: bool = False) -> list[LayerTensor]:
        """The complete tensor list of one layer; the draft layer always has a full indexer and a MoE."""
        cfg = self.text_config(cfg)
        tensors = [*self.norms(cfg), *self.attention(cfg)]
        if self.indexer(cfg) and (draft or has_full_indexer(cfg, layer)):
            tensors += dsa_indexer(cfg)
        tensors += self.mlp(cfg, layer, draft)
        if draft:
            tensors += self.draft_extras(cfg)
            tensors += mtp_extras(cfg, embed_and_head=self.draft_embed_and_head)
        return tensors

    def draft_tensors(self, cfg: Config) -> list[LayerTensor]:
        return self.layer_tensors(cfg, self.draft_layer(cfg), draft=True)


def _has_index_config(cfg: Config) -> bool:
    return cfg.get("index_topk") is not None


FAMILIES: tuple[ModelFamily, ...] = (
    ModelFamily(
        name="glm-5",  # GLM-5, 5.1, 5.2: MLA + DSA indexer, draft layer = num_hidden_layers
        architectures=("GlmMoeDsaForCausalLM",),
        draft_architectures=("GlmMoeDsaForCausalLMNextN",),
        attention=mla_attention,
        indexer=lambda cfg: True,
        draft_embed_and_head=False,
        source_hint="zai-org/GLM-5.2",
        releases=("zai-org/GLM-5", "zai-org/GLM-5.1", "zai-org/GLM-5.2"),
        quark_remaps_layer=True,
    ),
    ModelFamily(
        name="deepseek-v3",  # DeepSeek-V3/R1 (no indexer) and V3.2 (indexer)
        architectures=("DeepseekV3ForCausalLM", "DeepseekV32ForCausalLM"),
        draft_architectures=("DeepseekV3ForCausalLMNextN",),
        attention=mla_attention,
        indexer=_has_index_config,
        draft_embed_and_head=True,
        source_hint="deepseek-ai/DeepSeek-V3",
        releases=("deepseek-ai/DeepSeek-V3", "deepseek-ai/DeepSeek-V3-0324", "deepseek-ai/DeepSeek-R1",
                  "deepseek-ai/DeepSeek-R1-0528", "deepseek-ai/DeepSeek-V3.1", "deepseek-ai/DeepSeek-V3.2"),
        quant_name_map=(("model.layers.61", "model.decoder"),),  # DeepseekV3ForCausalLMNextN, for amd/...-MXFP4
    ),
    ModelFamily(
        name="glm-4.5",  # GLM-4.5/4.6/4.7: GQA attention, MTP sometimes in an un-indexed mtp.safetensors
        architectures=("Glm4MoeForCausalLM",),
        draft_architectures=("Glm4MoeForCausalLMNextN",),
        attention=gqa_attention,
        indexer=lambda cfg: False,
        draft_embed_and_head=False,  # vLLM #25993: GLM-4.6 layer 92 has no embed_tokens/shared_head.head
        loads_unindexed_mtp_file=True,
        source_hint="zai-org/GLM-4.7",
        releases=("zai-org/GLM-4.5", "zai-org/GLM-4.5-Air", "zai-org/GLM-4.6", "zai-org/GLM-4.7"),
    ),
    ModelFamily(
        name="glm-4.7-flash",  # MLA without an indexer, 64 routed experts; SGLang's mtp.safetensors rule applies
        architectures=("Glm4MoeLiteForCausalLM",),
        draft_architectures=("Glm4MoeLiteForCausalLMNextN",),
        attention=mla_attention,
        indexer=lambda cfg: False,
        draft_embed_and_head=False,  # inferred: SGLang drops both if present (warning, never a refusal)
        loads_unindexed_mtp_file=True,
        source_hint="zai-org/GLM-4.7-Flash",
        releases=("zai-org/GLM-4.7-Flash",),
    ),
    ModelFamily(
        name="glm-5.3-flash",  # multimodal wrapper: text_config, two accepted prefixes, MLA without RoPE
        architectures=("Glm5NextForConditionalGeneration",),
        draft_architectures=("Glm5NextForConditionalGenerationNextN",),
        attention=mla_attention,
        indexer=_has_index_config,
        draft_embed_and_head=False,
        draft_prefixes=("model.language_model.layers.{N}", LAYER_PREFIX),
        config_section="text_config",
        forces_mtp=True,  # model_config.py forces num_nextn_predict_layers = 1 for it
        source_hint="zai-org/GLM-5.3-Flash",
        releases=("zai-org/GLM-5.3-Flash",),
    ),
    ModelFamily(
        name="glm-ocr",  # dense GQA draft (GLM-4 layer: four norms, biased q/k/v, fused gate_up_proj)
        architectures=("GlmOcrForConditionalGeneration",),
        draft_architectures=("GlmOcrForConditionalGenerationNextN",),
        attention=gqa_attention_biased,
        indexer=lambda cfg: False,
        draft_embed_and_head=False,
        draft_prefixes=("model.language_model.layers.{N}", LAYER_PREFIX),  # the loader strips language_model.
        config_section="text_config",
        mlp=always_fused_dense,
        norms=sandwich_norms,
        source_hint="zai-org/GLM-OCR",
        releases=("zai-org/GLM-OCR",),
    ),
)


def family_for(architecture: str) -> ModelFamily | None:
    for family in FAMILIES:
        if architecture in family.architectures or architecture in family.draft_architectures:
            return family
    return None


def family_for_draft_class(class_name: str) -> ModelFamily | None:
    """The family whose SGLang draft class is ``class_name`` (the plugin knows classes, not configs)."""
    return next((f for f in FAMILIES if class_name in f.draft_architectures), None)


def supported_architectures() -> list[str]:
    return [arch for family in FAMILIES for arch in family.architectures]


def written_prefix(family: ModelFamily | None, layer: int) -> str:
    """The prefix (trailing dot) graft and extract write layer ``layer`` under: the family's first accepted one.

    Not ``layer_prefix(layer, template)``, which fills one template and has no dot.
    """
    return family.prefixes_for_layer(layer)[0] if family is not None else layer_prefix(layer) + "."
