"""What graft and extract plan and report: file names, the plan and report dataclasses.

One home for every constant the stages share, so plan, write, verify and commit agree
on names (``.<final>.partial``, ``.<final>.journal``, the state and lock files).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..checkpoint.families import family_for, written_prefix
from ..checkpoint.report import Problem
from ..checkpoint.source import CheckpointSource
from ..checkpoint.files import INDEX_FILE


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


def partial_path(dest: Path, name: str) -> Path:
    return dest / f".{name}{PARTIAL_SUFFIX}"


def journal_path(dest: Path, name: str) -> Path:
    return dest / f".{name}{JOURNAL_SUFFIX}"


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
    #: what the lineage check compared (``LineageReport.to_dict()``), None when not run
    lineage: dict[str, Any] | None = None
    #: not serialised: the opened source, the target dir, resolved paths of small files and links
    source_obj: CheckpointSource | None = field(default=None, repr=False)
    target_dir: Path | None = field(default=None, repr=False)
    small_file_origin: Origin = field(default="target", repr=False)
    #: TARGET is a Hugging Face cache snapshot (read only): overlay links point at the blobs themselves
    target_cache: bool = False

    @property
    def layer_names(self) -> tuple[str, str]:
        """The draft layer as SOURCE names it and as the result names it (``model.layers.N``)."""
        family = family_for(self.architecture)
        return written_prefix(family, self.draft_layer)[:-1], written_prefix(family, self.output_layer)[:-1]

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
            "lineage": self.lineage, "target_cache": self.target_cache,
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
    layer_names: tuple[str, str] = ("", "")  # as in GraftPlan.layer_names
    shards: list[ShardResult] = field(default_factory=list)
    tensors: int = 0
    bytes_copied: int = 0
    bytes_reused: int = 0
    copy_method: str = ""
    #: the copy itself: source (hub/local), workers, streams, segments, bytes, seconds, rate_bytes_per_s,
    #: and for the Hub requests, retries, throttled, resolutions, throttle_wait_s
    transfer: dict[str, Any] = field(default_factory=dict)
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
