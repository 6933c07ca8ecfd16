"""How SGLang names the NextN draft's modules, and how checkpoint-named exclusions reach them.

The draft layer is stored as ``<prefix>.N.*`` (``model.layers.78.*``). SGLang builds it as
``model.decoder.*`` plus four modules directly under ``model.`` (``eh_proj``, ``enorm``,
``hnorm``, ``shared_head``), and asks its quant config about those names. Before that the
loader applies the draft class's ``hf_to_sglang_mapper`` to the config's entries: empty for
every GLM class, the literal substring ``model.layers.61`` -> ``model.decoder`` for
DeepSeek-V3 (``ModelFamily.quant_name_map``). An exclusion that names ``model.layers.78``
therefore never reaches a GLM draft: this module says what does.
"""

from __future__ import annotations

import re
from typing import Iterable

#: Draft modules directly under ``model.`` (``shared_head.head`` is never loaded: the target's head is shared).
NEXTN_TOP_LEVEL = ("shared_head", "eh_proj", "enorm", "hnorm")
DECODER = "model.decoder"
#: Draft linears SGLang builds without the quant config, whatever it says: the DSA indexer's ``weights_proj``
#: (BF16 by construction) and ``wk`` (fused with it into a BF16 ``wk_weights_proj`` on CUDA, an FP8 ``wk``
#: dequantised on load).
NEVER_QUANTIZED = ("self_attn.indexer.weights_proj", "self_attn.indexer.wk")


def draft_module(relative: str) -> str:
    """SGLang's name for a draft module given its name inside the layer (``self_attn.o_proj``)."""
    head = relative.split(".", 1)[0]
    return f"model.{relative}" if head in NEXTN_TOP_LEVEL else f"{DECODER}.{relative}"


def sglang_module(relative: str) -> str:
    """The module SGLang builds for it: ``draft_module``, with routed experts fused into ``…mlp.experts``."""
    return re.sub(r"\.mlp\.experts\.\d+\.\w+$", ".mlp.experts", draft_module(relative))


def apply_name_map(entries: Iterable[str], name_map: tuple[tuple[str, str], ...]) -> list[str]:
    """``WeightsMapper(orig_to_new_substr=...).apply_list``: the first (longest) substring found, replaced once."""
    ordered = sorted(name_map, key=lambda pair: len(pair[0]), reverse=True)
    out = []
    for entry in entries:
        for old, new in ordered:
            if old in entry:
                entry = entry.replace(old, new, 1)
                break
        out.append(entry)
    return out


# ----------------------------------------------------------------------------- exclusions for a BF16 draft


def regex_exclusions(ckpt_prefix: str, dialect: str, name_map: tuple[tuple[str, str], ...] = ()) -> list[str]:
    """The ``re:`` entries that keep a whole draft layer unquantized in compressed-tensors or Quark.

    One for SGLang's draft names and one for the checkpoint's own, which transformers and
    vLLM match. Quark also quantizes ``eh_proj`` (a ``ReplicatedLinear`` there, plain
    ``nn.Linear`` elsewhere), so its entry covers it. Where the family's name map rewrites
    the checkpoint spelling literally (DeepSeek's ``model.layers.61``), the layer entry is
    written unescaped so that the map turns it into the draft's name as well.
    """
    draft = r"re:model\.(decoder\.|eh_proj).*" if dialect == "quark" else r"re:model\.decoder\..*"
    if any(old == ckpt_prefix for old, _ in name_map):
        layer = f"re:{ckpt_prefix}.*"
    else:
        layer = f"re:{re.escape(ckpt_prefix + '.')}.*"
    return [draft, layer]


def fp8_exclusions(ckpt_prefix: str) -> list[str]:
    """Block FP8 (``modules_to_not_convert``): a dotted-path prefix, the draft's and the checkpoint's."""
    return [DECODER, ckpt_prefix]


# ----------------------------------------------------------------------------- checkpoint entries -> draft entries


def remap_globs(patterns: list[str], ckpt_prefix: str, layer: int) -> list[str]:
    """ModelOpt: add the draft-module spelling of every glob that names layer N or all layers."""
    every = ckpt_prefix[:len(ckpt_prefix) - len(str(layer))] + "*."  # the all-layers glob of the same spelling
    out = list(patterns)
    for pattern in patterns:
        if pattern.startswith(f"{ckpt_prefix}."):
            rest = pattern[len(ckpt_prefix) + 1:]
        elif pattern.startswith(every):
            rest = pattern[len(every):]
        elif pattern == f"{ckpt_prefix}*":
            rest = "*"
        else:
            continue
        if rest == "*":  # the whole draft layer
            out += [f"{DECODER}*"] + [f"model.{name}*" for name in NEXTN_TOP_LEVEL]
        elif rest.startswith(NEXTN_TOP_LEVEL):
            out.append(f"model.{rest}")
        else:
            out.append(f"{DECODER}.{rest}")
    return list(dict.fromkeys(out))


def remap_entries(entries: list[str], ckpt_prefix: str) -> list[str]:
    """compressed-tensors / Quark / FP8: add the draft-module spelling of every entry naming the draft layer.

    Exact names (``model.layers.78.self_attn.kv_b_proj``) and regexes that spell the layer
    escaped or not (``re:model\\.layers\\.78\\.self_attn.*``) are both rewritten; a regex for
    the whole layer becomes one for the decoder and one for the top-level draft modules.
    """
    plain, quoted = ckpt_prefix + ".", re.escape(ckpt_prefix + ".")
    out = list(entries)
    for entry in entries:
        is_regex = entry.startswith("re:")
        body = entry[3:] if is_regex else entry
        head = next((h for h in (quoted, plain) if body.startswith(h)), None)
        if head is None:
            continue
        rest = body[len(head):]
        if not is_regex:
            out.append(draft_module(rest))
            continue
        bare = rest.replace("\\", "")
        if bare.startswith(NEXTN_TOP_LEVEL):
            out.append(f"re:model\\.{rest}")
        elif bare.startswith((".*", "*")) or bare == "":
            out += [f"re:model\\.decoder\\.{rest}", f"re:model\\.({'|'.join(NEXTN_TOP_LEVEL)}){rest}"]
        else:
            out.append(f"re:model\\.decoder\\.{rest}")
    return list(dict.fromkeys(out))
