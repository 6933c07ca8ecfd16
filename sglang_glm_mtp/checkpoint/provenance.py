"""Which BF16 release a quantized checkpoint was made from, as far as its own files say.

The remedy line of ``check`` needs a ``--from``. Grafting another release's draft layer
(GLM-5.2's into a GLM-5.1 conversion, say) loads fine and drafts another model's tokens, so a
guess is worse than no answer: an id is returned only when the checkpoint states it, and
only if it looks like a Hub id of an unquantized model.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Mapping

from .files import README_FILE
from .source import CheckpointSource, read_text

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
#: Words in a repo name that mark a quantized (not the BF16) release.
_QUANTIZED = re.compile(r"(?i)(nvfp4|mxfp4|fp4|fp8|int4|int8|w4a|w8a|awq|gptq|gguf|exl2|quant)")
#: Keys a quantizer's config might use for the model it started from.
_QUANTIZER_KEYS = ("base_model", "source_model", "original_model", "model_id", "model_name")


@dataclass(frozen=True)
class BaseModel:
    repo_id: str
    where: str  # the file and field that named it


def base_model(source: CheckpointSource, config: Mapping[str, Any], quant: Any) -> BaseModel | None:
    """The release named by the model card, the quantizer's config or config.json, in that order of trust."""
    own = getattr(source, "repo_id", None)
    for where, value in (*_card_candidates(source), *_quantizer_candidates(config, quant),
                         ("config.json _name_or_path", config.get("_name_or_path"))):
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if isinstance(value, str) and _HUB_ID.match(value) and value != own and not _QUANTIZED.search(value):
            return BaseModel(value, where)
        if value:
            logger.info("not using %s = %r as the BF16 release (not one Hub id of an unquantized model)",
                        where, value)
    return None


def _card_candidates(source: CheckpointSource) -> list[tuple[str, Any]]:
    text = read_text(source, README_FILE)
    if not text or not text.startswith("---"):
        return []
    try:
        from huggingface_hub import ModelCard

        data = ModelCard(text, ignore_metadata_errors=True).data
    except Exception as exc:  # a card with broken YAML only costs us the hint
        logger.info("cannot read the model card front matter of %s: %s", source.display, exc)
        return []
    return [(f"{README_FILE} base_model", getattr(data, "base_model", None))]


def _quantizer_candidates(config: Mapping[str, Any], quant: Any) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for where, doc in (("config.json quantization_config", config.get("quantization_config")),
                       ("hf_quant_config.json", quant)):
        for scope, sub in ((where, doc), (f"{where} producer", doc.get("producer") if isinstance(doc, Mapping)
                                          else None)):
            if isinstance(sub, Mapping):
                found += [(f"{scope} {key}", sub[key]) for key in _QUANTIZER_KEYS if key in sub]
    return found
