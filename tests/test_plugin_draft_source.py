"""Which copy of a Hub draft the preflight judges, in process: a stale complete cache and the loopback Hub.

A complete cache of an older commit (``refs/main`` not refreshed since) may lack a draft
the Hub's current commit has: online, a refusal found there is confirmed on the Hub;
with the Hub unreachable, nothing is judged (one warning, the post-load check decides).
The cache is a real huggingface_hub cache, filled through huggingface_hub's own calls.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download, snapshot_download

from fake_hub import FakeHub
from sglang_glm_mtp import synthetic
from sglang_glm_mtp.checkpoint.source import is_hub_repo_id
from sglang_glm_mtp.plugin import preflight
from sglang_glm_mtp.plugin.draft_source import open_draft_source

GLM = "GlmMoeDsaForCausalLM"
REPO = "org/repaired"
#: the commit the repair was pushed as (the stale cache holds the fake Hub's default commit)
NEW_COMMIT = "5" * 40


def _single_file(directory: Path) -> Path:
    """The same checkpoint as one ``model.safetensors`` and no index, as small releases ship."""
    (directory / synthetic.INDEX_FILE).unlink()
    shards = sorted(directory.glob("*.safetensors"))
    assert len(shards) == 1, shards
    shards[0].rename(directory / "model.safetensors")
    return directory


def _pair(root: Path, layout: str) -> tuple[Path, Path]:
    """(the old commit without its draft, the repaired one with it), sharded or as a single file."""
    if layout == "sharded":
        return (synthetic.tiny_pair(root / "old").target,
                synthetic.tiny_pair(root / "new", target_has_draft=True).target)
    cfg = synthetic.tiny_glm52_config()
    dirs = []
    for name, with_draft in (("old", False), ("new", True)):
        directory = root / name
        synthetic.write_checkpoint(directory, cfg, synthetic.model_specs(cfg, "bf16", with_draft=with_draft),
                                   num_shards=1)
        dirs.append(_single_file(directory))
    return dirs[0], dirs[1]


@pytest.fixture(params=["sharded", "single-file"])
def stale(request: pytest.FixtureRequest, tmp_path: Path, isolated_hf: None, no_backoff_sleep: None,
          monkeypatch: pytest.MonkeyPatch) -> tuple[FakeHub, str]:
    """A complete cache of the old commit; the Hub (started, endpoint set) serves the repaired one. Yields the
    Hub and the layout."""
    old, new = _pair(tmp_path, request.param)
    with FakeHub({REPO: old}) as hub:
        snapshot_download(REPO, endpoint=hub.endpoint)  # the old commit, fully downloaded
    hub = FakeHub({REPO: new}, revisions={REPO: {"main": NEW_COMMIT}}).start()
    request.addfinalizer(hub.stop)
    # As HF_ENDPOINT set before launch does: huggingface_hub derives both at import time.
    monkeypatch.setattr(hf_constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    return hub, request.param


@pytest.mark.parametrize("offline", ["1", "true", "ON"])
def test_stale_complete_cache_is_judged_from_the_cache_and_refused_offline(
        stale: tuple[FakeHub, str], monkeypatch: pytest.MonkeyPatch, offline: str) -> None:
    """Offline (as huggingface_hub spells it), a complete cache is what SGLang loads: its missing draft is refused
    (single file included)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    found = open_draft_source(REPO, None)
    assert found.kind == "cache" and found.hub is None, found
    with pytest.raises(preflight.DraftLayerMissingError):
        preflight.run_preflight(REPO, None, GLM)


