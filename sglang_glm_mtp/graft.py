"""Graft an MTP/NextN draft layer from one checkpoint (local or Hub) into another, safely.

``plan_graft`` reads only config files, the index and safetensors headers, checks that
SOURCE and TARGET are the same model, and returns a ``GraftPlan``: which byte ranges to
read, which files to write, which config keys to edit. ``execute`` carries it out:

1. every new shard is written under a hidden temporary name (``.<final>.partial``) in
   the destination folder, with a small journal (``.<final>.journal``) of the tensors
   already copied and verified (CRC32 of the source bytes, re-checked from the file);
2. the result is checked (``inspect``) through a staged view *before* anything visible
   changes; it must say ready;
3. commit: shards renamed to their final names, then the quant config(s), then
   config.json, then the index, each by one atomic rename. The index is the commit
   point: until it is replaced, TARGET loads exactly as before (new shards are not in the
   index, so no loader reads them); after it, the new layer is live;
4. clean-up: displaced files moved aside, journals removed.

A run killed at any moment leaves TARGET loadable as before; re-running the same command
reuses every verified tensor and finishes the job. ``extract.py`` reuses the same plan and
executor for standalone draft checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping

from .checkpoint.families import Config, ModelFamily, family_for
from .checkpoint.inspection import inspect_checkpoint as inspect
from .checkpoint.quant_config import draft_exclude_pattern, is_layer_excluded
from .checkpoint.report import InspectionReport, Problem
from .checkpoint.safetensors_format import (PREFIX_BYTES, HeaderError, ShardHeader, TensorSpec, build_header,
                                           parse_length_prefix, read_header)
from .checkpoint.source import CheckpointSource, HubCheckpoint, LocalCheckpoint, open_checkpoint
from .checkpoint.writer import INDEX_FILE, atomic_write_bytes, atomic_write_json, index_document, make_temp
from .copying import HubReader, LocalReader, Piece, RangeReader, copy_pieces, crc_range, HASH_CHUNK
from .errors import CheckpointUnreadable, GraftError, UsageError

logger = logging.getLogger(__name__)

QUANT_FILE = "hf_quant_config.json"
CONFIG_FILE = "config.json"
#: Hugging Face's default shard size ("5GB" = 5 * 10**9 bytes).
DEFAULT_MAX_SHARD_SIZE = 5_000_000_000
STATE_FILE = ".sglang-glm-mtp-graft.json"
LOCK_FILE = ".sglang-glm-mtp.lock"
BACKUP_SUFFIX = ".pre-graft"
PARTIAL_SUFFIX = ".partial"
JOURNAL_SUFFIX = ".journal"
#: Free space kept beyond what the plan writes (JSON files, file-system slack).
SPACE_MARGIN = 16 << 20
#: Journal flush policy: whichever comes first.
JOURNAL_EVERY_S = 1.0
JOURNAL_EVERY_BYTES = 1 << 30
#: Small files copied into an overlay or extract directory; bigger ones are weights, not metadata.
SMALL_FILE_LIMIT = 200 << 20
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx", ".npz")

Mode = Literal["in-place", "overlay", "overlay-only", "extract"]
Origin = Literal["source", "target"]

# ----------------------------------------------------------------------------- sizes


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
          "tb": 10**12, "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30, "gib": 2**30,
          "ti": 2**40, "tib": 2**40}


def parse_size(text: str | int | None) -> int | None:
    """``5GB`` -> 5*10**9, ``512MiB`` -> 512*2**20, ``0``/``none`` -> None (no limit)."""
    if text is None or isinstance(text, int):
        return text or None
    if text.strip().lower() in ("0", "none", "unlimited"):
        return None
    match = _SIZE.match(text)
    if match is None or match[2] is None and not match[1].isdigit() and "." in match[1]:
        raise UsageError(f"cannot read size {text!r}; write e.g. 5GB, 500MB, 20GiB or a number of bytes")
    value = float(match[1]) * _UNITS[(match[2] or "").lower()]
    if value < 1:
        raise UsageError(f"size {text!r} is smaller than one byte")
    return int(value)


def human_bytes(n: int) -> str:
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


# ----------------------------------------------------------------------------- plan types


@dataclass(frozen=True)
class TensorCopy:
    """One tensor to write: its name in the new file and where its bytes are now."""

    name: str
    origin: Origin  # the source checkpoint, or the target itself (stripped shards)
    shard: str
    src_offset: int  # absolute file offset
    nbytes: int
    dtype: str
    shape: tuple[int, ...]


@dataclass
class NewShard:
    """A file the run creates: the draft layer (or part of it), or a target shard minus the draft."""

    name: str
    role: Literal["draft", "stripped"]
    tensors: list[TensorCopy]  # in file order
    offsets: dict[str, int]  # tensor name -> absolute offset in the new file
    size: int
    header: bytes = field(repr=False)
    fingerprint: str = ""
    replaces: str | None = None  # stripped: the target shard it stands in for
    resume: str | None = None  # "final" / "partial": what a previous run left that may be reused
    reusable_bytes: int = 0

    @property
    def payload(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "tensors": len(self.tensors), "bytes": self.size,
                "payload_bytes": self.payload, "replaces": self.replaces, "resume": self.resume,
                "reusable_bytes": self.reusable_bytes}


@dataclass
class ConfigEdit:
    """A JSON file the commit replaces, and in words what changes."""

    file: str
    changes: list[str]
    document: dict[str, Any] = field(repr=False)
    backup: str | None = None  # in place: the backup written first (kept if already present)

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "changes": self.changes, "backup": self.backup}


@dataclass
class Displaced:
    """An existing target file that stops being part of the checkpoint."""

    name: str
    reason: str
    moved_to: str | None = None  # in place: renamed aside after the commit
    delete: bool = False  # our own unfinished file from an earlier run with another plan


@dataclass
class GraftPlan:
    mode: Mode
    source: str
    target: str | None
    dest: Path
    family: str
    architecture: str
    draft_layer: int
    output_layer: int
    draft_precision: str | None
    draft_tensors: int
    draft_bytes: int
    source_ranges: dict[str, list[tuple[int, int]]]
    shards: list[NewShard]
    config_edits: list[ConfigEdit]
    index: dict[str, Any] = field(repr=False)
    index_entries_before: int = 0
    index_entries_after: int = 0
    total_size_before: int | None = None
    total_size_after: int = 0
    displaced: list[Displaced] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    small_files: list[str] = field(default_factory=list)
    bytes_to_read: int = 0
    bytes_to_write: int = 0
    bytes_reusable: int = 0
    free_bytes: int = 0
    needed_bytes: int = 0
    target_status: str | None = None
    notes: list[str] = field(default_factory=list)
    finish_only: bool = False
    pending_moves: list[tuple[str, str]] = field(default_factory=list)
    #: not serialised: the opened source, the target dir, resolved paths of small files and links
    source_obj: CheckpointSource | None = field(default=None, repr=False)
    target_dir: Path | None = field(default=None, repr=False)
    small_file_origin: Origin = field(default="target", repr=False)

    @property
    def enough_space(self) -> bool:
        return self.free_bytes >= self.needed_bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "source": self.source, "target": self.target, "output": str(self.dest),
            "family": self.family, "architecture": self.architecture, "draft_layer": self.draft_layer,
            "output_layer": self.output_layer, "draft_precision": self.draft_precision,
            "draft_tensors": self.draft_tensors, "draft_bytes": self.draft_bytes,
            "source_ranges": {k: [list(r) for r in v] for k, v in self.source_ranges.items()},
            "shards": [s.to_json() for s in self.shards],
            "config_edits": [e.to_json() for e in self.config_edits],
            "index": {"file": INDEX_FILE, "entries_before": self.index_entries_before,
                      "entries_after": self.index_entries_after, "total_size_before": self.total_size_before,
                      "total_size_after": self.total_size_after},
            "displaced": [asdict(d) for d in self.displaced], "links": len(self.links),
            "small_files": self.small_files, "bytes_to_read": self.bytes_to_read,
            "bytes_to_write": self.bytes_to_write, "bytes_reusable": self.bytes_reusable,
            "free_bytes": self.free_bytes, "needed_bytes": self.needed_bytes, "enough_space": self.enough_space,
            "target_status": self.target_status, "finish_only": self.finish_only, "notes": self.notes,
        }


@dataclass
class ShardResult:
    name: str
    role: str
    tensors: int
    bytes: int
    copied_bytes: int
    reused_tensors: int
    verified_tensors: int


@dataclass
class GraftReport:
    mode: Mode
    source: str
    target: str | None
    output: str
    draft_layer: int
    output_layer: int
    shards: list[ShardResult] = field(default_factory=list)
    tensors: int = 0
    bytes_copied: int = 0
    bytes_reused: int = 0
    copy_method: str = ""
    config_edits: list[str] = field(default_factory=list)
    backups: list[str] = field(default_factory=list)
    moved_aside: list[str] = field(default_factory=list)
    links: int = 0
    small_files: list[str] = field(default_factory=list)
    index: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    check_status: str = ""
    check_problems: list[Problem] = field(default_factory=list)
    elapsed_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.check_status == "ready"

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["ok"] = self.ok
        return doc


# ----------------------------------------------------------------------------- staged view


class StagedCheckpoint:
    """A checkpoint as it will look after the commit: file name -> path, plus JSON documents.

    ``inspect`` reads it like any other source, so the result is checked before anything
    visible changes (and an --overlay-only result is checked together with its TARGET).
    """

    def __init__(self, display: str, files: Mapping[str, Path], documents: Mapping[str, Any]) -> None:
        self.display = display
        self._files = dict(files)
        self._docs = dict(documents)

    @property
    def is_remote(self) -> bool:
        return False

    def list_files(self) -> dict[str, int]:
        out = {name: path.stat().st_size for name, path in self._files.items() if name not in self._docs}
        out.update({name: len(json.dumps(doc)) for name, doc in self._docs.items() if doc is not None})
        return out

    def read_json(self, name: str) -> Any | None:
        if name in self._docs:  # handed out as is (inspect only reads); a copy of a 233k-entry index costs 50 MB
            return self._docs[name]
        path = self._files.get(name)
        return json.loads(path.read_text(encoding="utf-8")) if path is not None else None

    def open(self, name: str) -> Any:
        return open(self._files[name], "rb")

    def local_path(self, name: str) -> Path | None:
        return self._files.get(name)


# ----------------------------------------------------------------------------- planning helpers


def _open_source(spec: str | CheckpointSource, endpoint: str | None) -> CheckpointSource:
    return open_checkpoint(spec, endpoint=endpoint) if isinstance(spec, str) else spec


def _local_dir(spec: str | Path, role: str) -> Path:
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise UsageError(f"{role} {spec} is a file; expected a checkpoint directory")
    if re.match(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+(@\S+)?$", str(spec)) and not str(spec).startswith((".", "/", "~")):
        name = str(spec).split("@")[0].split("/")[-1]
        raise UsageError(f"{role} must be a local directory, not a Hub id; download it first: "
                         f"hf download {str(spec).split('@')[0]} --local-dir ./{name}")
    raise CheckpointUnreadable(f"no such directory: {spec}")


def _source_report(source: CheckpointSource) -> tuple[InspectionReport, ModelFamily]:
    report = inspect(source)
    family = family_for(report.architecture)
    assert family is not None  # inspect refuses unsupported architectures
    where = source.display
    if report.status == "not-applicable":
        raise GraftError(f"SOURCE {where} declares no NextN layer (num_nextn_predict_layers = 0) and cannot supply one")
    if report.standalone_draft:
        raise GraftError(f"SOURCE {where} is a standalone draft checkpoint (layer renamed to 0); graft needs the full "
                         f"release that stores model.layers.N, e.g. {family.source_hint} (a standalone draft is used "
                         "as it is, with --speculative-draft-model-path)")
    layer = report.draft_layer
    if report.status == "missing":
        raise GraftError(f"SOURCE {where} has no model.layers.{layer}.* tensors: it lacks the draft layer too. "
                         f"Use the unquantized release, e.g. --from {family.source_hint}")
    if report.status == "incomplete":
        raise GraftError(f"SOURCE {where} has an incomplete draft layer ({len(report.missing)} of "
                         f"{report.expected_tensors} tensors missing, e.g. {report.missing[0]}); graft needs a "
                         f"complete one, e.g. --from {family.source_hint}")
    if report.status == "invalid":
        details = "; ".join(p.message for p in report.errors())
        raise GraftError(f"SOURCE {where} cannot supply the draft layer: {details}")
    return report, family


#: Config fields that must agree; the expected draft tensor set (names and shapes) is compared too.
COMPAT_FIELDS = ("num_hidden_layers", "hidden_size", "n_routed_experts", "vocab_size", "moe_intermediate_size",
                 "n_shared_experts", "num_attention_heads", "num_key_value_heads", "q_lora_rank", "kv_lora_rank",
                 "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "index_n_heads", "index_head_dim",
                 "head_dim", "num_nextn_predict_layers")


def check_compatible(src: InspectionReport, dst: InspectionReport, family: ModelFamily) -> None:
    """Refuse to mix layers of different models (architecture, sizes, the expected draft tensors)."""
    diffs: list[str] = []
    if src.architecture != dst.architecture:
        diffs.append(f"architecture {src.architecture} vs {dst.architecture}")
    scfg, dcfg = Config(src.config), Config(dst.config)
    for key in COMPAT_FIELDS:
        a, b = scfg.get(key), dcfg.get(key)
        if a != b:
            diffs.append(f"{key} {a} vs {b}")
    if not diffs:
        try:
            a_set = {(t.name, t.shape) for t in family.draft_tensors(scfg)}
            b_set = {(t.name, t.shape) for t in family.draft_tensors(dcfg)}
        except (KeyError, ValueError, TypeError) as exc:
            raise GraftError(f"cannot derive the draft tensor list from config.json: {exc}") from None
        if a_set != b_set:
            only = sorted(n for n, _ in a_set ^ b_set)
            diffs.append(f"the expected draft tensors differ ({len(only)}, e.g. {only[0]})")
    if diffs:
        raise GraftError(f"SOURCE {src.checkpoint} and TARGET {dst.checkpoint} are not the same model: "
                         f"{'; '.join(diffs)}. Graft from the release TARGET was made from (for this family: "
                         f"{family.source_hint})")


def _check_target_status(report: InspectionReport, force: bool) -> None:
    where = report.checkpoint
    if report.status == "not-applicable":
        raise GraftError(f"TARGET {where} declares no NextN layer (num_nextn_predict_layers = 0); there is nothing "
                         "to graft into")
    if report.standalone_draft:
        raise GraftError(f"TARGET {where} is a standalone draft checkpoint; graft into the full quantized checkpoint")
    damaged = [p for p in report.errors() if p.code in ("corrupt-header", "truncated-shard", "index-missing-shard")]
    if damaged:
        raise GraftError(f"TARGET {where} is damaged ({'; '.join(p.message for p in damaged)}); re-download the "
                         "files named, check it again, then graft")
    if report.status == "ready" and not force:
        raise GraftError(f"TARGET {where} already has a complete draft layer (model.layers.{report.draft_layer}, "
                         f"{report.found_tensors} tensors, {report.draft_precision}); nothing to do. Pass --force to "
                         "replace it")
    if report.status == "invalid" and not force:
        details = "; ".join(p.message for p in report.errors())
        raise GraftError(f"TARGET {where} has a draft layer that check rejects ({details}); pass --force to replace it")


@dataclass
class _TargetShard:
    name: str
    size: int
    payload: int
    draft: list[str]
    others: list[tuple[str, str, tuple[int, ...], int, int]]  # kept only for shards that must be stripped
    other_count: int


def _read_local_header(path: Path) -> ShardHeader:
    with open(path, "rb") as stream:
        return read_header(stream, path.stat().st_size)


def _scan_target(root: Path, files: Mapping[str, int], prefix: str) -> dict[str, _TargetShard]:
    """Headers of every shard (local, cheap): payload sizes and where draft-layer tensors sit.

    Only a shard that mixes draft and other tensors keeps its full tensor list, so memory
    stays small even for 233k-tensor checkpoints.
    """
    out: dict[str, _TargetShard] = {}
    needle = json.dumps(prefix)[:-1].encode()  # '"model.layers.N.' as it appears in a header
    for name in sorted(files):
        if not name.endswith(".safetensors"):
            continue
        try:
            with open(root / name, "rb") as stream:
                header_len = parse_length_prefix(stream.read(PREFIX_BYTES), files[name])
                if needle not in stream.read(header_len):  # no draft tensor: the prefix gives the payload size
                    out[name] = _TargetShard(name, files[name], files[name] - PREFIX_BYTES - header_len, [], [], 1)
                    continue
            header = _read_local_header(root / name)
        except HeaderError as exc:
            raise GraftError(f"TARGET shard {root / name} is damaged ({exc}); re-download it first") from None
        except OSError as exc:
            raise GraftError(f"cannot read TARGET shard {root / name}: {exc.strerror}") from None
        draft = sorted(n for n in header.tensors if n.startswith(prefix))
        others = len(header.tensors) - len(draft)
        keep = ([(e.name, e.dtype, e.shape, header.data_start + e.begin, e.nbytes)
                 for e in header.tensors.values() if not e.name.startswith(prefix)] if draft and others else [])
        out[name] = _TargetShard(name, files[name], header.payload_bytes, draft, keep, others)
    return out


def _split(copies: list[TensorCopy], max_size: int | None) -> list[list[TensorCopy]]:
    """Hugging Face's greedy split over name-sorted tensors: a shard holds at most ``max_size`` bytes."""
    groups: list[list[TensorCopy]] = [[]]
    used = 0
    for item in sorted(copies, key=lambda c: c.name):
        if max_size is not None and groups[-1] and used + item.nbytes > max_size:
            groups.append([])
            used = 0
        groups[-1].append(item)
        used += item.nbytes
    return [g for g in groups if g]


