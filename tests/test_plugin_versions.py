"""Clean degradation: a hook target the running SGLang lacks is never registered (issue 20).

Each case loads the plugin through SGLang's real ``load_plugins()`` in a fresh process
(tests/scenarios_versions.py) after removing, in that process, what an older release
lacks: ``build_server_info`` (0.5.20-0.5.21), the resolution-hook API (0.5.14-0.5.19),
``_resolve_nextn_quant_config`` (before it was introduced). The control removes nothing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from sglang_glm_mtp import synthetic
from sglang_glm_mtp.plugin import targets

from sglang_mode import plugin_only, run_scenario

pytestmark = [pytest.mark.sglang, plugin_only,
              pytest.mark.skipif(importlib.util.find_spec("sglang") is None, reason="needs sglang")]
SCENARIOS = Path(__file__).with_name("scenarios_versions.py")
GLM_RESOLVER = "sglang.srt.models.glm4_moe.GlmMoeDsaForCausalLMNextN._resolve_nextn_quant_config"
DSV3_RESOLVER = "sglang.srt.models.deepseek_nextn.DeepseekV3ForCausalLMNextN._resolve_nextn_quant_config"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("versions")
    return {"model": str(synthetic.tiny_pair(root / "ready", target_has_draft=True).target),
            "missing_model": str(synthetic.tiny_pair(root / "missing").target)}


def run(models: dict[str, str], **params: Any) -> dict[str, Any]:
    return run_scenario(SCENARIOS, "degradation", {**models, **params}, timeout=600)


def _errors_from_sglang(records: list[list[str]]) -> list[list[str]]:
    return [r for r in records if r[0].startswith("sglang.srt.plugins") and r[1] in ("ERROR", "CRITICAL")]


def _plugin_warnings(records: list[list[str]], contains: str = "") -> list[str]:
    return [r[2] for r in records if r[0].startswith("sglang_glm_mtp") and r[1] == "WARNING" and contains in r[2]]


@pytest.fixture(scope="module")
def control(models: dict[str, str]) -> dict[str, Any]:
    return run(models)


@pytest.fixture(scope="module")
def no_server_info(models: dict[str, str]) -> dict[str, Any]:
    """As on 0.5.20-0.5.21: no ``build_server_info``, and a version outside the tested range."""
    return run(models, delete=[targets.SERVER_INFO_TARGET], version="0.5.21")


@pytest.fixture(scope="module")
def no_resolution_hooks(models: dict[str, str]) -> dict[str, Any]:
    """As on 0.5.14-0.5.19 (no resolution-hook API), plus an SGLang without the draft-precision seam."""
    return run(models, delete=[targets.RESOLUTION_HOOKS, GLM_RESOLVER, DSV3_RESOLVER], version="0.5.19",
               draft_hooks=True)


def test_control_every_target_registered_and_nothing_said(control: dict[str, Any]) -> None:
    """A tested SGLang with every target: all hooked, no warning, nothing unavailable, strict passes."""
    records = control["load_logs"] + control["logs"]
    assert set(targets.EAGER_TARGETS) <= set(control["patched"]), control["patched"]
    assert control["unavailable"] == {} and _plugin_warnings(records) == [], records
    assert _errors_from_sglang(records) == []
    assert control["default"]["ok"] and "preflight" in control["default"]["state"], control["default"]
    assert control["missing_layer"]["error_type"] == "DraftLayerMissingError", control["missing_layer"]
    assert control["strict"]["ok"], control["strict"]
    for section in (control["main_section"], control["scheduler_section"]):
        assert "unavailable" not in section and "sglang_untested" not in section, section


def test_missing_server_info_target_is_skipped_with_one_warning(no_server_info: dict[str, Any]) -> None:
    result = no_server_info
    records = result["load_logs"]
    assert targets.SERVER_INFO_TARGET not in result["registered"], "a missing target must never reach SGLang"
    assert _errors_from_sglang(records) == [], "SGLang's hook registry logged an ERROR"
    warned = _plugin_warnings(records, targets.SERVER_INFO_TARGET)
    assert len(warned) == 1 and "top-level glm_mtp section" in warned[0], records
    assert "not available" in warned[0] or "unavailable" in warned[0]
    # every other behaviour is kept
    kept = set(targets.EAGER_TARGETS) - {targets.SERVER_INFO_TARGET}
    assert kept <= set(result["patched"]), result["patched"]
    assert result["default"]["ok"] and "preflight" in result["default"]["state"], result["default"]
    assert result["missing_layer"]["error_type"] == "DraftLayerMissingError", result["missing_layer"]
    # shown in server info (the per-scheduler section is what this SGLang still serves)
    shown = result["scheduler_section"]["unavailable"]["server_info"]
    assert shown["targets"] == [targets.SERVER_INFO_TARGET] and shown["lost"], shown
    assert "preflight" not in result["scheduler_section"]["unavailable"]


def test_outside_the_tested_range_one_warning_names_the_range(no_server_info: dict[str, Any],
                                                              control: dict[str, Any]) -> None:
    version = _plugin_warnings(no_server_info["load_logs"], "outside the tested range")
    assert len(version) == 1 and targets.TESTED_RANGE in version[0] and "0.5.21" in version[0], version
    assert no_server_info["scheduler_section"]["sglang_untested"] == {"version": "0.5.21",
                                                                      "tested_range": targets.TESTED_RANGE}
    assert _plugin_warnings(control["load_logs"], "outside the tested range") == []


def test_strict_mode_refuses_naming_the_missing_target(no_server_info: dict[str, Any]) -> None:
    strict = no_server_info["strict"]
    assert not strict["ok"] and strict["error_type"] == "PluginStrictModeError", strict
    assert targets.SERVER_INFO_TARGET in strict["error"] and "server_info unavailable" in strict["error"]


def test_without_the_resolution_api_the_rest_is_kept(no_resolution_hooks: dict[str, Any]) -> None:
    result = no_resolution_hooks
    records = result["load_logs"]
    assert _errors_from_sglang(records + result["logs"]) == []
    warned = _plugin_warnings(records, targets.RESOLUTION_HOOKS)
    assert len(warned) == 1 and "no preflight" in warned[0], records
    assert set(targets.EAGER_TARGETS) <= set(result["patched"]), result["patched"]
    # the preflight is gone (SGLang starts on a checkpoint without the draft layer), and said so
    assert result["missing_layer"]["ok"], result["missing_layer"]
    assert set(result["unavailable"]) == {"preflight", "runner", "strict"}, result["unavailable"]


def test_strict_mode_refuses_at_the_flag_without_a_resolution_step(no_resolution_hooks: dict[str, Any]) -> None:
    strict = no_resolution_hooks["strict"]
    assert not strict["ok"] and strict["error_type"] == "PluginStrictModeError", strict
    assert targets.RESOLUTION_HOOKS in strict["error"], strict


def test_missing_lazy_target_is_skipped_and_coverage_kept(no_resolution_hooks: dict[str, Any]) -> None:
    """The draft's precision seam is absent: not registered, one WARNING; its coverage hook still installs."""
    result = no_resolution_hooks
    coverage = "sglang.srt.models.glm4_moe.GlmMoeDsaForCausalLMNextN.load_weights"
    assert result["draft_hooked"] == [coverage], result["draft_hooked"]
    assert GLM_RESOLVER not in result["patched_after_draft"]
    assert _errors_from_sglang(result["logs"]) == []
    assert len(_plugin_warnings(result["logs"], GLM_RESOLVER)) == 1, result["logs"]
    assert result["unavailable_after_draft"]["draft_precision"]["targets"] == [GLM_RESOLVER, DSV3_RESOLVER]


def test_check_report_on_the_sglang_under_test() -> None:
    """``python -m sglang_glm_mtp.plugin.targets --check --json`` on the real SGLang: every target as the table
    expects for this release (0.5.22 lacks only the FP8 block-size resolver, as the table says), exit 0."""
    import json
    import sys

    from sglang_mode import SGLANG_VERSION, run_in_own_group, subprocess_env

    proc = run_in_own_group([sys.executable, "-m", "sglang_glm_mtp.plugin.targets", "--check", "--json"],
                            timeout=600, env=subprocess_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["sglang"] == SGLANG_VERSION and report["tested"] is True
    statuses = {t["name"]: t["status"] for t in report["targets"]}
    expected_absent = {targets.FP8_DRAFT_BLOCK_SIZE} if SGLANG_VERSION == "0.5.22" else set()
    assert {n for n, s in statuses.items() if s != "ok"} == expected_absent, statuses
    assert all(statuses[n] == "missing-expected" for n in expected_absent)
