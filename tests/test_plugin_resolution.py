"""The plugin in SGLang's main process: discovery, preflight, draft MoE runner, --enable-plugin.

Everything runs the real SGLang 0.5.23 (entry-point discovery through ``load_plugins``,
``prepare_server_args`` + ``resolve_once`` as launch_server does) in one subprocess per
scenario family; only the GPU generation is emulated (tests/scenarios_resolution.py).
Mode-aware (tests/sglang_mode.py): against a patched SGLang with the plugin disabled the
same refusals and runner choices must come from SGLang itself; ``plugin_only`` tests and
branches assert on the plugin's own state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sglang_glm_mtp import synthetic

from sglang_mode import PLUGIN_ACTIVE, UPSTREAM, pick, plugin_only, run_scenario

pytestmark = pytest.mark.sglang
SCENARIOS = Path(__file__).with_name("scenarios_resolution.py")


def run_family(family: str, params: dict[str, Any], **env: str) -> dict[str, Any]:
    return run_scenario(SCENARIOS, family, params, **env)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("resolution")
    return {
        "missing": synthetic.tiny_pair(root / "missing").target,
        "ready": synthetic.tiny_pair(root / "ready", target_has_draft=True).target,
        "incomplete": synthetic.make_variant(root / "incomplete", "draft-layer-incomplete"),
        "original": synthetic.tiny_pair(root / "orig").original,
        "nvfp4_draft": synthetic.tiny_pair(root / "nvfp4", target_has_draft=True, draft_storage="nvfp4").target,
        "corrupt_header": synthetic.make_variant(root / "corrupt", "corrupt-header"),
        "unreadable_index": _unreadable_index(synthetic.tiny_pair(root / "unreadable", target_has_draft=True).target),
        "ct_ready": synthetic.tiny_pair(root / "ct", quant_format="compressed-tensors", target_has_draft=True).target,
        "ct_missing": synthetic.tiny_pair(root / "ct-missing", quant_format="compressed-tensors").target,
        "quark_missing": synthetic.tiny_pair(root / "quark-missing", quant_format="quark").target,
    }


def _unreadable_index(target: Path) -> Path:
    """A complete target whose index the preflight cannot read (weight_map is not an object): no preflight result.
    SGLang's resolution reads only config.json, so the launch resolves; the loader would judge the shards."""
    index = target / "model.safetensors.index.json"
    index.write_text('{"metadata": {}, "weight_map": []}')
    return target


NEXTN = ["--speculative-algorithm", "NEXTN"]
FP4 = ["--quantization", "modelopt_fp4"]
#: The FlashInfer all-to-all the target may use; a triton draft cannot (the plugin declares "none" for it).
A2A = ["--moe-a2a-backend", "flashinfer", "--moe-runner-backend", "flashinfer_cutlass", "--tp-size", "2",
       "--ep-size", "2", "--attn-dp-size", "2"]


