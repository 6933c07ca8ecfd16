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
from .readers import HubReader, RangeReader, open_readers
from .records import LOCK_FILE, GraftPlan, GraftReport, ShardResult
from .sizes import human_bytes
from .verify import check_staged, final_check, staged_files
from .write import ProgressFn, io_error, fill_shard


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

    ``workers``: concurrent streams (Hub sources: Range streams, default 8 or
    ``SGLANG_GLM_MTP_WORKERS``; local sources: at most ``copying.STREAMS``).
    """
    if workers is None:
        workers = workers_from_env()
    started = time.monotonic()
    report = GraftReport(mode=plan.mode, source=plan.source, target=plan.target, output=str(plan.dest),
                         draft_layer=plan.draft_layer, output_layer=plan.output_layer, notes=list(plan.notes),
                         layer_names=plan.layer_names)
    dest = plan.dest
    try:
        dest.mkdir(parents=True, exist_ok=True)
        probe_writable(dest)
    except OSError as exc:
        raise io_error(exc, dest, "preparing the output folder") from None
    with locked(dest):
        if plan.finish_only:
            finish(plan, report)
            final_check(plan, report)
            report.elapsed_s = time.monotonic() - started
            return report
        if not plan.enough_space:
            raise GraftError(f"not enough free space in {dest}: the graft needs {human_bytes(plan.needed_bytes)}, "
                             f"{human_bytes(plan.free_bytes)} are free; free some space or write the result "
                             "elsewhere with --out DIR")
        stats: dict[str, Any] = {"copied_bytes": 0, "reused_bytes": 0, "methods": set()}
        readers = open_readers(plan)
        try:
            for shard in plan.shards:
                result = ShardResult(shard.name, shard.role, len(shard.tensors), shard.size, 0, 0, 0)
                report.shards.append(result)
                try:
                    fill_shard(plan, shard, readers, result, progress, stats, workers)
                except OSError as exc:
                    raise io_error(exc, dest, f"writing {shard.name}") from None
            report.transfer = _transfer(readers, stats, workers)
        finally:
            for reader in readers.values():
                reader.close()
        report.tensors = sum(len(s.tensors) for s in plan.shards if s.role == "draft")
        report.bytes_copied = stats["copied_bytes"]
        report.bytes_reused = stats["reused_bytes"]
        report.copy_method = "+".join(sorted(stats["methods"])) or "none (all reused)"

        docs = {e.file: e.document for e in plan.config_edits}
        staged = check_staged(plan, staged_files(plan, committed=False), docs)
        if staged.status != "ready":
            details = "; ".join(f"{p.code}: {p.message}" for p in staged.errors()) or staged.status
            raise GraftError(f"the result would not be ready ({details}); nothing visible was changed, the verified "
                             "copies are kept for a re-run")
        try:
            commit(plan, report)
        except OSError as exc:
            raise io_error(exc, dest, "committing the result") from None
        finish(plan, report)
        report.verification = {
            "hash": checksum.NAME,
            "tensors_hashed_while_copying": sum(r.verified_tensors for r in report.shards),
            "tensors_rehashed_from_written_file": sum(r.verified_tensors for r in report.shards),
            "tensors_reused_after_rehash": sum(r.reused_tensors for r in report.shards),
            "staged_check": staged.status,
        }
        report.index = {"file": INDEX_FILE, "entries_before": plan.index_entries_before,
                        "entries_after": plan.index_entries_after, "total_size_before": plan.total_size_before,
                        "total_size_after": plan.total_size_after}
        final_check(plan, report)
    report.elapsed_s = time.monotonic() - started
    return report


def _transfer(readers: dict[str, RangeReader], stats: dict[str, Any], workers: int | None) -> dict[str, Any]:
    """What ``--json`` reports about the copy: where from, how many streams, bytes, the effective rate."""
    hub = [r for r in readers.values() if isinstance(r, HubReader)]
    seconds = stats.get("copy_s", 0.0)
    doc: dict[str, Any] = {
        "source": "hub" if hub else "local", "workers": workers or DEFAULT_WORKERS,
        "streams": stats.get("streams", 0), "segments": stats.get("segments", 0),
        "bytes": stats["copied_bytes"], "seconds": round(seconds, 3),
        "rate_bytes_per_s": round(stats["copied_bytes"] / seconds) if seconds > 0 else None,
    }
    if hub:
        doc.update(hub[0].gate.stats())  # one gate per run: the counters of every stream and file
    return doc
