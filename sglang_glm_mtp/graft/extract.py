"""A standalone draft checkpoint for ``--speculative-draft-model-path``.

The layout is the one SGLang's ``scripts/export_deepseek_nextn.py`` produces: the draft
layer renamed to ``model.layers.0``, ``embed_tokens`` and ``shared_head.head`` left out
(the draft takes them from the target model), one ``nextn_layer_parameters.safetensors``
plus its index, and a config.json with ``num_hidden_layers = 1`` and
``architectures = [<Arch>NextN]``. Unlike that script, the tensors are streamed (bounded
memory, Hub range reads), verified, and written atomically and resumably by the graft
executor; per-layer config lists are cut to one entry so that transformers' config
validation accepts ``num_hidden_layers = 1``.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

from ..checkpoint.families import written_prefix
from ..checkpoint.files import CONFIG_FILE, QUANT_FILE
from ..checkpoint.quant_config import EXCLUDE_KEYS, read_quant_declaration
from ..checkpoint.report import InspectionReport
from ..checkpoint.source import CheckpointSource, LocalCheckpoint
from ..checkpoint.writer import INDEX_FILE, index_document
from ..errors import GraftError, UsageError
from .checks import open_source, source_report
from .commit import finish_plan, interrupted_commit
from .plan import source_copies, source_identity
from .records import ConfigEdit, GraftPlan
from .shards import NEXTN_FILE, choose_names, merged_ranges
from .space import check_out_dir, finalize_space, small_files

#: Tensors the standalone draft takes from the target model (SGLang's export script skips them).
SKIPPED = ("embed_tokens", "shared_head.head")


def _nextn_name(variant: int, i: int, n: int) -> str:
    if variant > 1:
        raise GraftError(f"the output folder already holds a {NEXTN_FILE} from another run; remove it or choose "
                         "another --out")
    return NEXTN_FILE


def standalone_config(raw: dict[str, Any], draft_architecture: str) -> tuple[dict[str, Any], list[str]]:
    """config.json for a one-layer draft: what the export script sets, plus per-layer lists cut to the draft's entry."""
    doc = copy.deepcopy(raw)
    changes = [f"num_hidden_layers {raw.get('num_hidden_layers')} -> 1",
               f"architectures {raw.get('architectures')} -> [{draft_architecture!r}]"]
    layers = raw.get("num_hidden_layers")
    doc["num_hidden_layers"] = 1
    doc["architectures"] = [draft_architecture]
    for key, value in raw.items():
        if isinstance(value, list) and len(value) == layers and key.endswith("_types"):
            # the draft layer always has a MoE and a full indexer
            entry = {"mlp_layer_types": "sparse", "indexer_types": "full"}.get(key, value[-1])
            doc[key] = [entry]
            changes.append(f"{key} cut to [{entry!r}]")
    return doc, changes


def _rename_patterns(patterns: list[str], own: str, new: str) -> list[str]:
    """Keep non-layer patterns, move the draft layer's (``own``) to ``new``, drop the other layers' ones.

    Names, globs and ``re:`` regexes alike, the layer spelled plain or escaped (compressed-tensors and Quark
    write ``re:model\\.layers\\.78\\..*``).
    """
    out: list[str] = []
    own, new = own.rstrip("."), new.rstrip(".")
    layers = own.rsplit(".", 1)[0] + "."  # "model.layers."
    spellings = [(own, new, layers), (re.escape(own), re.escape(new), re.escape(layers))]
    for pattern in patterns:
        regex = pattern.startswith("re:")
        body = pattern[3:] if regex else pattern
        for old_name, new_name, every in spellings:
            if body.startswith(every):
                rest = body[len(old_name):]
                if body.startswith(old_name) and not rest[:1].isdigit():  # layer 78, not 780
                    out.append(("re:" if regex else "") + new_name + rest)
                break
        else:
            out.append(pattern)
    return out


