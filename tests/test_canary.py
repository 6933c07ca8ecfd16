"""The canary's judgement in isolation (no SGLang import): windows, scope, robustness, settings.

The same hook runs inside the real ``update_spec_metrics`` in tests/test_plugin_serving.py;
here it is called directly, with a fake ``sglang.srt.runtime_context`` where a test needs
a published config.
"""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path
from typing import Any, Iterator

import pytest

from sglang_glm_mtp import synthetic
from sglang_glm_mtp.plugin import canary, settings
from sglang_glm_mtp.plugin.preflight import run_preflight
from sglang_glm_mtp.plugin.settings import CanarySettings
from sglang_glm_mtp.plugin.state import PluginState

LOGGER = "sglang_glm_mtp.plugin.canary"


@pytest.fixture(autouse=True)
def fresh_canary(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delitem(sys.modules, "sglang.srt.runtime_context", raising=False)  # nothing published
    canary.configure_canary(CanarySettings())
    yield
    canary.configure_canary(CanarySettings())


def reporter(logging_rank: bool = True) -> Any:
    return types.SimpleNamespace(is_stats_logging_rank=logging_rank)


def steps(rep: Any, n: int, bs: int, accept_length: float) -> None:
    tokens = round(bs * accept_length)
    for _ in range(n):
        assert canary.on_verify_step(None, rep, bs, tokens - bs, num_accept_tokens=tokens,
                                     num_block_accept_tokens=0, num_cap_tokens=0) is None


def published(monkeypatch: pytest.MonkeyPatch, *, architecture: str | None = "GlmMoeDsaForCausalLM",
              num_draft_tokens: int | None = 4, algorithm: str | None = "EAGLE",
              state: PluginState | None = None) -> None:
    state = state or PluginState(architecture=architecture)
    server_args = types.SimpleNamespace(_glm_mtp_state=state)
    spec = types.SimpleNamespace(speculative_num_draft_tokens=num_draft_tokens, speculative_algorithm=algorithm,
                                 speculative_draft_model_path="/models/GLM-5.2-NVFP4")
    fake = types.ModuleType("sglang.srt.runtime_context")
    fake.get_context = lambda: types.SimpleNamespace(server_args=server_args)  # type: ignore[attr-defined]
    fake.get_spec = lambda: spec  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sglang.srt.runtime_context", fake)


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.ERROR]


