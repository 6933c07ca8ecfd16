"""``plan_graft``: check SOURCE and TARGET and work out every byte range, file and config edit.

Reads only config files, the index and safetensors headers. Each step is one function:
the checks, the draft tensors to copy, the target files they displace, the new shards'
names, the new index, the config edits, the overlay's links and small files.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoint.families import ModelFamily, family_for, written_prefix
from ..checkpoint.files import CONFIG_FILE, QUANT_FILE
from ..checkpoint.inspection import inspect_checkpoint
from ..checkpoint.report import InspectionReport
from ..checkpoint.safetensors_format import read_header
from ..checkpoint.source import CheckpointSource, LocalCheckpoint
from ..checkpoint.writer import INDEX_FILE, index_document
from ..errors import GraftError, UsageError
from ..text import listed
from .checks import (cached_target, check_compatible, check_target_status, local_dir, open_source, source_report,
                     target_release)
from .commit import aside_name, finish_plan, interrupted_commit
from .configs import quant_edits, read_json_file
from ..checkpoint.lineage import OPT_OUT_FLAG, LineageReport, compare_lineage
from .records import (BACKUP_SUFFIX, DEFAULT_MAX_SHARD_SIZE, ConfigEdit, Displaced, GraftPlan,
                      Mode, NewShard, TensorCopy)
from .shards import (TargetShard, choose_names, draft_shard_name, file_identity, merged_ranges, read_journal,
                     scan_target, split_like_hf, stripped_shard_name)
from .space import check_out_dir, finalize_space, small_files

logger = logging.getLogger(__name__)

Identity = dict[tuple[str, str], tuple[int, int]]


def source_copies(report: InspectionReport, rename: tuple[str, str] | None = None,
                  skip: tuple[str, ...] = ()) -> tuple[list[TensorCopy], list[str]]:
    """The draft tensors, byte for byte as SOURCE stores them; ``rename`` maps one name prefix to another.

    Tensors whose name (after the layer prefix) starts with one of ``skip`` are left out
    and returned as the second list.
    """
    layer = report.draft_layer
    assert layer is not None
    prefix = written_prefix(family_for(report.architecture), layer)
    copies: list[TensorCopy] = []
    skipped: list[str] = []
    for name, loc in sorted(report.locations.items()):
        rest = name[len(prefix):]
        if any(rest.startswith(s + ".") for s in skip):
            skipped.append(name)
            continue
        new_name = rename[1] + name[len(rename[0]):] if rename and name.startswith(rename[0]) else name
        copies.append(TensorCopy(new_name, "source", loc.shard, loc.file_offset, loc.entry.nbytes, loc.entry.dtype,
                                 tuple(loc.entry.shape)))
    return copies, skipped


def source_identity(source: CheckpointSource, copies: list[TensorCopy]) -> Identity:
    """(size, mtime) of every source file the copies read, keyed ``("source", shard)``."""
    files = source.list_files()
    return {("source", k): v for k, v in file_identity(source, files, {c.shard for c in copies}).items()}


@dataclass
class _Draft:
    """The draft layer SOURCE supplies: its family, number, precision and the tensors to copy."""

    family: ModelFamily
    layer: int
    precision: str | None
    copies: list[TensorCopy]

    @property
    def prefix(self) -> str:
        return written_prefix(self.family, self.layer)


@dataclass
class _TargetNow:
    """What TARGET holds before the graft: its files, its index (if any) and its shards' headers."""

    dir: Path
    files: dict[str, int]
    has_index: bool
    weight_map: dict[str, str]  # handed to _new_index, which empties it (one copy of a 233k-entry map at a time)
    index_meta: dict[str, Any]
    scan: dict[str, TargetShard]
    referenced: set[str]  # the shards the index names (without an index: every shard)
    entries: int  # index entries before the graft

    @property
    def total_size(self) -> Any:
        return self.index_meta.get("total_size")


def _read_target(target_dir: Path, prefix: str) -> _TargetNow:
    files = LocalCheckpoint(target_dir).list_files()
    index_doc = (read_json_file(target_dir / INDEX_FILE, [n for n in files if n.endswith(".safetensors")])
                 if (target_dir / INDEX_FILE).is_file() else None)
    weight_map: dict[str, str] = index_doc.pop("weight_map") if index_doc is not None else {}  # no second copy
    scan = scan_target(target_dir, files, prefix)
    return _TargetNow(target_dir, files, index_doc is not None, weight_map, (index_doc or {}).get("metadata") or {},
                      scan, set(weight_map.values()) if index_doc is not None else set(scan), len(weight_map))


