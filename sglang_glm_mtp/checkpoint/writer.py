"""Writing shards and indexes the way the Hugging Face tooling does, atomically.

Shared by graft (which streams tensor bytes from another file) and by the synthetic
checkpoints (which generate them). A shard is written to a temporary name in its
destination folder and renamed into place only when complete, so a reader never sees
half a file under a final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping

from .files import INDEX_FILE
from .safetensors_format import ShardHeader, TensorSpec, build_header

__all__ = ["INDEX_FILE", "atomic_file", "atomic_write_bytes", "atomic_write_json", "index_document", "make_temp",
           "write_shard"]


def _default_mode() -> int:
    """The mode a plain ``open()`` would give: mkstemp's 0600 would hide files from other users."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_mode()  # read once: os.umask is process-global and not thread-safe


def make_temp(path: Path) -> tuple[int, str]:
    """A temp file next to ``path`` (same filesystem, so the final rename is atomic)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, _FILE_MODE)
    return fd, tmp


def shard_name(i: int, n: int, stem: str = "model") -> str:
    return f"{stem}-{i:05d}-of-{n:05d}.safetensors"


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A handle on a same-folder temp file that becomes ``path`` (fsync, rename) only if the block completes.

    On any exception, interrupts included, the temp file is removed and ``path`` is as it was.
    """
    fd, tmp = make_temp(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a same-folder temp file, fsync and rename."""
    with atomic_file(path) as handle:
        handle.write(data)


def atomic_write_json(path: Path, doc: Any) -> None:
    atomic_write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))


def _unlink_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def write_shard(path: Path, specs: Iterable[TensorSpec], fill: Callable[[TensorSpec, Any], None] | None,
                metadata: Mapping[str, str] | None = None) -> ShardHeader:
    """Write one shard atomically.

    ``fill(spec, handle)`` writes exactly ``spec.nbytes`` bytes for each tensor, in
    safetensors write order. With ``fill=None`` the data region is left as a sparse hole
    (``truncate`` to full length): a layout-only shard with a real header that costs no disk.
    """
    header_bytes, header = build_header(specs, metadata if metadata is not None else {"format": "pt"})
    with atomic_file(path) as handle:
        handle.write(header_bytes)
        if fill is None:
            handle.truncate(header.expected_file_size)
        else:
            for entry in sorted(header.tensors.values(), key=lambda t: t.begin):
                fill(TensorSpec(entry.name, entry.dtype, entry.shape), handle)
            if handle.tell() != header.expected_file_size:
                raise AssertionError(f"{path.name}: wrote {handle.tell()} bytes, header says "
                                     f"{header.expected_file_size}")
    return header


def split_into_shards(specs: list[TensorSpec], num_shards: int) -> list[list[TensorSpec]]:
    """Cut string-sorted tensors into ``num_shards`` runs of about equal bytes (as HF exports are)."""
    ordered = sorted(specs, key=lambda s: s.name)
    total = sum(s.nbytes for s in ordered)
    shards: list[list[TensorSpec]] = [[] for _ in range(num_shards)]
    cumulative = 0
    for spec in ordered:
        slot = min(num_shards - 1, (cumulative * num_shards) // max(total, 1))
        shards[slot].append(spec)
        cumulative += spec.nbytes
    return [s for s in shards if s]


def index_document(weight_map: Mapping[str, str], total_size: int, extra_metadata: Mapping[str, Any] | None = None
                   ) -> dict[str, Any]:
    """An index in huggingface_hub's shape: metadata.total_size = tensor payload bytes."""
    metadata: dict[str, Any] = {"total_size": total_size, **(extra_metadata or {})}
    return {"metadata": metadata, "weight_map": dict(sorted(weight_map.items()))}
