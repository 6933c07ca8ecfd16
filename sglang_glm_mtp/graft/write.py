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
from pathlib import Path
from typing import Any, Callable, Mapping

from ..checkpoint.writer import atomic_write_json
from ..errors import GraftError
from . import checksum
from .copying import HASH_CHUNK, Piece, copy_parallel, hash_range
from .readers import RangeReader
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


def fill_shard(plan: GraftPlan, shard: NewShard, readers: Mapping[str, RangeReader], result: ShardResult,
                progress: ProgressFn | None, stats: dict[str, Any], workers: int | None = None) -> None:
    """Bring ``.<name>.partial`` to a complete, verified copy (reusing what an earlier run verified)."""
    dest = plan.dest
    final, part = dest / shard.name, partial_path(dest, shard.name)
    journal_doc = read_journal(dest, shard.name)
    previous: dict[str, int] = {}
    previous_segments: dict[str, list[tuple[int, int, int]]] = {}
    if journal_doc is not None and journal_doc.get("fingerprint") == shard.fingerprint and \
            journal_doc.get("checksum", "crc32") == checksum.NAME:  # digests of another function never match
        previous = {k: int(v) for k, v in journal_doc["tensors"].items()}
        previous_segments = _segments(journal_doc)
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
            previous, previous_segments = {}, {}
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
        missing: dict[str, int] = {}  # tensor -> bytes still to verify, for tensors copied in segments
        buf = memoryview(bytearray(HASH_CHUNK)) if previous or previous_segments else None
        for t in shard.tensors:
            offset = shard.offsets[t.name]
            whole = Piece(t.name, f"{t.origin}:{t.shard}", t.src_offset, offset, t.nbytes)
            if t.name in previous and buf is not None and \
                    hash_range(fd, offset, t.nbytes, buf, display=str(part)).intdigest() == previous[t.name]:
                journal.doc["tensors"][t.name] = previous[t.name]
                result.reused_tensors += 1
                stats["reused_bytes"] += t.nbytes
                if progress is not None:
                    progress(t.nbytes)
                continue
            gaps = [whole]
            if t.name in previous_segments and buf is not None:
                gaps = _reuse_segments(fd, str(part), whole, previous_segments[t.name], buf, journal, stats, progress)
                if not gaps:
                    result.reused_tensors += 1
                    continue
                missing[t.name] = sum(g.nbytes for g in gaps)
            todo.extend(gaps)
        journal.flush(False)

        def verified(piece: Piece, digest: int) -> None:
            if piece.whole and piece.name not in missing:
                journal.record(piece.name, digest, piece.nbytes)
                result.verified_tensors += 1
                return
            journal.record(piece.name, digest, piece.nbytes, offset=piece.offset)
            left = missing.get(piece.name, piece.tensor_nbytes or piece.nbytes) - piece.nbytes
            missing[piece.name] = left
            if left == 0:  # every segment of the tensor verified: the tensor is
                result.verified_tensors += 1

        started = time.monotonic()
        try:
            outcome = copy_parallel(fd, str(part), todo, readers, progress=progress, verified=verified,
                                    workers=workers)
        except BaseException:
            with contextlib.suppress(OSError):
                journal.flush()  # keep what was verified for the re-run (not possible on kill -9: at most 1 s lost)
            raise
        stats["copy_s"] = stats.get("copy_s", 0.0) + time.monotonic() - started
        stats["streams"] = max(stats.get("streams", 0), outcome.streams if todo else 0)
        stats["segments"] = stats.get("segments", 0) + outcome.segments
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


def _reuse_segments(fd: int, display: str, whole: Piece, recorded: list[tuple[int, int, int]], buf: memoryview,
                    journal: _Journal, stats: dict[str, Any], progress: ProgressFn | None) -> list[Piece]:
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
        if hash_range(fd, whole.dst_offset + offset, nbytes, buf, display=display).intdigest() != digest:
            continue
        kept.append((offset, offset + nbytes))
        journal.record(whole.name, digest, nbytes, offset=offset)
        stats["reused_bytes"] += nbytes
        if progress is not None:
            progress(nbytes)
    gaps: list[Piece] = []
    cursor = 0
    for start, end in sorted(kept) + [(whole.nbytes, whole.nbytes)]:
        if start > cursor:
            gaps.append(whole.part(cursor, start - cursor))
        cursor = max(cursor, end)
    return gaps
