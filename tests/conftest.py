"""Shared fixtures: synthetic checkpoints are cheap (well under a second), so each test gets fresh ones."""

from __future__ import annotations

import importlib.util
import os
import signal
import threading
from pathlib import Path
from types import FrameType

import pytest
from huggingface_hub import constants as hf_constants

from sglang_glm_mtp import synthetic

#: CI providers set CI=true (GitHub Actions, GitLab, ...); there a missing SGLang is a broken install, not a choice.
CI_ENV = "CI"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM ends the run like Ctrl-C, so ``finally`` blocks run and scenario process groups are killed
    (a bare SIGTERM would leave them running; tests/sglang_mode.py kills a group with SIGTERM first)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``sglang`` need SGLang (0.5.23 from the test extra; 0.5.22 too): skipped without it, except
    under CI, where the run fails."""
    needing = [item for item in items if item.get_closest_marker("sglang")]
    if not needing or importlib.util.find_spec("sglang") is not None:
        return
    if _truthy(os.environ.get(CI_ENV)):
        pytest.exit(f"CI={os.environ[CI_ENV]} but SGLang is not importable here, so {len(needing)} tests that drive "
                    "the real SGLang would be skipped; install it (pip install -e \".[test]\") or unset CI",
                    returncode=pytest.ExitCode.USAGE_ERROR)
    skip = pytest.mark.skip(reason="needs sglang>=0.5.22,<0.5.24 (pip install -e \".[test]\")")
    for item in needing:
        item.add_marker(skip)


@pytest.fixture
def glm_pair(tmp_path: Path) -> synthetic.SyntheticPair:
    """Tiny GLM-5.2-like BF16 original (with layer 4) and NVFP4 target (without it)."""
    return synthetic.tiny_pair(tmp_path / "glm")


@pytest.fixture
def deepseek_pair(tmp_path: Path) -> synthetic.SyntheticPair:
    return synthetic.tiny_pair(tmp_path / "dsv3", family="deepseek-v3")


@pytest.fixture
def isolated_hf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep huggingface_hub off the user's cache/token and out of offline mode."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    # constants were read at import time; the cache dir is what default downloads use.
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def no_backoff_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub sleeps 1s, 2s, ... between retries; tests need not wait."""
    import huggingface_hub.file_download as fd
    import huggingface_hub.utils._http as hf_http

    monkeypatch.setattr(hf_http.time, "sleep", lambda _s: None)
    monkeypatch.setattr(fd.time, "sleep", lambda _s: None)
