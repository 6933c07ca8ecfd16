"""``graft --into org/name`` when TARGET is a Hugging Face cache snapshot: an overlay with --out, the cache untouched."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from huggingface_hub import snapshot_download

from fake_hub import FakeHub
from graft_helpers import tensor_bytes
from sglang_glm_mtp import synthetic
from sglang_glm_mtp.checkpoint import inspect_checkpoint as inspect
from sglang_glm_mtp.cli import main

TARGET_REPO = "someone/GLM-5.2-NVFP4"


def _tree(root: Path) -> dict[str, str]:
    """Every entry under ``root``: symlinks by target, files by sha256 (the cache must not change)."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            elif path.is_file():
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


@pytest.fixture
def cached(glm_pair: synthetic.SyntheticPair, isolated_hf: None) -> Path:
    """TARGET downloaded into the (isolated) Hugging Face cache, as ``hf download org/name`` leaves it."""
    with FakeHub({TARGET_REPO: glm_pair.target}) as hub:
        return Path(snapshot_download(TARGET_REPO, endpoint=hub.endpoint, token=False))


def test_graft_into_a_cached_snapshot(glm_pair: synthetic.SyntheticPair, cached: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    cache_root = cached.parents[2]
    before = _tree(cache_root)
    out = tmp_path / "overlay"
    assert main(["graft", "--from", str(glm_pair.original), "--into", TARGET_REPO, "--out", str(out)]) == 0
    assert "Hugging Face cache" in capsys.readouterr().out
    assert _tree(cache_root) == before  # nothing written into the cache
    assert inspect(str(out)).status == "ready"
    assert tensor_bytes(out, "model.layers.4.") == tensor_bytes(glm_pair.original, "model.layers.4.")
    links = [p for p in out.iterdir() if p.is_symlink()]
    assert links and all(Path(os.readlink(p)).parent.name == "blobs" for p in links)  # the blobs themselves


def test_cached_target_needs_out(cached: Path, glm_pair: synthetic.SyntheticPair,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    before = _tree(cached.parents[2])
    assert main(["graft", "--from", str(glm_pair.original), "--into", TARGET_REPO]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "never writes into" in err and "--out DIR" in err
    assert _tree(cached.parents[2]) == before


def test_incomplete_cached_snapshot_is_refused(cached: Path, glm_pair: synthetic.SyntheticPair, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    shard = next(p for p in sorted(cached.iterdir()) if p.name.endswith(".safetensors"))
    shard.unlink()  # a download that stopped before this shard
    assert main(["graft", "--from", str(glm_pair.original), "--into", TARGET_REPO, "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is incomplete" in err and "shards not downloaded yet" in err
    assert f"hf download {TARGET_REPO}" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_hub_id_not_in_the_cache_says_how_to_download(glm_pair: synthetic.SyntheticPair, isolated_hf: None,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graft", "--from", str(glm_pair.original), "--into", "nobody/Nothing", "--out", "/tmp/x"]) == 2
    assert "hf download nobody/Nothing" in capsys.readouterr().err
