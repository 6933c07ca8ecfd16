"""Reading a checkpoint for inspection: its index, its safetensors headers, where the draft tensors are.

Facts only; ``judging`` turns them into problems. The shards the draft layer lives in (and
un-indexed ``.safetensors`` files, which SGLang would silently drop) are parsed entry by
entry. Every other shard of a local checkpoint gets the cheap integrity test (framing, data
end against the file size: ``looks_intact``) and a full parse whenever that test is not
conclusive; ``Scope.INTEGRITY`` parses them all, ``Scope.PREFLIGHT`` reads none of them.
Headers are read concurrently; the index is walked once, in C where possible.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

from ..errors import CheckpointUnreadable
from .families import ModelFamily
from .files import INDEX_FILE
from .index_scan import IndexScan
from .report import TensorLocation
from .safetensors_format import (PREFIX_BYTES, TAIL_BYTES, HeaderError, ShardHeader, looks_intact, parse_header_bytes,
                                 parse_length_prefix, read_header_bytes)
from .source import CheckpointSource, hub_error

if TYPE_CHECKING:
    from .inspection import Scope

#: Concurrent header reads of a local checkpoint (I/O bound on a cold cache).
HEADER_READERS = 8

#: The un-indexed file SGLang 0.5.23 loads anyway for families with ``loads_unindexed_mtp_file``.
MTP_FILE = "mtp.safetensors"

#: What to do about an index SGLang cannot read.
INDEX_TODO = "restore it from the release, or delete it to let SGLang load every .safetensors file"


def unreadable(source: CheckpointSource, file: str, message: str, todo: str) -> CheckpointUnreadable:
    """The one-line error for a file of the checkpoint that cannot be read at all."""
    return CheckpointUnreadable(f"{source.display}/{file}: {message}; {todo}")


@dataclass
class Shard:
    """What reading one shard's header found: a parsed header, an integrity verdict, or an error."""

    name: str
    header: ShardHeader | None = None  # parsed entry by entry
    payload: int | None = None  # tensor bytes, when the shard is intact
    error: HeaderError | None = None  # the shard is damaged (``error.file`` is ``name``)
    unreadable: str | None = None  # could not be read at all: says nothing about the shard itself


@dataclass
class DraftFiles:
    """The files SGLang would load the draft layer from, and what their headers hold."""

    on_disk: set[str]
    #: shard files the index names that do not exist
    missing_files: list[str] = field(default_factory=list)
    #: existing shards the index places draft tensors in (without an index: every .safetensors file)
    loaded: list[str] = field(default_factory=list)
    #: .safetensors files the index does not name (a draft-only scan names none)
    unindexed: list[str] = field(default_factory=list)
    #: every other indexed shard on disk, for the integrity test (local checkpoints, CHECK and INTEGRITY)
    others: set[str] = field(default_factory=set)
    #: the shards whose headers were parsed entry by entry
    full: set[str] = field(default_factory=set)
    shards: dict[str, Shard] = field(default_factory=dict)
    #: draft tensor name (any accepted prefix) -> where its bytes are
    located: dict[str, TensorLocation] = field(default_factory=dict)
    #: the un-indexed file SGLang appends to the index for this architecture (``mtp.safetensors``), if present
    appended: str | None = None

    def damaged(self) -> list[Shard]:
        return [shard for shard in self.shards.values() if shard.error is not None]

    def in_damaged_shards(self, scan: IndexScan | None) -> list[str]:
        """Draft tensors the index places in a shard whose header is damaged: there, but unreadable."""
        if scan is None:
            return []
        damaged = {shard.name for shard in self.damaged()}
        return [name for name in scan.draft_names if scan.weight_map[name] in damaged] if damaged else []


