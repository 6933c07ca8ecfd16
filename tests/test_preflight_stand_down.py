"""Nothing to judge: the preflight stands down, ``check`` says ``no-weights``.

A folder holding config.json only (the fixture SGLang's own tests resolve, or a
download that has not fetched the shards) has no missing draft layer: it has no
weights at all, and SGLang's loader refuses it itself. Neither does
``--load-format dummy`` (or any format that reads no safetensors) read the layer.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from sglang_glm_mtp import synthetic
from sglang_glm_mtp.checkpoint.inspection import inspect_checkpoint
from sglang_glm_mtp.cli import main
from sglang_glm_mtp.plugin.preflight import DraftLayerMissingError, run_preflight

ARCH = "GlmMoeDsaForCausalLM"


@pytest.fixture
def missing(tmp_path: Path) -> Path:
    """A tiny GLM-5 target that declares a NextN layer and does not ship it."""
    return synthetic.tiny_pair(tmp_path / "pair").target


@pytest.fixture
def config_only(tmp_path: Path, missing: Path) -> Path:
    folder = tmp_path / "config-only"
    folder.mkdir()
    shutil.copyfile(missing / "config.json", folder / "config.json")
    return folder


def _stand_down_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("sglang_glm_mtp") and r.levelno >= logging.INFO]


def test_preflight_stands_down_on_a_folder_without_weights(config_only: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="sglang_glm_mtp"):
        assert run_preflight(str(config_only), None, ARCH) is None
    records = _stand_down_lines(caplog)
    assert [r.levelno for r in records] == [logging.INFO], [r.getMessage() for r in records]
    assert "stands down" in records[0].getMessage() and "no weight files" in records[0].getMessage()


@pytest.mark.parametrize("load_format", ["dummy", "pt", "remote", "gguf"])
def test_preflight_stands_down_for_load_formats_that_read_no_safetensors(
        missing: Path, load_format: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="sglang_glm_mtp"):
        assert run_preflight(str(missing), None, ARCH, load_format) is None
    records = _stand_down_lines(caplog)
    assert [r.levelno for r in records] == [logging.INFO], [r.getMessage() for r in records]
    assert f"--load-format {load_format} does not load" in records[0].getMessage()


@pytest.mark.parametrize("load_format", [None, "auto", "safetensors", "fastsafetensors"])
def test_preflight_still_refuses_a_missing_layer_for_formats_that_read_it(missing: Path,
                                                                          load_format: str | None) -> None:
    with pytest.raises(DraftLayerMissingError, match="is missing"):
        run_preflight(str(missing), None, ARCH, load_format)


def test_check_reports_no_weights_as_its_own_status(config_only: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = inspect_checkpoint(str(config_only))
    assert report.status == "no-weights" and report.exit_code == 2 and not report.ok
    assert report.draft_prefix and report.missing == [] and report.problems == []
    assert main(["check", str(config_only)]) == 2
    text = capsys.readouterr().out
    assert "NO-WEIGHTS" in text and "holds no weight files" in text and "missing" not in text.lower().split(
        "status:")[1]
    assert main(["check", "--json", str(config_only)]) == 2
    assert json.loads(capsys.readouterr().out)["status"] == "no-weights"


def test_check_still_reports_a_missing_layer_when_weights_exist(missing: Path) -> None:
    report = inspect_checkpoint(str(missing))
    assert report.status == "missing" and report.exit_code == 1
