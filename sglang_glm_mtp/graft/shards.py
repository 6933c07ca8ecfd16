"""The new shards: what the target holds now, how the layer is split, file names, resume state.

A new shard's ``fingerprint`` covers its header, where each tensor comes from, and the
source files' size and mtime, so a re-run reuses an earlier run's work only when it
would write exactly the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

from ..checkpoint.safetensors_format import (PREFIX_BYTES, HeaderError, ShardHeader, TensorSpec, build_header,
                                            parse_length_prefix, read_header)
from ..checkpoint.source import CheckpointSource
from ..errors import GraftError
from . import checksum
from .records import JOURNAL_SUFFIX, PARTIAL_SUFFIX, NewShard, TensorCopy, journal_path, partial_path


@dataclass
class TargetShard:
    """One existing target shard as the plan needs it: sizes, and its draft-layer tensors if any."""

    name: str
    size: int
    payload: int
    draft: list[str]
    others: list[tuple[str, str, tuple[int, ...], int, int]]  # kept only for shards that must be stripped
    other_count: int


def read_local_header(path: Path) -> ShardHeader:
    with open(path, "rb") as stream:
        return read_header(stream, path.stat().st_size)


def scan_target(root: Path, files: Mapping[str, int], prefix: str) -> dict[str, TargetShard]:
    """Headers of every shard (local, cheap): payload sizes and where draft-layer tensors sit.

    Only a shard that mixes draft and other tensors keeps its full tensor list, so memory
    stays small even for 233k-tensor checkpoints.
    """
    out: dict[str, TargetShard] = {}
    needle = json.dumps(prefix)[:-1].encode()  # '"model.layers.N.' as it appears in a header
    for name in sorted(files):
        if not name.endswith(".safetensors"):
            continue
        try:
            with open(root / name, "rb") as stream:
                header_len = parse_length_prefix(stream.read(PREFIX_BYTES), files[name])
                if needle not in stream.read(header_len):  # no draft tensor: the prefix gives the payload size
                    out[name] = TargetShard(name, files[name], files[name] - PREFIX_BYTES - header_len, [], [], 1)
                    continue
            header = read_local_header(root / name)
        except HeaderError as exc:
            raise GraftError(f"TARGET shard {root / name} is damaged ({exc}); re-download it first") from None
        except OSError as exc:
            raise GraftError(f"cannot read TARGET shard {root / name}: {exc.strerror}") from None
        draft = sorted(n for n in header.tensors if n.startswith(prefix))
        others = len(header.tensors) - len(draft)
        keep = ([(e.name, e.dtype, e.shape, header.data_start + e.begin, e.nbytes)
                 for e in header.tensors.values() if not e.name.startswith(prefix)] if draft and others else [])
        out[name] = TargetShard(name, files[name], header.payload_bytes, draft, keep, others)
    return out


def split_like_hf(copies: list[TensorCopy], max_size: int | None) -> list[list[TensorCopy]]:
    """Hugging Face's greedy split over name-sorted tensors: a shard holds at most ``max_size`` bytes."""
    groups: list[list[TensorCopy]] = [[]]
    used = 0
    for item in sorted(copies, key=lambda c: c.name):
        if max_size is not None and groups[-1] and used + item.nbytes > max_size:
            groups.append([])
            used = 0
        groups[-1].append(item)
        used += item.nbytes
    return [g for g in groups if g]


def _identity(origin_files: Mapping[tuple[str, str], tuple[int, int]], copies: list[TensorCopy]) -> list[Any]:
    return sorted({(c.origin, c.shard, *origin_files.get((c.origin, c.shard), (0, 0))) for c in copies})


def build_new_shard(name: str, role: Literal["draft", "stripped"], copies: list[TensorCopy],
                    identity: Mapping[tuple[str, str], tuple[int, int]], replaces: str | None = None) -> NewShard:
    header_bytes, parsed = build_header([TensorSpec(c.name, c.dtype, c.shape) for c in copies], {"format": "pt"})
    by_name = {c.name: c for c in copies}
    ordered = sorted(parsed.tensors.values(), key=lambda e: e.begin)
    tensors = [by_name[e.name] for e in ordered]
    offsets = {e.name: parsed.data_start + e.begin for e in ordered}
    digest = hashlib.sha256(header_bytes)
    digest.update(json.dumps([[t.origin, t.shard, t.src_offset, t.nbytes] for t in tensors]).encode())
    digest.update(json.dumps(_identity(identity, copies)).encode())
    return NewShard(name=name, role=role, tensors=tensors, offsets=offsets, size=parsed.expected_file_size,
                    header=header_bytes, fingerprint=digest.hexdigest(), replaces=replaces)