class Reader:
    """Reads one checkpoint's index and headers as ``scope`` asks; one per inspection run."""

    def __init__(self, source: CheckpointSource, scope: Scope, *, whole_index: bool = False) -> None:
        self.source = source
        self.scope = scope
        #: decode the whole index even when the scope would read the draft layer's entries alone
        self.whole_index = whole_index
        #: the index was read for the draft layer's entries alone (``IndexScan.draft_only``)
        self.partial_index = False
        self.pool: ThreadPoolExecutor | None = None
        #: header peeks started first: their cold-cache I/O overlaps reading the config files; done before the decode
        self.peeks: dict[str, Future[tuple[int, bytes, bytes]]] = {}

    @contextmanager
    def reading(self, files: dict[str, int]) -> Iterator[None]:
        """Local checkpoints: a pool of header readers, and (CHECK) every shard's integrity peek started now."""
        if self.source.is_remote:  # HfFileSystem reads stay sequential
            yield
            return
        with ThreadPoolExecutor(max_workers=HEADER_READERS) as pool:
            self.pool = pool
            if self.scope.peeks_early:
                self.peeks = {name: pool.submit(self._peek, name, size) for name, size in sorted(files.items())
                              if name.endswith(".safetensors")}
            try:
                yield
            finally:
                for peek in self.peeks.values():
                    peek.cancel()
                self.pool = None

    # ------------------------------------------------------------------ index

    def scan_index(self, files: dict[str, int], prefixes: tuple[str, ...]
                   ) -> tuple[dict[str, Any] | None, IndexScan | None]:
        """The index document (its metadata at least) and what the verdict needs from its entries."""
        draft_alone = self.scope.draft_entries_alone and not (self.whole_index or self.source.is_remote)
        memo = getattr(self.source, "index_memo", None) or {}
        read_bytes = getattr(self.source, "read_bytes", None)
        if draft_alone and INDEX_FILE in files and INDEX_FILE not in memo and read_bytes is not None:
            raw = read_bytes(INDEX_FILE)
            scan = IndexScan.draft_only(raw, prefixes) if raw is not None else None
            if scan is not None:
                self.partial_index = True
                return {"metadata": scan.metadata}, scan
        index = self._read_index()
        scan = IndexScan.of(index["weight_map"], prefixes) if index is not None else None
        if index is not None and scan is None:
            raise unreadable(self.source, INDEX_FILE, "weight_map values must be shard file names", INDEX_TODO)
        return index, scan

    def _read_index(self) -> dict[str, Any] | None:
        # The header peeks started with the inspection; let them finish first: threads waking for the GIL slow
        # the decode below (which holds it throughout) by more than the peeks take on their own.
        wait(self.peeks.values())
        index = self.source.read_json(INDEX_FILE)
        if index is None:
            return None
        if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
            raise unreadable(self.source, INDEX_FILE, "has no weight_map object", INDEX_TODO)
        return index

    # ------------------------------------------------------------------ shards

    def locate_draft(self, files: dict[str, int], scan: IndexScan | None, prefixes: tuple[str, ...],
                     family: ModelFamily) -> DraftFiles:
        """Which shards SGLang would load the draft layer from, their headers, and every draft tensor in them."""
        draft = self._draft_files(files, scan)
        draft.full = set(draft.loaded) | set(draft.unindexed) | (
            draft.others if self.scope.parses_every_header else set())
        draft.shards = self.read_shards(files, draft.full, draft.others - draft.full)
        for name in draft.loaded:
            header = draft.shards[name].header
            if header is not None:
                for tensor, entry in header.tensors.items():
                    if tensor.startswith(prefixes):
                        draft.located[tensor] = TensorLocation(name, entry, header.data_start)
        if family.loads_unindexed_mtp_file and MTP_FILE in draft.unindexed:
            draft.appended = MTP_FILE  # SGLang appends it for this architecture
            header = draft.shards[MTP_FILE].header
            for tensor, entry in (header.tensors.items() if header is not None else ()):
                if tensor.startswith(prefixes):
                    draft.located.setdefault(tensor, TensorLocation(MTP_FILE, entry, header.data_start))
        return draft

    def _draft_files(self, files: dict[str, int], scan: IndexScan | None) -> DraftFiles:
        on_disk = {name for name in files if name.endswith(".safetensors")}
        if scan is None:  # no index: SGLang loads every .safetensors file
            return DraftFiles(on_disk, loaded=sorted(on_disk))
        referenced = scan.referenced
        return DraftFiles(
            on_disk,
            missing_files=sorted(referenced - on_disk),
            loaded=sorted({scan.weight_map[name] for name in scan.draft_names} & on_disk),
            unindexed=sorted(on_disk - referenced) if scan.complete else [],  # a partial scan names draft shards
            # every other shard of a local checkpoint gets the integrity test (a Hub file is what was uploaded)
            others=(referenced & on_disk) - {scan.weight_map[name] for name in scan.draft_names}
            if self.scope.tests_every_shard and not self.source.is_remote else set())

    def read_shards(self, files: dict[str, int], full: set[str], quick: set[str]) -> dict[str, Shard]:
        """Read the headers of ``full`` (parsed entry by entry) and ``quick`` (integrity test) shards, by name.

        Raises ``CheckpointUnreadable`` when a shard cannot be read at all (permissions, the Hub failing).
        """
        names = sorted(full | quick)
        if self.pool is None or len(names) < 2:
            shards = [self._read_shard(name, files[name], name in full) for name in names]
        else:
            shards = list(self.pool.map(lambda name: self._read_shard(name, files[name], name in full), names))
        for shard in shards:
            if shard.unreadable is not None:
                raise CheckpointUnreadable(shard.unreadable)
        return {shard.name: shard for shard in shards}

    def _read_shard(self, name: str, size: int, full: bool) -> Shard:
        shard = Shard(name)
        try:
            if not full:
                peek = self.peeks.get(name)
                header_len, head, tail = peek.result() if peek is not None else self._peek(name, size)
                if looks_intact(head, tail, header_len, size):
                    shard.payload = size - PREFIX_BYTES - header_len
                    return shard
            with self.source.open(name) as stream:
                header_len, raw = read_header_bytes(stream, size)
            shard.header = parse_header_bytes(header_len, raw, size)
            shard.payload = shard.header.payload_bytes
        except HeaderError as exc:
            exc.file = name  # the parser reads bytes; the name is known here
            shard.error = exc
        except PermissionError as exc:
            shard.unreadable = f"cannot read {self.source.display}/{name} ({exc.strerror}); check its permissions"
        except Exception as exc:  # noqa: BLE001 - a Hub read fails in many ways; none is a verdict
            if not self.source.is_remote and isinstance(exc, OSError):
                shard.error = HeaderError("corrupt-header", f"cannot read ({exc.strerror or exc})", file=name)  # EIO
            elif self.source.is_remote:
                shard.unreadable = hub_error(f"{self.source.display}/{name}", exc) + "; try again"
            else:
                raise
        return shard

    def _peek(self, name: str, size: int) -> tuple[int, bytes, bytes]:
        """What ``looks_intact`` needs: the header length, its first bytes and its last ``TAIL_BYTES``."""
        with self.source.open(name) as stream:
            header_len = parse_length_prefix(stream.read(PREFIX_BYTES), size)
            head = stream.read(2)
            stream.seek(PREFIX_BYTES + max(0, header_len - TAIL_BYTES))
            return header_len, head, stream.read(TAIL_BYTES)


def chosen_prefix(prefixes: tuple[str, ...], located: dict[str, TensorLocation]) -> str:
    """The accepted prefix most draft tensors use; the family's first when none is present."""
    counts = [sum(name.startswith(p) for name in located) for p in prefixes]
    return prefixes[counts.index(max(counts))] if any(counts) else prefixes[0]
