"""patches/sglang-v0.5.23: they apply to a pristine SGLang 0.5.23, pass, and the plugin stands down for them.

The full verification (patches/verify_patches.py: apply, the patches' own unit tests,
the project's behaviour tests against the patched tree with the plugin disabled) takes
several minutes and is marked ``slow``. The stand-down tests run the plugin *enabled*
against a patched tree: SGLang's fixes must act, the plugin must not act twice.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from sglang_mode import run_in_own_group

from sglang_glm_mtp import synthetic
from sglang_glm_mtp.plugin.upstream import LANDINGS, MARKERS, markers_of

REPO = Path(__file__).resolve().parents[1]
VERIFY = REPO / "patches" / "verify_patches.py"
needs_sglang = pytest.mark.skipif(importlib.util.find_spec("sglang") is None, reason="needs sglang==0.5.23")


def _verify_module() -> Any:
    spec = importlib.util.spec_from_file_location("verify_patches", VERIFY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


verify = _verify_module()


def test_patch_files_are_format_patch_commits_with_tests() -> None:
    """One git format-patch commit per PR, upstream layout, each adding tests under test/registered/unit."""
    patches = verify.patches()
    assert [p.name[:5] for p in patches] == ["0001-", "0002-", "0003-", "0004-"]
    for patch in patches:
        text = patch.read_text()
        assert text.startswith("From ") and "\nSubject: [PATCH " in text, patch.name
        touched = re.findall(r"^\+\+\+ b/(\S+)$", text, flags=re.M)
        assert touched and all(t.startswith(("python/sglang/srt/", "test/registered/unit/")) for t in touched), touched
        created = [path for path, new in verify._patch_files(patch) if new and path.startswith("test/")]
        assert created, f"{patch.name} adds no unit test"
        for test in created:  # SGLang's own conventions
            body = text.split(f"+++ b/{test}\n", 1)[1]
            assert 'register_cpu_ci(est_time=' in body and "CustomTestCase" in body, test
        # An upstream test a patch extends must be one of those verify_patches runs pristine vs patched.
        extended = [path for path, new in verify._patch_files(patch) if not new and path.startswith("test/")]
        assert all(path.startswith("test/registered/unit/") for path in extended), extended
        assert not re.search(r"^\+.*[ \t]$", text, flags=re.M), f"{patch.name}: trailing whitespace"
        assert "sglang_glm_mtp" not in text.split("\n---\n", 1)[1], f"{patch.name} must be self-contained"


def test_each_stand_down_marker_is_introduced_by_a_patch() -> None:
    """plugin/upstream.py looks for exactly the public functions the patches add, in the modules they add them to."""
    added: dict[tuple[str, str], str] = {}
    for patch in verify.patches():
        for diff in re.split(r"^diff --git ", patch.read_text(), flags=re.M)[1:]:
            path = diff.split()[0][len("a/python/"):] if diff.startswith("a/python/") else None
            if path is None:
                continue
            module = path[:-len(".py")].replace("/", ".")
            for name in re.findall(r"^\+def (\w+)\(", diff, flags=re.M):
                added[(module, name)] = patch.name
    for behaviour in MARKERS:
        for module, attribute in markers_of(behaviour):
            assert (module, attribute) in added, f"{behaviour}: no patch adds {module}.{attribute}"


@needs_sglang
@pytest.mark.sglang
def test_patches_apply_cleanly_to_the_installed_pristine_sglang(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Without upstream tests, the hunks on upstream test files are left out, and said so."""
    python = verify.pristine_copy(tmp_path)
    assert (python / "sglang" / "srt" / "models" / "deepseek_nextn.py").is_file()
    assert verify.apply_patches(tmp_path) == [p.name for p in verify.patches()]
    assert "def preflight_nextn_draft_weights(" in (python / "sglang/srt/arg_groups/speculative_hook.py").read_text()
    assert all((tmp_path / t).is_file() for t in verify.added_tests())
    out = capsys.readouterr().out
    for extended in verify.modified_upstream_tests():
        assert not (tmp_path / extended).exists() and f"left out its changes to {extended}" in out


UPSTREAM = verify.DEFAULT_UPSTREAM_TESTS
needs_upstream = pytest.mark.skipif(not UPSTREAM.is_dir(), reason=f"no upstream tests in {UPSTREAM}")


