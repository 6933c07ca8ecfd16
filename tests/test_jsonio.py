"""The fast index decoder returns exactly what the plain JSON decode returns, or the plain decode's own error.

``jsonio.loads_index`` decodes ``model.safetensors.index.json`` with msgspec against the shard
files on disk; every input outside that shape must fall back, so that no verdict of
``check`` or the preflight depends on which decoder ran.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sglang_glm_mtp import synthetic
from sglang_glm_mtp.checkpoint import jsonio
from sglang_glm_mtp.checkpoint.files import INDEX_FILE
from sglang_glm_mtp.checkpoint.inspection import inspect_checkpoint
from sglang_glm_mtp.checkpoint.source import LocalCheckpoint

SHARDS = ("a.safetensors", "b.safetensors")


def _plain(data: bytes) -> Any:
    """The stdlib's answer, with jsonio's one documented change: too deep a nesting is a ValueError."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("too deep") from None


def _same(data: bytes, shards: tuple[str, ...] = SHARDS) -> None:
    """loads_index agrees with json.loads on everything inspection and graft read, errors included."""
    try:
        expected = _plain(data)
    except ValueError:
        with pytest.raises(ValueError):
            jsonio.loads_index(data, shards)
        return
    got = jsonio.loads_index(data, shards)
    if isinstance(expected, dict):
        assert _typed(got.get("weight_map")) == _typed(expected.get("weight_map"))
        assert _typed(got.get("metadata")) == _typed(expected.get("metadata"))
    else:
        assert _typed(got) == _typed(expected)