@pytest.fixture(scope="module")
def resolution(checkpoints: dict[str, Path]) -> dict[str, Any]:
    cases = [
        {"name": "missing", "model": str(checkpoints["missing"]), "argv": NEXTN + FP4},
        {"name": "incomplete", "model": str(checkpoints["incomplete"]), "argv": NEXTN + FP4},
        {"name": "ready_sm100", "model": str(checkpoints["ready"]), "argv": NEXTN + FP4},
        {"name": "ready_sm100_cutlass_target", "model": str(checkpoints["ready"]),
         "argv": NEXTN + FP4 + ["--moe-runner-backend", "flashinfer_cutlass"]},
        {"name": "ready_sm90", "model": str(checkpoints["ready"]), "argv": NEXTN + FP4, "generation": "sm90"},
        {"name": "ready_sm120", "model": str(checkpoints["ready"]), "argv": NEXTN + FP4, "generation": "sm120"},
        {"name": "explicit_backend", "model": str(checkpoints["ready"]),
         "argv": NEXTN + FP4 + ["--speculative-moe-runner-backend", "triton"]},
        {"name": "bf16_model", "model": str(checkpoints["original"]), "argv": NEXTN},
        {"name": "nvfp4_draft", "model": str(checkpoints["nvfp4_draft"]), "argv": NEXTN + FP4},
        {"name": "no_spec", "model": str(checkpoints["missing"]), "argv": FP4},
    ]
    if PLUGIN_ACTIVE:  # the flag is the plugin's; without it argparse exits (patched mode: plugin disabled)
        cases.append({"name": "enable_plugin_flag", "model": str(checkpoints["ready"]),
                      "argv": NEXTN + FP4 + ["--enable-plugin", "glm_mtp"]})
        # the plugin's own judgement (patch 0004 warns on unreadable headers and leaves them to the loader)
        cases += [{"name": "corrupt_header", "model": str(checkpoints["corrupt_header"]), "argv": NEXTN + FP4},
                  {"name": "no_preflight_result", "model": str(checkpoints["unreadable_index"]), "argv": NEXTN + FP4}]
        # compressed-tensors / Quark targets, their method auto-detected from config.json as users launch them
        cases += [{"name": name, "model": str(checkpoints[name]), "argv": NEXTN}
                  for name in ("ct_ready", "ct_missing", "quark_missing")]
    cases += [
        {"name": "no_flashinfer", "model": str(checkpoints["ready"]), "argv": NEXTN + FP4,
         "facts": {"has_flashinfer": False}},
        {"name": "a2a_sm90", "model": str(checkpoints["ready"]), "argv": NEXTN + FP4 + A2A, "generation": "sm90"},
        {"name": "a2a_sm100", "model": str(checkpoints["ready"]), "argv": NEXTN + FP4 + A2A},
    ]
    return run_family("resolution", {"cases": cases})


@plugin_only
def test_entry_point_discovered_and_hooks_land(resolution: dict[str, Any]) -> None:
    assert {"sglang.srt.server_args.ServerArgs.add_cli_args",
            "sglang.srt.model_loader.utils.get_model_architecture",
            "sglang.srt.managers.scheduler.Scheduler.get_internal_state"} <= set(resolution["patched"])
    assert resolution["resolution_hooks"]["handle_speculative_decoding"] == [
        "sglang_glm_mtp.plugin.resolution.speculative_step"], "registered exactly once despite two load_plugins()"
    assert not resolution["glm4_moe_imported"], "model modules must not be imported just to hook them"


def test_missing_draft_refused_before_anything_spawns(resolution: dict[str, Any]) -> None:
    case = resolution["cases"]["missing"]
    assert not case["ok"] and case["error_type"] == "DraftLayerMissingError"
    assert "ValueError" in case["error_mro"]
    assert "model.layers.4 is missing" in case["error"] and "35 of 35" in case["error"]
    assert "First missing: model.layers.4." in case["error"]
    assert pick("sglang-glm-mtp graft --from zai-org/GLM-5.2 --into",
                "graft it from the original BF16 release") in case["error"]


def test_incomplete_draft_names_the_missing_tensors(resolution: dict[str, Any]) -> None:
    case = resolution["cases"]["incomplete"]
    assert case["error_type"] == "DraftLayerMissingError"
    assert "3 of 35 expected tensors are missing" in case["error"]
    assert "model.layers.4.mlp.experts.3.down_proj.weight" in case["error"]


def test_ready_sm100_picks_flashinfer_cutlass_over_inherited_trtllm(resolution: dict[str, Any]) -> None:
    case = resolution["cases"]["ready_sm100"]
    assert case["ok"], case
    assert case["target_runner"] == "flashinfer_trtllm"  # SGLang's SM100 default for the target
    assert case["spec_runner"] == "flashinfer_cutlass"
    assert case["algorithm"] == "EAGLE"
    if PLUGIN_ACTIVE:
        assert "glm_mtp" in case["sources"]
        assert case["state"]["moe_runner"]["rule"] == "blackwell-bf16-draft"
        assert case["state"]["preflight"]["draft_precision"] == "bf16"
    else:  # SGLang's own default pass decided it, and the plugin did not run
        assert "_speculative_moe_runner_default" in case["sources"] and "glm_mtp" not in case["sources"]
        assert not (case["state"] or {}).get("moe_runner")


