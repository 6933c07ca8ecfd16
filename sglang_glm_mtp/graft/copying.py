"""Streaming byte-range copies with per-tensor checksum verification and bounded memory.

Why this shape: graft and extract move tens of GB of tensor bytes from one file (local
or on the Hub) into a new shard. Memory must not grow with tensor or shard size, and
the copy must cost about what ``cp`` costs on the same disk.

* Local source: ``os.copy_file_range`` moves the bytes inside the kernel (what ``cp``
  does on Linux). A second thread hashes each copied chunk twice while the next chunk
  is being copied: once from the source range and once from the written range. The
  copy is therefore verified piece by piece, with at most ``QUEUE_DEPTH`` chunks in
  flight and one ``HASH_CHUNK`` buffer, whatever the sizes involved. Where the kernel
  refuses ``copy_file_range`` (other OS, cross-filesystem, old kernels) the same loop
  reads into a reusable buffer and writes it back (``READ_CHUNK``).
* Hub source (``checkpoint.range_reads.HubReader``): bytes streamed into a reusable buffer. The checksum
  of the source bytes is taken on that buffer as it arrives; the written bytes are hashed
  again from the file. A CDN caps each connection, so the plan is cut into segments of
  about equal bytes (``split_segments``, cutting inside runs and tensors) that
  ``workers`` concurrent streams (default 8, as ``hf download``) take from a queue, each
  on its own connection with one ``HUB_CHUNK`` buffer. A segment of a split tensor is
  verified like a tensor (its own pair of hashes, source vs written) and journaled on its
  own; a tensor is verified when disjoint verified segments tile it (``write.py``).

The checksum is xxh3-64 where ``xxhash`` is installed, CRC32 otherwise (``checksum.py``).

Read-back hashing goes through the page cache: it proves that what the kernel will
write back is what we read, not that the medium stores it (``fsync`` plus the disk's own
checks cover that).

Tests replace the kernel calls (``_copy_file_range``, ``_pwrite``) to inject faults, and
set ``_after_piece`` to pace a copy they kill mid-way.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import itertools
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from ..errors import GraftError
from .checksum import Hasher, new_hasher
from ..checkpoint.range_reads import RangeReader, truncated

logger = logging.getLogger(__name__)

#: Bytes per copy_file_range call (no userspace buffer involved).
COPY_CHUNK = 64 << 20
#: Userspace buffer for remote reads and the read/write fallback.
READ_CHUNK = 16 << 20
#: Buffer of the verifying thread.
HASH_CHUNK = 8 << 20
#: Copied-but-not-yet-verified chunks allowed in flight (each up to COPY_CHUNK bytes of page cache).
QUEUE_DEPTH = 3
#: Concurrent copy streams for local sources: a virtio/NVMe disk reads 1.1 GB cold in 1.3-1.7 s
#: with one sequential stream and 0.7 s with two or four (benchmarks/bench_graft.py), so graft
#: reads several contiguous groups of tensors at once where ``cp`` reads one stream.
STREAMS = 4
#: Below this many bytes per stream, one stream: threads would cost more than they save.
MIN_STREAM_BYTES = 64 << 20
#: Concurrent HTTP Range streams for Hub sources, as ``hf download`` runs 8 workers: a CDN
#: caps each connection, so the layer arrives at about ``workers`` x the per-connection rate.
DEFAULT_WORKERS = 8
MAX_WORKERS = 64
WORKERS_ENV = "SGLANG_GLM_MTP_WORKERS"
#: Hub plans are cut into segments of about equal bytes, this many per stream, that the
#: streams take from a shared queue (a slow connection takes fewer); a segment is one Range
#: request and the unit of verification and resume when it cuts a tensor.
SEGMENTS_PER_STREAM = 4
MIN_SEGMENT = 8 << 20
MAX_SEGMENT = 256 << 20
#: Userspace buffer of one Hub stream (and of its verifier): 8 streams hold 64 MB.
HUB_CHUNK = 4 << 20

# Indirections so fault-injection tests can replace the kernel calls.
_copy_file_range: Callable[..., int] | None = getattr(os, "copy_file_range", None)
_pwrite: Callable[[int, Any, int], int] = os.pwrite
_fadvise: Callable[[int, int, int, int], None] | None = getattr(os, "posix_fadvise", None)
#: Called once per piece as its last bytes go to the verifier, then the journal catches up; None here. A test
#: that kills a run mid-copy sets it (in the process it starts) to a short sleep, pacing the copy piece by piece.
_after_piece: Callable[[], None] | None = None
_CFR_UNSUPPORTED = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF, errno.ETXTBSY,
                    getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


# ----------------------------------------------------------------------------- hashing


def hash_range(fd: int, offset: int, nbytes: int, buf: memoryview, hasher: Hasher | None = None, *,
               display: str = "") -> Hasher:
    """Feed ``nbytes`` at ``offset`` of an open file to ``hasher`` (a new one by default), through ``buf``."""
    hasher = hasher if hasher is not None else new_hasher()
    end = offset + nbytes
    while offset < end:
        n = os.preadv(fd, [buf[:min(len(buf), end - offset)]], offset)
        if n == 0:
            raise truncated(display or f"fd {fd}", offset)
        hasher.update(buf[:n])
        offset += n
    return hasher


# ----------------------------------------------------------------------------- copying


def parse_workers(value: str | int | None, where: str = "--workers") -> int | None:
    """A number of concurrent streams, 1..MAX_WORKERS; None when not given. UsageError otherwise."""
    from ..errors import UsageError

    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        n = int(str(value).strip())
    except ValueError:
        raise UsageError(f"{where} must be a whole number of streams from 1 to {MAX_WORKERS}, got {value!r}") from None
    if not 1 <= n <= MAX_WORKERS:
        raise UsageError(f"{where} must be from 1 to {MAX_WORKERS} concurrent streams, got {n}")
    return n


def workers_from_env() -> int | None:
    """``SGLANG_GLM_MTP_WORKERS`` (huggingface_hub has no environment variable for ``hf download --max-workers``)."""
    return parse_workers(os.environ.get(WORKERS_ENV), WORKERS_ENV)


@dataclass(frozen=True)
class Piece:
    """One tensor's bytes, or a segment of them: where they come from and where they go."""

    name: str
    reader: str  # key into the readers mapping
    src_offset: int
    dst_offset: int
    nbytes: int
    offset: int = 0  # of this segment inside the tensor
    tensor_nbytes: int | None = None  # the whole tensor's size when this is a segment of it

    @property
    def whole(self) -> bool:
        return self.tensor_nbytes is None or (self.offset == 0 and self.nbytes == self.tensor_nbytes)

    def part(self, start: int, nbytes: int) -> Piece:
        """``nbytes`` of this piece from ``start`` (relative to the piece), as a segment of the tensor."""
        return Piece(self.name, self.reader, self.src_offset + start, self.dst_offset + start, nbytes,
                     self.offset + start, self.nbytes if self.tensor_nbytes is None else self.tensor_nbytes)