@dataclass
class _Displacement:
    """Target files that stop being part of the checkpoint, and the shards rebuilt without the draft."""

    displaced: list[Displaced] = field(default_factory=list)
    strip_groups: list[list[TensorCopy]] = field(default_factory=list)
    strip_from: list[str | None] = field(default_factory=list)

    @property
    def names(self) -> set[str]:
        return {d.name for d in self.displaced}


def _displace(target: _TargetNow, ours: set[str], prefix: str, identity: Identity) -> _Displacement:
    """Existing files that held draft tensors: dropped, or (when they hold other tensors too) rebuilt without them."""
    out = _Displacement()
    for name, info in target.scan.items():
        if not info.draft or name in ours:
            continue
        if name not in target.referenced:
            out.displaced.append(Displaced(name, f"un-indexed file holding {len(info.draft)} {prefix}* tensors"))
        elif info.other_count == 0:
            out.displaced.append(Displaced(name, f"holds only the old {prefix}* tensors ({len(info.draft)})"))
        else:
            out.displaced.append(Displaced(name, f"holds {len(info.draft)} old {prefix}* tensors; replaced by a copy "
                                                 "without them"))
            out.strip_groups.append([TensorCopy(n, "target", name, off, nb, dt, shape)
                                     for n, dt, shape, off, nb in info.others])
            out.strip_from.append(name)
            identity[("target", name)] = (target.files[name], (target.dir / name).stat().st_mtime_ns)
    return out


def _layout(target: _TargetNow, dest: Path, mode: Mode, draft: _Draft, max_shard_size: int | None,
            identity: Identity) -> tuple[list[NewShard], _Displacement]:
    """The new shards, and the TARGET files they displace.

    Shards an interrupted run of ours renamed into place but never indexed are reused when
    this plan writes the same file, else deleted.
    """
    ours = {name for name, info in target.scan.items()
            if info.draft and name not in target.referenced and mode == "in-place"
            and read_journal(dest, name) is not None}
    moved = _displace(target, ours, draft.prefix, identity)
    taken = (set(target.files) - ours) | (set(os.listdir(dest)) - ours if dest.is_dir() else set())
    shards = _new_shards(dest, taken, draft.copies, max_shard_size, draft.layer, moved, identity)
    for name in sorted(ours - {s.name for s in shards}):
        moved.displaced.append(Displaced(name, "unfinished shard of an earlier run with another plan", delete=True))
    return shards, moved


def _new_shards(dest: Path, taken: set[str], copies: list[TensorCopy], max_shard_size: int | None, layer: int,
                moved: _Displacement, identity: Identity) -> list[NewShard]:
    """The draft shards (split like Hugging Face) and the stripped copies of mixed target shards."""
    shards = choose_names(dest, taken, split_like_hf(copies, max_shard_size), draft_shard_name(layer), "draft",
                          identity)
    taken = taken | {s.name for s in shards}
    if moved.strip_groups:
        def strip_name(variant: int, i: int, n: int) -> str:
            stem = moved.strip_from[i - 1][: -len(".safetensors")]  # type: ignore[index]
            return stripped_shard_name(stem, layer, variant)
        shards += choose_names(dest, taken, moved.strip_groups, strip_name, "stripped", identity, moved.strip_from)
    return shards


@dataclass
class _NewIndex:
    document: dict[str, Any]
    entries: int
    total_size: int
    notes: list[str]


def _new_index(target: _TargetNow, prefix: str, shards: list[NewShard], displaced: set[str]) -> _NewIndex:
    """Every old entry kept, draft entries replaced, displaced files remapped or dropped (empties
    ``target.weight_map``)."""
    weight_map, target.weight_map = target.weight_map, {}
    renamed = {s.replaces: s.name for s in shards if s.role == "stripped"}
    new_map: dict[str, str] = {}
    notes: list[str] = []
    dropped_entries = 0
    for tensor, shard in weight_map.items():
        if tensor.startswith(prefix):
            continue
        if shard in renamed:
            new_map[tensor] = renamed[shard]
        elif shard in displaced:
            dropped_entries += 1
        else:
            new_map[tensor] = shard
    del weight_map
    if not target.has_index:  # no index: SGLang loaded every file; the new index names them all
        for name in target.scan:
            if name in displaced:
                continue
            with open(target.dir / name, "rb") as stream:
                for tensor in read_header(stream, target.files[name]).tensors:
                    new_map[tensor] = name
        notes.append(f"TARGET had no {INDEX_FILE}; one is created naming every shard")
    for shard in shards:
        for t in shard.tensors:
            new_map[t.name] = shard.name
    interned = {name: sys.intern(name) for name in set(new_map.values())}
    for tensor, shard in new_map.items():  # one string per shard, not one per entry: ~20 MB less at GLM scale
        new_map[tensor] = interned[shard]
    if dropped_entries:
        notes.append(f"{dropped_entries} index entries pointed at displaced files for tensors they do not hold; "
                     "they are dropped")
    sizes = {name: info.payload for name, info in target.scan.items()}
    sizes.update({s.name: s.payload for s in shards})
    missing_files = sorted(set(new_map.values()) - set(sizes))
    if missing_files:
        raise GraftError(f"TARGET {INDEX_FILE} names shard(s) that do not exist: {listed(missing_files)}; "
                         "re-download them first")
    total_after = sum(sizes[name] for name in set(new_map.values()))
    extra_meta = {k: v for k, v in target.index_meta.items() if k != "total_size"}
    return _NewIndex(index_document(new_map, total_after, extra_meta), len(new_map), total_after, notes)