def plan_extract(source: str | CheckpointSource, out: str | Path, *, endpoint: str | None = None) -> GraftPlan:
    """Plan a standalone draft export. Reads only metadata."""
    out_dir = Path(out).expanduser().resolve()
    src = open_source(source, endpoint)
    if isinstance(src, LocalCheckpoint) and src.root == out_dir:
        raise UsageError("--out must be a new directory, not SOURCE itself")
    check_out_dir(out_dir)
    finished = interrupted_commit(out_dir)
    if finished is not None:
        return finish_plan("extract", src.display, out_dir, out_dir, finished)
    report, family = source_report(src)
    layer = report.draft_layer
    assert layer is not None
    if family.config_section is not None:
        # SGLang 0.5.23 builds these drafts from the target checkpoint only (it fills in no draft path for them),
        # and a standalone export would have to rewrite the nested config SGLang's draft rewrite reads.
        raise UsageError(f"extract does not support {family.name} ({report.architecture}): SGLang loads its draft "
                         f"from the target checkpoint itself; use graft --from {src.display} --into TARGET instead")
    renamed = (written_prefix(family, layer), written_prefix(family, 0))
    copies, skipped = source_copies(report, rename=renamed, skip=SKIPPED)
    files = src.list_files()
    taken = set(os.listdir(out_dir)) if out_dir.is_dir() else set()
    shard = choose_names(out_dir, taken, [copies], _nextn_name, "draft", source_identity(src, copies))[0]
    edits, notes = _config_edits(src, report, family.draft_architectures[0], renamed)
    index = index_document({t.name: shard.name for t in shard.tensors}, shard.payload)
    edits.append(ConfigEdit(INDEX_FILE, [f"{len(shard.tensors)} entries, all in {shard.name}"], index))
    if skipped:
        notes.insert(0, f"skipped {len(skipped)} tensor(s) the draft takes from the target model: "
                        + ", ".join(skipped))
    smalls = small_files(files, {CONFIG_FILE, QUANT_FILE, INDEX_FILE})
    plan = GraftPlan(
        mode="extract", source=src.display, target=None, dest=out_dir, family=family.name,
        architecture=report.architecture, draft_layer=layer, output_layer=0,
        draft_precision=report.draft_precision, draft_tensors=len(copies), draft_bytes=shard.payload,
        source_ranges=merged_ranges(copies), shards=[shard], config_edits=edits, index=index,
        index_entries_after=len(shard.tensors), total_size_after=shard.payload, small_files=smalls,
        notes=notes, source_obj=src, small_file_origin="source")
    finalize_space(plan, sum(files[n] for n in smalls))
    return plan


def _config_edits(src: CheckpointSource, report: InspectionReport, draft_architecture: str,
                  renamed: tuple[str, str]) -> tuple[list[ConfigEdit], list[str]]:
    """The standalone config.json, and the quant config with the draft layer's patterns moved to layer 0 (a
    quantized draft) or left out (a BF16 one); and notes."""
    cfg, cfg_changes = standalone_config(report.config, draft_architecture)
    edits: list[ConfigEdit] = []
    notes: list[str] = []
    quant = src.read_json(QUANT_FILE)
    layer = report.draft_layer
    moved = f"layer {layer} patterns moved to layer 0, other layers' dropped"
    if report.draft_precision == "bf16":
        if cfg.pop("quantization_config", None) is not None:
            cfg_changes.append("quantization_config removed (the draft layer is BF16)")
        if isinstance(quant, dict):
            notes.append(f"{QUANT_FILE} not copied: the draft layer is BF16")
    else:
        flat = cfg.get("quantization_config")
        if isinstance(flat, dict):
            for key in dict.fromkeys(k for keys in EXCLUDE_KEYS.values() for k in keys):
                if isinstance(flat.get(key), list):
                    flat[key] = _rename_patterns(flat[key], *renamed)
                    cfg_changes.append(f"quantization_config.{key}: {moved}")
        if isinstance(quant, dict) and isinstance(quant.get("quantization"), dict):
            quant = copy.deepcopy(quant)
            key = read_quant_declaration({}, quant).exclude_key
            assert key is not None  # a nested ModelOpt declaration has one
            nested = quant["quantization"]
            nested[key] = _rename_patterns(list(nested.get(key) or []), *renamed)
            edits.append(ConfigEdit(QUANT_FILE, [f"quantization.{key}: {moved}"], quant))
    edits.append(ConfigEdit(CONFIG_FILE, cfg_changes, cfg))
    return edits, notes
