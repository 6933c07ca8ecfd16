"""Shared fixtures: synthetic checkpoints are cheap (well under a second), so each test gets fresh ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants

from sglang_glm_mtp import synthetic


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