@needs_sglang
@needs_upstream
@pytest.mark.sglang
def test_patches_extend_the_upstream_tests_at_their_upstream_paths(tmp_path: Path) -> None:
    verify.pristine_copy(tmp_path, UPSTREAM)
    placed = verify.upstream_test_paths(UPSTREAM)
    assert placed["test_model_overrides.py"] == "test/registered/unit/test_model_overrides.py"
    assert all((tmp_path / path).is_file() for path in placed.values())
    verify.apply_patches(tmp_path)
    overrides = (tmp_path / "test/registered/unit/test_model_overrides.py").read_text()
    assert "def test_speculative_moe_runner_default_bf16_nextn_draft(" in overrides
    assert set(verify.modified_upstream_tests()) <= set(placed.values())


def test_upstream_outcomes_are_read_per_test_with_subtests_counting() -> None:
    report = "\n".join([
        "PASSED test/registered/unit/test_a.py::TestA::test_ok",
        "PASSED test/registered/unit/test_a.py::TestA::test_sub",
        "SUBFAILED(x=1) test/registered/unit/test_a.py::TestA::test_sub - AssertionError",
        "FAILED test_b.py::TestB::test_bad - AttributeError: no",
        "ERROR test_b.py::TestB::test_err",
        "some other line",
    ])
    assert verify._outcomes(report) == {"test_a.py::TestA::test_ok": "passed", "test_a.py::TestA::test_sub": "failed",
                                        "test_b.py::TestB::test_bad": "failed", "test_b.py::TestB::test_err": "failed"}


