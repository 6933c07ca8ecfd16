"""Shared fixtures: synthetic checkpoints are cheap (well under a second), so each test gets fresh ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from sglang_glm_mtp import synthetic


@pytest.fixture
def glm_pair(tmp_path: Path) -> synthetic.SyntheticPair:
    """Tiny GLM-5.2-like BF16 original (with layer 4) and NVFP4 target (without it)."""
    return synthetic.tiny_pair(tmp_path / "glm")


@pytest.fixture
def deepseek_pair(tmp_path: Path) -> synthetic.SyntheticPair:
    return synthetic.tiny_pair(tmp_path / "dsv3", family="deepseek-v3")
