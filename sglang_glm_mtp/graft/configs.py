"""Config edits: keep a BF16 draft out of quantization in whichever ModelOpt declaration exists."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Iterable

from ..checkpoint import jsonio
from ..checkpoint.quant_config import draft_exclude_pattern, is_layer_excluded
from ..errors import CheckpointUnreadable, GraftError
from ..checkpoint.families import ModelFamily
from ..checkpoint.files import QUANT_FILE
from .records import layer_prefix


def quant_edits(target_dir: Path, cfg_doc: dict[str, Any], layer: int, draft_precision: str | None,
                 notes: list[str], family: ModelFamily | None = None
                 ) -> tuple[dict[str, Any] | None, dict[str, Any] | None, list[str], list[str]]:
    """Exclude the BF16 draft from quantization in whichever ModelOpt declaration exists.

    Returns (new config.json or None, new hf_quant_config.json or None, config changes, quant changes).
    """
    pattern = draft_exclude_pattern(layer)
    prefix = layer_prefix(family, layer)[:-1]
    new_cfg: dict[str, Any] | None = None
    new_quant: dict[str, Any] | None = None
    cfg_changes: list[str] = []
    quant_changes: list[str] = []
    flat = cfg_doc.get("quantization_config")
    quant_path = target_dir / QUANT_FILE
    nested_doc: Any = None
    if quant_path.is_file():
        try:
            nested_doc = json.loads(quant_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise GraftError(f"{quant_path} is not valid JSON ({exc}); fix or remove it first") from None
    has_flat = isinstance(flat, dict) and bool(flat)
    has_nested = isinstance(nested_doc, dict) and isinstance(nested_doc.get("quantization"), dict)
    if not has_flat and not has_nested:
        return None, None, [], []
    if draft_precision != "bf16":
        notes.append(f"the grafted draft layer is stored {draft_precision}; the quant config is left as it is "
                     f"(no {pattern} exclusion added)")
        return None, None, [], []
    if has_flat:
        method = flat.get("quant_method")
        key = next((k for k in ("ignore", "modules_to_not_convert", "exclude_modules") if k in flat), None)
        if key is None and method in (None, "modelopt", "modelopt_fp4", "modelopt_fp8"):
            key = "ignore"
        if key is None or method not in (None, "modelopt", "modelopt_fp4", "modelopt_fp8"):
            notes.append(f"config.json quantization_config (quant_method {method!r}) is not a ModelOpt declaration; "
                         f"it is left as it is: check that it keeps {prefix} unquantized")
        else:
            current = list(flat.get(key) or [])
            if is_layer_excluded(prefix, current):
                notes.append(f"config.json quantization_config.{key} already excludes {prefix}")
            else:
                new_cfg = copy.deepcopy(cfg_doc)
                new_cfg["quantization_config"][key] = current + [pattern]
                cfg_changes.append(f"quantization_config.{key} += {pattern!r}")
    if has_nested:
        nested = nested_doc["quantization"]
        current = list(nested.get("exclude_modules") or [])
        if is_layer_excluded(prefix, current):
            notes.append(f"{QUANT_FILE} quantization.exclude_modules already excludes {prefix}")
        else:
            new_quant = copy.deepcopy(nested_doc)
            new_quant["quantization"]["exclude_modules"] = current + [pattern]
            quant_changes.append(f"quantization.exclude_modules += {pattern!r}")
    return new_cfg, new_quant, cfg_changes, quant_changes


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