def _identity(origin_files: Mapping[tuple[str, str], tuple[int, int]], copies: list[TensorCopy]) -> list[Any]:
    return sorted({(c.origin, c.shard, *origin_files.get((c.origin, c.shard), (0, 0))) for c in copies})


def build_new_shard(name: str, role: Literal["draft", "stripped"], copies: list[TensorCopy],
                    identity: Mapping[tuple[str, str], tuple[int, int]], replaces: str | None = None) -> NewShard:
    header_bytes, parsed = build_header([TensorSpec(c.name, c.dtype, c.shape) for c in copies], {"format": "pt"})
    by_name = {c.name: c for c in copies}
    ordered = sorted(parsed.tensors.values(), key=lambda e: e.begin)
    tensors = [by_name[e.name] for e in ordered]
    offsets = {e.name: parsed.data_start + e.begin for e in ordered}
    digest = hashlib.sha256(header_bytes)
    digest.update(json.dumps([[t.origin, t.shard, t.src_offset, t.nbytes] for t in tensors]).encode())
    digest.update(json.dumps(_identity(identity, copies)).encode())
    return NewShard(name=name, role=role, tensors=tensors, offsets=offsets, size=parsed.expected_file_size,
                    header=header_bytes, fingerprint=digest.hexdigest(), replaces=replaces)