@plugin_only
def test_compressed_tensors_nvfp4_target_gets_the_modelopt_nvfp4_runner_choice(resolution: dict[str, Any]) -> None:
    """The rule table sees an NVFP4 target whatever its dialect: a BF16 draft under a compressed-tensors NVFP4 target
    on SM100 gets the same runner and rule as under ModelOpt NVFP4 (test_ready_sm100_…)."""
    case = resolution["cases"]["ct_ready"]
    assert case["ok"], case
    assert case["state"]["preflight"]["target_precision"] == "nvfp4"
    assert (case["spec_runner"], case["state"]["moe_runner"]["rule"]) == ("flashinfer_cutlass", "blackwell-bf16-draft")


@plugin_only
@pytest.mark.parametrize("name", ["ct_missing", "quark_missing"])
def test_missing_layer_is_refused_in_every_dialect(resolution: dict[str, Any], name: str) -> None:
    case = resolution["cases"][name]
    assert case["error_type"] == "DraftLayerMissingError" and "model.layers.4" in case["error"], case


@pytest.mark.parametrize("name, runner, rule", [
    ("ready_sm100_cutlass_target", "flashinfer_cutlass", "blackwell-bf16-draft"),
    ("ready_sm90", "triton", "pre-blackwell-bf16-draft"),
    ("ready_sm120", "flashinfer_cutlass", "blackwell-bf16-draft"),
    ("nvfp4_draft", "flashinfer_trtllm", "quantized-like-target"),
    ("bf16_model", "flashinfer_trtllm", "unquantized-target"),
])
def test_runner_rule_per_generation(resolution: dict[str, Any], name: str, runner: str, rule: str) -> None:
    case = resolution["cases"][name]
    assert case["ok"], case
    assert case["spec_runner"] == runner
    if PLUGIN_ACTIVE:
        assert case["state"]["moe_runner"]["rule"] == rule


def test_explicit_user_backend_is_left_untouched(resolution: dict[str, Any]) -> None:
    case = resolution["cases"]["explicit_backend"]
    assert case["ok"] and case["spec_runner"] == "triton"
    assert "glm_mtp" not in case["sources"] and "_speculative_moe_runner_default" not in case["sources"]
    if PLUGIN_ACTIVE:
        assert case["state"]["moe_runner"]["rule"] == "user-flag"


def test_without_speculative_decoding_nothing_happens(resolution: dict[str, Any]) -> None:
    case = resolution["cases"]["no_spec"]
    assert case["ok"] and not case["state"] and case["algorithm"] is None


@plugin_only
def test_enable_plugin_flag_parses(resolution: dict[str, Any]) -> None:
    case = resolution["cases"]["enable_plugin_flag"]
    assert case["ok"], case
    assert "strict mode, all" in resolution["_stderr"]


def test_skip_env_starts_with_a_warning(checkpoints: dict[str, Path]) -> None:
    variable = pick("SGLANG_GLM_MTP_SKIP_PREFLIGHT", "SGLANG_SKIP_NEXTN_DRAFT_PREFLIGHT")
    result = run_family("resolution", {"cases": [
        {"name": "skip", "model": str(checkpoints["missing"]), "argv": NEXTN + FP4}]}, **{variable: "1"})
    assert result["cases"]["skip"]["ok"]
    if UPSTREAM:
        assert "SGLANG_SKIP_NEXTN_DRAFT_PREFLIGHT is set, starting anyway" in result["_stderr"]
    else:
        assert result["cases"]["skip"]["state"]["preflight"]["skipped"] is True
        assert "SGLANG_GLM_MTP_SKIP_PREFLIGHT=1, starting anyway" in result["_stderr"]


