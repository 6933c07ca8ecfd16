"""The safetensors container format, as far as this project reads and writes it.

Why hand-written: the ``safetensors`` library exposes no data offsets (graft copies
byte ranges), cannot parse a header from remote bytes, cannot write a file whose
tensor bytes are streamed in later, and stops at the first defect with a message
that does not say *which* rule was broken. Everything here follows the rules that
``safetensors==0.8.0`` enforces on load (see docs/check.md), so a header this module
accepts is one the library accepts, and a header it builds is byte-identical to the
library's own writer (compact JSON, ``__metadata__`` first, space padding to 8 bytes,
tensors ordered by dtype descending then name).
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from math import prod
from typing import BinaryIO, Iterable, Mapping, NamedTuple

from ..errors import GlmMtpError
from .jsonio import loads as json_loads

#: Size of the little-endian u64 header-length prefix.
PREFIX_BYTES = 8
#: safetensors refuses headers larger than this; so do we, before allocating anything.
MAX_HEADER_BYTES = 100_000_000

#: Item size in bits for every dtype string safetensors 0.8.0 accepts.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8,
    "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}

#: Writer order: dtype enum descending (checked against safetensors' save_file).
_WRITE_ORDER = [
    "U64", "I64", "F64", "C64", "F32", "U32", "I32", "BF16", "F16", "U16", "I16",
    "F8_E5M2FNUZ", "F8_E4M3FNUZ", "F8_E8M0", "F8_E4M3", "F8_E5M2", "I8", "U8",
    "F6_E3M2", "F6_E2M3", "F4", "BOOL",
]
_WRITE_RANK = {dtype: rank for rank, dtype in enumerate(_WRITE_ORDER)}


class HeaderError(GlmMtpError, ValueError):
    """A safetensors header that the library would refuse to load.

    ``code`` is ``corrupt-header`` or ``truncated-shard``: the two problem codes
    ``check`` reports for a damaged shard.
    """

    def __init__(self, code: str, message: str, *, file: str | None = None, key: str | None = None) -> None:
        super().__init__(message, file=file, key=key)
        self.code = code


class TensorEntry(NamedTuple):
    """One tensor as the header describes it; offsets are relative to the data buffer.

    A named tuple rather than a frozen dataclass: a header parse builds one per tensor
    (~5,000 in a GLM-5.2 draft shard) and a frozen dataclass costs twice as much to build.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class ShardHeader:
    """A parsed header: where the data buffer starts and what it holds."""

    header_len: int
    metadata: dict[str, str]
    tensors: dict[str, TensorEntry]

    @property
    def data_start(self) -> int:
        """File offset of the data buffer."""
        return PREFIX_BYTES + self.header_len

    @property
    def payload_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    @property
    def expected_file_size(self) -> int:
        return self.data_start + self.payload_bytes


def tensor_nbytes(dtype: str, shape: Iterable[int]) -> int:
    """Payload size of a tensor; F4/F6 pack several elements per byte."""
    return packed_bytes(DTYPE_BITS[dtype] * prod(shape))


def packed_bytes(bits: int) -> int:
    """Whole bytes holding ``bits`` bits of tensor data (F4/F6 tensors end mid-byte)."""
    return (bits + 7) // 8


def parse_length_prefix(prefix: bytes, file_size: int | None) -> int:
    """Validate the 8-byte prefix before anything of size N is allocated."""
    if len(prefix) < PREFIX_BYTES:
        raise HeaderError("truncated-shard" if file_size is None or file_size > 0 else "corrupt-header",
                          f"file is {len(prefix)} bytes, shorter than the 8-byte header-length prefix")
    (header_len,) = struct.unpack("<Q", prefix[:PREFIX_BYTES])
    if header_len > MAX_HEADER_BYTES:
        raise HeaderError("corrupt-header",
                          f"header length {header_len:,} exceeds safetensors' limit of {MAX_HEADER_BYTES:,} bytes")
    if header_len < 2:
        raise HeaderError("corrupt-header", f"header length {header_len} cannot hold a JSON object")
    if file_size is not None and PREFIX_BYTES + header_len > file_size:
        raise HeaderError("truncated-shard",
                          f"header claims {header_len:,} bytes but the file is only {file_size:,} bytes long")
    return header_len


