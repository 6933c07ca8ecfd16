"""``sglang-glm-mtp demo`` end to end: the real CLI, the real SGLang resolution in its child process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sglang_mode import plugin_only, run_in_own_group, subprocess_env

from sglang_glm_mtp import cli
from sglang_glm_mtp.demo import run as demo
from sglang_glm_mtp.demo import sglang_child
from sglang_glm_mtp.demo.results import DemoStep


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The demo through its console entry point (how long it takes is measured in benchmarks/, not here)."""
    env = subprocess_env()
    for name in ("SGLANG_ENABLE_PLUGIN", "SGLANG_GLM_MTP_SKIP_PREFLIGHT", "SGLANG_GLM_MTP_CANARY"):
        env.pop(name, None)
    # what the console script runs (``python -m sglang_glm_mtp.cli`` would register sub-commands on a second copy)
    entry = "import sys; from sglang_glm_mtp.cli import main; sys.exit(main())"
    return run_in_own_group([sys.executable, "-c", entry, "demo", *args], env=env, timeout=600)


def _in_order(text: str, *needles: str) -> None:
    position = 0
    for needle in needles:
        found = text.find(needle, position)
        assert found >= 0, f"{needle!r} not found (in order) in:\n{text}"
        position = found + len(needle)


@pytest.mark.sglang
@plugin_only
def test_demo_end_to_end(tmp_path: Path) -> None:
    proc = run_cli("--workdir", str(tmp_path / "demo"))
    out = proc.stdout
    assert proc.returncode == 0, f"{out}\n{proc.stderr}"
    target = tmp_path / "demo" / "target-nvfp4"
    _in_order(
        out,
        "[1/6] build a tiny GLM-5.2-like BF16 original", "num_nextn_predict_layers = 1",
        f"[2/6] $ sglang-glm-mtp check {target}   -> exit 1", "status:       MISSING",
        f"sglang-glm-mtp graft --from zai-org/GLM-5.2 --into {target}",
        "[3/6] SGLang resolves a NEXTN launch on the broken target",
        "--speculative-algorithm NEXTN --quantization modelopt_fp4",
        "No GPU here: emulating B200 (SM100) the way SGLang's own tests do",
        "plugin glm_mtp loaded by load_plugins() through its sglang.srt.plugins entry point",
        "REFUSED before anything was spawned (0 child processes): DraftLayerMissingError",
        "the NextN/MTP draft layer model.layers.4 is missing",
        "[4/6] $ sglang-glm-mtp graft --from", "-> exit 0", "check:        READY",
        "[5/6] $ sglang-glm-mtp check", "-> exit 0", "status:       READY",
        "[6/6] SGLang resolves the same launch on the grafted target",
        "ACCEPTED: speculative algorithm NEXTN (served as EAGLE)",
        "stored bf16: built unquantized (BF16) inside the nvfp4 target",
        "draft MoE runner: flashinfer_cutlass (chosen by glm_mtp, rule blackwell-bf16-draft); "
        "target MoE runner: flashinfer_trtllm",
        "every step behaved as expected.",
    )
    assert out.count("No GPU here") == 1, "the emulation is said once, at the first SGLang step"
    assert (tmp_path / "demo" / demo.SGLANG_LOG).read_text().count("glm_mtp: draft MoE runner flashinfer_cutlass") == 1


@pytest.mark.sglang
@plugin_only
def test_demo_emulates_the_named_gpu(tmp_path: Path) -> None:
    proc = run_cli("--workdir", str(tmp_path / "demo"), "--gpu", "h100")
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "emulating h100 (SM90)" in proc.stdout
    assert "draft MoE runner: triton (chosen by glm_mtp, rule pre-blackwell-bf16-draft)" in proc.stdout


def test_demo_without_sglang_skips_those_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(demo, "sglang_available", lambda: False)
    for _ in range(2):  # a second run in the same --workdir starts from fresh checkpoints
        assert cli.main(["demo", "--workdir", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert out.count("skipped: SGLang is not installed here; pip install '.[sglang]' in a checkout of sglang-glm-mtp") == 2
        _in_order(out, "status:       MISSING", "check:        READY", "status:       READY",
                  "every step behaved as expected.", "note: steps 3 and 6 (SGLang) SGLang is not installed")
    assert not (tmp_path / demo.SGLANG_LOG).exists()


def test_demo_library_reports_each_step(tmp_path: Path) -> None:
    seen: list[DemoStep] = []
    result = demo.run_demo(tmp_path, "RTX PRO 6000", with_sglang=False, on_step=seen.append)
    assert result.ok and result.generation == "sm120" and seen == result.steps
    assert [s.kind for s in seen] == ["build", "check", "sglang", "graft", "check", "sglang"]
    assert [s.data.status for s in seen if s.kind == "check"] == ["missing", "ready"]
    assert seen[3].data.check_status == "ready" and seen[3].data.tensors == 35


def test_demo_unknown_gpu_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--workdir", str(tmp_path), "--gpu", "A100"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "--gpu A100: unknown; one of H100" in captured.err
    assert not any(tmp_path.iterdir()), "nothing built"


def test_demo_never_clears_a_folder_it_did_not_make(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    precious = tmp_path / "target-nvfp4" / "model-00001-of-00045.safetensors"
    precious.parent.mkdir()
    precious.write_bytes(b"weights")
    assert cli.main(["demo", "--workdir", str(tmp_path), "--skip-sglang"]) == 2
    assert "that the demo did not make" in capsys.readouterr().err
    assert precious.read_bytes() == b"weights"


def test_demo_reports_a_failing_sglang_process_and_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(demo, "sglang_available", lambda: True)
    monkeypatch.setattr(sglang_child, "RESOLVER_MODULE", "sglang_glm_mtp.no_such_module")  # the child dies at once
    assert cli.main(["demo", "--workdir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.count("<- NOT AS EXPECTED") == 2 and "FAILED: the SGLang process ended unexpectedly (exit 1)" in out
    _in_order(out, "status:       MISSING", "check:        READY", "status:       READY", "did NOT behave as expected")
    assert "No module named sglang_glm_mtp.no_such_module" in (tmp_path / demo.SGLANG_LOG).read_text()
