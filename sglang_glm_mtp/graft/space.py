"""The output folder and its disk: may we write there, which small files come along, is there room."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Mapping

from ..errors import UsageError
from .records import (BACKUP_SUFFIX, JOURNAL_SUFFIX, LOCK_FILE, PARTIAL_SUFFIX, SMALL_FILE_LIMIT, SPACE_MARGIN,
                      STATE_FILE, WEIGHT_SUFFIXES, GraftPlan, partial_path)


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


def free_space(dest: Path) -> int:
    probe = dest
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def allocated_bytes(path: Path) -> int:
    try:
        return path.stat().st_blocks * 512
    except (OSError, AttributeError):
        return 0


def json_file_size(doc: object) -> int:
    """Bytes of ``doc`` as the commit writes it (indent 2, ASCII, trailing newline)."""
    return len(json.dumps(doc, indent=2)) + 1


def backup_bytes(plan: GraftPlan) -> int:
    """Backups the in-place commit writes: a copy of each edited file, unless one is already there."""
    total = 0
    for edit in plan.config_edits:
        if edit.backup and not (plan.dest / edit.backup).exists():
            with contextlib.suppress(OSError):
                total += (plan.dest / edit.file).stat().st_size
    return total


def finalize_space(plan: GraftPlan, small_bytes: int) -> None:
    """Bytes still to write in the destination, and the space they need against what is free there.

    ``bytes_to_write`` is what the run adds to the disk: new shards (less what an earlier
    run verified), the JSON files as written, their backups and the small files copied.
    ``needed_bytes`` counts the shards' not-yet-allocated blocks instead, plus a margin.
    """
    meta_bytes = small_bytes + sum(json_file_size(e.document) for e in plan.config_edits) + backup_bytes(plan)
    needed = meta_bytes + SPACE_MARGIN
    for shard in plan.shards:
        if shard.resume == "final":
            continue
        needed += max(0, shard.size - allocated_bytes(partial_path(plan.dest, shard.name)))
    plan.needed_bytes = needed
    plan.free_bytes = free_space(plan.dest)
    plan.bytes_reusable = sum(s.reusable_bytes for s in plan.shards)
    plan.bytes_to_write = sum(s.size for s in plan.shards) - plan.bytes_reusable + meta_bytes
    plan.bytes_to_read = sum(s.payload for s in plan.shards) - plan.bytes_reusable
