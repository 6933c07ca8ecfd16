"""The preflight's draft-only index read agrees with the whole-index read wherever it answers.

``IndexScan.draft_only`` finds the draft layer's entries in the index's bytes instead of
decoding all of them; it must either return exactly what the decoded map gives (draft
entries, their shards, the scale suffixes present) or None, and ``inspect_checkpoint(...,
Scope.PREFLIGHT)`` must give the whole-index verdict for every defect it can see.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sglang_glm_mtp import synthetic
from sglang_glm_mtp.checkpoint import jsonio
from sglang_glm_mtp.checkpoint.index_scan import IndexScan
from sglang_glm_mtp.checkpoint.inspection import Scope, _Inspection, inspect_checkpoint
from sglang_glm_mtp.checkpoint.source import LocalCheckpoint

PREFIXES = ("model.layers.4.",)


def _agrees(doc: Any, raw: bytes, prefixes: tuple[str, ...] = PREFIXES) -> IndexScan | None:
    fast = IndexScan.draft_only(raw, prefixes)
    if fast is None:
        return None
    whole = IndexScan.of(doc["weight_map"], prefixes)
    assert whole is not None
    assert fast.weight_map == {name: whole.weight_map[name] for name in whole.draft_names}
    assert sorted(fast.draft_names) == sorted(whole.draft_names)
    assert fast.quant_suffixes == whole.quant_suffixes
    assert fast.metadata == doc.get("metadata")
    return fast


def _doc(weight_map: dict[str, Any], metadata: Any = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"weight_map": weight_map}
    if metadata is not None:
        doc["metadata"] = metadata
    return doc


MAP = {"model.layers.3.mlp.gate.weight": "a.safetensors", "model.layers.4.enorm.weight": "b.safetensors",
       "model.layers.4.mlp.experts.0.down_proj.weight_scale_2": "b.safetensors",
       "model.layers.40.hnorm.weight": "a.safetensors", "lm_head.weight": "a.safetensors"}


@pytest.mark.parametrize("dump", [
    lambda d: json.dumps(d), lambda d: json.dumps(d, indent=2), lambda d: json.dumps(d, separators=(",", ":")),
    lambda d: json.dumps(d, indent="\t", sort_keys=True), lambda d: json.dumps(d).replace(": ", " :  \n"),
], ids=["default", "indent", "compact", "tabs-sorted", "odd-spacing"])
def test_formatting_does_not_change_what_it_finds(dump: Any) -> None:
    doc = _doc(MAP, {"total_size": 8})
    assert _agrees(doc, dump(doc).encode()) is not None


def test_duplicates_values_and_metadata_that_look_like_draft_keys() -> None:
    raw = (b'{"metadata": {"model.layers.4.fake.weight": "x.safetensors"}, "weight_map": {'
           b'"model.layers.4.enorm.weight": "a.safetensors", "x": "model.layers.4.not_a_key", '
           b'"model.layers.4.enorm.weight": "b.safetensors", "y.weight_scale_inv": "a.safetensors"}}')
    fast = _agrees(json.loads(raw), raw)
    assert fast is not None and fast.weight_map == {"model.layers.4.enorm.weight": "b.safetensors"}
    assert fast.quant_suffixes == {".weight_scale_inv"}


@pytest.mark.parametrize("raw", [
    b'{"weight_map": {"model.layers.4.enorm.weight": 7}}',  # a draft value that is no file name
    b'{"weight_map": {"model.layers.4.e\\u006eorm.weight": "a.safetensors"}}',  # an escape: keys not verbatim
    '{"weight_map": {"model.layers.4.énorm.weight": "a.safetensors"}}'.encode(),  # not ASCII
    b'{"weight_map": ["model.layers.4.enorm.weight"]}',
    b'{"weight_map": {"model.layers.4.enorm.weight": "a.safetensors"}, "metadata": [1]}',
    b'{"weight_map": {"model.layers.4.enorm.weight": "a.safetensors"}',  # truncated
    b'{"metadata": {}}',
    b'{"weight_map": {}, "metadata": {"total_size": NaN}}',
], ids=["number-value", "escape", "non-ascii", "list", "metadata-list", "truncated", "no-weight-map", "nan"])
def test_anything_outside_the_contract_falls_back(raw: bytes) -> None:
    assert IndexScan.draft_only(raw, PREFIXES) is None


_PART = st.sampled_from(["model", "layers", "4", "40", "mlp", "enorm", "weight", "weight_scale_2",
                         "weight_scale_inv", "x"])
_NAME = st.lists(_PART, min_size=1, max_size=6).map(".".join)


@settings(max_examples=300, deadline=None)
@given(weight_map=st.dictionaries(_NAME, st.sampled_from(["a.safetensors", "b.safetensors"]), max_size=12),
       indent=st.none() | st.integers(0, 3), compact=st.booleans(), seed=st.integers(0, 9))
def test_generated_maps_agree(weight_map: dict[str, str], indent: int | None, compact: bool, seed: int) -> None:
    items = list(weight_map.items())
    random.Random(seed).shuffle(items)
    doc = _doc(dict(items), {"total_size": 1})
    separators = (",", ":") if compact else None
    raw = json.dumps(doc, indent=indent, separators=separators).encode()
    assert _agrees(doc, raw) is not None


CODES = [*synthetic.VARIANTS, "draft-layer-missing", "draft-precision-unsupported"]
#: Defects outside the draft layer's own entries: the preflight leaves them to SGLang's loader, which raises
#: for an index naming a missing shard (weight_utils.filter_duplicate_safetensors_files) before serving.
LEFT_TO_SGLANG = {"index-missing-shard"}


def _facts(report: Any) -> tuple[Any, ...]:
    return (report.status, report.found_tensors, report.expected_tensors, report.draft_precision,
            report.target_precision, report.draft_shards, [(p.code, p.severity) for p in report.problems])


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("variants")
    return {code: synthetic.make_variant(root / code, code) for code in CODES}


@pytest.mark.parametrize("code", CODES)
def test_preflight_verdict_is_the_whole_index_verdict(variants: dict[str, Path], code: str) -> None:
    source = LocalCheckpoint(variants[code])
    fast = _Inspection(source, Scope.PREFLIGHT)
    fast.run()
    assert fast.partial_index, "the draft-only read must serve the synthetic layouts (else this test proves nothing)"
    got = inspect_checkpoint(source, Scope.PREFLIGHT)
    whole = _Inspection(source, Scope.PREFLIGHT, whole_index=True).run()
    if code in LEFT_TO_SGLANG:
        assert got.status == "ready" and whole.status == "invalid"
        assert [p.code for p in whole.problems] == [code] and not got.problems
    else:
        assert _facts(got) == _facts(whole)


def test_without_msgspec_the_whole_index_is_read(variants: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """msgspec is optional outside SGLang: without it the preflight decodes the whole index, same verdict."""
    monkeypatch.setattr(jsonio, "_msgspec", None)
    source = LocalCheckpoint(variants["ready"])
    inspection = _Inspection(source, Scope.PREFLIGHT)
    assert inspection.run().status == "ready" and not inspection.partial_index