def test_upstream_folder_without_provenance_places_files_aside(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text("")
    (tmp_path / "PROVENANCE.txt").write_text("test_y.py   test/registered/unit/y/test_y.py   abc\n")
    (tmp_path / "test_y.py").write_text("")
    assert verify.upstream_test_paths(tmp_path) == {
        "test_x.py": f"{verify.UNPLACED_UPSTREAM_DIR}/test_x.py", "test_y.py": "test/registered/unit/y/test_y.py"}
    with pytest.raises(verify.VerifyError, match="is not a folder"):
        verify.upstream_test_paths(tmp_path / "test_x.py")
    (tmp_path / "empty").mkdir()
    with pytest.raises(verify.VerifyError, match="no test_"):
        verify.upstream_test_paths(tmp_path / "empty")


@needs_sglang
@pytest.mark.sglang
@pytest.mark.slow
@pytest.mark.extended  # its own command (README): ~5 minutes, which the default run leaves out
def test_full_verification_passes() -> None:
    """patches/verify_patches.py end to end: apply, unit tests, behaviour tests without the plugin."""
    proc = run_in_own_group([sys.executable, str(VERIFY)], cwd=REPO, timeout=3000)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-6000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert "OK: 4 patches apply" in proc.stdout
    if UPSTREAM.is_dir():  # SGLang's own unit tests ran too: none that passes on pristine fails patched
        assert "upstream tests: no regression" in proc.stdout, proc.stdout[-6000:]


# ----------------------------------------------------------------------------- stand-down


@pytest.fixture(scope="module")
def patched_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("patched-sglang")
    python = verify.pristine_copy(root)
    verify.apply_patches(root)
    return python


def _plugin_env(patched: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SGLANG_GLM_MTP_") and k not in ("SGLANG_ENABLE_PLUGIN",)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(patched), env.get("PYTHONPATH")) if p)
    env["SGLANG_PLUGINS"] = "glm_mtp"  # the plugin enabled, on the patched SGLang
    return env


def _run(argv: list[str], patched: Path) -> tuple[dict[str, Any], str]:
    proc = run_in_own_group([sys.executable, *argv], env=_plugin_env(patched), timeout=600, cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT:")]
    assert lines, f"no result (rc={proc.returncode})\nstdout:{proc.stdout[-3000:]}\nstderr:{proc.stderr[-3000:]}"
    result = json.loads(lines[-1][len("RESULT:"):])
    assert "crashed" not in result, result.get("crashed")
    return result, proc.stderr


@needs_sglang
@pytest.mark.sglang
@pytest.mark.slow
def test_plugin_stands_down_in_resolution(patched_tree: Path, tmp_path: Path) -> None:
    """Plugin enabled + patched SGLang: SGLang refuses and chooses; the plugin neither refuses nor declares."""
    missing = synthetic.tiny_pair(tmp_path / "missing").target
    ready = synthetic.tiny_pair(tmp_path / "ready", target_has_draft=True).target
    nextn_fp4 = ["--speculative-algorithm", "NEXTN", "--quantization", "modelopt_fp4"]
    cases = [{"name": "missing", "model": str(missing), "argv": nextn_fp4},
             {"name": "ready_sm100", "model": str(ready), "argv": nextn_fp4},
             {"name": "ready_sm90", "model": str(ready), "argv": nextn_fp4, "generation": "sm90"}]
    result, stderr = _run([str(REPO / "tests" / "scenarios_resolution.py"), "resolution",
                           json.dumps({"cases": cases})], patched_tree)
    assert result["resolution_hooks"]["handle_speculative_decoding"] == [
        "sglang_glm_mtp.plugin.resolution.speculative_step"], "the plugin is loaded"

    refused = result["cases"]["missing"]
    assert refused["error_type"] == "DraftLayerMissingError" and refused["children"] == 0
    assert "SGLANG_SKIP_NEXTN_DRAFT_PREFLIGHT=1" in refused["error"], "SGLang's preflight refused it"
    assert not refused["error"].startswith("glm_mtp:"), "not the plugin's preflight"

    for name, runner in (("ready_sm100", "flashinfer_cutlass"), ("ready_sm90", "triton")):
        case = result["cases"][name]
        assert case["ok"] and case["spec_runner"] == runner, case
        assert "_speculative_moe_runner_default" in case["sources"] and "glm_mtp" not in case["sources"], \
            "the runner is declared once, by SGLang"
        assert "preflight" not in case["state"] and "moe_runner" not in case["state"], case["state"]
    assert "the plugin's preflight behaviour stands down" in stderr
    assert "the plugin's moe_runner behaviour stands down" in stderr


STAND_DOWN_PROBE = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from sglang.srt.plugins import load_plugins
from sglang.srt.plugins.hook_registry import HookRegistry
load_plugins()
from sglang_glm_mtp.plugin import registration, upstream
hooked = registration.install_draft_hooks()  # what the plugin does when SGLang builds a NextN draft
import sglang.srt.models.deepseek_nextn as nextn
print("RESULT:" + json.dumps({
    "has_fix": {b: upstream.has_fix(b) for b in upstream.MARKERS},
    "has_landed": {l: upstream.has_landed(l) for l in upstream.LANDINGS},
    "hooked": hooked,
    "lazy_targets_patched": [t for t in registration.LAZY_TARGETS if t in HookRegistry._patched],
    "sglang_file": nextn.__file__,
}))
"""


@needs_sglang
@pytest.mark.sglang
@pytest.mark.slow
def test_plugin_installs_no_draft_hooks_on_a_patched_sglang(patched_tree: Path) -> None:
    """Coverage and draft precision: SGLang's loader checks and decides for DeepSeek/GLM-5 drafts; the plugin
    hooks neither there (other draft classes keep the coverage backstop)."""
    result, stderr = _run(["-c", STAND_DOWN_PROBE], patched_tree)
    assert result["sglang_file"].startswith(str(patched_tree)), result["sglang_file"]
    assert result["has_fix"] == {behaviour: True for behaviour in MARKERS}
    assert result["has_landed"] == {landing: True for landing in LANDINGS}, "0002 does what #37322/#34906 do"
    # The upstream coverage fix lives in the DeepSeek loader: the backstop stays on every other draft class.
    from sglang_glm_mtp.plugin.targets import UPSTREAM_COVERED

    assert result["hooked"] == result["lazy_targets_patched"], result
    assert all(t.endswith(".load_weights") and t.rsplit(".", 2)[-2] not in UPSTREAM_COVERED
               for t in result["hooked"]), result
    for behaviour in ("coverage", "draft_precision"):
        assert f"the plugin's {behaviour} behaviour stands down" in stderr, stderr[-3000:]


STOCK_PROBE = """
import json
from sglang_glm_mtp.plugin import upstream
print("RESULT:" + json.dumps([{b: upstream.has_fix(b) for b in upstream.MARKERS},
                              {l: upstream.has_landed(l) for l in upstream.LANDINGS}]))
"""


@needs_sglang
@pytest.mark.sglang
def test_plugin_acts_on_the_stock_sglang() -> None:
    """The installed 0.5.23 has none of the fixes: every behaviour stays the plugin's."""
    env = {k: v for k, v in os.environ.items() if k != "SGLANG_GLM_MTP_SGLANG_PATH"}
    proc = run_in_own_group([sys.executable, "-c", STOCK_PROBE], env=env, timeout=600)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT:")]
    assert line, proc.stderr[-3000:]
    assert json.loads(line[-1][len("RESULT:"):]) == [{behaviour: False for behaviour in MARKERS},
                                                     {landing: False for landing in LANDINGS}]
