"""The plugin's record on ServerArgs (``plugin/state.py``), without SGLang: what it carries, what server info shows
of it, and the draft layer spelled as the checkpoint spells it wherever the scheduler names it.

The record's trip to real scheduler processes inside SGLang's pickled ServerArgs is asserted by
tests/test_plugin_serving.py (``travelled to the scheduler on the pickled record``) and the TP ranks of
tests/test_plugin_draft.py.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import types
from dataclasses import fields

import pytest

from sglang_glm_mtp import synthetic
from sglang_glm_mtp.plugin import draft_precision
from sglang_glm_mtp.plugin.preflight import PreflightResult, run_preflight
from sglang_glm_mtp.plugin.state import (STATE_ATTR, PluginState, RunnerChoice, plugin_state, published_state,
                                         set_plugin_state)

OCR = "GlmOcrForConditionalGeneration"
#: The preflight keys /server_info has always shown (docs/plugin.md); the record may carry more.
SERVER_INFO_PREFLIGHT_KEYS = ["checkpoint", "status", "architecture", "draft_layer", "found_tensors",
                              "expected_tensors", "draft_precision", "target_precision", "draft_shards", "skipped"]


@pytest.fixture(scope="module")
def ocr_result(tmp_path_factory: pytest.TempPathFactory) -> PreflightResult:
    checkpoint = synthetic.tiny_bf16(tmp_path_factory.mktemp("ocr") / "glm-ocr", "glm-ocr")
    result = run_preflight(str(checkpoint), None, OCR)
    assert result is not None and result.status == "ready"
    return result


def publish(monkeypatch: pytest.MonkeyPatch, state: PluginState | None) -> types.SimpleNamespace:
    """A scheduler's published ServerArgs, as ``sglang.srt.runtime_context`` hands it out."""
    server_args = types.SimpleNamespace()
    if state is not None:
        set_plugin_state(server_args, state)
    fake = types.ModuleType("sglang.srt.runtime_context")
    fake.get_context = lambda: types.SimpleNamespace(server_args=server_args)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sglang.srt.runtime_context", fake)
    return server_args


def test_record_carries_the_checkpoint_s_spelling_of_the_draft_layer(ocr_result: PreflightResult) -> None:
    layer = f"model.language_model.layers.{ocr_result.draft_layer}"
    assert ocr_result.draft_prefix == layer
    assert PluginState(architecture=OCR, preflight=ocr_result).draft_layer_name() == layer
    # a record without the spelling (no preflight read) asks the family table, never assumes model.layers.N
    bare = PreflightResult.not_run("x", OCR)
    assert PluginState(architecture=OCR, preflight=bare).draft_layer_name() == "the draft layer"
    unread = PreflightResult("x", "ready", OCR, ocr_result.draft_layer, 1, 1, "bf16", None, [])
    assert PluginState(architecture=OCR, preflight=unread).draft_layer_name() == layer


def test_scheduler_evidence_names_the_glm_ocr_draft_layer(monkeypatch: pytest.MonkeyPatch,
                                                          ocr_result: PreflightResult) -> None:
    """The draft-precision log line's evidence (a scheduler reading the main process's record)."""
    publish(monkeypatch, PluginState(architecture=OCR, preflight=ocr_result))
    storage = draft_precision.draft_storage()
    layer = f"model.language_model.layers.{ocr_result.draft_layer}"
    assert storage.precision == "bf16" and storage.prefix == layer
    assert f"{ocr_result.found_tensors} tensors of {layer} in " in storage.evidence, storage.evidence


@pytest.mark.parametrize("stored, expected", [("model.layers.{N}", "model.layers.{N}"),
                                              (None, "model.language_model.layers.{N}"),
                                              ("model.other.{N}", "model.language_model.layers.{N}")])
def test_draft_quant_config_uses_the_spelling_the_checkpoint_was_read_with(stored: str | None, expected: str) -> None:
    """GLM-5.3-Flash accepts two spellings; its exclusions are remapped from the one the checkpoint uses."""
    config = types.SimpleNamespace(text_config=types.SimpleNamespace(num_hidden_layers=4))
    layer, name = draft_precision._draft_layer_name(
        config, ["Glm5NextForConditionalGenerationNextN"], stored.format(N=4) if stored else None)
    assert (layer, name) == (4, expected.format(N=4))