def test_stale_complete_cache_refusal_is_confirmed_on_the_hub(stale: tuple[FakeHub, str],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """Online, the cache says missing, the Hub's current commit has the draft: the verdict is the Hub's, ready."""
    hub, _ = stale
    found = open_draft_source(REPO, None)
    assert found.kind == "cache" and found.hub is not None and found.hub.repo_id == REPO, found
    with caplog.at_level(logging.INFO, logger="sglang_glm_mtp"):
        result = preflight.run_preflight(REPO, None, GLM)
    assert result is not None and result.status == "ready" and result.checkpoint == REPO, result
    assert "confirming on the Hub" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert hub.request_count(REPO) > 0


def test_stale_complete_cache_with_the_hub_unreachable_is_left_to_post_load(
        stale: tuple[FakeHub, str], caplog: pytest.LogCaptureFixture) -> None:
    """Online but the Hub is down: a possibly stale refusal is not enforced; one warning, no verdict."""
    hub, _ = stale
    hub.stop()
    with caplog.at_level(logging.WARNING, logger="sglang_glm_mtp"):
        assert preflight.run_preflight(REPO, None, GLM) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "the Hub cannot confirm it" in warnings[0] and "post-load coverage check" in warnings[0]


@pytest.mark.parametrize("offline", [False, True])
def test_a_partial_cache_is_never_judged(tmp_path: Path, isolated_hf: None, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture, offline: bool) -> None:
    """A first launch's cache (config and index, no shards) of a missing draft: online the Hub is read (which
    refuses, as it should); offline nothing is judged, with one warning."""
    missing = synthetic.tiny_pair(tmp_path / "m").target
    with FakeHub({REPO: missing}) as hub:
        for name in ("config.json", synthetic.INDEX_FILE):
            hf_hub_download(REPO, name, endpoint=hub.endpoint)
        monkeypatch.setattr(hf_constants, "ENDPOINT", hub.endpoint)
        monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        if offline:
            monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        found = open_draft_source(REPO, None)
        assert (found.kind, "3 of 3 shards not downloaded yet" in found.why) == ("none" if offline else "hub", True)
        if not offline:
            with pytest.raises(preflight.DraftLayerMissingError):
                preflight.run_preflight(REPO, None, GLM)
            return
        with caplog.at_level(logging.WARNING, logger="sglang_glm_mtp"):
            assert preflight.run_preflight(REPO, None, GLM) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "HF_HUB_OFFLINE" in warnings[0], warnings


def test_an_incomplete_layer_is_refused_as_missing_tensors(tmp_path: Path) -> None:
    """Part of the draft layer present: the refusal is DraftLayerMissingError, naming how many are missing."""
    incomplete = synthetic.make_variant(tmp_path, "draft-layer-incomplete")
    with pytest.raises(preflight.DraftLayerMissingError, match="is incomplete: 3 of 35 expected tensors"):
        preflight.run_preflight(str(incomplete), None, GLM)


#: (string, is it a Hub repo id?) as a user passes --model-path or --speculative-draft-model-path
HUB_IDS = {
    "zai-org/GLM-5.2": True, "deepseek-ai/DeepSeek-V3": True, "org/name": True, "a/b": True,
    "user_1/model.v2-final": True, "Org.Name/x_y": True, "9org/9": True,
    "a/b/c": False, "org/name@main": False, "org/name ": False, " org/name": False, "org/na me": False,
    "org/name\n": False, "org/": False, "/name": False, "org": False, "": False, "-org/name": False,
    ".org/name": False, "_org/name": False, "/abs/path": False, "./org/name": False, "~/org": False,
    "org\\name": False, "org/name/": False,
}


@pytest.mark.parametrize("name", HUB_IDS, ids=repr)
def test_is_hub_repo_id(name: str) -> None:
    assert is_hub_repo_id(name) is HUB_IDS[name]


def test_a_non_hub_string_reads_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``a/b/c`` (no directory, no Hub id): no cache lookup, no Hub request, no verdict."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sglang_glm_mtp.plugin.draft_source.resolve_cached_hub_snapshot",
                        lambda *a: pytest.fail("not a Hub id: the cache must not be asked"))
    found = open_draft_source("a/b/c", None)
    assert (found.source, found.kind) == (None, "none") and "not a Hub id" in found.why