def _config_edits(target: _TargetNow, mode: Mode, draft: _Draft, index: _NewIndex) -> tuple[list[ConfigEdit], list[str]]:
    """quant config and config.json (a BF16 draft excluded from quantization), then the index; and notes."""
    cfg_doc = read_json_file(target.dir / CONFIG_FILE)
    quant = quant_edits(target.dir, cfg_doc, draft.layer, draft.precision, draft.family)
    in_place = mode == "in-place"
    edits: list[ConfigEdit] = []
    if quant.quant is not None or (not in_place and (target.dir / QUANT_FILE).is_file()):
        doc = quant.quant if quant.quant is not None else read_json_file(target.dir / QUANT_FILE)
        edits.append(ConfigEdit(QUANT_FILE, quant.quant_changes or ["copied unchanged"], doc,
                                QUANT_FILE + BACKUP_SUFFIX if in_place else None))
    if quant.config is not None or not in_place:
        edits.append(ConfigEdit(CONFIG_FILE, quant.config_changes or ["copied unchanged"],
                                quant.config if quant.config is not None else cfg_doc,
                                CONFIG_FILE + BACKUP_SUFFIX if in_place else None))
    old_total = target.total_size
    before = format(old_total, ",") if isinstance(old_total, int) else old_total
    edits.append(ConfigEdit(INDEX_FILE, [f"{len(draft.copies)} draft entries added/replaced, total_size {before} -> "
                                         f"{index.total_size:,}"], index.document,
                            INDEX_FILE + BACKUP_SUFFIX if in_place and target.has_index else None))
    return edits, quant.notes


def _links_and_copies(target: _TargetNow, mode: Mode, index: _NewIndex,
                      moved: _Displacement) -> tuple[list[str], list[str], list[str]]:
    """(links, small files, notes): an overlay's links to TARGET's shards and its copied small files; in place,
    none, and where each displaced file is moved aside."""
    if mode == "in-place":
        for d in moved.displaced:
            if not d.delete:
                d.moved_to = aside_name(target.dir, d.name)
        return [], [], []
    links: list[str] = []
    if mode == "overlay":
        links = sorted(n for n in set(index.document["weight_map"].values())
                       if n in target.scan and n not in moved.names)
    smalls = small_files(target.files, {CONFIG_FILE, QUANT_FILE, INDEX_FILE} | set(target.scan))
    notes: list[str] = []
    if moved.displaced and mode == "overlay-only":
        notes.append("when uploading this overlay onto TARGET's repo, delete "
                     + ", ".join(d.name for d in moved.displaced) + " there: they still hold the old draft tensors")
    return links, smalls, notes


def _check_lineage(target_dir: Path, src: CheckpointSource, allow_other_release: bool) -> tuple[LineageReport, list[str]]:
    """Refuse a SOURCE whose unquantized tensors differ from TARGET's, unless deliberately allowed; and notes."""
    report = compare_lineage(LocalCheckpoint(target_dir), src)
    if report.verdict == "other-release":
        if not allow_other_release:
            raise GraftError(report.refusal())
        logger.warning("grafting across releases (%s): %s", OPT_OUT_FLAG, report.summary())
        return report, [f"{OPT_OUT_FLAG}: SOURCE is another release ({report.summary()})"]
    if report.verdict == "not-comparable":
        logger.warning("cannot confirm SOURCE is TARGET's release: %s", report.summary())
        return report, [f"lineage not checked: {report.summary()}"]
    return report, []


