"""Launches as users start them: Hub ids with a cold or partial cache, online and offline, and odd files.

Never a false refusal: a checkpoint complete on the Hub must resolve whatever the cache
holds, and a draft is refused only when its absence is proven (read from the Hub, or from a
cache that holds every shard). Real SGLang 0.5.23 resolution in one subprocess per mode
(tests/scenarios_launch.py); the Hub is the loopback fake Hub, the cache a real
huggingface_hub cache on disk (filled here through huggingface_hub's own download calls).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import hf_hub_download, snapshot_download

from fake_hub import FakeHub
from sglang_glm_mtp import synthetic

from sglang_mode import PLUGIN_ACTIVE, plugin_only, run_scenario

pytestmark = pytest.mark.sglang
SCENARIOS = Path(__file__).with_name("scenarios_launch.py")
NEXTN_FP4 = ["--speculative-algorithm", "NEXTN", "--quantization", "modelopt_fp4"]


def _hub_env(endpoint: str, cache: Path, *, offline: bool) -> dict[str, str]:
    env = {"HF_ENDPOINT": endpoint, "HF_HUB_CACHE": str(cache), "HF_HUB_DISABLE_XET": "1",
           "HF_HOME": str(cache.parent / "hf_home")}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def _cache(repo: str, hub: FakeHub, cache: Path, files: list[str] | None) -> None:
    """Fill the cache as a partial first launch (``files``) or a finished download (None) leaves it."""
    if files is None:
        snapshot_download(repo, cache_dir=cache, endpoint=hub.endpoint)
        return
    for name in files:
        hf_hub_download(repo, name, cache_dir=cache, endpoint=hub.endpoint)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("launch")
    return {"ready": synthetic.tiny_pair(root / "ready", target_has_draft=True).target,
            "missing": synthetic.tiny_pair(root / "missing").target}


@pytest.fixture(scope="module")
def online(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """First launches from the Hub with an empty cache, and a stale complete cache of a since-repaired repo."""
    cache = tmp_path_factory.mktemp("online") / "hub"
    with FakeHub({"org/repaired": tiny["missing"]}) as old:
        _cache("org/repaired", old, cache, None)  # the broken revision, fully downloaded
    repos = {"org/ready": tiny["ready"], "org/missing": tiny["missing"], "org/repaired": tiny["ready"]}
    # The repair is a new commit on main, as a push makes it.
    with FakeHub(repos, revisions={"org/repaired": {"main": "5" * 40}}) as hub:
        cases = [{"name": "ready_cold", "model": "org/ready", "argv": NEXTN_FP4},
                 {"name": "missing_cold", "model": "org/missing", "argv": NEXTN_FP4},
                 {"name": "repaired_stale_cache", "model": "org/repaired", "argv": NEXTN_FP4}]
        result = run_scenario(SCENARIOS, "launch", {"cases": cases}, **_hub_env(hub.endpoint, cache, offline=False))
        result["served"] = {p.name: (hub.bytes_served("org/ready", p.name), p.stat().st_size)
                            for p in tiny["ready"].glob("*.safetensors")}
    return result


def _edit(checkpoint: Path, name: str, change: Any) -> None:
    path = checkpoint / name
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


#: Files SGLang itself accepts (it reads none of these fields at resolution) but the plugin once crashed on.
MALFORMED = {
    "index_metadata_list": ("model.safetensors.index.json", lambda d: d.__setitem__("metadata", [1, 2])),
    "index_weight_map_list": ("model.safetensors.index.json", lambda d: d.__setitem__("weight_map", [])),
    "exclude_null": ("hf_quant_config.json", lambda d: d["quantization"]["exclude_modules"].append(None)),
    "exclude_bad_regex": ("hf_quant_config.json",
                          lambda d: d["quantization"]["exclude_modules"].append("model.layers.[bad")),
    # a corrupt size: rejected at once as unreadable, never minutes spent listing a billion experts
    "absurd_experts": ("config.json", lambda d: d.__setitem__("n_routed_experts", 1_000_000_000)),
}
#: What the one warning names for each.
MALFORMED_NAMED = {"index_metadata_list": "metadata", "index_weight_map_list": "weight_map",
                   "exclude_null": "exclude_modules", "exclude_bad_regex": "model.layers.[bad",
                   "absurd_experts": "n_routed_experts"}
#: Files SGLang itself refuses: the error must be SGLang's, never one raised from the plugin.
REFUSED_BY_SGLANG = {
    "architectures_int": ("config.json", lambda d: d.__setitem__("architectures", 5)),
    "architectures_dict": ("config.json", lambda d: d.__setitem__("architectures", {"a": 1})),
}
A2A = ["--tp-size", "2", "--ep-size", "2", "--moe-a2a-backend", "deepep"]


@pytest.fixture(scope="module")
def offline(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """HF_HUB_OFFLINE=1 with what earlier (partial or finished) launches left in the cache; plus local dirs
    (which offline mode does not affect) with odd files and explicit draft flags, batched into the same process."""
    root = tmp_path_factory.mktemp("offline")
    cache = root / "hub"
    index = "model.safetensors.index.json"
    layouts = {"org/config-only": (tiny["ready"], ["config.json", "hf_quant_config.json"]),
               "org/config-index": (tiny["ready"], ["config.json", "hf_quant_config.json", index]),
               "org/missing-config-index": (tiny["missing"], ["config.json", "hf_quant_config.json", index]),
               "org/ready-full": (tiny["ready"], None),
               "org/missing-full": (tiny["missing"], None)}
    with FakeHub({repo: path for repo, (path, _) in layouts.items()}) as hub:
        for repo, (_, files) in layouts.items():
            _cache(repo, hub, cache, files)
        endpoint = hub.endpoint
    cases = [{"name": name.split("/")[1], "model": name, "argv": NEXTN_FP4} for name in layouts]
    for name, (file, change) in {**MALFORMED, **REFUSED_BY_SGLANG}.items():
        checkpoint = synthetic.copy_checkpoint(tiny["ready"], root / name)
        _edit(checkpoint, file, change)
        cases.append({"name": name, "model": str(checkpoint), "argv": NEXTN_FP4})
    cases += [{"name": "a2a_inherited", "model": str(tiny["ready"]), "argv": NEXTN_FP4 + A2A},
              {"name": "a2a_explicit", "model": str(tiny["ready"]),
               "argv": NEXTN_FP4 + A2A + ["--speculative-moe-a2a-backend", "deepep"]}]
    return run_scenario(SCENARIOS, "launch", {"cases": cases}, **_hub_env(endpoint, cache, offline=True))


def _preflight(case: dict[str, Any]) -> dict[str, Any] | None:
    return (case.get("state") or {}).get("preflight")


def test_hub_id_cold_cache_ready_resolves_from_hub_headers(online: dict[str, Any]) -> None:
    case = online["cases"]["ready_cold"]
    assert case["ok"], case
    if PLUGIN_ACTIVE:
        assert _preflight(case)["status"] == "ready" and _preflight(case)["found_tensors"] == 35
        assert not case["warnings"], case["warnings"]
    # Headers by Range: no shard was downloaded whole before the launch.
    assert all(served < size for served, size in online["served"].values()), online["served"]
    assert any(served for served, _ in online["served"].values()), "the preflight read the draft shard's header"


def test_hub_id_cold_cache_missing_refused_before_anything_spawns(online: dict[str, Any]) -> None:
    case = online["cases"]["missing_cold"]
    assert not case["ok"] and case["error_type"] == "DraftLayerMissingError", case
    assert "35 of 35" in case["error"] and case["children"] == 0


def test_repaired_repo_over_a_stale_complete_cache_resolves_from_the_hub(online: dict[str, Any]) -> None:
    """The cached revision lacks the draft, the Hub's has it since: the launch must resolve.

    SGLang 0.5.23 asks the Hub for the current commit and fetches its config.json before the preflight
    runs, so the preflight finds that commit's partial snapshot and reads the Hub; the stale complete
    snapshot is not what it judges. (Its confirm-on-the-Hub branch, for a complete cache whose refs/main
    nothing refreshed, is tested in process: tests/test_plugin_draft_source.py.)"""
    case = online["cases"]["repaired_stale_cache"]
    assert case["ok"], case
    if PLUGIN_ACTIVE:
        assert _preflight(case)["status"] == "ready" and _preflight(case)["checkpoint"] == "org/repaired"
        assert not case["warnings"], case["warnings"]
        assert "preflight read org/repaired from the Hub (headers only; the Hub cache holds part of it" \
            in online["_stderr"], online["_stderr"][-3000:]


@pytest.mark.parametrize("name", ["config-only", "config-index"])
def test_offline_partial_cache_of_ready_checkpoint_resolves_with_one_warning(offline: dict[str, Any],
                                                                             name: str) -> None:
    case = offline["cases"][name]
    assert case["ok"], case
    if PLUGIN_ACTIVE:
        assert _preflight(case) is None
        assert len(case["warnings"]) == 1 and "post-load coverage check" in case["warnings"][0], case["warnings"]
        assert "HF_HUB_OFFLINE" in case["warnings"][0]


def test_offline_partial_cache_of_missing_checkpoint_is_left_to_post_load(offline: dict[str, Any]) -> None:
    """Only the index is cached: not provably what SGLang will load (shards absent), so no refusal."""
    assert offline["cases"]["missing-config-index"]["ok"], offline["cases"]["missing-config-index"]


def test_offline_full_cache(offline: dict[str, Any]) -> None:
    ready, missing = offline["cases"]["ready-full"], offline["cases"]["missing-full"]
    assert ready["ok"], ready
    if PLUGIN_ACTIVE:
        assert _preflight(ready)["status"] == "ready" and not ready["warnings"]
    assert not missing["ok"] and missing["error_type"] == "DraftLayerMissingError", missing
    assert missing["children"] == 0


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_files_sglang_accepts_never_stop_the_launch(offline: dict[str, Any], name: str) -> None:
    case = offline["cases"][name]
    assert case["ok"], case
    if PLUGIN_ACTIVE:  # one warning that names what is wrong; no refusal, no traceback
        assert len(case["warnings"]) == 1, case["warnings"]
        assert MALFORMED_NAMED[name] in case["warnings"][0], case["warnings"]


@pytest.mark.parametrize("name", sorted(REFUSED_BY_SGLANG))
def test_malformed_files_sglang_refuses_are_refused_by_sglang_not_the_plugin(offline: dict[str, Any],
                                                                             name: str) -> None:
    case = offline["cases"][name]
    assert not case["ok"] and case["plugin_frames"] == [], case


@plugin_only
def test_explicit_draft_a2a_backend_is_left_alone(offline: dict[str, Any]) -> None:
    inherited, explicit = offline["cases"]["a2a_inherited"], offline["cases"]["a2a_explicit"]
    assert inherited["ok"] and explicit["ok"], (inherited, explicit)
    # The rule table's triton draft cannot share DeepEP: declared "none" only when the user said nothing.
    assert inherited["spec_runner"] == "triton" and inherited["spec_a2a"] == "none"
    assert explicit["spec_a2a"] == "deepep"
    assert any("--speculative-moe-a2a-backend deepep was given" in w for w in explicit["warnings"])
