"""Writing one new shard: header, pre-allocation, reuse of verified tensors, copy, journal.

The journal (``.<final>.journal``) records the checksum of every tensor verified so
far (``tensors``: name -> digest) and, for a tensor that concurrent Hub streams fetched in
segments, the checksum of every verified segment (``segments``: name -> [[offset in the
tensor, bytes, digest], ...]). A re-run re-hashes those tensors and segments from the
partial file and copies only the rest (the gaps of a partly verified tensor).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..checkpoint.writer import atomic_write_json
from ..errors import GraftError
from . import checksum
from .copying import HASH_CHUNK, Piece, copy_parallel, hash_range
from ..checkpoint.range_reads import RangeReader
from .records import JOURNAL_EVERY_BYTES, JOURNAL_EVERY_S, GraftPlan, NewShard, ShardResult, journal_path, partial_path
from .shards import read_journal

logger = logging.getLogger(__name__)


ProgressFn = Callable[[int], None]


class _Journal:
    """Per-shard record of verified tensors, written atomically now and then."""

    def __init__(self, dest: Path, shard: NewShard, tensors: dict[str, int] | None = None) -> None:
        self.path = journal_path(dest, shard.name)
        self.doc: dict[str, Any] = {"version": 1, "final": shard.name, "fingerprint": shard.fingerprint,
                                    "checksum": checksum.NAME,
                                    "complete": False, "tensors": dict(tensors or {}), "segments": {}}
        self._last = time.monotonic()
        self._bytes = 0

    def record(self, name: str, digest: int, nbytes: int, offset: int | None = None) -> None:
        """A verified tensor, or (``offset`` given) a verified segment of one."""
        if offset is None:
            self.doc["tensors"][name] = digest
        else:
            self.doc["segments"].setdefault(name, []).append([offset, nbytes, digest])
        self._bytes += nbytes
        if self._bytes >= JOURNAL_EVERY_BYTES or time.monotonic() - self._last >= JOURNAL_EVERY_S:
            self.flush()

    def flush(self, complete: bool | None = None) -> None:
        if complete is not None:
            self.doc["complete"] = complete
        atomic_write_json(self.path, self.doc)
        self._last = time.monotonic()
        self._bytes = 0


def io_error(exc: OSError, dest: Path, what: str) -> GraftError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return GraftError(f"no space left on the disk of {dest} while {what}; free some space and re-run the same "
                          "command: the verified part is kept and reused (the hidden .*.partial files hold it)")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return GraftError(f"cannot write to {dest} ({exc.strerror}); use --out DIR to write an overlay on a writable "
                          "disk instead")
    return GraftError(f"I/O error while {what} in {dest}: {exc.strerror or exc}")


def _segments(doc: dict[str, Any]) -> dict[str, list[tuple[int, int, int]]]:
    """name -> [(offset, nbytes, digest)] of the segments a journal records (malformed entries ignored)."""
    out: dict[str, list[tuple[int, int, int]]] = {}
    raw = doc.get("segments")
    if not isinstance(raw, dict):
        return out
    for name, entries in raw.items():
        if not isinstance(entries, list):
            continue
        for entry in entries:
            if isinstance(entry, list) and len(entry) == 3 and all(isinstance(x, int) for x in entry):
                out.setdefault(name, []).append((entry[0], entry[1], entry[2]))
    return out


@dataclass
class CopyTotals:
    """What filling shards moved: one shard's (``fill_shard`` returns it) or a whole run's (``add``)."""

    copied_bytes: int = 0
    reused_bytes: int = 0
    methods: set[str] = field(default_factory=set)  # copy_file_range / buffered / http-range
    copy_s: float = 0.0  # seconds spent copying (not reusing, not checking)
    streams: int = 0  # the most concurrent streams one copy ran
    segments: int = 0  # Hub plans: segments the bytes were cut into

    def add(self, other: CopyTotals) -> None:
        self.copied_bytes += other.copied_bytes
        self.reused_bytes += other.reused_bytes
        self.methods |= other.methods
        self.copy_s += other.copy_s
        self.streams = max(self.streams, other.streams)
        self.segments += other.segments


@dataclass
class _Verified:
    """What an earlier run of the same plan verified: whole tensors, and segments of tensors fetched in parts."""

    tensors: dict[str, int] = field(default_factory=dict)  # name -> digest
    segments: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)  # name -> [(offset, n, digest)]

    def __bool__(self) -> bool:
        return bool(self.tensors or self.segments)


def _earlier_run(dest: Path, shard: NewShard) -> _Verified:
    """The journal of an earlier run of this very shard; another plan's partial file is discarded."""
    final, part = dest / shard.name, partial_path(dest, shard.name)
    doc = read_journal(dest, shard.name)
    if doc is not None and doc.get("fingerprint") == shard.fingerprint and \
            doc.get("checksum", "crc32") == checksum.NAME:  # digests of another function never match
        if final.is_file() and not part.exists():
            os.replace(final, part)  # finished by an earlier run but never committed: re-verify it as a partial
        return _Verified({k: int(v) for k, v in doc["tensors"].items()}, _segments(doc))
    if part.exists():
        logger.info("discarding %s: it belongs to a different plan", part)
        part.unlink()
    return _Verified()


def _prepare(fd: int, shard: NewShard) -> bool:
    """Header written and the file at its final size (allocated up front); False when the header was not there."""
    size_now = os.fstat(fd).st_size
    header_ok = size_now >= len(shard.header) and os.pread(fd, len(shard.header), 0) == shard.header
    if not header_ok:
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
    return header_ok