def test_server_info_shows_what_it_always_showed(ocr_result: PreflightResult) -> None:
    assert [f.name for f in fields(PreflightResult)][:len(SERVER_INFO_PREFLIGHT_KEYS)] == SERVER_INFO_PREFLIGHT_KEYS
    runner = RunnerChoice("triton", "pre-blackwell-bf16-draft", "why")
    state = PluginState(architecture=OCR, draft_path="/m", draft_revision="r", preflight=ocr_result, moe_runner=runner)
    section = state.server_info()
    assert list(section) == ["architecture", "preflight", "moe_runner"]
    assert list(section["preflight"]) == SERVER_INFO_PREFLIGHT_KEYS
    assert section["moe_runner"] == {"backend": "triton", "rule": "pre-blackwell-bf16-draft", "reason": "why"}
    json.dumps(section)  # builtins only (the scheduler's copy crosses ZMQ as msgpack)
    # keys appear only once decided, as before: an unknown family records its architecture alone
    assert PluginState(architecture="Qwen3NextForCausalLM").server_info() == {"architecture": "Qwen3NextForCausalLM"}
    assert PluginState().server_info() == {}


def test_record_pickles_and_crosses_json(ocr_result: PreflightResult) -> None:
    state = PluginState(architecture=OCR, draft_path="/m", preflight=ocr_result,
                        moe_runner=RunnerChoice(None, "user-flag", "given"))
    assert pickle.loads(pickle.dumps(state)) == state
    # and in another interpreter, as a spawned scheduler unpickles it (without SGLang: the record needs none)
    code = ("import pickle, sys; state = pickle.loads(sys.stdin.buffer.read()); "
            "print(state.draft_layer_name(), state.moe_runner.rule, type(state.preflight).__name__)")
    proc = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(state), capture_output=True, timeout=120)
    assert proc.stdout.decode().split() == [ocr_result.draft_prefix, "user-flag", "PreflightResult"], proc.stderr
    assert PluginState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    assert PluginState.from_dict(None) == PluginState()


def test_one_accessor_one_setter(monkeypatch: pytest.MonkeyPatch) -> None:
    server_args = types.SimpleNamespace()
    assert plugin_state(server_args) == PluginState()  # nothing written: an empty record, nothing stored
    assert not hasattr(server_args, STATE_ATTR)
    set_plugin_state(server_args, PluginState(architecture=OCR))
    assert plugin_state(server_args).architecture == OCR
    monkeypatch.delitem(sys.modules, "sglang.srt.runtime_context", raising=False)
    assert published_state() is None  # no SGLang in this process: nothing published
    publish(monkeypatch, None)
    assert published_state() == PluginState()


def test_unpublished_context_is_nothing_published(monkeypatch: pytest.MonkeyPatch) -> None:
    """SGLang's own "not set yet" (a ValueError) means nothing published; any other error is not swallowed."""
    class Unset:
        @property
        def server_args(self) -> None:
            raise ValueError("Global server args is not set yet!")

    fake = types.ModuleType("sglang.srt.runtime_context")
    fake.get_context = Unset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sglang.srt.runtime_context", fake)
    assert published_state() is None
    fake.get_context = lambda: 1 / 0  # type: ignore[attr-defined]
    with pytest.raises(ZeroDivisionError):
        published_state()


def test_explicit_draft_quantization_is_read_from_the_record_s_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's flag is on the published record as given: found without asking SGLang's resolved view."""
    server_args = publish(monkeypatch, PluginState())
    server_args.speculative_draft_model_quantization = "unquant"
    assert draft_precision.explicit_draft_quantization() == "unquant"


def test_a_server_info_section_reads_back(ocr_result: PreflightResult) -> None:
    """A ``server_info()`` section (no draft source, no prefix) reads back; the family table spells the layer."""
    doc = PluginState(architecture=OCR, preflight=ocr_result).server_info()
    state = PluginState.from_dict(doc)
    assert state.preflight is not None and state.preflight.draft_prefix is None
    assert state.draft_layer_name() == f"model.language_model.layers.{ocr_result.draft_layer}"

