"""The hand-written header reader/writer against the safetensors library, plus fuzzing.

The reader must turn *any* bytes into a parsed header, ``corrupt-header`` or
``truncated-shard``: no other exception, no hang, no allocation beyond the file.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.numpy import save_file

from sglang_glm_mtp.checkpoint.safetensors_format import (
    MAX_HEADER_BYTES,
    HeaderError,
    TensorSpec,
    build_header,
    read_header,
)
from sglang_glm_mtp.checkpoint.writer import write_shard
from sglang_glm_mtp.synthetic import deterministic_fill


def _parse(data: bytes):
    return read_header(io.BytesIO(data), len(data))


def test_writer_is_byte_identical_to_safetensors(tmp_path: Path) -> None:
    tensors = {"b.weight": np.arange(12, dtype=np.float32).reshape(3, 4), "a.weight": np.arange(5, dtype=np.uint8),
               "c.bias": np.zeros((2, 2), dtype=np.int64)}
    save_file(tensors, str(tmp_path / "ref.safetensors"), metadata={"format": "pt"})
    ref = (tmp_path / "ref.safetensors").read_bytes()
    specs = [TensorSpec(n, {"float32": "F32", "uint8": "U8", "int64": "I64"}[str(a.dtype)], a.shape)
             for n, a in tensors.items()]
    header_bytes, header = build_header(specs, {"format": "pt"})
    body = b"".join(tensors[e.name].tobytes() for e in sorted(header.tensors.values(), key=lambda t: t.begin))
    assert header_bytes + body == ref
    assert _parse(ref).tensors.keys() == header.tensors.keys()


def test_written_shards_load_in_safetensors(tmp_path: Path) -> None:
    specs = [TensorSpec("w", "BF16", (4, 8)), TensorSpec("s", "F8_E4M3", (4, 2)), TensorSpec("q", "U8", (4, 4)),
             TensorSpec("g", "F32", ())]
    write_shard(tmp_path / "x.safetensors", specs, deterministic_fill)
    with safe_open(str(tmp_path / "x.safetensors"), framework="pt") as handle:
        assert sorted(handle.keys()) == ["g", "q", "s", "w"]
        assert list(handle.get_tensor("w").shape) == [4, 8]


def test_sparse_shard_has_real_header_and_full_length(tmp_path: Path) -> None:
    specs = [TensorSpec("big", "BF16", (1 << 20, 64))]
    header = write_shard(tmp_path / "sparse.safetensors", specs, None)
    stat = (tmp_path / "sparse.safetensors").stat()
    assert stat.st_size == header.expected_file_size == header.data_start + (1 << 27)
    assert stat.st_blocks * 512 < 1 << 20  # a hole, not 128 MiB of zeros
    assert _parse((tmp_path / "sparse.safetensors").read_bytes()[: header.data_start] + b"\0" * (1 << 27))


@pytest.mark.parametrize("data, code", [
    (b"", "corrupt-header"),
    (b"\x01\x00", "truncated-shard"),
    (struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}", "corrupt-header"),
    (struct.pack("<Q", 1 << 40) + b"{}", "corrupt-header"),
    (struct.pack("<Q", 64) + b"{}", "truncated-shard"),
    (struct.pack("<Q", 2) + b"[]", "corrupt-header"),
    (struct.pack("<Q", 4) + b"\xff\xfe{}", "corrupt-header"),
    (struct.pack("<Q", 2) + b"{}" + b"xx", "corrupt-header"),  # bytes after the last tensor
])
def test_damaged_headers_get_named_codes(data: bytes, code: str) -> None:
    with pytest.raises(HeaderError) as info:
        _parse(data)
    assert info.value.code == code


def _header_with(entries: dict) -> bytes:
    body = json.dumps(entries).encode()
    return struct.pack("<Q", len(body)) + body


#: (entries, payload bytes, what the message must name: the check that refuses it, not merely some check)
@pytest.mark.parametrize("entries, payload, says", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, 4, "but F32[2] needs 8"),  # wrong size
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, 8, "leaves a hole before it"),  # hole at 0
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}}, 8, "overlaps the previous tensor"),
    ({"a": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 1]}}, 1, "unknown dtype 'Q7'"),
    ({"a": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}, 4, "unknown dtype"),  # a dtype no string
    ({"a": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, 4, "invalid shape"),  # a bool: no dim
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4.0]}}, 4, "invalid data_offsets"),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, 4, "invalid shape [-1]"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}, 4, "invalid data_offsets"),
    ({"__metadata__": {"k": 1}}, 0, "__metadata__ must map strings to strings"),
    ({"a": [1, 2]}, 0, "is not an object"),
])
def test_invalid_entries_are_corrupt(entries: dict, payload: int, says: str) -> None:
    with pytest.raises(HeaderError) as info:
        _parse(_header_with(entries) + b"\0" * payload)
    assert info.value.code == "corrupt-header" and says in str(info.value), str(info.value)


@pytest.mark.parametrize("dtype, shape, nbytes", [("F4", [3], 2), ("F4", [1], 1), ("F6_E2M3", [3], 3),
                                                  ("F6_E3M2", [5], 4), ("F4", [2, 3], 3), ("BF16", [3], 6)])
def test_sub_byte_tensors_end_mid_byte_and_round_up(dtype: str, shape: list[int], nbytes: int) -> None:
    """F4/F6 tensors pack elements across bytes; an odd count ends mid-byte and takes the whole last byte."""
    header = _parse(_header_with({"a": {"dtype": dtype, "shape": shape, "data_offsets": [0, nbytes]}})
                    + b"\0" * nbytes)
    assert header.tensors["a"].nbytes == nbytes == header.payload_bytes


def test_truncated_data_region() -> None:
    with pytest.raises(HeaderError) as info:
        _parse(_header_with({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}) + b"\0" * 10)
    assert info.value.code == "truncated-shard"


_valid = _header_with({"__metadata__": {"format": "pt"}, "x": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]},
                       "y": {"dtype": "U8", "shape": [4], "data_offsets": [12, 16]}}) + bytes(16)


def _assert_parses_or_named(data: bytes) -> None:
    try:
        _parse(data)
    except HeaderError as exc:
        assert exc.code in ("corrupt-header", "truncated-shard")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=256))
def test_fuzz_random_bytes(data: bytes) -> None:
    _assert_parses_or_named(data)


@settings(max_examples=400, deadline=None)
@given(st.integers(min_value=0, max_value=len(_valid)), st.integers(0, len(_valid) - 1), st.integers(0, 255))
def test_fuzz_truncated_and_flipped_valid_file(cut: int, pos: int, value: int) -> None:
    _assert_parses_or_named(_valid[:cut])
    mutated = bytearray(_valid)
    mutated[pos] = value
    _assert_parses_or_named(bytes(mutated))


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=(1 << 64) - 1), st.binary(max_size=64))
def test_fuzz_header_length_prefix(length: int, rest: bytes) -> None:
    """Lengths over 100 MB or past EOF must be refused before anything of that size is read."""
    _assert_parses_or_named(struct.pack("<Q", length) + rest)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                           max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(json_values, st.integers(0, 64))
def test_fuzz_arbitrary_json_documents(doc: object, payload: int) -> None:
    _assert_parses_or_named(_header_with(doc) + bytes(payload))  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(-2, 40), st.integers(-2, 40)), min_size=1, max_size=4), st.integers(0, 48))
def test_fuzz_wrong_offsets(offsets: list[tuple[int, int]], payload: int) -> None:
    entries = {f"t{i}": {"dtype": "U8", "shape": [max(e - b, 0)], "data_offsets": [b, e]} for i, (b, e) in enumerate(offsets)}
    _assert_parses_or_named(_header_with(entries) + bytes(payload))