def fill_shard(plan: GraftPlan, shard: NewShard, readers: Mapping[str, RangeReader], result: ShardResult,
               progress: ProgressFn | None, workers: int | None = None) -> CopyTotals:
    """Bring ``.<name>.partial`` to a complete, verified copy (reusing what an earlier run verified).

    Counts tensors in ``result``; returns the bytes copied and reused and how.
    """
    previous = _earlier_run(plan.dest, shard)
    fd = os.open(partial_path(plan.dest, shard.name), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if not _prepare(fd, shard):
            previous = _Verified()
        fill = _ShardFill(fd, plan.dest, shard, result, progress)
        todo = fill.reuse(previous)
        fill.journal.flush(False)
        fill.copy(todo, readers, workers)
        os.fsync(fd)
        fill.journal.flush(True)
        return fill.totals
    finally:
        os.close(fd)


class _ShardFill:
    """One shard's partial file being filled: its journal, its counts, the tensors still to verify."""

    def __init__(self, fd: int, dest: Path, shard: NewShard, result: ShardResult,
                 progress: ProgressFn | None) -> None:
        self.fd, self.display, self.shard = fd, str(partial_path(dest, shard.name)), shard
        self.result, self.progress = result, progress
        self.journal = _Journal(dest, shard)
        self.totals = CopyTotals()
        self.missing: dict[str, int] = {}  # tensor -> bytes still to verify, for tensors copied in segments

    def reuse(self, previous: _Verified) -> list[Piece]:
        """Every tensor (or segment) an earlier run verified, hashed again from the file; returns what to copy."""
        todo: list[Piece] = []
        buf = memoryview(bytearray(HASH_CHUNK)) if previous else None
        for t in self.shard.tensors:
            offset = self.shard.offsets[t.name]
            whole = Piece(t.name, f"{t.origin}:{t.shard}", t.src_offset, offset, t.nbytes)
            if t.name in previous.tensors and buf is not None and \
                    hash_range(self.fd, offset, t.nbytes, buf, display=self.display).intdigest() == \
                    previous.tensors[t.name]:
                self.journal.doc["tensors"][t.name] = previous.tensors[t.name]
                self.result.reused_tensors += 1
                self._reused(t.nbytes)
                continue
            gaps = [whole]
            if t.name in previous.segments and buf is not None:
                gaps = self._reuse_segments(whole, previous.segments[t.name], buf)
                if not gaps:
                    self.result.reused_tensors += 1
                    continue
                self.missing[t.name] = sum(g.nbytes for g in gaps)
            todo.extend(gaps)
        return todo

    def copy(self, todo: list[Piece], readers: Mapping[str, RangeReader], workers: int | None) -> None:
        started = time.monotonic()
        try:
            outcome = copy_parallel(self.fd, self.display, todo, readers, progress=self.progress,
                                    verified=self._verified, workers=workers)
        except BaseException:
            with contextlib.suppress(OSError):
                self.journal.flush()  # keep what was verified for the re-run (not possible on kill -9: at most 1 s lost)
            raise
        totals = self.totals
        totals.copy_s = time.monotonic() - started
        totals.streams = outcome.streams if todo else 0
        totals.segments = outcome.segments
        totals.copied_bytes = outcome.bytes_copied
        self.result.copied_bytes += outcome.bytes_copied
        if outcome.used_copy_file_range:
            totals.methods.add("copy_file_range")
        if outcome.used_userspace:
            totals.methods.add("http-range" if any(r.fileno() is None for r in readers.values()) else "buffered")

    def _verified(self, piece: Piece, digest: int) -> None:
        if piece.whole and piece.name not in self.missing:
            self.journal.record(piece.name, digest, piece.nbytes)
            self.result.verified_tensors += 1
            return
        self.journal.record(piece.name, digest, piece.nbytes, offset=piece.offset)
        left = self.missing.get(piece.name, piece.tensor_nbytes or piece.nbytes) - piece.nbytes
        self.missing[piece.name] = left
        if left == 0:  # every segment of the tensor verified: the tensor is
            self.result.verified_tensors += 1

    def _reused(self, nbytes: int) -> None:
        self.totals.reused_bytes += nbytes
        if self.progress is not None:
            self.progress(nbytes)

    def _reuse_segments(self, whole: Piece, recorded: list[tuple[int, int, int]], buf: memoryview) -> list[Piece]:
        """Re-hash the segments of ``whole`` an earlier run verified; keep those that match, return the gaps to copy.

        A segment is kept only when it lies inside the tensor, overlaps no segment already kept
        and hashes like the journal says, so the kept ones and the gaps tile the tensor exactly.
        """
        kept: list[tuple[int, int]] = []
        for offset, nbytes, digest in sorted(recorded):
            if nbytes <= 0 or offset < 0 or offset + nbytes > whole.nbytes:
                continue
            if any(offset < k_end and k_start < offset + nbytes for k_start, k_end in kept):
                continue
            if hash_range(self.fd, whole.dst_offset + offset, nbytes, buf, display=self.display).intdigest() != digest:
                continue
            kept.append((offset, offset + nbytes))
            self.journal.record(whole.name, digest, nbytes, offset=offset)
            self._reused(nbytes)
        gaps: list[Piece] = []
        cursor = 0
        for start, end in sorted(kept) + [(whole.nbytes, whole.nbytes)]:
            if start > cursor:
                gaps.append(whole.part(cursor, start - cursor))
            cursor = max(cursor, end)
        return gaps