def read_journal(dest: Path, name: str) -> dict[str, Any] | None:
    """The journal of an earlier run for shard ``name``, or None when absent or unreadable."""
    path = journal_path(dest, name)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("tensors"), dict) else None


def resume_state(dest: Path, shard: NewShard) -> tuple[str | None, int]:
    """What an earlier run of the same plan left: a finished file or a partial, and its verified bytes."""
    journal = read_journal(dest, shard.name)
    if journal is None or journal.get("fingerprint") != shard.fingerprint or \
            journal.get("checksum", "crc32") != checksum.NAME:
        return None, 0
    verified = sum(t.nbytes for t in shard.tensors if t.name in journal["tensors"])
    segments = journal.get("segments") if isinstance(journal.get("segments"), dict) else {}
    verified += sum(e[1] for t in shard.tensors if t.name not in journal["tensors"]  # segments of tensors fetched in parts
                    for e in segments.get(t.name) or [] if isinstance(e, list) and len(e) == 3 and isinstance(e[1], int))
    if (dest / shard.name).is_file():
        return "final", verified
    if partial_path(dest, shard.name).is_file():
        return "partial", verified
    return None, 0


def choose_names(dest: Path, taken: set[str], groups: list[list[TensorCopy]], make_name: Callable[[int, int, int], str],
                 role: Literal["draft", "stripped"], identity: Mapping[tuple[str, str], tuple[int, int]],
                 replaces: list[str | None] | None = None) -> list[NewShard]:
    """New file names that collide with nothing, unless the file is our own unfinished work."""
    for variant in range(1, 1000):
        shards = [build_new_shard(make_name(variant, i, len(groups)), role, group, identity,
                                  replaces[i - 1] if replaces else None)
                  for i, group in enumerate(groups, start=1)]
        clash = False
        for shard in shards:
            if shard.name in taken or (dest / shard.name).exists() or os.path.lexists(dest / shard.name):
                resume, _ = resume_state(dest, shard)
                if resume != "final":
                    clash = True
                    break
        if not clash:
            for shard in shards:
                shard.resume, shard.reusable_bytes = resume_state(dest, shard)
            return shards
    raise GraftError(f"cannot find a free file name for the new shards in {dest}")


# The names of the shards graft and extract write: the one home of these spellings, and of the rule
# (``is_our_unfinished_file``) that recognises their unfinished files when a run is cleaned up.
#: extract's single output shard (the name SGLang's standalone NextN drafts use)
NEXTN_FILE = "nextn_layer_parameters.safetensors"
_OURS = re.compile(r"^\.(model-mtp-layer\d+.*|.*-no-layer\d+.*|nextn_layer_parameters)\.safetensors"
                   rf"({re.escape(PARTIAL_SUFFIX)}|{re.escape(JOURNAL_SUFFIX)})$")


def _variant(variant: int) -> str:
    return "" if variant == 1 else f"-r{variant}"


def draft_shard_name(layer: int) -> Callable[[int, int, int], str]:
    """``model-mtp-layer78-00001-of-00002.safetensors`` (``-r2`` and up when a name is taken)."""
    def make(variant: int, i: int, n: int) -> str:
        return f"model-mtp-layer{layer}{_variant(variant)}-{i:05d}-of-{n:05d}.safetensors"
    return make


def stripped_shard_name(stem: str, layer: int, variant: int) -> str:
    """A mixed target shard rewritten without the draft layer: ``<stem>-no-layer78.safetensors``."""
    return f"{stem}-no-layer{layer}{_variant(variant)}.safetensors"


def is_our_unfinished_file(name: str) -> bool:
    """A hidden ``.partial``/``.journal`` file of a shard named above: graft's own, safe to delete."""
    return _OURS.match(name) is not None


def merged_ranges(copies: list[TensorCopy]) -> dict[str, list[tuple[int, int]]]:
    """Source shard -> the byte ranges read from it, adjacent tensors merged (what --dry-run shows)."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    for c in sorted(copies, key=lambda c: (c.shard, c.src_offset)):
        spans = ranges.setdefault(c.shard, [])
        if spans and spans[-1][1] == c.src_offset:
            spans[-1] = (spans[-1][0], c.src_offset + c.nbytes)
        else:
            spans.append((c.src_offset, c.src_offset + c.nbytes))
    return dict(sorted(ranges.items()))


def file_identity(source: CheckpointSource, files: Mapping[str, int], names: set[str]) -> dict[str, tuple[int, int]]:
    """(size, mtime) of each source file: a changed source invalidates an earlier run's partial work."""
    out: dict[str, tuple[int, int]] = {}
    for name in names:
        local = source.local_path(name)
        if local is not None:
            st = local.stat()
            out[name] = (st.st_size, st.st_mtime_ns)
        else:
            out[name] = (files.get(name, 0), 0)
    return out
