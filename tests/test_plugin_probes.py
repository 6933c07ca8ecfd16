"""The plugin's probes and switches, in process (no SGLang import needed for these code paths).

A probe that fails must say so and must not be remembered as an answer; the skip switch
must bypass everything the preflight does, before any file is read.
"""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path

import pytest

from sglang_glm_mtp import synthetic
from sglang_glm_mtp.plugin import preflight, resolution, settings, upstream

GLM = "GlmMoeDsaForCausalLM"


def test_skip_switch_bypasses_the_whole_preflight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    missing = synthetic.tiny_pair(tmp_path).target
    with pytest.raises(preflight.DraftLayerMissingError):
        preflight.run_preflight(str(missing), None, GLM)
    monkeypatch.setenv(settings.SKIP_PREFLIGHT_ENV, "1")
    monkeypatch.setattr(preflight, "open_draft_source", lambda *a: pytest.fail("the skip switch must read nothing"))
    with caplog.at_level(logging.WARNING):
        result = preflight.run_preflight(str(missing), None, GLM)
    assert result is not None and result.skipped and result.status == "skipped" and result.found_tensors == 0
    assert f"{settings.SKIP_PREFLIGHT_ENV}=1, starting anyway" in caplog.text


def test_preflight_turns_any_failure_into_one_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    ready = synthetic.tiny_pair(tmp_path, target_has_draft=True).target
    assert preflight.run_preflight(str(ready), None, GLM).status == "ready"

    def explode(_source: object, **_kw: object) -> None:
        raise TypeError("a bug in the plugin")

    monkeypatch.setattr(preflight, "inspect_checkpoint", explode)
    with caplog.at_level(logging.WARNING):
        assert preflight.run_preflight(str(ready), None, GLM) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "TypeError: a bug in the plugin" in warnings[0].getMessage()
    assert "post-load coverage check" in warnings[0].getMessage()


def test_failed_upstream_probe_is_warned_and_not_cached(monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(upstream, "MARKERS", {"probe": ("glm_mtp_test_marker_module", "the_fix")})
    monkeypatch.setattr(upstream, "_answers", {})
    real_import = upstream.importlib.import_module

    def broken_import(name: str) -> object:
        if name == "glm_mtp_test_marker_module":
            raise OSError("libcuda.so: cannot open shared object file")
        return real_import(name)

    monkeypatch.setattr(upstream.importlib, "import_module", broken_import)
    with caplog.at_level(logging.WARNING):
        assert upstream.has_fix("probe") is False
    assert "OSError: libcuda.so" in caplog.text
    monkeypatch.setitem(sys.modules, "glm_mtp_test_marker_module", types.SimpleNamespace(the_fix=True))
    assert upstream.has_fix("probe") is True, "the failed probe must not have been cached as 'no fix'"


def test_absent_upstream_module_is_a_cached_no(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream, "MARKERS", {"probe": ("glm_mtp_no_such_module_anywhere", "the_fix")})
    monkeypatch.setattr(upstream, "_answers", {})
    assert upstream.has_fix("probe") is False
    assert upstream._answers == {"probe": False}


def test_failed_gpu_probe_is_a_warning_with_its_cause(caplog: pytest.LogCaptureFixture) -> None:
    class NoNvml:
        @property
        def device_sm(self) -> int:
            raise RuntimeError("NVML Shared Library Not Found")

    with caplog.at_level(logging.WARNING):
        assert resolution._device_sm(NoNvml()) is None
    assert "NVML Shared Library Not Found" in caplog.text and "unknown GPU" in caplog.text
    assert resolution._device_sm(types.SimpleNamespace(device_sm=100)) == 100