def partial_path(dest: Path, name: str) -> Path:
    return dest / f".{name}{PARTIAL_SUFFIX}"


def journal_path(dest: Path, name: str) -> Path:
    return dest / f".{name}{JOURNAL_SUFFIX}"


def _read_journal(dest: Path, name: str) -> dict[str, Any] | None:
    path = journal_path(dest, name)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("tensors"), dict) else None


def _resume_state(dest: Path, shard: NewShard) -> tuple[str | None, int]:
    """What an earlier run of the same plan left: a finished file or a partial, and its verified bytes."""
    journal = _read_journal(dest, shard.name)
    if journal is None or journal.get("fingerprint") != shard.fingerprint:
        return None, 0
    verified = sum(t.nbytes for t in shard.tensors if t.name in journal["tensors"])
    if (dest / shard.name).is_file():
        return "final", verified
    if partial_path(dest, shard.name).is_file():
        return "partial", verified
    return None, 0


def choose_names(dest: Path, taken: set[str], groups: list[list[TensorCopy]], make_name: Callable[[int, int, int], str],
                 role: Literal["draft", "stripped"], identity: Mapping[tuple[str, str], tuple[int, int]],
                 replaces: list[str | None] | None = None) -> list[NewShard]:
    """New file names that collide with nothing, unless the file is our own unfinished work."""
    for variant in range(1, 1000):
        shards = [build_new_shard(make_name(variant, i, len(groups)), role, group, identity,
                                  replaces[i - 1] if replaces else None)
                  for i, group in enumerate(groups, start=1)]
        clash = False
        for shard in shards:
            if shard.name in taken or (dest / shard.name).exists() or os.path.lexists(dest / shard.name):
                resume, _ = _resume_state(dest, shard)
                if resume != "final":
                    clash = True
                    break
        if not clash:
            for shard in shards:
                shard.resume, shard.reusable_bytes = _resume_state(dest, shard)
            return shards
    raise GraftError(f"cannot find a free file name for the new shards in {dest}")