def _typed(value: Any) -> Any:
    """``value`` with each scalar paired with its type: 2**64 and 1.8446744073709552e+19 are == but not the same."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return type(value).__name__, value


EDGE_CASES = {
    "plain": b'{"metadata": {"total_size": 8}, "weight_map": {"x": "a.safetensors", "y": "b.safetensors"}}',
    "duplicate key, last wins": b'{"weight_map": {"x": "a.safetensors", "x": "b.safetensors"}}',
    "duplicate weight_map, last wins": b'{"weight_map": {"x": "a.safetensors"}, "weight_map": {"y": "b.safetensors"}}',
    "file not on disk": b'{"weight_map": {"x": "c.safetensors"}}',
    "non-string value": b'{"weight_map": {"x": 1}}',
    "list value": b'{"weight_map": {"x": ["a.safetensors"]}}',
    "weight_map a list": b'{"weight_map": []}',
    "no weight_map": b'{"metadata": {}}',
    "top-level list": b'[1, 2]',
    "escaped value": b'{"weight_map": {"x": "a.safet\\u0065nsors"}}',
    "escaped key": b'{"weight_map": {"x\\u0041": "a.safetensors"}}',
    "invalid UTF-8": b'{"weight_map": {"x\xff": "a.safetensors"}}',
    "BOM": b'\xef\xbb\xbf{"weight_map": {"x": "a.safetensors"}}',
    "NaN in metadata": b'{"weight_map": {"x": "a.safetensors"}, "metadata": {"total_size": NaN}}',
    "huge int": b'{"weight_map": {"x": "a.safetensors"}, "metadata": {"total_size": 123456789012345678901234567890}}',
    "float": b'{"weight_map": {"x": "a.safetensors"}, "metadata": {"total_size": 1e400}}',
    "metadata null": b'{"weight_map": {"x": "a.safetensors"}, "metadata": null}',
    "metadata a list": b'{"weight_map": {"x": "a.safetensors"}, "metadata": [1]}',
    "truncated": b'{"weight_map": {"x": "a.safetensors"',
    "trailing comma": b'{"weight_map": {"x": "a.safetensors",}}',
    "trailing garbage": b'{"weight_map": {}} x',
    "empty": b'',
    "deeply nested": b'{"metadata": ' + b'[' * 100_000 + b']' * 100_000 + b', "weight_map": {}}',
}


@pytest.mark.parametrize("data", EDGE_CASES.values(), ids=EDGE_CASES.keys())
def test_edge_cases_decode_as_the_stdlib_does(data: bytes) -> None:
    _same(data)


#: Integers at the 64-bit edges: msgspec alone gives a float beyond them, the stdlib the exact int.
INT_EDGES = (-2**63 - 1, -2**63, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -10**30, 10**30, 10**400)


@pytest.mark.parametrize("where", ["metadata", "nested metadata", "weight_map value", "other field"])
@pytest.mark.parametrize("number", INT_EDGES, ids=str)
def test_integers_beyond_64_bits_decode_as_the_stdlib_does(number: int, where: str) -> None:
    """Pinned: the fast paths return the stdlib's exact int for every integer, never msgspec's float."""
    doc: dict[str, Any] = {"weight_map": {"x": "a.safetensors"}, "metadata": {"total_size": 8}}
    if where == "metadata":
        doc["metadata"]["total_size"] = number
    elif where == "nested metadata":
        doc["metadata"]["parts"] = [{"n": number}]
    elif where == "weight_map value":
        doc["weight_map"]["y"] = number
    else:
        doc["format"] = number
    data = json.dumps(doc).encode()
    _same(data)
    expected = _typed(json.loads(data)["metadata"])
    assert _typed(jsonio.loads_index(data, SHARDS)["metadata"]) == expected
    parts = jsonio.index_parts(data)
    assert parts is not None and _typed(parts[1]) == expected
    assert _typed(jsonio.loads(data)) == _typed(json.loads(data))  # the generic path (orjson) as well


_names = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)


#: Integers are drawn unbounded on purpose: the decoder contract covers every integer (INT_EDGES pins the edge,
#: the examples below run it on every run, whatever Hypothesis draws or has saved in .hypothesis/).
@settings(max_examples=200, deadline=None)
@example(weight_map={"x": "a.safetensors"}, metadata={"total_size": -2**63 - 1}, indent=None)
@example(weight_map={"x": 2**64}, metadata={"total_size": 2**63}, indent=None)
@given(weight_map=st.dictionaries(_names, st.sampled_from(SHARDS + ("c.safetensors",)) | st.integers(), max_size=8),
       metadata=st.none() | st.dictionaries(_names, st.integers() | st.text(max_size=5), max_size=3),
       indent=st.none() | st.integers(0, 2))
def test_generated_indexes_decode_as_the_stdlib_does(weight_map: dict[str, Any], metadata: Any,
                                                      indent: int | None) -> None:
    doc: dict[str, Any] = {"weight_map": weight_map}
    if metadata is not None:
        doc["metadata"] = metadata
    _same(json.dumps(doc, indent=indent).encode())
    _same(json.dumps(doc, ensure_ascii=False).encode())


def test_real_layout_takes_the_fast_path_and_shares_its_values(tmp_path: Path) -> None:
    """The point of the fast path: one string per shard, not one per tensor (and the same mapping)."""
    target = synthetic.tiny_pair(tmp_path / "pair", target_has_draft=True).target
    data = (target / INDEX_FILE).read_bytes()
    shards = [p.name for p in target.glob("*.safetensors")]
    got = jsonio.loads_index(data, shards)
    assert got == {k: v for k, v in json.loads(data).items() if k in ("weight_map", "metadata")}
    values = got["weight_map"].values()
    assert len({id(v) for v in values}) == len(set(values)) < len(values)


def test_without_msgspec_the_generic_decoder_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonio, "_msgspec", None)
    _same(EDGE_CASES["plain"])
    _same(EDGE_CASES["file not on disk"])


def test_the_index_memo_decodes_once_and_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The preflight's cache check and its inspection share one decode; other readers decode afresh."""
    target = synthetic.tiny_pair(tmp_path / "pair", target_has_draft=True).target
    calls: list[int] = []
    real = jsonio.loads_index
    monkeypatch.setattr("sglang_glm_mtp.checkpoint.source.loads_index",
                        lambda *a: calls.append(1) or real(*a))
    memo = LocalCheckpoint(target, index_memo={})
    first = memo.read_json(INDEX_FILE)
    assert inspect_checkpoint(memo).status == "ready"
    assert memo.read_json(INDEX_FILE) is first and len(calls) == 1
    plain = LocalCheckpoint(target)
    assert plain.read_json(INDEX_FILE) is not plain.read_json(INDEX_FILE) and len(calls) == 3
