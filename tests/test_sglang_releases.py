"""Every SGLang-driving test, against each other tested SGLang release (``targets.TESTED_RELEASES``).

The rest of this run drives the installed SGLang (0.5.23, from the ``test`` extra). Here each
other tested release's wheel is installed *without dependencies* into a cache folder (0.5.22
pins the same torch and transformers as 0.5.23; its other pins differ only in GPU kernels and
client libraries that these CPU tests do not import), and the same tests run in a pytest child
process with that folder first on ``PYTHONPATH``, so every scenario subprocess imports that
release. Nothing in the environment's site-packages changes.

``patches/`` is left out: its tests apply the patches made for 0.5.23 (docs/upstream.md says
where they apply). The folder is ``$SGLANG_GLM_MTP_RELEASES_DIR`` or ``~/.cache/sglang-glm-mtp``;
a release already installed there is reused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sglang_glm_mtp.plugin import targets

from sglang_glm_mtp import synthetic

from sglang_mode import SGLANG_VERSION, run_in_own_group, run_scenario

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
#: Set in the child run, so it does not recurse.
CHILD_ENV = "SGLANG_GLM_MTP_RELEASE_RUN"
RELEASES_DIR_ENV = "SGLANG_GLM_MTP_RELEASES_DIR"
#: Not run against other releases: patches/sglang-v0.5.23 targets that release's source.
LEFT_OUT = ("test_patches.py", Path(__file__).name)

OTHER_RELEASES = [v for v in targets.TESTED_RELEASES if v != SGLANG_VERSION]
#: Older plugin-capable releases, outside the tested range: the plugin must load there without SGLang's ERROR
#: traceback, warn once about the range and once per missing target, and keep the rest. Their Python code runs over
#: this environment's torch 2.14 / transformers 5.19 (0.5.21 pins torch 2.13, which cannot be installed beside).
DEGRADED_RELEASES = ["0.5.21"]

pytestmark = [pytest.mark.sglang, pytest.mark.slow,
              pytest.mark.skipif(bool(os.environ.get(CHILD_ENV)), reason="already inside a release run"),
              pytest.mark.skipif(SGLANG_VERSION is None, reason="needs sglang")]


def releases_dir() -> Path:
    return Path(os.environ.get(RELEASES_DIR_ENV) or Path.home() / ".cache" / "sglang-glm-mtp")


def install_release(version: str) -> Path:
    """``pip install --no-deps --target`` the release's wheel once; a half-finished install is never reused."""
    folder = releases_dir() / f"sglang-{version}"
    if (folder / f"sglang-{version}.dist-info").is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".sglang-{version}-", dir=folder.parent))
    try:
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile",
                               "--disable-pip-version-check", "--quiet", "--target", str(staging),
                               f"sglang=={version}"], capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            message = f"cannot install sglang=={version} without dependencies:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
            if (os.environ.get("CI") or "").lower() in ("1", "true", "yes", "on"):
                pytest.fail(message)
            pytest.skip(message)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def sglang_test_files() -> list[str]:
    return [str(p) for p in sorted(TESTS.glob("test_*.py")) if p.name not in LEFT_OUT]


@pytest.mark.extended  # its own command (README): ~10 minutes, which the default run leaves out
@pytest.mark.parametrize("version", OTHER_RELEASES)
def test_sglang_driving_tests_pass_on_release(version: str) -> None:
    folder = install_release(version)
    env = dict(os.environ)
    env[CHILD_ENV] = version
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), str(ROOT), env.get("PYTHONPATH")) if p)
    check = subprocess.run([sys.executable, "-c", "import importlib.metadata as m; print(m.version('sglang'))"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert check.stdout.strip() == version, f"the child would not import sglang {version}: {check.stdout}{check.stderr}"
    proc = run_in_own_group([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "sglang",
                             "-rfE", *sglang_test_files()], timeout=3600, env=env, cwd=str(ROOT))
    tail = "\n".join(proc.stdout.splitlines()[-60:])
    assert proc.returncode == 0, f"SGLang {version}: the SGLang-driving tests failed (rc={proc.returncode}):\n{tail}\n" \
                                 f"{proc.stderr[-3000:]}"
    assert " passed" in proc.stdout.splitlines()[-1], tail


@pytest.mark.parametrize("version", DEGRADED_RELEASES)
def test_older_release_degrades_cleanly(version: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """0.5.21 has every target but ``build_server_info`` (0.5.22+): the top-level server-info section is lost,
    said once; preflight, runner choice, draft hooks and the scheduler's server-info section stay; strict mode
    refuses naming the target; SGLang's hook registry logs no ERROR."""
    folder = install_release(version)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(folder), str(ROOT), os.environ.get("PYTHONPATH"))
                                                     if p))
    models = {"model": str(synthetic.tiny_pair(tmp_path / "ready", target_has_draft=True).target),
              "missing_model": str(synthetic.tiny_pair(tmp_path / "missing").target)}
    result = run_scenario(TESTS / "scenarios_versions.py", "degradation", {**models, "draft_hooks": True}, timeout=600)
    records = result["load_logs"] + result["logs"]
    assert not [r for r in records if r[0].startswith("sglang.srt.plugins") and r[1] in ("ERROR", "CRITICAL")], records
    warnings = [r[2] for r in records if r[0].startswith("sglang_glm_mtp") and r[1] == "WARNING"]
    assert len(warnings) == 2, warnings
    assert f"SGLang {version} is outside the tested range {targets.TESTED_RANGE}" in warnings[0]
    assert targets.SERVER_INFO_TARGET in warnings[1] and "top-level glm_mtp section" in warnings[1]
    assert targets.SERVER_INFO_TARGET not in result["registered"]
    assert set(targets.EAGER_TARGETS) - {targets.SERVER_INFO_TARGET} <= set(result["patched"]), result["patched"]
    assert result["default"]["ok"] and result["default"]["state"]["preflight"]["status"] == "ready", result["default"]
    assert result["missing_layer"]["error_type"] == "DraftLayerMissingError", result["missing_layer"]
    assert result["strict"]["error_type"] == "PluginStrictModeError", result["strict"]
    assert targets.SERVER_INFO_TARGET in result["strict"]["error"]
    assert "sglang.srt.models.glm4_moe.GlmMoeDsaForCausalLMNextN.load_weights" in result["draft_hooked"]
    section = result["scheduler_section"]
    assert section["unavailable"]["server_info"]["targets"] == [targets.SERVER_INFO_TARGET], section
    assert section["sglang_untested"]["version"] == version
