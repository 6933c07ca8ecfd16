"""Helpers shared by the graft/extract tests: byte-level comparisons and TARGET snapshots."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

from sglang_glm_mtp.checkpoint.safetensors_format import read_header

INDEX = "model.safetensors.index.json"


def paced_cli(seconds: float, *setup: str) -> str:
    """``python -c`` code that runs the CLI on its arguments with every copied piece followed by a ``seconds``
    pause (``copying._after_piece``), so a test can kill it mid-copy; ``setup`` statements run first."""
    statements = ["import sys, time", "from sglang_glm_mtp.graft import copying", *setup,
                  f"copying._after_piece = lambda: time.sleep({seconds!r})",
                  "from sglang_glm_mtp.cli import main", "sys.exit(main(sys.argv[1:]))"]
    return "; ".join(statements)


def snapshot(directory: Path) -> dict[str, str]:
    """Name -> sha256 of every entry (symlinks by target); TARGET must match this after a refusal."""
    out: dict[str, str] = {}
    for path in sorted(directory.iterdir()):
        if path.is_symlink():
            out[path.name] = "link:" + str(path.readlink())
        elif path.is_file():
            out[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def visible(snap: dict[str, str]) -> dict[str, str]:
    """What loaders see: hidden temporaries (resume state) are not part of the checkpoint."""
    return {k: v for k, v in snap.items() if not k.startswith(".")}


def tensor_bytes(directory: Path, prefix: str = "", *, indexed_only: bool = True) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """name -> (dtype, shape, raw bytes) for tensors under ``prefix``, read from raw byte ranges."""
    index_path = directory / INDEX
    if indexed_only and index_path.exists():
        shards = sorted(set(json.loads(index_path.read_text())["weight_map"].values()))
    else:
        shards = sorted(p.name for p in directory.glob("*.safetensors"))
    out: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    for shard in shards:
        path = directory / shard
        with open(path, "rb") as handle:
            header = read_header(handle, path.stat().st_size)
            for name, entry in header.tensors.items():
                if not name.startswith(prefix):
                    continue
                assert name not in out, f"{name} appears in two shards"
                handle.seek(header.data_start + entry.begin)
                out[name] = (entry.dtype, tuple(entry.shape), handle.read(entry.nbytes))
    return out


def load_with_safetensors(path: Path) -> dict[str, Any]:
    """The library's own reader must accept every written file; numpy covers F32/U8, the rest by key."""
    loaded: dict[str, Any] = {}
    with safe_open(str(path), framework="numpy") as handle:
        for key in handle.keys():
            sl = handle.get_slice(key)
            if sl.get_dtype() in ("F32", "U8", "F16"):
                loaded[key] = handle.get_tensor(key)
                assert isinstance(loaded[key], np.ndarray)
            else:
                loaded[key] = sl.get_shape()
    return loaded


def index_of(directory: Path) -> dict[str, Any]:
    return json.loads((directory / INDEX).read_text())