@plugin_only
def test_version_drift_strict_mode(checkpoints: dict[str, Path]) -> None:
    result = run_family("version_drift", {"model": str(checkpoints["ready"])})
    assert result["default"]["ok"], result["default"]
    strict = result["strict"]
    assert not strict["ok"] and strict["error_type"] == "PluginStrictModeError"
    assert "_resolve_nextn_quant_config" in strict["error"]
    unknown = result["unknown_plugin"]
    assert not unknown["ok"] and "not installed: nope" in unknown["error"]


def test_engine_api_refuses_before_spawning(checkpoints: dict[str, Path]) -> None:
    """``sglang.Engine(...)`` with SGLang's real launch path: process starts are recorded (and stopped, as no
    scheduler can run here). The control, a complete checkpoint, shows the same path does reach a spawn, so a
    refusal that came late (in a scheduler) would show as a recorded spawn on the missing one."""
    result = run_family("engine", {"missing": str(checkpoints["missing"]), "ready": str(checkpoints["ready"])})
    missing, ready = result["missing"], result["ready"]
    assert not missing["ok"] and missing["error_type"] == "DraftLayerMissingError", missing
    assert missing["spawns"] == [] and missing["children"] == 0
    assert ready["spawns"], f"control: a complete checkpoint must reach SGLang's process start: {ready}"
    assert ready["error_type"] == "SpawnBlocked", ready


@plugin_only
def test_corrupt_draft_header_is_refused(resolution: dict[str, Any]) -> None:
    """An ``invalid`` draft checkpoint (the layer's shard header is not JSON) is refused at resolution."""
    case = resolution["cases"]["corrupt_header"]
    assert not case["ok"] and case["error_type"] == "DraftCheckpointError", case
    assert "ValueError" in case["error_mro"]
    assert "cannot be loaded correctly" in case["error"] and "corrupt-header" in case["error"]
    assert "sglang-glm-mtp check" in case["error"]


@plugin_only
def test_without_a_preflight_result_the_target_precision_comes_from_quantization(
        resolution: dict[str, Any]) -> None:
    """Preflight could not read the checkpoint (warned, no result): the rule table still sees an NVFP4 target
    (from --quantization modelopt_fp4), so the BF16 draft gets flashinfer_cutlass, not the BF16-target rule."""
    case = resolution["cases"]["no_preflight_result"]
    assert case["ok"], case
    assert "preflight" not in case["state"]
    assert (case["spec_runner"], case["state"]["moe_runner"]["rule"]) == ("flashinfer_cutlass",
                                                                          "blackwell-bf16-draft")
    assert "preflight could not read the draft checkpoint" in resolution["_stderr"]


def test_no_flashinfer_gives_a_triton_draft(resolution: dict[str, Any]) -> None:
    case = resolution["cases"]["no_flashinfer"]
    assert case["ok"], case
    assert case["spec_runner"] == "triton"
    if PLUGIN_ACTIVE:
        assert case["state"]["moe_runner"]["rule"] == "no-flashinfer"


def test_a_triton_draft_under_the_flashinfer_all_to_all_declares_none(resolution: dict[str, Any]) -> None:
    """The target's FlashInfer all-to-all stays the target's: the triton draft (SM90) is declared
    ``speculative_moe_a2a_backend=none``; a flashinfer_cutlass draft (SM100) keeps the all-to-all."""
    sm90, sm100 = resolution["cases"]["a2a_sm90"], resolution["cases"]["a2a_sm100"]
    assert sm90["ok"] and sm100["ok"], (sm90, sm100)
    assert (sm90["spec_runner"], sm90["spec_a2a"]) == ("triton", "none")
    assert sm100["spec_runner"] == "flashinfer_cutlass" and sm100["spec_a2a"] != "none", sm100
    if PLUGIN_ACTIVE:
        assert "glm_mtp" in sm90["sources"] and sm90["state"]["moe_runner"]["rule"] == "pre-blackwell-bf16-draft"
