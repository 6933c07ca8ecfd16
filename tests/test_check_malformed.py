"""``check`` on malformed files (issue 9): one actionable line and exit 2, never a traceback or minutes of work.

Every case starts from a complete, ready tiny checkpoint and breaks one file the way a
hand edit, a broken converter or a half-written download does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sglang_glm_mtp import synthetic
from sglang_glm_mtp.checkpoint import inspect_checkpoint
from sglang_glm_mtp.checkpoint.families import CONFIG_LIMITS
from sglang_glm_mtp.checkpoint.files import INDEX_FILE, QUANT_FILE
from sglang_glm_mtp.cli import main
from sglang_glm_mtp.errors import CheckpointUnreadable

Edit = Callable[[dict[str, Any]], None]


def _set(key: str, value: Any) -> Edit:
    return lambda doc: doc.__setitem__(key, value)


def _quant(key: str, value: Any) -> Edit:
    return lambda doc: doc["quantization"].__setitem__(key, value)


def _exclude_entry(value: Any) -> Edit:
    return lambda doc: doc["quantization"]["exclude_modules"].append(value)


def _weight_map_value(value: Any) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        first = next(iter(doc["weight_map"]))
        doc["weight_map"][first] = value
    return edit


#: (file, edit, words the one-line error must contain)
UNREADABLE: dict[str, tuple[str, Edit, tuple[str, ...]]] = {
    "architectures-int": ("config.json", _set("architectures", 5), ("architectures", "5")),
    "architectures-object": ("config.json", _set("architectures", {"a": 1}), ("architectures",)),
    "architectures-empty": ("config.json", _set("architectures", []), ("architectures",)),
    "hidden-size-string": ("config.json", _set("hidden_size", "x"), ("hidden_size", "integer")),
    "hidden-size-float": ("config.json", _set("hidden_size", 64.5), ("hidden_size", "integer")),
    "q-lora-rank-string": ("config.json", _set("q_lora_rank", "abc"), ("q_lora_rank",)),
    "index-topk-freq-string": ("config.json", _set("index_topk_freq", "x"), ("index_topk_freq",)),
    "heads-zero": ("config.json", _set("num_attention_heads", 0), ("num_attention_heads",)),
    "layers-negative": ("config.json", _set("num_hidden_layers", -3), ("num_hidden_layers",)),
    "layers-bool": ("config.json", _set("num_hidden_layers", True), ("num_hidden_layers", "integer")),
    "experts-1e9": ("config.json", _set("n_routed_experts", 1_000_000_000), ("n_routed_experts", "corrupt")),
    "layers-1e9": ("config.json", _set("num_hidden_layers", 1_000_000_000), ("num_hidden_layers", "corrupt")),
    "hidden-1e12": ("config.json", _set("hidden_size", 10**12), ("hidden_size", "corrupt")),
    "vocab-1e12": ("config.json", _set("vocab_size", 10**12), ("vocab_size", "corrupt")),
    "nextn-missing-field": ("config.json", lambda d: d.pop("kv_lora_rank"), ("kv_lora_rank",)),
    "quantization-config-list": ("config.json", _set("quantization_config", ["NVFP4"]), ("quantization_config",)),
    "weight-map-list": (INDEX_FILE, _set("weight_map", ["a", "b"]), ("weight_map",)),
    "weight-map-int-value": (INDEX_FILE, _weight_map_value(3), ("weight_map",)),
    "weight-map-null-value": (INDEX_FILE, _weight_map_value(None), ("weight_map",)),
    "index-is-list": (INDEX_FILE, lambda d: None, ("weight_map",)),  # replaced below by a JSON list
    "exclude-null": (QUANT_FILE, _exclude_entry(None), ("exclude_modules[", "None")),
    "exclude-int": (QUANT_FILE, _exclude_entry(7), ("exclude_modules[",)),
    "exclude-bad-regex": (QUANT_FILE, _exclude_entry("model.layers.[bad"), ("model.layers.[bad", "pattern")),
    "exclude-string": (QUANT_FILE, _quant("exclude_modules", "model.layers.4*"), ("exclude_modules", "list")),
    "quant-algo-int": (QUANT_FILE, _quant("quant_algo", 4), ("quant_algo",)),
    "quantization-list": (QUANT_FILE, _set("quantization", []), ("quantization",)),
}


@pytest.fixture(scope="module")
def ready_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pair = synthetic.tiny_pair(tmp_path_factory.mktemp("malformed"), target_has_draft=True)
    assert inspect_checkpoint(str(pair.target)).status == "ready"
    return pair.target


def _copy(ready_target: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(ready_target, tmp_path / "ckpt"))


def _edit(directory: Path, file: str, edit: Edit) -> None:
    path = directory / file
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_malformed_file_is_one_line_exit_2(ready_target: Path, tmp_path: Path, case: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    file, edit, words = UNREADABLE[case]
    target = _copy(ready_target, tmp_path)
    if case == "index-is-list":
        (target / INDEX_FILE).write_text("[1, 2]")
    else:
        _edit(target, file, edit)
    with pytest.raises(CheckpointUnreadable) as raised:
        inspect_checkpoint(str(target))
    message = str(raised.value)
    assert f"{target}/{file}" in message or (file == "config.json" and str(target) in message), message
    assert all(word in message for word in words), message
    assert main(["check", str(target)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sglang-glm-mtp check: error: "), captured.err
    assert "Traceback" not in captured.err


#: The largest value of each bounded field in a real config (GLM-5.3-Flash 288 experts, GLM-5.x 78 layers,
#: DeepSeek-V3 128 heads, GLM-4.x vocab ~151k, ...), rounded up; every field CONFIG_LIMITS bounds is named here.
REAL_MAXIMA = {"n_routed_experts": 288, "n_shared_experts": 2, "num_hidden_layers": 100, "num_nextn_predict_layers": 3,
               "first_k_dense_replace": 3, "num_attention_heads": 128, "num_key_value_heads": 128, "index_n_heads": 64,
               "vocab_size": 155_000, "hidden_size": 7168, "moe_intermediate_size": 2048, "intermediate_size": 18432}
#: Fields whose own bound sits below the generic one: a corrupt count there costs minutes, not one line.
TIGHTLY_BOUNDED = ("n_routed_experts", "n_shared_experts", "num_hidden_layers", "num_nextn_predict_layers",
                   "first_k_dense_replace", "num_attention_heads", "num_key_value_heads", "index_n_heads")


def test_bounds_admit_every_real_model() -> None:
    """The corrupt-file bounds sit far above the largest real configs, for every bounded field."""
    from sglang_glm_mtp.checkpoint.families import DEFAULT_INT_LIMITS, Config

    assert set(CONFIG_LIMITS) <= set(REAL_MAXIMA), "a bounded field without its real maximum"
    cfg = Config({**synthetic.GLM52_CONFIG, **REAL_MAXIMA})
    for key, value in REAL_MAXIMA.items():
        assert cfg.int(key) == value
        assert CONFIG_LIMITS.get(key, DEFAULT_INT_LIMITS)[1] >= 50 * value, key


@pytest.mark.parametrize("key", TIGHTLY_BOUNDED)
def test_a_count_between_its_bound_and_the_generic_one_is_corrupt(ready_target: Path, tmp_path: Path,
                                                                    key: str) -> None:
    """E.g. 100,000 experts: below the generic 16.7M bound, still one line instead of minutes of enumeration."""
    from sglang_glm_mtp.checkpoint.families import DEFAULT_INT_LIMITS

    value = 100_000
    assert REAL_MAXIMA[key] * 50 < value < DEFAULT_INT_LIMITS[1]
    target = _copy(ready_target, tmp_path)
    _edit(target, "config.json", _set(key, value))
    with pytest.raises(CheckpointUnreadable, match=f"{key}.*corrupt"):
        inspect_checkpoint(str(target))


def test_index_metadata_not_an_object_is_a_warning(ready_target: Path, tmp_path: Path) -> None:
    """SGLang never reads metadata: a list there must not stop anyone, but it is said."""
    target = _copy(ready_target, tmp_path)
    _edit(target, INDEX_FILE, _set("metadata", [1, 2]))
    report = inspect_checkpoint(str(target))
    assert report.status == "ready"
    assert [(p.code, p.severity) for p in report.problems] == [("total-size-mismatch", "warning")]
    assert "metadata is a JSON list" in report.problems[0].message
    assert main(["check", str(target)]) == 0


def test_absent_quant_entries_are_not_errors(ready_target: Path, tmp_path: Path) -> None:
    """``exclude_modules: null`` and a ``null`` quant_algo are absent values, not malformed ones."""
    target = _copy(ready_target, tmp_path)
    _edit(target, QUANT_FILE, _quant("exclude_modules", None))
    report = inspect_checkpoint(str(target))
    assert report.status == "ready", report.problems
    assert report.quant_config["draft_excluded"] is False


# ----------------------------------------------------------------------------- fuzzing the JSON readers

JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                    | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                max_size=4), max_leaves=10)
CONFIG_KEYS = ["architectures", "num_hidden_layers", "num_nextn_predict_layers", "hidden_size", "n_routed_experts",
               "q_lora_rank", "mlp_layer_types", "indexer_types", "index_topk_freq", "quantization_config",
               "vocab_size", "num_attention_heads", "first_k_dense_replace", "kv_lora_rank"]


def _only_named_errors(target: Path) -> None:
    try:
        inspect_checkpoint(str(target))
    except CheckpointUnreadable:
        pass  # the only exception inspect may raise


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(CONFIG_KEYS), value=JSON)
def test_fuzz_config_fields(ready_target: Path, tmp_path: Path, key: str, value: Any) -> None:
    target = tmp_path / "fuzz"
    if not target.exists():
        shutil.copytree(ready_target, target)
    doc = json.loads((ready_target / "config.json").read_text())
    doc[key] = value
    (target / "config.json").write_text(json.dumps(doc))
    _only_named_errors(target)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(["index", "metadata", "weight_map-value", "quant", "quantization", "exclude",
                              "exclude-entry"]), value=JSON)
def test_fuzz_index_and_quant_config(ready_target: Path, tmp_path: Path, where: str, value: Any) -> None:
    target = tmp_path / "fuzz"
    if not target.exists():
        shutil.copytree(ready_target, target)
    index = json.loads((ready_target / INDEX_FILE).read_text())
    quant = json.loads((ready_target / QUANT_FILE).read_text())
    if where == "index":
        index = value
    elif where == "metadata":
        index["metadata"] = value
    elif where == "weight_map-value":
        index["weight_map"][next(iter(index["weight_map"]))] = value
    elif where == "quant":
        quant = value
    elif where == "quantization":
        quant["quantization"] = value
    elif where == "exclude":
        quant["quantization"]["exclude_modules"] = value
    else:
        quant["quantization"]["exclude_modules"].append(value)
    (target / INDEX_FILE).write_text(json.dumps(index))
    (target / QUANT_FILE).write_text(json.dumps(quant))
    _only_named_errors(target)
