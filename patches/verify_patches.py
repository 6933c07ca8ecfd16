#!/usr/bin/env python3
"""Check the upstream patches against the installed SGLang 0.5.23, end to end.

    python patches/verify_patches.py [--keep DIR] [--skip-unit] [--skip-behaviour]

1. Copies the installed sglang package (found with importlib.util.find_spec, not
   imported) to DIR/python/sglang, after checking every file against the wheel's
   RECORD hashes: the copy is the pristine 0.5.23 source, laid out as upstream.
2. For each patches/sglang-v0.5.23/NNNN-*.patch in order: ``git apply --check``,
   then ``git apply``.
3. Runs the unit tests the patches add (test/registered/unit/...) against the
   patched tree (PYTHONPATH=DIR/python).
4. Runs the project's behaviour tests against the patched tree with the plugin
   disabled (SGLANG_GLM_MTP_SGLANG_PATH=DIR/python, SGLANG_PLUGINS=<none>): the
   same refusals, precisions and runner choices must come from SGLang itself.

Exit status 0 when every step passed. Without --keep the tree goes to a
temporary folder that is removed afterwards.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SGLANG_VERSION = "0.5.23"
PATCH_DIR = REPO / "patches" / f"sglang-v{SGLANG_VERSION}"
#: An SGLANG_PLUGINS allow-list naming no installed plugin: SGLang loads none.
NO_PLUGINS = "__no_plugins__"
#: The project's behaviour tests that must pass without the plugin on a patched SGLang.
BEHAVIOUR_TESTS = ("tests/test_plugin_resolution.py", "tests/test_plugin_launch.py", "tests/test_plugin_draft.py")


class VerifyError(RuntimeError):
    pass


def patches() -> list[Path]:
    found = sorted(p for p in PATCH_DIR.glob("*.patch") if re.match(r"\d{4}-", p.name))
    if not found:
        raise VerifyError(f"no NNNN-*.patch in {PATCH_DIR}")
    return found


def installed_sglang() -> Path:
    """The installed package folder, without importing sglang (that alone takes seconds)."""
    spec = importlib.util.find_spec("sglang")
    if spec is None or not spec.submodule_search_locations:
        raise VerifyError("sglang is not installed (pip install -e '.[test]')")
    version = importlib.metadata.version("sglang")
    if version != SGLANG_VERSION:
        raise VerifyError(f"installed sglang is {version}; the patches are for {SGLANG_VERSION}")
    return Path(list(spec.submodule_search_locations)[0])


def modified_files(package: Path) -> list[str]:
    """Files of the installed package whose sha256 differs from the wheel's RECORD."""
    dist = importlib.metadata.distribution("sglang")
    record = next((f for f in dist.files or [] if f.name == "RECORD"), None)
    if record is None:
        raise VerifyError("sglang's RECORD is missing; cannot prove the source is pristine")
    site = package.parent
    changed = []
    with open(dist.locate_file(record), newline="") as handle:
        for path, digest, _size in csv.reader(handle):
            if not path.startswith("sglang/") or not digest or "__pycache__" in path:
                continue
            algorithm, expected = digest.split("=", 1)
            try:
                data = (site / path).read_bytes()
            except FileNotFoundError:
                changed.append(f"{path} (missing)")
                continue
            actual = base64.urlsafe_b64encode(hashlib.new(algorithm, data).digest()).rstrip(b"=").decode()
            if actual != expected:
                changed.append(path)
    return changed


def pristine_copy(dest: Path) -> Path:
    package = installed_sglang()
    changed = modified_files(package)
    if changed:
        raise VerifyError(f"the installed sglang differs from the {SGLANG_VERSION} wheel in {len(changed)} "
                          f"file(s), e.g. {', '.join(changed[:5])}; reinstall it")
    target = dest / "python" / "sglang"
    shutil.copytree(package, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest / "python"


def apply_patches(tree: Path) -> list[str]:
    applied = []
    for patch in patches():
        for args in (["--check"], []):
            proc = subprocess.run(["git", "apply", *args, str(patch)], cwd=tree, capture_output=True, text=True)
            if proc.returncode != 0:
                step = "does not apply cleanly" if args else "failed to apply"
                raise VerifyError(f"{patch.name} {step}:\n{proc.stderr}")
        applied.append(patch.name)
    return applied


def added_tests() -> list[str]:
    """test/... files the patches add, in patch order."""
    tests = []
    for patch in patches():
        for line in patch.read_text().splitlines():
            match = re.match(r"\+\+\+ b/(test/\S+/test_[^/\s]+\.py)$", line)
            if match and match[1] not in tests:
                tests.append(match[1])
    return tests


#: Seconds one step (a pytest run) may take before its whole process group is ended.
STEP_TIMEOUT = 2400.0


def _end_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the step's session (a pytest there turns it into Ctrl-C and ends its own scenario groups), then
    SIGKILL whatever is left: the step's grandchildren never outlive it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        if sig == signal.SIGTERM:
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass


def _run(argv: list[str], cwd: Path, env: dict[str, str], label: str, timeout: float = STEP_TIMEOUT) -> None:
    print(f"\n== {label}\n$ {' '.join(argv)}  (cwd {cwd})", flush=True)
    proc = subprocess.Popen(argv, cwd=cwd, env=env, start_new_session=True)
    try:
        returncode = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise VerifyError(f"{label}: no exit within {timeout:.0f} s; stopped it and its subprocesses") from None
    finally:  # timeout, Ctrl-C, or grandchildren left behind by a finished step
        _end_group(proc)
        if proc.poll() is None:
            proc.wait()
    if returncode != 0:
        raise VerifyError(f"{label}: exit status {returncode}")


def run_unit_tests(tree: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree / "python"), "SGLANG_PLUGINS": NO_PLUGINS}
    env.pop("SGLANG_GLM_MTP_SGLANG_PATH", None)
    _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning",
          *added_tests()], tree, env, "unit tests added by the patches, on the patched tree")


def run_behaviour_tests(tree: Path, extra: list[str] = ()) -> None:
    env = {**os.environ, "SGLANG_GLM_MTP_SGLANG_PATH": str(tree / "python"), "SGLANG_PLUGINS": NO_PLUGINS}
    _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *BEHAVIOUR_TESTS, *extra], REPO, env,
         "project behaviour tests on the patched tree, plugin disabled")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="build the patched tree here and keep it (must not exist)")
    parser.add_argument("--skip-unit", action="store_true", help="do not run the patches' unit tests")
    parser.add_argument("--skip-behaviour", action="store_true", help="do not run the project's behaviour tests")
    args = parser.parse_args(argv)
    if args.keep is not None and args.keep.exists():
        parser.error(f"{args.keep} exists")
    root = args.keep or Path(tempfile.mkdtemp(prefix="sglang-patched-"))
    try:
        root.mkdir(parents=True, exist_ok=True)
        print(f"pristine sglang {SGLANG_VERSION} -> {pristine_copy(root)}")
        for name in apply_patches(root):
            print(f"applied {name}")
        if not args.skip_unit:
            run_unit_tests(root)
        if not args.skip_behaviour:
            run_behaviour_tests(root)
    except VerifyError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\nOK: {len(patches())} patches apply to a pristine sglang {SGLANG_VERSION} and pass"
          + ("" if args.keep is None else f"; patched tree kept in {root}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