@dataclass
class CopyStats:
    bytes_copied: int = 0
    used_copy_file_range: bool = False
    used_userspace: bool = False
    streams: int = 1  # concurrent streams the copy ran
    segments: int = 0  # Hub plans: segments the bytes were cut into

    def add(self, other: CopyStats) -> None:
        """Count ``other``'s bytes and copy methods in (streams and segments are the caller's to set)."""
        self.bytes_copied += other.bytes_copied
        self.used_copy_file_range |= other.used_copy_file_range
        self.used_userspace |= other.used_userspace


class Span(NamedTuple):
    """One piece's share of a copied chunk, as the verifier hashes it."""

    index: int  # of the piece in the list being copied
    reader: RangeReader | None  # hash the source range from this file; None: hashed from the buffer already
    src_offset: int
    dst_offset: int
    nbytes: int
    last: bool  # the piece's final span: the verifier then reports the piece's two digests
    inline_digest: int  # ``reader`` None and ``last``: the source digest taken from the buffer


class _Verifier(threading.Thread):
    """Hashes copied ranges (source and destination) one chunk behind the copier."""

    def __init__(self, dst_fd: int, dst_display: str, buf_size: int = HASH_CHUNK) -> None:
        super().__init__(name="graft-verify", daemon=True)
        self.buf_size = buf_size
        self.dst_fd = dst_fd
        self.dst_display = dst_display
        self.jobs: queue.Queue[list[Span] | None] = queue.Queue(maxsize=QUEUE_DEPTH)
        self.done: queue.Queue[tuple[int, int, int]] = queue.Queue()
        self.error: BaseException | None = None
        self._src: dict[int, Hasher] = {}
        self._dst: dict[int, Hasher] = {}

    def run(self) -> None:
        buf = memoryview(bytearray(self.buf_size))
        try:
            while (chunk := self.jobs.get()) is not None:
                for span in chunk:
                    self._hash(span, buf)
        except BaseException as exc:  # handed to the copier thread, which raises it
            self.error = exc
            while self.jobs.get() is not None:  # unblock the producer
                pass

    def _hash(self, span: Span, buf: memoryview) -> None:
        index, reader = span.index, span.reader
        if reader is not None:
            self._src[index] = hash_range(reader.fileno(), span.src_offset, span.nbytes, buf, self._src.get(index),
                                          display=reader.display)
        self._dst[index] = hash_range(self.dst_fd, span.dst_offset, span.nbytes, buf, self._dst.get(index),
                                      display=self.dst_display)
        _release(self.dst_fd, span.dst_offset, span.nbytes)
        if reader is not None:
            _release(reader.fileno(), span.src_offset, span.nbytes)
        if span.last:
            src = span.inline_digest if reader is None else _digest(self._src.pop(index, None))
            self.done.put((index, src, _digest(self._dst.pop(index, None))))

    def submit(self, chunk: list[Span]) -> None:
        """One copied chunk: its pieces' spans."""
        if self.error is not None:
            raise self.error
        if chunk:
            self.jobs.put(chunk)