def draft_shard_name(layer: int) -> Callable[[int, int, int], str]:
    def make(variant: int, i: int, n: int) -> str:
        suffix = "" if variant == 1 else f"-r{variant}"
        return f"model-mtp-layer{layer}{suffix}-{i:05d}-of-{n:05d}.safetensors"
    return make


def _merged_ranges(copies: list[TensorCopy]) -> dict[str, list[tuple[int, int]]]:
    ranges: dict[str, list[tuple[int, int]]] = {}
    for c in sorted(copies, key=lambda c: (c.shard, c.src_offset)):
        spans = ranges.setdefault(c.shard, [])
        if spans and spans[-1][1] == c.src_offset:
            spans[-1] = (spans[-1][0], c.src_offset + c.nbytes)
        else:
            spans.append((c.src_offset, c.src_offset + c.nbytes))
    return dict(sorted(ranges.items()))


def _file_identity(source: CheckpointSource, files: Mapping[str, int], names: set[str]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for name in names:
        local = source.local_path(name)
        if local is not None:
            st = local.stat()
            out[name] = (st.st_size, st.st_mtime_ns)
        else:
            out[name] = (files.get(name, 0), 0)
    return out


def _quant_edits(target_dir: Path, cfg_doc: dict[str, Any], layer: int, draft_precision: str | None,
                 notes: list[str]) -> tuple[dict[str, Any] | None, dict[str, Any] | None, list[str], list[str]]:
    """Exclude the BF16 draft from quantization in whichever ModelOpt declaration exists.

    Returns (new config.json or None, new hf_quant_config.json or None, config changes, quant changes).
    """
    pattern = draft_exclude_pattern(layer)
    prefix = f"model.layers.{layer}"
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


def _read_json_file(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointUnreadable(f"cannot read {path} ({exc})") from None
    if not isinstance(doc, dict):
        raise CheckpointUnreadable(f"{path} is not a JSON object")
    return doc


def check_out_dir(out: Path) -> None:
    """An output directory must be new, empty, or hold only an interrupted run of ours."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    entries = [e.name for e in os.scandir(out)]
    markers = [n for n in entries if n == STATE_FILE or n.startswith(".") and n.endswith((JOURNAL_SUFFIX, PARTIAL_SUFFIX))]
    others = [n for n in entries if n not in markers and n != LOCK_FILE and not (n.startswith(".") and n.endswith(".tmp"))]
    if others and not markers:
        raise UsageError(f"--out {out} is not empty; choose a new or empty directory (an interrupted run of this "
                         "command is recognised and resumed)")


def small_files(files: Mapping[str, int], skip: set[str]) -> list[str]:
    """Top-level metadata files worth copying: tokenizer, generation config, chat template, ..."""
    return sorted(n for n, size in files.items()
                  if n not in skip and not n.startswith(".") and BACKUP_SUFFIX not in n
                  and not n.endswith(WEIGHT_SUFFIXES) and size <= SMALL_FILE_LIMIT)


def _free_space(dest: Path) -> int:
    probe = dest
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _allocated(path: Path) -> int:
    try:
        return path.stat().st_blocks * 512
    except (OSError, AttributeError):
        return 0


def finalize_space(plan: GraftPlan, small_bytes: int) -> None:
    """Bytes still to be allocated in the destination, against the free space there.

    JSON files count three times in the space check (compact size, indentation, backup).
    """
    json_bytes = sum(len(json.dumps(e.document)) for e in plan.config_edits)
    extra_bytes = small_bytes + json_bytes
    needed = small_bytes + 3 * json_bytes + SPACE_MARGIN
    for shard in plan.shards:
        if shard.resume == "final":
            continue
        needed += max(0, shard.size - _allocated(partial_path(plan.dest, shard.name)))
    plan.needed_bytes = needed
    plan.free_bytes = _free_space(plan.dest)
    plan.bytes_reusable = sum(s.reusable_bytes for s in plan.shards)
    plan.bytes_to_write = sum(s.size for s in plan.shards) - plan.bytes_reusable + extra_bytes
    plan.bytes_to_read = sum(s.payload for s in plan.shards) - plan.bytes_reusable


# ----------------------------------------------------------------------------- plan_graft


def plan_graft(source: str | CheckpointSource, target: str | Path, *, out: str | Path | None = None,
               overlay_only: bool = False, force: bool = False, max_shard_size: int | None = DEFAULT_MAX_SHARD_SIZE,
               layer: int | None = None, endpoint: str | None = None) -> GraftPlan:
    """Check SOURCE and TARGET and work out every byte range, file and config edit. Reads only metadata."""
    target_dir = _local_dir(target, "TARGET")
    out_dir = Path(out).expanduser().resolve() if out is not None else None
    if overlay_only and out_dir is None:
        raise UsageError("--overlay-only needs --out DIR")
    if out_dir is not None and out_dir == target_dir:
        raise UsageError("--out must differ from TARGET; leave --out away to graft in place")
    src = _open_source(source, endpoint)
    if isinstance(src, LocalCheckpoint) and src.root == target_dir:
        raise UsageError("SOURCE and TARGET are the same directory")
    dest = out_dir or target_dir
    mode: Mode = "in-place" if out_dir is None else ("overlay-only" if overlay_only else "overlay")
    if out_dir is not None:
        check_out_dir(out_dir)

    finished = _interrupted_commit(dest)
    if finished is not None:
        return _finish_plan(mode, src.display, target_dir, dest, finished)

    target_src = LocalCheckpoint(target_dir)
    tgt_report = inspect(target_src)
    tgt_family = family_for(tgt_report.architecture)
    assert tgt_family is not None
    if tgt_report.status == "not-applicable" or tgt_report.standalone_draft:
        _check_target_status(tgt_report, force)
    src_report, family = _source_report(src)
    check_compatible(src_report, tgt_report, family)
    _check_target_status(tgt_report, force)
    draft_layer = src_report.draft_layer
    assert draft_layer is not None
    if layer is not None and layer != draft_layer:
        raise UsageError(f"--layer {layer}: this model's draft layer is model.layers.{draft_layer} "
                         "(num_hidden_layers); SGLang loads the NextN draft from that layer only")
    prefix = f"model.layers.{draft_layer}."
    notes: list[str] = []

    # what is in TARGET now
    files = target_src.list_files()
    index_doc = _read_json_file(target_dir / INDEX_FILE) if (target_dir / INDEX_FILE).is_file() else None
    has_index = index_doc is not None
    weight_map: dict[str, str] = index_doc.pop("weight_map") if index_doc is not None else {}  # no second copy
    scan = _scan_target(target_dir, files, prefix)
    referenced = set(weight_map.values()) if has_index else set(scan)

    # the draft tensors, byte for byte as SOURCE stores them
    copies = [TensorCopy(name, "source", loc.shard, loc.file_offset, loc.entry.nbytes, loc.entry.dtype,
                         tuple(loc.entry.shape)) for name, loc in sorted(src_report.locations.items())]
    src_files = src.list_files()
    identity = {("source", k): v for k, v in _file_identity(src, src_files, {c.shard for c in copies}).items()}

    # existing files that held draft tensors stop being part of the checkpoint
    displaced: list[Displaced] = []
    strip_groups: list[list[TensorCopy]] = []
    strip_from: list[str | None] = []
    # shards an interrupted run of ours renamed into place but never indexed: reused below, or deleted
    ours = {name for name, info in scan.items()
            if info.draft and name not in referenced and mode == "in-place" and _read_journal(dest, name) is not None}
    for name, info in scan.items():
        if not info.draft or name in ours:
            continue
        indexed = name in referenced
        if not indexed:
            displaced.append(Displaced(name, f"un-indexed file holding {len(info.draft)} {prefix}* tensors"))
        elif info.other_count == 0:
            displaced.append(Displaced(name, f"holds only the old {prefix}* tensors ({len(info.draft)})"))
        else:
            displaced.append(Displaced(name, f"holds {len(info.draft)} old {prefix}* tensors; replaced by a copy "
                                             f"without them"))
            strip_groups.append([TensorCopy(n, "target", name, off, nb, dt, shape)
                                 for n, dt, shape, off, nb in info.others])
            strip_from.append(name)
            identity[("target", name)] = (files[name], (target_dir / name).stat().st_mtime_ns)
    displaced_names = {d.name for d in displaced}

    taken = (set(files) - ours) | (set(os.listdir(dest)) - ours if dest.is_dir() else set())
    shards = choose_names(dest, taken, _split(copies, max_shard_size), draft_shard_name(draft_layer), "draft",
                          identity)
    taken |= {s.name for s in shards}
    if strip_groups:
        def strip_name(variant: int, i: int, n: int) -> str:
            stem = strip_from[i - 1][: -len(".safetensors")]  # type: ignore[index]
            return f"{stem}-no-layer{draft_layer}{'' if variant == 1 else f'-r{variant}'}.safetensors"
        shards += choose_names(dest, taken, strip_groups, strip_name, "stripped", identity, strip_from)

    for name in sorted(ours - {s.name for s in shards}):
        displaced.append(Displaced(name, "unfinished shard of an earlier run with another plan", delete=True))
        displaced_names.add(name)

    # the new index: every old entry kept, draft entries replaced, displaced files remapped or dropped
    renamed = {s.replaces: s.name for s in shards if s.role == "stripped"}
    new_map: dict[str, str] = {}
    dropped_entries = 0
    for tensor, shard in weight_map.items():
        if tensor.startswith(prefix):
            continue
        if shard in renamed:
            new_map[tensor] = renamed[shard]
        elif shard in displaced_names:
            dropped_entries += 1
        else:
            new_map[tensor] = shard
    if not has_index:  # no index: SGLang loaded every file; the new index names them all
        for name, info in scan.items():
            if name in displaced_names:
                continue
            with open(target_dir / name, "rb") as stream:
                for tensor in read_header(stream, files[name]).tensors:
                    new_map[tensor] = name
        notes.append(f"TARGET had no {INDEX_FILE}; one is created naming every shard")
    for shard in shards:
        for t in shard.tensors:
            new_map[t.name] = shard.name
    interned = {name: sys.intern(name) for name in set(new_map.values())}
    for tensor, shard in new_map.items():  # one string per shard, not one per entry: ~20 MB less at GLM scale
        new_map[tensor] = interned[shard]
    entries_before = len(weight_map)
    del weight_map
    if dropped_entries:
        notes.append(f"{dropped_entries} index entries pointed at displaced files for tensors they do not hold; "
                     "they are dropped")
    sizes = {name: info.payload for name, info in scan.items()}
    sizes.update({s.name: s.payload for s in shards})
    missing_files = sorted(set(new_map.values()) - set(sizes))
    if missing_files:
        raise GraftError(f"TARGET {INDEX_FILE} names shard(s) that do not exist: {', '.join(missing_files[:5])}; "
                         "re-download them first")
    total_after = sum(sizes[name] for name in set(new_map.values()))
    extra_meta = {k: v for k, v in ((index_doc or {}).get("metadata") or {}).items() if k != "total_size"}
    new_index = index_document(new_map, total_after, extra_meta)

    # configs: exclude a BF16 draft from quantization where a ModelOpt declaration exists
    cfg_doc = _read_json_file(target_dir / CONFIG_FILE)
    new_cfg, new_quant, cfg_changes, quant_changes = _quant_edits(target_dir, cfg_doc, draft_layer,
                                                                  src_report.draft_precision, notes)
    in_place = mode == "in-place"
    edits: list[ConfigEdit] = []
    if new_quant is not None or (not in_place and (target_dir / QUANT_FILE).is_file()):
        doc = new_quant if new_quant is not None else _read_json_file(target_dir / QUANT_FILE)
        edits.append(ConfigEdit(QUANT_FILE, quant_changes or ["copied unchanged"], doc,
                                QUANT_FILE + BACKUP_SUFFIX if in_place else None))
    if new_cfg is not None or not in_place:
        edits.append(ConfigEdit(CONFIG_FILE, cfg_changes or ["copied unchanged"],
                                new_cfg if new_cfg is not None else cfg_doc,
                                CONFIG_FILE + BACKUP_SUFFIX if in_place else None))
    old_total = ((index_doc or {}).get("metadata") or {}).get("total_size")
    edits.append(ConfigEdit(INDEX_FILE, [f"{len(copies)} draft entries added/replaced, total_size "
                                         f"{format(old_total, ',') if isinstance(old_total, int) else old_total} -> "
                                         f"{total_after:,}"], new_index,
                            INDEX_FILE + BACKUP_SUFFIX if in_place and has_index else None))

    links: list[str] = []
    smalls: list[str] = []
    if not in_place:
        if mode == "overlay":
            links = sorted(n for n in set(new_map.values()) if n in scan and n not in displaced_names)
        smalls = small_files(files, {CONFIG_FILE, QUANT_FILE, INDEX_FILE} | set(scan))
        if displaced and mode == "overlay-only":
            notes.append("when uploading this overlay onto TARGET's repo, delete "
                         + ", ".join(d.name for d in displaced) + " there: they still hold the old draft tensors")
    else:
        for d in displaced:
            if not d.delete:
                d.moved_to = _aside_name(target_dir, d.name)

    plan = GraftPlan(
        mode=mode, source=src.display, target=str(target_dir), dest=dest, family=family.name,
        architecture=tgt_report.architecture, draft_layer=draft_layer, output_layer=draft_layer,
        draft_precision=src_report.draft_precision, draft_tensors=len(copies),
        draft_bytes=sum(c.nbytes for c in copies), source_ranges=_merged_ranges(copies), shards=shards,
        config_edits=edits, index=new_index, index_entries_before=entries_before,
        index_entries_after=len(new_map), total_size_before=((index_doc or {}).get("metadata") or {}).get("total_size"),
        total_size_after=total_after, displaced=displaced, links=links, small_files=smalls,
        target_status=tgt_report.status, notes=notes, source_obj=src, target_dir=target_dir)
    finalize_space(plan, sum(files[n] for n in smalls))
    return plan


def _aside_name(root: Path, name: str) -> str:
    candidate = name + BACKUP_SUFFIX
    k = 1
    while (root / candidate).exists():
        k += 1
        candidate = f"{name}{BACKUP_SUFFIX}.{k}"
    return candidate


# ----------------------------------------------------------------------------- interrupted commits


def _sha256_file(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _interrupted_commit(dest: Path) -> dict[str, Any] | None:
    """A state file whose index was committed: the run died during clean-up; finish it."""
    try:
        state = json.loads((dest / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    if _sha256_file(dest / INDEX_FILE) == state.get("index_sha256"):
        return state
    return None  # the index was never replaced: plan again, reusing the verified shards


def _finish_plan(mode: Mode, source: str, target_dir: Path, dest: Path, state: dict[str, Any]) -> GraftPlan:
    plan = GraftPlan(mode=state.get("mode", mode), source=state.get("source", source), target=str(target_dir),
                     dest=dest, family=state.get("family", ""), architecture=state.get("architecture", ""),
                     draft_layer=int(state.get("draft_layer", -1)), output_layer=int(state.get("output_layer", -1)),
                     draft_precision=None, draft_tensors=0, draft_bytes=0, source_ranges={}, shards=[],
                     config_edits=[], index={}, finish_only=True, target_dir=target_dir,
                     pending_moves=[tuple(m) for m in state.get("moves", [])])  # type: ignore[misc]
    plan.notes.append("a previous run committed the graft but was stopped during clean-up; this run finishes it")
    return plan


# ----------------------------------------------------------------------------- execute


ProgressFn = Callable[[int], None]


class _Journal:
    """Per-shard record of verified tensors, written atomically now and then."""

    def __init__(self, dest: Path, shard: NewShard, tensors: dict[str, int] | None = None) -> None:
        self.path = journal_path(dest, shard.name)
        self.doc: dict[str, Any] = {"version": 1, "final": shard.name, "fingerprint": shard.fingerprint,
                                    "complete": False, "tensors": dict(tensors or {})}
        self._last = time.monotonic()
        self._bytes = 0

    def record(self, name: str, crc: int, nbytes: int) -> None:
        self.doc["tensors"][name] = crc
        self._bytes += nbytes
        if self._bytes >= JOURNAL_EVERY_BYTES or time.monotonic() - self._last >= JOURNAL_EVERY_S:
            self.flush()

    def flush(self, complete: bool | None = None) -> None:
        if complete is not None:
            self.doc["complete"] = complete
        atomic_write_json(self.path, self.doc)
        self._last = time.monotonic()
        self._bytes = 0


@contextlib.contextmanager
def _locked(dest: Path) -> Iterator[None]:
    """One writer per destination folder (flock on a hidden file, removed again when done)."""
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GraftError(f"another sglang-glm-mtp graft/extract is writing to {dest}; wait for it to finish") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous holder removed the file between our open and our lock
            raise GraftError(f"another sglang-glm-mtp graft/extract just finished in {dest}; run the command again")
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _probe_writable(dest: Path) -> None:
    fd, tmp = make_temp(dest / "write-probe")
    os.close(fd)
    os.unlink(tmp)


def _io_error(exc: OSError, dest: Path, what: str) -> GraftError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return GraftError(f"no space left on the disk of {dest} while {what}; free some space and re-run the same "
                          "command: the verified part is kept and reused (the hidden .*.partial files hold it)")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return GraftError(f"cannot write to {dest} ({exc.strerror}); use --out DIR to write an overlay on a writable "
                          "disk instead")
    return GraftError(f"I/O error while {what} in {dest}: {exc.strerror or exc}")


def _open_readers(plan: GraftPlan) -> dict[str, RangeReader]:
    readers: dict[str, RangeReader] = {}
    source = plan.source_obj
    for shard in plan.shards:
        for t in shard.tensors:
            key = f"{t.origin}:{t.shard}"
            if key in readers:
                continue
            if t.origin == "target":
                assert plan.target_dir is not None
                readers[key] = LocalReader(plan.target_dir / t.shard)
                continue
            assert source is not None
            local = source.local_path(t.shard)
            if local is not None:
                readers[key] = LocalReader(local)
            elif isinstance(source, HubCheckpoint):
                readers[key] = HubReader(source.fs, source._path(t.shard), f"{source.display}/{t.shard}")
            else:
                raise GraftError(f"cannot read {t.shard} from {source.display}")
    return readers


def _write_shard(plan: GraftPlan, shard: NewShard, readers: Mapping[str, RangeReader], result: ShardResult,
                 progress: ProgressFn | None, stats: dict[str, Any]) -> None:
    """Bring ``.<name>.partial`` to a complete, verified copy (reusing what an earlier run verified)."""
    dest = plan.dest
    final, part = dest / shard.name, partial_path(dest, shard.name)
    journal_doc = _read_journal(dest, shard.name)
    previous: dict[str, int] = {}
    if journal_doc is not None and journal_doc.get("fingerprint") == shard.fingerprint:
        previous = {k: int(v) for k, v in journal_doc["tensors"].items()}
        if final.is_file() and not part.exists():
            os.replace(final, part)  # finished by an earlier run but never committed: re-verify it as a partial
    elif part.exists():
        logger.info("discarding %s: it belongs to a different plan", part)
        part.unlink()

    fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        size_now = os.fstat(fd).st_size
        header_ok = size_now >= len(shard.header) and os.pread(fd, len(shard.header), 0) == shard.header
        if not header_ok:
            previous = {}
            os.ftruncate(fd, 0)
            os.pwrite(fd, shard.header, 0)
        if hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(fd, 0, shard.size)  # fail now, not at 90%, when the disk is too small
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise
        if os.fstat(fd).st_size != shard.size:
            os.ftruncate(fd, shard.size)
        journal = _Journal(dest, shard)

        # reuse: every tensor an earlier run verified is hashed again from the file
        todo: list[Piece] = []
        buf = memoryview(bytearray(HASH_CHUNK)) if previous else None
        for t in shard.tensors:
            offset = shard.offsets[t.name]
            if t.name in previous and buf is not None and \
                    crc_range(fd, offset, t.nbytes, buf, display=str(part)) == previous[t.name]:
                journal.doc["tensors"][t.name] = previous[t.name]
                result.reused_tensors += 1
                stats["reused_bytes"] += t.nbytes
                if progress is not None:
                    progress(t.nbytes)
                continue
            todo.append(Piece(t.name, f"{t.origin}:{t.shard}", t.src_offset, offset, t.nbytes))
        journal.flush(False)

        def verified(piece: Piece, crc: int) -> None:
            journal.record(piece.name, crc, piece.nbytes)
            result.verified_tensors += 1

        try:
            outcome = copy_pieces(fd, str(part), todo, readers, progress=progress, verified=verified)
        except BaseException:
            with contextlib.suppress(OSError):
                journal.flush()  # keep what was verified for the re-run (not possible on kill -9: at most 1 s lost)
            raise
        result.copied_bytes += outcome.bytes_copied
        stats["copied_bytes"] += outcome.bytes_copied
        if outcome.used_copy_file_range:
            stats["methods"].add("copy_file_range")
        if outcome.used_userspace:
            stats["methods"].add("http-range" if any(r.fileno() is None for r in readers.values()) else "buffered")
        os.fsync(fd)
        journal.flush(True)
    finally:
        os.close(fd)


def _staged_files(plan: GraftPlan, *, committed: bool) -> dict[str, Path]:
    """name -> path of every file the finished checkpoint (or combined overlay view) contains."""
    files: dict[str, Path] = {}
    target_dir = plan.target_dir
    hidden = {d.name for d in plan.displaced}
    if plan.mode in ("in-place", "overlay-only") and target_dir is not None:
        for entry in os.scandir(target_dir):
            if entry.is_file() and entry.name not in hidden and not entry.name.startswith("."):
                files[entry.name] = Path(entry.path)
    if plan.mode == "overlay" and target_dir is not None:
        files.update({name: target_dir / name for name in (*plan.links, *plan.small_files)})
    if plan.mode in ("overlay-only", "extract", "overlay") and plan.dest.is_dir():
        for entry in os.scandir(plan.dest):
            if entry.is_file() and not entry.name.startswith("."):
                files[entry.name] = Path(entry.path)
    for shard in plan.shards:
        files[shard.name] = plan.dest / shard.name if committed else partial_path(plan.dest, shard.name)
    return files


def _check(plan: GraftPlan, files: Mapping[str, Path], docs: Mapping[str, Any]) -> InspectionReport:
    view = StagedCheckpoint(str(plan.dest), files, docs)
    return inspect(view)


def execute(plan: GraftPlan, *, progress: ProgressFn | None = None) -> GraftReport:
    """Carry out a plan: copy and verify, check the staged result, commit atomically, clean up."""
    started = time.monotonic()
    report = GraftReport(mode=plan.mode, source=plan.source, target=plan.target, output=str(plan.dest),
                         draft_layer=plan.draft_layer, output_layer=plan.output_layer, notes=list(plan.notes))
    dest = plan.dest
    try:
        dest.mkdir(parents=True, exist_ok=True)
        _probe_writable(dest)
    except OSError as exc:
        raise _io_error(exc, dest, "preparing the output folder") from None
    with _locked(dest):
        if plan.finish_only:
            _finish(plan, report)
            _final_check(plan, report)
            report.elapsed_s = time.monotonic() - started
            return report
        if not plan.enough_space:
            raise GraftError(f"not enough free space in {dest}: the graft needs {human_bytes(plan.needed_bytes)}, "
                             f"{human_bytes(plan.free_bytes)} are free; free some space or write the result "
                             "elsewhere with --out DIR")
        stats: dict[str, Any] = {"copied_bytes": 0, "reused_bytes": 0, "methods": set()}
        readers = _open_readers(plan)
        try:
            for shard in plan.shards:
                result = ShardResult(shard.name, shard.role, len(shard.tensors), shard.size, 0, 0, 0)
                report.shards.append(result)
                try:
                    _write_shard(plan, shard, readers, result, progress, stats)
                except OSError as exc:
                    raise _io_error(exc, dest, f"writing {shard.name}") from None
        finally:
            for reader in readers.values():
                reader.close()
        report.tensors = sum(len(s.tensors) for s in plan.shards if s.role == "draft")
        report.bytes_copied = stats["copied_bytes"]
        report.bytes_reused = stats["reused_bytes"]
        report.copy_method = "+".join(sorted(stats["methods"])) or "none (all reused)"

        docs = {e.file: e.document for e in plan.config_edits}
        staged = _check(plan, _staged_files(plan, committed=False), docs)
        if staged.status != "ready":
            details = "; ".join(f"{p.code}: {p.message}" for p in staged.errors()) or staged.status
            raise GraftError(f"the result would not be ready ({details}); nothing visible was changed, the verified "
                             "copies are kept for a re-run")
        try:
            _commit(plan, report)
        except OSError as exc:
            raise _io_error(exc, dest, "committing the result") from None
        _finish(plan, report)
        report.verification = {
            "hash": "crc32",
            "tensors_hashed_while_copying": sum(r.verified_tensors for r in report.shards),
            "tensors_rehashed_from_written_file": sum(r.verified_tensors for r in report.shards),
            "tensors_reused_after_rehash": sum(r.reused_tensors for r in report.shards),
            "staged_check": staged.status,
        }
        report.index = {"file": INDEX_FILE, "entries_before": plan.index_entries_before,
                        "entries_after": plan.index_entries_after, "total_size_before": plan.total_size_before,
                        "total_size_after": plan.total_size_after}
        _final_check(plan, report)
    report.elapsed_s = time.monotonic() - started
    return report


def _replace_link(link: Path, target: Path) -> None:
    tmp = link.parent / f".{link.name}.link.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _copy_small(plan: GraftPlan, name: str) -> None:
    dest = plan.dest / name
    fd, tmp = make_temp(dest)
    try:
        with os.fdopen(fd, "wb") as out:
            if plan.small_file_origin == "target":
                assert plan.target_dir is not None
                with open(plan.target_dir / name, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
            else:
                assert plan.source_obj is not None
                with plan.source_obj.open(name) as src:
                    shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _commit(plan: GraftPlan, report: GraftReport) -> None:
    """Shards to final names, then links and small files, then configs, the index last."""
    dest = plan.dest
    for shard in plan.shards:
        os.replace(partial_path(dest, shard.name), dest / shard.name)
    _fsync_dir(dest)
    if plan.mode == "overlay":
        assert plan.target_dir is not None
        for name in plan.links:
            _replace_link(dest / name, plan.target_dir / name)
        report.links = len(plan.links)
    for name in plan.small_files:
        _copy_small(plan, name)
    report.small_files = list(plan.small_files)
    index_tmp, index_sha = _stage_json(dest / INDEX_FILE, plan.index)
    try:
        moves = [(d.name, d.moved_to or "") for d in plan.displaced if d.moved_to or d.delete]
        atomic_write_json(dest / STATE_FILE, {
            "version": 1, "mode": plan.mode, "source": plan.source, "family": plan.family,
            "architecture": plan.architecture, "draft_layer": plan.draft_layer, "output_layer": plan.output_layer,
            "index_sha256": index_sha, "moves": moves,
            "journals": [journal_path(dest, s.name).name for s in plan.shards]})
        for edit in plan.config_edits:
            path = dest / edit.file
            if edit.backup and path.is_file() and not (dest / edit.backup).exists():
                atomic_write_bytes(dest / edit.backup, path.read_bytes())
                report.backups.append(edit.backup)
            if edit.file == INDEX_FILE:
                _commit_index(index_tmp, path)  # the commit point
            else:
                atomic_write_json(path, edit.document)
            report.config_edits += [f"{edit.file}: {c}" for c in edit.changes]
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(index_tmp)
    _fsync_dir(dest)


def _stage_json(path: Path, doc: Any) -> tuple[str, str]:
    """Write ``doc`` as indented JSON to a temp file next to ``path``, streamed; returns (temp, sha256)."""
    digest = hashlib.sha256()
    fd, tmp = make_temp(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            for piece in json.JSONEncoder(indent=2).iterencode(doc):
                data = piece.encode("utf-8")
                digest.update(data)
                handle.write(data)
            digest.update(b"\n")
            handle.write(b"\n")
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp, digest.hexdigest()


def _commit_index(tmp: str, path: Path) -> None:
    os.replace(tmp, path)


def _finish(plan: GraftPlan, report: GraftReport) -> None:
    """After the commit: move displaced files aside, drop journals, the state file and stale temporaries."""
    dest = plan.dest
    moves = plan.pending_moves or [(d.name, d.moved_to or "") for d in plan.displaced if d.moved_to or d.delete]
    root = plan.target_dir if plan.mode == "in-place" else None
    if root is not None:
        for name, aside in moves:
            if not (root / name).exists():
                continue
            if aside:
                os.replace(root / name, root / aside)
                report.moved_aside.append(f"{name} -> {aside}")
            else:
                (root / name).unlink()
                report.notes.append(f"deleted {name}: an unfinished shard of an earlier interrupted run")
    for entry in os.scandir(dest):
        name = entry.name
        if name.startswith(".") and (name.endswith(JOURNAL_SUFFIX) or name.endswith(PARTIAL_SUFFIX)) \
                and _is_ours(name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
    with contextlib.suppress(FileNotFoundError):
        (dest / STATE_FILE).unlink()
    _fsync_dir(dest)


_OURS = re.compile(r"^\.(model-mtp-layer\d+.*|.*-no-layer\d+.*|nextn_layer_parameters)\.safetensors\.(partial|journal)$")


def _is_ours(name: str) -> bool:
    return bool(_OURS.match(name))


def _final_check(plan: GraftPlan, report: GraftReport) -> None:
    if plan.mode == "overlay-only":
        view = StagedCheckpoint(str(plan.dest), _staged_files(plan, committed=True), {})
        final = inspect(view)
        report.verification["final_check_view"] = "overlay combined with TARGET"
    else:
        final = inspect(LocalCheckpoint(plan.dest))
        report.verification["final_check_view"] = str(plan.dest)
    report.check_status = final.status
    report.check_problems = list(final.problems)
    report.verification["final_check"] = final.status
    report.verification["final_check_tensors"] = f"{final.found_tensors}/{final.expected_tensors}"
