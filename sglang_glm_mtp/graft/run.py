"""``execute``: carry out a plan under the folder lock (copy, staged check, commit, clean-up)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Any, Iterator

from ..checkpoint.writer import INDEX_FILE, make_temp
from ..errors import GraftError
from . import checksum
from .commit import commit, finish
from .copying import DEFAULT_WORKERS, workers_from_env
from ..checkpoint.range_reads import HubReader, RangeReader
from .readers import open_readers
from .records import LOCK_FILE, GraftPlan, GraftReport, ShardResult
from .sizes import human_bytes
from .verify import check_staged, final_check, staged_files
from .write import CopyTotals, ProgressFn, fill_shard, io_error


@contextlib.contextmanager
def locked(dest: Path) -> Iterator[None]:
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


def probe_writable(dest: Path) -> None:
    fd, tmp = make_temp(dest / "write-probe")
    os.close(fd)
    os.unlink(tmp)


def execute(plan: GraftPlan, *, progress: ProgressFn | None = None, workers: int | None = None) -> GraftReport:
    """Carry out a plan: copy and verify, check the staged result, commit atomically, clean up.

    A plan that only finishes an interrupted run (``plan.finish_only``) does the clean-up
    and the final check. ``workers``: concurrent streams (Hub sources: Range streams,
    default 8 or ``SGLANG_GLM_MTP_WORKERS``; local sources: at most ``copying.STREAMS``).
    """
    if workers is None:
        workers = workers_from_env()
    started = time.monotonic()
    report = GraftReport(mode=plan.mode, source=plan.source, target=plan.target, output=str(plan.dest),
                         draft_layer=plan.draft_layer, output_layer=plan.output_layer, notes=list(plan.notes),
                         layer_names=plan.layer_names)
    try:
        plan.dest.mkdir(parents=True, exist_ok=True)
        probe_writable(plan.dest)
    except OSError as exc:
        raise io_error(exc, plan.dest, "preparing the output folder") from None
    with locked(plan.dest):
        if plan.finish_only:
            _finish_interrupted(plan, report)
        else:
            _copy_and_commit(plan, report, progress, workers)
    report.elapsed_s = time.monotonic() - started
    return report


def _finish_interrupted(plan: GraftPlan, report: GraftReport) -> None:
    """An earlier run committed and was stopped during clean-up: clean up, check the result."""
    finish(plan, report)
    final_check(plan, report)


def _copy_and_commit(plan: GraftPlan, report: GraftReport, progress: ProgressFn | None, workers: int | None) -> None:
    """The whole run under the lock: copy, check the staged result, commit, clean up, check the result."""
    if not plan.enough_space:
        raise GraftError(f"not enough free space in {plan.dest}: the graft needs {human_bytes(plan.needed_bytes)}, "
                         f"{human_bytes(plan.free_bytes)} are free; free some space or write the result "
                         "elsewhere with --out DIR")
    _copy_shards(plan, report, progress, workers)
    docs = {e.file: e.document for e in plan.config_edits}
    staged = check_staged(plan, staged_files(plan, committed=False), docs)
    if staged.status != "ready":
        details = "; ".join(f"{p.code}: {p.message}" for p in staged.errors()) or staged.status
        raise GraftError(f"the result would not be ready ({details}); nothing visible was changed, the verified "
                         "copies are kept for a re-run")
    try:
        commit(plan, report)
    except OSError as exc:
        raise io_error(exc, plan.dest, "committing the result") from None
    finish(plan, report)
    # Every tensor counted as verified was hashed twice, its source bytes while copying and its written bytes
    # read back from the file, and the two digests matched (a mismatch stops the run): one count, two keys.
    verified = sum(r.verified_tensors for r in report.shards)
    report.verification = {
        "hash": checksum.NAME,
        "tensors_hashed_while_copying": verified,
        "tensors_rehashed_from_written_file": verified,
        "tensors_reused_after_rehash": sum(r.reused_tensors for r in report.shards),
        "staged_check": staged.status,
    }
    report.index = {"file": INDEX_FILE, "entries_before": plan.index_entries_before,
                    "entries_after": plan.index_entries_after, "total_size_before": plan.total_size_before,
                    "total_size_after": plan.total_size_after}
    final_check(plan, report)


def _copy_shards(plan: GraftPlan, report: GraftReport, progress: ProgressFn | None, workers: int | None) -> None:
    """Every new shard filled and verified; what was copied and how goes into the report."""
    totals = CopyTotals()
    readers = open_readers(plan)
    try:
        for shard in plan.shards:
            result = ShardResult(shard.name, shard.role, len(shard.tensors), shard.size, 0, 0, 0)
            report.shards.append(result)
            try:
                totals.add(fill_shard(plan, shard, readers, result, progress, workers))
            except OSError as exc:
                raise io_error(exc, plan.dest, f"writing {shard.name}") from None
        report.transfer = _transfer(readers, totals, workers)
    finally:
        for reader in readers.values():
            reader.close()
    report.tensors = sum(len(s.tensors) for s in plan.shards if s.role == "draft")
    report.bytes_copied = totals.copied_bytes
    report.bytes_reused = totals.reused_bytes
    report.copy_method = "+".join(sorted(totals.methods)) or "none (all reused)"


def _transfer(readers: dict[str, RangeReader], totals: CopyTotals, workers: int | None) -> dict[str, Any]:
    """What ``--json`` reports about the copy: where from, how many streams, bytes, the effective rate."""
    hub = [r for r in readers.values() if isinstance(r, HubReader)]
    seconds = totals.copy_s
    doc: dict[str, Any] = {
        "source": "hub" if hub else "local", "workers": workers or DEFAULT_WORKERS,
        "streams": totals.streams, "segments": totals.segments,
        "bytes": totals.copied_bytes, "seconds": round(seconds, 3),
        "rate_bytes_per_s": round(totals.copied_bytes / seconds) if seconds > 0 else None,
    }
    if hub:
        doc.update(hub[0].gate.stats())  # one gate per run: the counters of every stream and file
    return doc
