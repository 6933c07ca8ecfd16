"""The test suite's own rules: a CI run without SGLang fails loudly; scenario processes die with their test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import sglang_mode

TESTS = Path(__file__).resolve().parent
#: pytest in a child process whose ``import sglang`` fails (``sys.modules[name] = None`` is the import
#: system's own "not importable" marker, so find_spec returns None), collecting a file of ``sglang`` tests.
WITHOUT_SGLANG = ("import sys; sys.modules['sglang'] = None; import pytest; "
                  "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-rs', *sys.argv[1:]]))")


def _collect_without_sglang(ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-c", WITHOUT_SGLANG, str(TESTS / "test_plugin_serving.py")],
                          capture_output=True, text=True, env=env, cwd=TESTS.parent, timeout=300)


def test_ci_without_sglang_fails_the_run() -> None:
    proc = _collect_without_sglang("true")
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    assert "CI=true but SGLang is not importable here" in proc.stdout + proc.stderr


def test_without_sglang_outside_ci_the_sglang_tests_are_skipped() -> None:
    proc = _collect_without_sglang(None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "needs sglang>=0.5.22,<0.5.24" in proc.stdout and " passed" not in proc.stdout, proc.stdout


# ---------------------------------------------------------------------------- process groups

#: A child that starts a grandchild (which outlives it unless its group is killed), writes both pids to
#: argv[2], then sleeps argv[1] seconds.
FAMILY_TREE = """
import os, subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {grandchild.pid}")
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
time.sleep(float(sys.argv[1]))
"""


def _gone(pid: int) -> bool:
    """Not running, once SIGKILL has been delivered (a zombie awaiting its reaper counts as gone)."""
    import time

    for _ in range(600):  # delivery is asynchronous: poll for the state change rather than sleeping a guess
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def _pids(path: Path) -> list[int]:
    for _ in range(600):  # the child writes it right after starting; wait for it, not for a time
        if path.exists():
            return [int(x) for x in path.read_text().split()]
        import time

        time.sleep(0.05)
    raise AssertionError(f"{path} never written")


def test_a_normal_exit_takes_the_grandchildren_along(tmp_path: Path) -> None:
    proc = sglang_mode.run_in_own_group([sys.executable, "-c", FAMILY_TREE, "0", str(tmp_path / "pids")],
                                        timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert all(_gone(pid) for pid in _pids(tmp_path / "pids"))


def test_a_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="no exit within 3 s"):
        sglang_mode.run_in_own_group([sys.executable, "-c", FAMILY_TREE, "300", str(tmp_path / "pids")], timeout=3)
    assert all(_gone(pid) for pid in _pids(tmp_path / "pids"))


def test_an_exception_in_the_caller_kills_the_whole_group(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", FAMILY_TREE, "300", str(tmp_path / "pids")],
                            start_new_session=True)
    pids = _pids(tmp_path / "pids")
    with pytest.raises(KeyboardInterrupt):
        with sglang_mode.killing_group(proc):
            raise KeyboardInterrupt  # Ctrl-C while a test waits on its scenario
    assert all(_gone(pid) for pid in pids)


def test_verify_patches_timeout_kills_the_step_s_grandchildren(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("verify_patches", TESTS.parent / "patches" / "verify_patches.py")
    verify = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(verify)
    with pytest.raises(verify.VerifyError, match="no exit within 3 s"):
        verify._run([sys.executable, "-c", FAMILY_TREE, "300", str(tmp_path / "pids")], TESTS, {**os.environ},
                    "a step that hangs", timeout=3)
    assert all(_gone(pid) for pid in _pids(tmp_path / "pids"))