def parse_header_bytes(header_len: int, raw: bytes, file_size: int | None = None) -> ShardHeader:
    """Parse and validate the JSON header; ``raw`` is exactly ``header_len`` bytes."""
    if len(raw) < header_len:
        raise HeaderError("truncated-shard",
                          f"file ends inside the header ({len(raw):,} of {header_len:,} bytes present)")
    try:
        doc = json_loads(raw.decode("utf-8").rstrip(" "))
    except (UnicodeDecodeError, ValueError) as exc:
        raise HeaderError("corrupt-header", f"header is not valid UTF-8 JSON ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(doc, dict):
        raise HeaderError("corrupt-header", f"header JSON is a {type(doc).__name__}, not an object")

    metadata: dict[str, str] = {}
    tensors: dict[str, TensorEntry] = {}
    for name, value in doc.items():
        if name == "__metadata__":
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise HeaderError("corrupt-header", "__metadata__ must map strings to strings")
            metadata = dict(value)
            continue
        tensors[name] = _parse_entry(name, value)

    _check_tiling(tensors)
    header = ShardHeader(header_len=header_len, metadata=metadata, tensors=tensors)
    if file_size is not None:
        if file_size < header.expected_file_size:
            raise HeaderError("truncated-shard",
                              f"file is {file_size:,} bytes but its header places data up to byte "
                              f"{header.expected_file_size:,} (missing {header.expected_file_size - file_size:,} bytes)")
        if file_size > header.expected_file_size:
            raise HeaderError("corrupt-header",
                              f"{file_size - header.expected_file_size:,} bytes after the last tensor "
                              "(safetensors: 'incomplete metadata, file not fully covered')")
    return header


def _parse_entry(name: str, value: object) -> TensorEntry:
    # Runs once per tensor of every fully parsed header (~5,000 for a GLM-5.2 draft shard): plain loops
    # and ``type(x) is int`` (JSON decoders make no int subclasses but bool) instead of generator calls.
    if not isinstance(value, dict):
        raise HeaderError("corrupt-header", f"entry {name!r} is not an object")
    dtype, shape, offsets = value.get("dtype"), value.get("shape"), value.get("data_offsets")
    bits = DTYPE_BITS.get(dtype) if isinstance(dtype, str) else None
    if bits is None:
        raise HeaderError("corrupt-header", f"tensor {name!r} has unknown dtype {dtype!r}")
    if type(shape) is not list:
        raise HeaderError("corrupt-header", f"tensor {name!r} has an invalid shape {shape!r}")
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise HeaderError("corrupt-header", f"tensor {name!r} has an invalid shape {shape!r}")
        bits *= dim
    if type(offsets) is not list or len(offsets) != 2:
        raise HeaderError("corrupt-header", f"tensor {name!r} has invalid data_offsets {offsets!r}")
    begin, end = offsets
    if type(begin) is not int or type(end) is not int or not 0 <= begin <= end:
        raise HeaderError("corrupt-header", f"tensor {name!r} has invalid data_offsets {offsets!r}")
    if end - begin != packed_bytes(bits):
        raise HeaderError("corrupt-header",
                          f"tensor {name!r}: {end - begin} bytes in data_offsets, but {dtype}{shape} needs "
                          f"{packed_bytes(bits)}")
    return TensorEntry(name=name, dtype=dtype, shape=tuple(shape), begin=begin, end=end)


def _check_tiling(tensors: Mapping[str, TensorEntry]) -> None:
    """Offsets must tile the buffer from 0 without holes or overlaps, as the library demands."""
    cursor = 0
    for entry in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if entry.begin != cursor:
            kind = "overlaps the previous tensor" if entry.begin < cursor else "leaves a hole before it"
            raise HeaderError("corrupt-header", f"invalid offset for tensor {entry.name!r}: {kind}")
        cursor = entry.end


#: The last entry of a header as safetensors writes it (compact JSON, tensors in offset order).
_LAST_ENTRY = re.compile(rb'"data_offsets":\[(\d+),(\d+)\]\}\} *\Z')


def read_header_bytes(stream: BinaryIO, file_size: int | None) -> tuple[int, bytes]:
    """The header length and the raw header, bounded as in ``read_header``; nothing parsed yet."""
    header_len = parse_length_prefix(stream.read(PREFIX_BYTES), file_size)
    raw = stream.read(header_len)
    if len(raw) < header_len:
        raise HeaderError("truncated-shard",
                          f"file ends inside the header ({len(raw):,} of {header_len:,} bytes present)")
    return header_len, raw


#: How much of a header's end ``looks_intact`` reads: the last entry, whatever its name length.
TAIL_BYTES = 1024


def looks_intact(head: bytes, tail: bytes, header_len: int, file_size: int) -> bool:
    """The cheap integrity test for a shard whose tensors nobody reads: two small reads per shard.

    ``head`` is the first bytes of the header, ``tail`` its last ``TAIL_BYTES``. True when
    the header is framed as the safetensors writer frames it (compact JSON, tensors in
    offset order) and its last tensor ends exactly at the end of the file: the file is
    neither cut short nor padded. False means "not proven": parse the header fully with
    ``parse_header_bytes`` for the verdict. Entries in the middle are not validated; a full
    parse (``check --all-headers``) does that.
    """
    if head[:2] not in (b'{"', b"{}"):
        return False
    last = _LAST_ENTRY.search(tail, max(0, tail.rfind(b'"data_offsets":[')))
    if last is None:
        return False
    begin, end = int(last[1]), int(last[2])
    return begin <= end == file_size - PREFIX_BYTES - header_len


def read_header(stream: BinaryIO, file_size: int | None) -> ShardHeader:
    """Read and validate a header from an open binary stream positioned at 0.

    Allocation is bounded by ``MAX_HEADER_BYTES`` and by the file size, whatever the
    prefix claims.
    """
    prefix = stream.read(PREFIX_BYTES)
    header_len = parse_length_prefix(prefix, file_size)
    raw = stream.read(header_len)
    return parse_header_bytes(header_len, raw, file_size)


# ----------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class TensorSpec:
    """A tensor to be written: name, dtype and shape; bytes come separately."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.dtype, self.shape)


def write_order(specs: Iterable[TensorSpec]) -> list[TensorSpec]:
    """The order safetensors' own writer uses: dtype rank, then name."""
    return sorted(specs, key=lambda s: (_WRITE_RANK[s.dtype], s.name))


def build_header(specs: Iterable[TensorSpec], metadata: Mapping[str, str] | None = None) -> tuple[bytes, ShardHeader]:
    """Serialise a header exactly as safetensors does; returns (prefix+header bytes, parsed view).

    Tensors are laid out in ``write_order``; the caller must then write their bytes in
    that same order.
    """
    doc: dict[str, object] = {}
    if metadata:
        doc["__metadata__"] = dict(metadata)
    entries: dict[str, TensorEntry] = {}
    cursor = 0
    for spec in write_order(specs):
        end = cursor + spec.nbytes
        doc[spec.name] = {"dtype": spec.dtype, "shape": list(spec.shape), "data_offsets": [cursor, end]}
        entries[spec.name] = TensorEntry(spec.name, spec.dtype, tuple(spec.shape), cursor, end)
        cursor = end
    body = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    body += b" " * ((8 - len(body) % 8) % 8)
    parsed = ShardHeader(header_len=len(body), metadata=dict(metadata or {}), tensors=entries)
    return struct.pack("<Q", len(body)) + body, parsed
