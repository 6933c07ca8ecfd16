"""The plugin while serving, against the real SGLang 0.5.23: /server_info sections and the canary.

One subprocess per scenario family (tests/scenarios_serving.py): the real entry point,
resolution, ``build_server_info``, the scheduler's published record, the real
``update_spec_metrics`` and ``Scheduler.get_internal_state``. Everything here is the
plugin's own behaviour, so the module is ``plugin_only`` (tests/sglang_mode.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fake_sglang_server import FakeSGLangServer
from sglang_mode import plugin_only, run_scenario

from sglang_glm_mtp import synthetic
from sglang_glm_mtp.plugin.registration import CANARY_TARGET, EAGER_TARGETS, SERVER_INFO_TARGET

pytestmark = [pytest.mark.sglang, plugin_only]
SCENARIOS = Path(__file__).with_name("scenarios_serving.py")


def run_family(family: str, params: dict[str, Any], **env: str) -> dict[str, Any]:
    return run_scenario(SCENARIOS, family, params, **env)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("serving")
    return {"ready": str(synthetic.tiny_pair(root / "ready", target_has_draft=True).target),
            "missing": str(synthetic.tiny_pair(root / "missing").target)}


#: (name, verify steps, requests per step, mean accept length); warm-up window 20, threshold 1.5 (env below)
PHASES = [
    ("healthy", 20, 4, 3.0),
    ("garbage", 60, 8, 1.0),  # three windows below the threshold: one ERROR
    ("just-below", 20, 20, 1.45),  # still tripped: nothing new
    ("recovered", 20, 4, 2.5),
    ("collapsed-again", 20, 4, 1.25),
]


@pytest.fixture(scope="module")
def serving(checkpoints: dict[str, str]) -> dict[str, Any]:
    return run_family("serving", {**checkpoints, "phases": PHASES},
                      SGLANG_GLM_MTP_CANARY_WARMUP_STEPS="20", SGLANG_GLM_MTP_CANARY_MIN_ACCEPT_LENGTH="1.5")


def test_every_eager_target_is_hooked_through_the_entry_point(serving: dict[str, Any]) -> None:
    assert set(EAGER_TARGETS) <= set(serving["patched"])
    # the hooked names are the functions SGLang really calls: the HTTP route's build_server_info and the
    # reporter method the scenario drives (a wrong target would leave these unwrapped)
    assert serving["server_info"]["wrapped"] and serving["hooked"] == {SERVER_INFO_TARGET: True, CANARY_TARGET: True}


def test_server_info_top_level_section(serving: dict[str, Any]) -> None:
    info = serving["server_info"]
    assert info["wrapped"] and info["http_server_bound"], "the /server_info route must call the hooked function"
    assert info["has_fields"], "SGLang's own fields are untouched"
    section = info["glm_mtp"]
    assert section["version"]
    assert section["architecture"] == "GlmMoeDsaForCausalLM"
    assert section["preflight"]["status"] == "ready" and section["preflight"]["found_tensors"] == 35
    assert section["preflight"]["draft_precision"] == "bf16"
    assert section["moe_runner"]["backend"] == "flashinfer_cutlass"
    assert section["moe_runner"]["rule"] == "blackwell-bf16-draft"


def test_server_info_scheduler_section(serving: dict[str, Any]) -> None:
    state = serving["internal_state"]
    assert state["has_resolved_fields"] and state["avg_spec_accept_length"] == 3.0  # SGLang's own, untouched
    section = state["glm_mtp"]
    assert section["preflight"]["status"] == "ready"  # travelled to the scheduler on the pickled record
    assert section["moe_runner"]["backend"] == "flashinfer_cutlass"
    canary = section["canary"]
    assert canary["status"] == "tripped" and canary["trips"] == 2
    assert canary["min_accept_length"] == 1.5 and canary["warmup_steps"] == 20 and canary["num_draft_tokens"] == 4
    assert canary["steps"] == sum(p[1] for p in PHASES)


def test_canary_thresholds_come_from_the_environment(serving: dict[str, Any]) -> None:
    before = serving["canary_settings"]
    assert before["status"] == "waiting" and before["enabled"]
    assert before["min_accept_length"] == 1.5 and before["warmup_steps"] == 20


def test_canary_logs_one_error_then_rearms_after_recovery(serving: dict[str, Any]) -> None:
    phases = {p["name"]: p for p in serving["phases"]}
    assert phases["healthy"]["logs"] == []
    assert phases["healthy"]["snapshot"]["status"] == "ok"
    assert phases["healthy"]["snapshot"]["last_window_mean_accept_length"] == 3.0

    errors = phases["garbage"]["logs"]
    assert [level for level, _ in errors] == ["ERROR"], "exactly one ERROR for three bad windows"
    message = errors[0][1]
    assert message.startswith("glm_mtp: speculative drafts are being rejected: mean accept length 1.00 "
                              "over the last 20 verify steps (threshold 1.50; up to 4 tokens per step)")
    for cause in ("draft weights missing", "wrong precision", "draft MoE runner", "check that was skipped"):
        assert cause in message
    assert f"Run: sglang-glm-mtp check {serving['server_info']['glm_mtp']['preflight']['checkpoint']}" in message
    assert "docs/troubleshooting.md" in message
    assert "draft MoE runner flashinfer_cutlass (blackwell-bf16-draft)" in message  # startup evidence
    assert phases["garbage"]["snapshot"]["tripped"] and phases["garbage"]["snapshot"]["trips"] == 1

    assert phases["just-below"]["logs"] == []
    assert phases["just-below"]["snapshot"]["last_window_mean_accept_length"] == 1.45

    recovered = phases["recovered"]["logs"]
    assert [level for level, _ in recovered] == ["WARNING"] and "re-armed" in recovered[0][1]
    assert phases["recovered"]["snapshot"]["status"] == "ok" and not phases["recovered"]["snapshot"]["tripped"]

    again = phases["collapsed-again"]["logs"]
    assert [level for level, _ in again] == ["ERROR"] and "mean accept length 1.25" in again[0][1]
    assert phases["collapsed-again"]["snapshot"]["trips"] == 2


def test_sglang_counters_are_unchanged_by_the_hook(serving: dict[str, Any]) -> None:
    tokens = sum(steps * round(bs * accept) for _, steps, bs, accept in PHASES)
    requests = sum(steps * bs for _, steps, bs, _ in PHASES)
    assert serving["sglang_counters"] == {"accept_tokens": tokens, "forward_ct": requests}


def test_canary_defaults_catch_a_launch_that_skipped_the_preflight(serving: dict[str, Any]) -> None:
    section = serving["skipped_server_info"]
    assert section["preflight"]["status"] == "skipped" and section["preflight"]["skipped"]  # nothing was read
    before = serving["skipped_before_warmup"]
    assert before["logs"] == [] and before["snapshot"]["status"] == "warming-up" and before["snapshot"]["steps"] == 199
    after = serving["skipped_after_warmup"]
    assert [level for level, _ in after["logs"]] == ["ERROR"]
    message = after["logs"][0][1]
    assert "mean accept length 1.00 over the last 200 verify steps (threshold 1.20" in message
    assert "the startup preflight was skipped (SGLANG_GLM_MTP_SKIP_PREFLIGHT=1)" in message
    assert "never checked before launch" in message
    assert f"sglang-glm-mtp check {section['preflight']['checkpoint']}" in message
    assert after["snapshot"]["status"] == "tripped"


def test_canary_switched_off(checkpoints: dict[str, str]) -> None:
    result = run_family("canary_off", checkpoints, SGLANG_GLM_MTP_CANARY="0")
    assert CANARY_TARGET in result["patched"], "installed anyway: strict mode (--enable-plugin) sees every target"
    assert result["logs"] == []
    snapshot = result["snapshot"]
    assert snapshot["status"] == "off" and not snapshot["enabled"] and snapshot["steps"] == 0
    assert "SGLANG_GLM_MTP_CANARY=0" in snapshot["reason"]
    assert result["sglang_counters"] == {"accept_tokens": 4000, "forward_ct": 4000}
    assert result["internal_state"]["glm_mtp"]["canary"]["status"] == "off"


def test_fake_server_speaks_the_real_server_info_and_meta_info(serving: dict[str, Any]) -> None:
    """tests/fake_sglang_server.py (what the bench tests run against) against the real SGLang: every key of its
    /server_info is one the real ``build_server_info`` or the /server_info route produces, its scheduler state
    keys are the real ``get_internal_state`` reply's, and its speculative meta_info keys are exactly the ones
    SGLang's tokenizer manager computes."""
    real = serving["real_keys"]
    fake = FakeSGLangServer()
    info = fake.server_info()
    assert set(real["http_route"]) >= {"internal_states", "version", "frontend"}, real["http_route"]
    assert set(info) - set(real["build_server_info"]) - set(real["http_route"]) == set()
    for state in info["internal_states"]:
        assert set(state) - set(serving["internal_state"]["keys"]) == set(), serving["internal_state"]["keys"]
    assert set(fake.spec_meta(15, 3.0)) == set(real["spec_meta_info"])
