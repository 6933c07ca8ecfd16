"""Config edits: keep a BF16 draft out of quantization, in whichever dialect the target declares.

ModelOpt gets ``model.layers.N*`` (its glob reaches the draft through the NVFP4 override and
the plugin); compressed-tensors, Quark and block FP8 get the entries their own matchers apply
to the draft's ``model.decoder.*`` names *and* to the checkpoint's names
(``QuantDeclaration.bf16_draft_entries``), so stock SGLang, transformers and vLLM all build
the grafted layer BF16.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..checkpoint import jsonio
from ..checkpoint.families import ModelFamily, written_prefix
from ..checkpoint.files import QUANT_FILE
from ..checkpoint.quant_config import EXCLUDE_KEYS, QuantConfigError, QuantDeclaration, read_quant_declaration
from ..errors import CheckpointUnreadable, GraftError


@dataclass
class QuantEdits:
    """The quant config edits for a BF16 draft: new documents (None: unchanged), changes and notes in words."""

    config: dict[str, Any] | None = None  # config.json with its quantization_config edited
    quant: dict[str, Any] | None = None  # hf_quant_config.json edited
    config_changes: list[str] = field(default_factory=list)
    quant_changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def quant_edits(target_dir: Path, cfg_doc: dict[str, Any], layer: int, draft_precision: str | None,
                family: ModelFamily | None = None) -> QuantEdits:
    """Exclude a BF16 draft from quantization in the declaration SGLang reads (and ModelOpt's other file)."""
    prefix = written_prefix(family, layer)[:-1]
    name_map = family.quant_name_map if family is not None else ()
    quant_path = target_dir / QUANT_FILE
    nested_doc: Any = None
    if quant_path.is_file():
        try:
            nested_doc = json.loads(quant_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise GraftError(f"{quant_path} is not valid JSON ({exc}); fix or remove it first") from None
    try:
        decl = read_quant_declaration(cfg_doc, nested_doc)
    except QuantConfigError as exc:
        raise GraftError(f"TARGET {exc}; fix the entry first (sglang-glm-mtp check names it)") from None
    has_nested = isinstance(nested_doc, dict) and isinstance(nested_doc.get("quantization"), dict)
    if decl.source == "none" and not has_nested:
        return QuantEdits()
    if draft_precision != "bf16":
        return QuantEdits(notes=[f"the grafted draft layer is stored {draft_precision}; the quant config is left as "
                                 f"it is (no exclusion of {prefix} added)"])
    if decl.dialect == "unknown":
        raise GraftError(f"TARGET config.json quantization_config has quant_method {decl.method!r}, which graft "
                         "cannot write an exclusion for (modelopt, fp8, compressed-tensors, quark); graft into a "
                         "checkpoint of a known dialect, or add the BF16 layer's exclusion by hand")
    edits = QuantEdits()
    if decl.source == "config.json":
        edits.config, edits.config_changes, note = _add_entries(cfg_doc, decl, prefix, name_map)
        edits.notes += note
    if has_nested:
        nested = read_quant_declaration({}, nested_doc)
        edits.quant, edits.quant_changes, note = _add_entries(nested_doc, nested, prefix, name_map)
        edits.notes += note
    return edits


def _add_entries(doc: dict[str, Any], decl: QuantDeclaration, prefix: str, name_map: tuple[tuple[str, str], ...]
                 ) -> tuple[dict[str, Any] | None, list[str], list[str]]:
    """The document with the dialect's BF16-draft entries appended to its exclude list (None if all are there),
    the changes, and the note when nothing had to change."""
    nested = decl.source == "hf_quant_config.json"
    where = f"{QUANT_FILE} quantization" if nested else "config.json quantization_config"
    key = decl.exclude_key or EXCLUDE_KEYS[decl.dialect][0]
    wanted = decl.bf16_draft_entries(prefix, name_map)
    if decl.dialect == "modelopt" and decl.excludes_all_under(prefix + ".") or decl.is_modelopt and \
            decl.is_excluded(prefix):
        return None, [], [f"{where}.{key} already excludes {prefix}"]
    missing = [entry for entry in wanted if entry not in decl.exclude]
    if not missing:
        return None, [], [f"{where}.{key} already excludes {prefix}"]
    edited = copy.deepcopy(doc)
    section = edited["quantization"] if nested else edited["quantization_config"]
    section[key] = list(section.get(key) or []) + missing
    return edited, [f"{'quantization' if nested else 'quantization_config'}.{key} += {entry!r}" for entry in missing], []


def read_json_file(path: Path, shard_files: Iterable[str] | None = None) -> dict[str, Any]:
    """A JSON object from disk; with ``shard_files``, an index decoded against them (``jsonio.loads_index``)."""
    try:
        data = path.read_bytes()
        doc = jsonio.loads(data) if shard_files is None else jsonio.loads_index(data, shard_files)
    except (OSError, ValueError) as exc:
        raise CheckpointUnreadable(f"cannot read {path} ({exc})") from None
    if not isinstance(doc, dict):
        raise CheckpointUnreadable(f"{path} is not a JSON object")
    return doc