def _digest(hasher: Hasher | None) -> int:
    """The digest of a tensor's hasher; a zero-byte tensor has none yet."""
    return (hasher if hasher is not None else new_hasher()).intdigest()


def _runs(pieces: Sequence[Piece]) -> list[list[int]]:
    """Consecutive pieces adjacent in both files: one read/copy stream each."""
    runs: list[list[int]] = []
    for index, piece in enumerate(pieces):
        if runs:
            prev = pieces[runs[-1][-1]]
            if (prev.reader == piece.reader and prev.src_offset + prev.nbytes == piece.src_offset
                    and prev.dst_offset + prev.nbytes == piece.dst_offset):
                runs[-1].append(index)
                continue
        runs.append([index])
    return runs


def split_streams(pieces: Sequence[Piece], readers: Mapping[str, RangeReader],
                  streams: int = STREAMS) -> list[list[Piece]]:
    """Local plans: contiguous groups of whole tensors, about equal in bytes, one per concurrent stream.

    (Hub plans are cut by ``split_segments`` instead.)
    """
    total = sum(p.nbytes for p in pieces)
    if any(readers[p.reader].fileno() is None for p in pieces):
        return [list(pieces)] if pieces else []
    streams = max(1, min(streams, total // max(1, MIN_STREAM_BYTES)))
    groups: list[list[Piece]] = [[]]
    done = 0
    for piece in pieces:
        if groups[-1] and len(groups) < streams and done >= total * len(groups) / streams:
            groups.append([])
        groups[-1].append(piece)
        done += piece.nbytes
    return [g for g in groups if g]


def split_segments(pieces: Sequence[Piece], streams: int) -> list[list[Piece]]:
    """Hub plans: the bytes in plan order, cut into segments of about equal size.

    A cut inside a tensor splits it (``Piece.part``): one 5 GB run or tensor becomes many
    segments that several streams fetch at once. Segment size: the bytes over
    ``streams * SEGMENTS_PER_STREAM``, within ``[MIN_SEGMENT, MAX_SEGMENT]``.
    """
    total = sum(p.nbytes for p in pieces)
    if not pieces:
        return []
    size = min(MAX_SEGMENT, max(MIN_SEGMENT, -(-total // max(1, streams * SEGMENTS_PER_STREAM))))
    segments: list[list[Piece]] = [[]]
    room = size
    for piece in pieces:
        if piece.nbytes == 0:
            segments[-1].append(piece)
            continue
        start = 0
        while start < piece.nbytes:
            if room == 0:
                segments.append([])
                room = size
            n = min(room, piece.nbytes - start)
            segments[-1].append(piece if n == piece.nbytes else piece.part(start, n))
            start += n
            room -= n
    return [seg for seg in segments if seg]


def copy_parallel(dst_fd: int, dst_display: str, pieces: Sequence[Piece], readers: Mapping[str, RangeReader], *,
                  progress: Callable[[int], None] | None = None,
                  verified: Callable[[Piece, int], None] | None = None,
                  workers: int | None = None) -> CopyStats:
    """Copy ``pieces`` with concurrent streams (positional I/O on shared fds is thread-safe).

    * Local sources: ``split_streams`` groups, at most ``min(STREAMS, workers)``, one
      ``copy_pieces`` each.
    * Hub sources: ``workers`` streams (default ``DEFAULT_WORKERS``), each with its own
      reader per file (its own connection) and one reusable ``HUB_CHUNK`` buffer, take
      ``split_segments`` segments from a shared queue.

    Callbacks are serialised with a lock; the first error stops the other streams at their
    next chunk and is raised here. ``verified(piece, digest)`` is called per piece: a whole
    tensor, or a segment of one (``piece.whole``).
    """
    workers = workers or DEFAULT_WORKERS
    if any(readers[p.reader].fileno() is None for p in pieces):
        return _copy_segments(dst_fd, dst_display, pieces, readers, progress, verified, workers)
    groups = split_streams(pieces, readers, min(STREAMS, workers))
    if len(groups) <= 1:
        return copy_pieces(dst_fd, dst_display, pieces, readers, progress=progress, verified=verified)

    def work(i: int, progress: Any, verified: Any, stop: threading.Event) -> CopyStats:
        return copy_pieces(dst_fd, dst_display, groups[i], readers, progress=progress, verified=verified, stop=stop)

    total = _total(_concurrently(len(groups), work, progress, verified))
    total.streams = len(groups)
    return total


def _copy_segments(dst_fd: int, dst_display: str, pieces: Sequence[Piece], readers: Mapping[str, RangeReader],
                   progress: Callable[[int], None] | None, verified: Callable[[Piece, int], None] | None,
                   workers: int) -> CopyStats:
    segments = split_segments(pieces, workers)
    streams = max(1, min(workers, len(segments)))
    queue_lock = threading.Lock()
    todo = iter(segments)

    def work(i: int, progress: Any, verified: Any, stop: threading.Event) -> CopyStats:
        own = {key: (r.for_stream() if i and r.fileno() is None and hasattr(r, "for_stream") else r)  # type: ignore[attr-defined]
               for key, r in readers.items()}
        buf = memoryview(bytearray(HUB_CHUNK))
        stats = CopyStats()
        try:
            while True:
                with queue_lock:
                    segment = next(todo, None)
                if segment is None:
                    return stats
                stats.add(copy_pieces(dst_fd, dst_display, segment, own, progress=progress, verified=verified,
                                      stop=stop, buf=buf, hash_buf_size=HUB_CHUNK))
        finally:
            for key, r in own.items():
                if r is not readers[key]:
                    r.close()

    total = _total(_concurrently(streams, work, progress, verified))
    total.streams, total.segments = streams, len(segments)
    logger.info("copied %s bytes from the Hub as %d segments over %d streams", f"{total.bytes_copied:,}",
                len(segments), streams)
    return total


def _total(results: Sequence[CopyStats]) -> CopyStats:
    total = CopyStats()
    for r in results:
        total.add(r)
    return total


def _concurrently(n: int, work: Callable[[int, Any, Any, threading.Event], CopyStats],
                  progress: Callable[[int], None] | None,
                  verified: Callable[[Piece, int], None] | None) -> list[CopyStats]:
    """Run ``work(i, progress, verified, stop)`` for i in range(n) on n threads; the first error stops all."""
    if n == 1:
        return [work(0, progress, verified, threading.Event())]
    lock = threading.Lock()
    stop = threading.Event()

    def guarded(fn: Callable[..., None] | None) -> Callable[..., None] | None:
        if fn is None:
            return None

        def call(*args: Any) -> None:
            if stop.is_set():
                raise _Stopped()
            with lock:
                fn(*args)
        return call

    results: list[CopyStats] = []
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results.append(work(i, guarded(progress), guarded(verified), stop))
        except _Stopped:
            pass
        except BaseException as exc:  # re-raised in the calling thread
            stop.set()
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), name=f"graft-copy-{i}", daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except BaseException:  # KeyboardInterrupt in the main thread: stop the streams, keep what was verified
        stop.set()
        for t in threads:
            t.join()
        raise
    if errors:
        raise errors[0]
    return results


class _Stopped(Exception):
    """Another stream failed: this one stops at its next chunk."""


def copy_pieces(dst_fd: int, dst_display: str, pieces: Sequence[Piece], readers: Mapping[str, RangeReader], *,
                progress: Callable[[int], None] | None = None,
                verified: Callable[[Piece, int], None] | None = None,
                stop: threading.Event | None = None, buf: memoryview | None = None,
                hash_buf_size: int = HASH_CHUNK) -> CopyStats:
    """Copy every piece into ``dst_fd`` and verify it; calls ``verified(piece, digest)`` per piece.

    Adjacent pieces are copied as one run, in chunks; each chunk is handed to the
    verifier split at piece boundaries, so every piece gets its own pair of checksums.
    Raises GraftError when a written range does not hash like its source range.
    """
    return _PieceCopier(dst_fd, dst_display, pieces, readers, progress, verified, stop, buf, hash_buf_size).run()


@dataclass(frozen=True)
class _Run:
    """Pieces adjacent in both files (``_runs``), copied as one stream."""

    indices: list[int]  # into the pieces being copied
    sizes: list[int]
    starts: list[int]  # each piece's offset inside the run
    total: int
    first: Piece
    reader: RangeReader


class _PieceCopier:
    """One ``copy_pieces`` call: the verifier thread, the copy method still usable, the Hub's inline hashers."""

    def __init__(self, dst_fd: int, dst_display: str, pieces: Sequence[Piece], readers: Mapping[str, RangeReader],
                 progress: Callable[[int], None] | None, verified: Callable[[Piece, int], None] | None,
                 stop: threading.Event | None, buf: memoryview | None, hash_buf_size: int) -> None:
        self.dst_fd, self.dst_display = dst_fd, dst_display
        self.pieces, self.readers = pieces, readers
        self.progress, self.verified, self.stop = progress, verified, stop
        self.buf = buf  # the userspace buffer, allocated on first use
        self.stats = CopyStats()
        self.verifier = _Verifier(dst_fd, dst_display, hash_buf_size)
        self.cfr_ok = _copy_file_range is not None
        self.inline: dict[int, Hasher] = {}  # remote pieces: source bytes hashed from the buffer as they arrive

    def run(self) -> CopyStats:
        self.verifier.start()
        try:
            for indices in _runs(self.pieces):
                self._copy_run(indices)
            self.verifier.jobs.put(None)
            self.verifier.join()
            if self.verifier.error is not None:
                raise self.verifier.error
            self._drain()
        finally:
            if self.verifier.is_alive():  # an error on our side: let the verifier finish and stop
                self.verifier.jobs.put(None)
                self.verifier.join()
        return self.stats

    def _copy_run(self, indices: list[int]) -> None:
        """Pieces adjacent in both files, chunk by chunk; each chunk goes to the verifier as ``Span`` s."""
        first = self.pieces[indices[0]]
        sizes = [self.pieces[i].nbytes for i in indices]
        starts = list(itertools.accumulate(sizes, initial=0))
        run = _Run(indices, sizes, starts[:-1], starts[-1], first, self.readers[first.reader])
        done, k = 0, 0  # bytes of the run moved; first piece not yet fully submitted
        while done < run.total or (k < len(indices) and sizes[k] == 0):
            if self.stop is not None and self.stop.is_set():
                raise _Stopped()
            n = self._move(run, done) if done < run.total else 0
            spans, k = self._spans(run, k, done, done + n)
            self.verifier.submit(spans)
            if _after_piece is not None:  # the test seam: one call per completed piece, the journal catching up
                for _ in range(sum(span.last for span in spans)):
                    _after_piece()
                    self._drain()
            done += n
            self.stats.bytes_copied += n
            if self.progress is not None and n:
                self.progress(n)
            self._drain()

    def _move(self, run: _Run, done: int) -> int:
        """Copy the run's next chunk (from ``done``): copy_file_range where the kernel allows, else a buffer."""
        reader, fd = run.reader, run.reader.fileno()
        src, dst, left = run.first.src_offset + done, run.first.dst_offset + done, run.total - done
        if fd is not None and self.cfr_ok:
            want = min(COPY_CHUNK, left)
            _prefetch(fd, src + want, min(COPY_CHUNK, left - want))
            try:
                n = _cfr_exact(fd, self.dst_fd, want, src, dst, reader.display)
            except _CfrUnsupported as exc:
                logger.info("copy_file_range unavailable (%s); using buffered copies", exc)
                self.cfr_ok = False
                return exc.moved
            self.stats.used_copy_file_range = True
            return n
        if self.buf is None:
            self.buf = memoryview(bytearray(READ_CHUNK))
        n = min(len(self.buf), left)
        reader.read_into(src, self.buf[:n], until=run.first.src_offset + run.total)
        _pwrite_exact(self.dst_fd, self.buf[:n], dst)
        self.stats.used_userspace = True
        return n

    def _spans(self, run: _Run, k: int, lo: int, hi: int) -> tuple[list[Span], int]:
        """The chunk ``[lo, hi)`` of the run split at piece boundaries, from the ``k``-th piece on.

        Returns the spans and the first piece not yet complete. A local source is hashed by
        the verifier from its file; a remote one here, from the buffer the bytes arrived in.
        """
        hashed_there = run.reader.fileno() is not None
        spans: list[Span] = []
        while k < len(run.indices):
            index = run.indices[k]
            p_lo, p_hi = run.starts[k], run.starts[k] + run.sizes[k]
            seg_lo, seg_hi = max(lo, p_lo), min(hi, p_hi)
            if seg_hi < seg_lo or (seg_hi == seg_lo and p_hi > p_lo):
                break
            last = seg_hi == p_hi
            inline_digest = 0
            if not hashed_there:
                hasher = self.inline.setdefault(index, new_hasher())
                if seg_hi > seg_lo:
                    assert self.buf is not None
                    hasher.update(self.buf[seg_lo - lo:seg_hi - lo])
                if last:
                    inline_digest = _digest(self.inline.pop(index))
            spans.append(Span(index, run.reader if hashed_there else None, run.first.src_offset + seg_lo,
                              run.first.dst_offset + seg_lo, seg_hi - seg_lo, last, inline_digest))
            if not last:
                break
            k += 1
        return spans, k

    def _drain(self) -> None:
        """Compare the digests the verifier has finished; report each verified piece."""
        while True:
            try:
                index, src_digest, dst_digest = self.verifier.done.get_nowait()
            except queue.Empty:
                return
            piece = self.pieces[index]
            if src_digest != dst_digest:
                raise GraftError(f"verification failed for {piece.name} in {self.dst_display}: source bytes hash to "
                                 f"{src_digest:x}, written bytes to {dst_digest:x}; re-run the same command "
                                 "(the tensor will be copied again)")
            if self.verified is not None:
                self.verified(piece, src_digest)


class _CfrUnsupported(Exception):
    def __init__(self, reason: str, moved: int) -> None:
        super().__init__(reason)
        self.moved = moved


def _cfr_exact(src_fd: int, dst_fd: int, nbytes: int, src_offset: int, dst_offset: int, display: str) -> int:
    """copy_file_range until ``nbytes`` moved; EOF means a truncated source."""
    assert _copy_file_range is not None
    moved = 0
    while moved < nbytes:
        try:
            n = _copy_file_range(src_fd, dst_fd, nbytes - moved, src_offset + moved, dst_offset + moved)
        except OSError as exc:
            if exc.errno in _CFR_UNSUPPORTED:
                raise _CfrUnsupported(exc.strerror or str(exc), moved) from None
            raise
        if n == 0:
            raise truncated(display, src_offset + moved)
        moved += n
    return moved


def _prefetch(fd: int, offset: int, nbytes: int) -> None:
    """Ask the kernel to start reading the next chunk while this one is copied (reads overlap copies)."""
    if _fadvise is not None and nbytes > 0:
        with contextlib.suppress(OSError):
            _fadvise(fd, offset, nbytes, os.POSIX_FADV_WILLNEED)


def _release(fd: int | None, offset: int, nbytes: int) -> None:
    """Verified bytes are not needed again: start their write-back now and keep the page cache clean.

    ``POSIX_FADV_DONTNEED`` on Linux starts asynchronous write-back of dirty pages and drops
    clean ones. A 20 GB graft then neither floods the page cache nor ends in one long fsync.
    """
    if fd is not None and _fadvise is not None and nbytes:
        with contextlib.suppress(OSError):
            _fadvise(fd, offset, nbytes, os.POSIX_FADV_DONTNEED)


def _pwrite_exact(fd: int, view: memoryview, offset: int) -> None:
    written = 0
    while written < len(view):
        written += _pwrite(fd, view[written:], offset + written)