def test_defaults_judge_after_200_verify_steps(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    rep = reporter()
    steps(rep, 199, 32, 1.0)
    assert errors(caplog) == [] and canary.canary_snapshot()["status"] == "warming-up"
    steps(rep, 1, 32, 1.0)
    assert len(errors(caplog)) == 1
    snap = canary.canary_snapshot()
    assert snap["status"] == "tripped" and snap["steps"] == 200 and snap["mean_accept_length"] == 1.0
    steps(rep, 1000, 32, 1.0)
    assert len(errors(caplog)) == 1, "one ERROR, not one per window"
    assert "Run: sglang-glm-mtp check <model>" in errors(caplog)[0]  # nothing published: no path to name


@pytest.mark.parametrize("tokens, trips", [(120, False), (119, True)])
def test_default_threshold_is_1_2(caplog: pytest.LogCaptureFixture, tokens: int, trips: bool) -> None:
    """Behaviour of the default threshold: a window averaging 1.20 passes, 1.19 trips."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    for _ in range(200):
        canary.on_verify_step(None, reporter(), 100, tokens - 100, num_accept_tokens=tokens,
                              num_block_accept_tokens=0, num_cap_tokens=0)
    assert (len(errors(caplog)) == 1) is trips
    assert canary.canary_snapshot()["status"] == ("tripped" if trips else "ok")


def test_snapshot_reports_the_configured_thresholds() -> None:
    canary.configure_canary(CanarySettings(min_accept_length=1.7, warmup_steps=3, min_draft_tokens=5))
    snap = canary.canary_snapshot()
    assert (snap["min_accept_length"], snap["warmup_steps"], snap["min_draft_tokens"]) == (1.7, 3, 5)


def test_mean_is_token_weighted_and_the_threshold_is_strict() -> None:
    canary.configure_canary(CanarySettings(warmup_steps=2))
    rep = reporter()
    steps(rep, 1, 1, 3.0)  # a lone request accepting 3 ...
    steps(rep, 1, 9, 1.0)  # ... does not hide nine accepting 1: (3 + 9) / 10 = 1.2
    snap = canary.canary_snapshot()
    assert snap["last_window_mean_accept_length"] == 1.2
    assert snap["status"] == "ok", "equal to the threshold is not below it"


def test_published_config_names_the_checkpoint(monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    published(monkeypatch)
    canary.configure_canary(CanarySettings(warmup_steps=10))
    steps(reporter(), 10, 4, 1.0)
    (message,) = errors(caplog)
    assert "up to 4 tokens per step" in message
    assert "Run: sglang-glm-mtp check /models/GLM-5.2-NVFP4" in message
    assert "no startup preflight ran" in message
    assert canary.canary_snapshot()["num_draft_tokens"] == 4


@pytest.mark.parametrize("family, architecture", [("glm-ocr", "GlmOcrForConditionalGeneration"),
                                                  ("glm5.3-flash", "Glm5NextForConditionalGeneration")])
def test_startup_evidence_spells_the_draft_layer_as_the_checkpoint_does(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path, family: str,
        architecture: str) -> None:
    """GLM-OCR and GLM-5.3-Flash keep their draft layer under ``model.language_model.layers.N`` (families.py); the
    record the preflight wrote carries that spelling and the ERROR names it (it used to say ``model.layers.N``)."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    checkpoint = synthetic.tiny_bf16(tmp_path / family, family)
    result = run_preflight(str(checkpoint), None, architecture)
    assert result is not None and result.status == "ready"
    layer = f"model.language_model.layers.{result.draft_layer}"
    assert result.draft_prefix == layer
    published(monkeypatch, state=PluginState(architecture=architecture, draft_path=str(checkpoint), preflight=result))
    canary.configure_canary(CanarySettings(warmup_steps=10))
    steps(reporter(), 10, 4, 1.0)
    (message,) = errors(caplog)
    assert f"Seen at startup: draft layer {layer} ready, {result.found_tensors}/{result.found_tensors} tensors, " \
           "stored bf16" in message, message


@pytest.mark.parametrize("architecture", ["Qwen3NextForCausalLM", None])
def test_judges_every_draft_not_only_known_families(monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture,
                                                    architecture: str | None) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    published(monkeypatch, architecture=architecture)
    canary.configure_canary(CanarySettings(warmup_steps=10))
    steps(reporter(), 10, 4, 1.0)
    (message,) = errors(caplog)
    assert "drafts are being rejected" in message
    assert "sglang-glm-mtp check" not in message, "check does not know this architecture: no advice to run it"
    assert "ships this architecture's MTP weights" in message


@pytest.mark.parametrize("kwargs, reason", [
    ({"num_draft_tokens": 1}, "speculative_num_draft_tokens=1: nothing to accept"),
])
def test_stands_down_where_there_is_nothing_to_judge(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture,
                                                     kwargs: dict[str, Any], reason: str) -> None:
    published(monkeypatch, **kwargs)
    canary.configure_canary(CanarySettings(warmup_steps=5))
    steps(reporter(), 50, 4, 1.0)
    snap = canary.canary_snapshot()
    assert errors(caplog) == [] and snap["status"] == "off" and reason in snap["reason"] and snap["steps"] == 0


def test_two_draft_tokens_are_judged(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The smallest draft that can accept something (min_draft_tokens = 2) is watched, not stood down."""
    published(monkeypatch, num_draft_tokens=2)
    canary.configure_canary(CanarySettings(warmup_steps=5))
    steps(reporter(), 5, 4, 1.0)
    assert canary.canary_snapshot()["status"] != "off" and len(errors(caplog)) == 1


def test_no_speculative_decoding_reports_off(monkeypatch: pytest.MonkeyPatch) -> None:
    published(monkeypatch, algorithm=None)
    snap = canary.canary_snapshot()
    assert snap["status"] == "off" and snap["reason"] == "no speculative decoding on this server"


def test_only_the_stats_logging_rank_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    canary.configure_canary(CanarySettings(warmup_steps=10))
    steps(reporter(logging_rank=False), 10, 4, 1.0)
    assert errors(caplog) == []
    assert canary.canary_snapshot()["tripped"], "every rank keeps the state"


def test_switched_off_does_nothing(caplog: pytest.LogCaptureFixture) -> None:
    canary.configure_canary(CanarySettings(enabled=False, warmup_steps=1))
    steps(reporter(), 10, 4, 1.0)
    snap = canary.canary_snapshot()
    assert errors(caplog) == [] and snap["status"] == "off" and snap["steps"] == 0 and not snap["enabled"]


def test_empty_batches_are_not_steps() -> None:
    canary.configure_canary(CanarySettings(warmup_steps=1))
    canary.on_verify_step(None, reporter(), 0, 0, num_accept_tokens=0)
    assert canary.canary_snapshot()["steps"] == 0 and canary.canary_snapshot()["status"] == "warming-up"


def test_never_raises_into_the_scheduler_loop(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    canary.configure_canary(CanarySettings(warmup_steps=1))
    assert canary.on_verify_step(None, reporter(), 4, 0, num_accept_tokens=None) is None  # type: ignore[arg-type]
    snap = canary.canary_snapshot()
    assert snap["status"] == "off" and "internal error" in snap["reason"]
    assert canary.on_verify_step(None, reporter(), 4, 0, num_accept_tokens=4) is None


def test_positional_call_shape() -> None:
    canary.configure_canary(CanarySettings(warmup_steps=1))
    canary.on_verify_step(None, reporter(), 2, 4, 6, 0, 0)  # every argument positional
    assert canary.canary_snapshot()["last_window_mean_accept_length"] == 3.0


#: The defaults docs/plugin.md documents (checked against the doc below), spelled out, not CanarySettings().
DOCUMENTED_DEFAULTS = CanarySettings(enabled=True, min_accept_length=1.2, warmup_steps=200, min_draft_tokens=2)


def test_documented_defaults_are_the_doc_s() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "plugin.md").read_text()
    assert f"`{settings.CANARY_MIN_ACCEPT_ENV}` ({DOCUMENTED_DEFAULTS.min_accept_length})" in doc
    assert f"`{settings.CANARY_WARMUP_ENV}` ({DOCUMENTED_DEFAULTS.warmup_steps})" in doc


@pytest.mark.parametrize("env, expected", [
    ({}, DOCUMENTED_DEFAULTS),
    ({settings.CANARY_ENV: "0"}, CanarySettings(enabled=False)),
    ({settings.CANARY_ENV: "off"}, CanarySettings(enabled=False)),
    ({settings.CANARY_MIN_ACCEPT_ENV: "1.6", settings.CANARY_WARMUP_ENV: "50"},
     CanarySettings(min_accept_length=1.6, warmup_steps=50)),
    ({settings.CANARY_WARMUP_ENV: "0"}, CanarySettings(warmup_steps=1)),  # at least one step per window
    ({settings.CANARY_WARMUP_ENV: "lots"}, DOCUMENTED_DEFAULTS),  # logged, defaults kept
])
def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                   expected: CanarySettings) -> None:
    for name in (settings.CANARY_ENV, settings.CANARY_MIN_ACCEPT_ENV, settings.CANARY_WARMUP_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert settings.canary_settings() == expected