def _resolve(source: str | CheckpointSource, target: str | Path, out: str | Path | None, overlay_only: bool,
             endpoint: str | None) -> tuple[CheckpointSource, Path, Path, Mode, bool]:
    """Usage checks on the paths; opens SOURCE. Returns (source, target dir, destination, mode, from the HF cache)."""
    out_dir = Path(out).expanduser().resolve() if out is not None else None
    cached = cached_target(target, out_dir)
    target_dir = cached if cached is not None else local_dir(target, "TARGET")
    if overlay_only and out_dir is None:
        raise UsageError("--overlay-only needs --out DIR")
    if out_dir is not None and out_dir == target_dir:
        raise UsageError("--out must differ from TARGET; leave --out away to graft in place")
    src = open_source(source, endpoint)
    if isinstance(src, LocalCheckpoint) and src.root == target_dir:
        raise UsageError("SOURCE and TARGET are the same directory")
    mode: Mode = "in-place" if out_dir is None else ("overlay-only" if overlay_only else "overlay")
    if out_dir is not None:
        check_out_dir(out_dir)
    return src, target_dir, out_dir or target_dir, mode, cached is not None


def _reports(src: CheckpointSource, target_dir: Path, force: bool,
             layer: int | None) -> tuple[InspectionReport, InspectionReport, ModelFamily]:
    """Inspect both; refuse what cannot be grafted. Returns (source report, target report, family)."""
    tgt = LocalCheckpoint(target_dir)
    tgt_report = inspect_checkpoint(tgt)
    if tgt_report.status == "not-applicable" or tgt_report.standalone_draft:
        check_target_status(tgt_report, force)
    src_report, family = source_report(src)
    check_compatible(src_report, tgt_report, target_release(tgt, tgt_report))
    check_target_status(tgt_report, force)
    draft_layer = src_report.draft_layer
    assert draft_layer is not None
    if layer is not None and layer != draft_layer:
        raise UsageError(f"--layer {layer}: this model's draft layer is {written_prefix(family, draft_layer)[:-1]} "
                         "(num_hidden_layers); SGLang loads the NextN draft from that layer only")
    return src_report, tgt_report, family


def plan_graft(source: str | CheckpointSource, target: str | Path, *, out: str | Path | None = None,
               overlay_only: bool = False, force: bool = False, max_shard_size: int | None = DEFAULT_MAX_SHARD_SIZE,
               layer: int | None = None, endpoint: str | None = None, allow_other_release: bool = False) -> GraftPlan:
    """Check SOURCE and TARGET and work out every byte range, file and config edit.

    Reads metadata, plus a bounded sample of the tensors both store unquantized to prove
    SOURCE is TARGET's own release (``lineage``); ``allow_other_release`` turns a
    mismatch into a note.
    """
    src, target_dir, dest, mode, from_cache = _resolve(source, target, out, overlay_only, endpoint)
    finished = interrupted_commit(dest)
    if finished is not None:
        return finish_plan(mode, src.display, target_dir, dest, finished)
    src_report, tgt_report, family = _reports(src, target_dir, force, layer)
    assert src_report.draft_layer is not None
    draft = _Draft(family, src_report.draft_layer, src_report.draft_precision, source_copies(src_report)[0])
    notes: list[str] = []
    if from_cache:
        notes.append(f"TARGET {target} is read from the Hugging Face cache ({target_dir}); the overlay links the "
                     "cached blobs and nothing is written into the cache")
    lineage, lineage_notes = _check_lineage(target_dir, src, allow_other_release)
    tgt = _read_target(target_dir, draft.prefix)
    identity = source_identity(src, draft.copies)
    shards, moved = _layout(tgt, dest, mode, draft, max_shard_size, identity)
    index = _new_index(tgt, draft.prefix, shards, moved.names)
    edits, edit_notes = _config_edits(tgt, mode, draft, index)
    links, smalls, overlay_notes = _links_and_copies(tgt, mode, index, moved)
    plan = GraftPlan(
        mode=mode, source=src.display, target=str(target_dir), dest=dest, family=family.name,
        architecture=tgt_report.architecture, draft_layer=draft.layer, output_layer=draft.layer,
        draft_precision=draft.precision, draft_tensors=len(draft.copies),
        draft_bytes=sum(c.nbytes for c in draft.copies), source_ranges=merged_ranges(draft.copies), shards=shards,
        config_edits=edits, index=index.document, index_entries_before=tgt.entries,
        index_entries_after=index.entries, total_size_before=tgt.total_size,
        total_size_after=index.total_size, displaced=moved.displaced, links=links, small_files=smalls,
        target_status=tgt_report.status, notes=notes + lineage_notes + index.notes + edit_notes + overlay_notes,
        source_obj=src, target_dir=target_dir, lineage=lineage.to_dict(), target_cache=from_cache)
    finalize_space(plan, sum(tgt.files[n] for n in smalls))
    return plan
