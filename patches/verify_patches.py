#!/usr/bin/env python3
"""Check the upstream patches against the installed SGLang 0.5.23, end to end.

    python patches/verify_patches.py [UPSTREAM_TESTS] [--keep DIR] [--skip-unit]
                                     [--skip-upstream] [--skip-behaviour]

UPSTREAM_TESTS is a folder of SGLang's own unit tests, copied verbatim from the
upstream repository with a PROVENANCE.txt naming each file's upstream path
(default: ../shared/upstream-tests/sglang next to this repository, when it
exists). They are never copied into this repository.

1. Copies the installed sglang package (found with importlib.util.find_spec, not
   imported) to DIR/python/sglang, after checking every file against the wheel's
   RECORD hashes: the copy is the pristine 0.5.23 source, laid out as upstream.
   The upstream tests go to their upstream paths (DIR/test/registered/unit/...),
   so a patch can extend them the way a pull request would.
2. For each patches/sglang-v0.5.23/NNNN-*.patch in order: ``git apply --check``,
   then ``git apply`` (without UPSTREAM_TESTS, the hunks on those files are
   left out and said so).
3. Runs the unit tests the patches add (test/registered/unit/...) against the
   patched tree (PYTHONPATH=DIR/python).
4. Runs the upstream tests on the pristine installed sglang and on the patched
   tree (the patched copies of the files): every test that passes on pristine
   must pass patched, and every test the patches add to those files must pass.
5. Runs the project's behaviour tests against the patched tree with the plugin
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SGLANG_VERSION = "0.5.23"
PATCH_DIR = REPO / "patches" / f"sglang-v{SGLANG_VERSION}"
#: An SGLANG_PLUGINS allow-list naming no installed plugin: SGLang loads none.
NO_PLUGINS = "__no_plugins__"
#: SGLang's own unit tests, verbatim, with PROVENANCE.txt: the default UPSTREAM_TESTS.
DEFAULT_UPSTREAM_TESTS = REPO.parent / "shared" / "upstream-tests" / "sglang"
#: Where an upstream test whose upstream path is unknown goes in the tree.
UNPLACED_UPSTREAM_DIR = "test/registered/unit/upstream_unplaced"
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


def pristine_copy(dest: Path, upstream_tests: Path | None = None) -> Path:
    """The pristine tree in ``dest``: python/sglang, and the upstream tests at their upstream paths."""
    package = installed_sglang()
    changed = modified_files(package)
    if changed:
        raise VerifyError(f"the installed sglang differs from the {SGLANG_VERSION} wheel in {len(changed)} "
                          f"file(s), e.g. {', '.join(changed[:5])}; reinstall it")
    target = dest / "python" / "sglang"
    shutil.copytree(package, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if upstream_tests is not None:
        for name, path in upstream_test_paths(upstream_tests).items():
            (dest / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(upstream_tests / name, dest / path)
    return dest / "python"


def upstream_test_paths(folder: Path) -> dict[str, str]:
    """File in ``folder`` -> its path in the upstream repository (PROVENANCE.txt; unknown: UNPLACED_UPSTREAM_DIR)."""
    if not folder.is_dir():
        raise VerifyError(f"upstream tests: {folder} is not a folder")
    known: dict[str, str] = {}
    provenance = folder / "PROVENANCE.txt"
    if provenance.is_file():
        for line in provenance.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(".py") and parts[1].startswith("test/"):
                known[parts[0]] = parts[1]
    files = sorted(p.name for p in folder.glob("test_*.py"))
    if not files:
        raise VerifyError(f"upstream tests: no test_*.py in {folder}")
    return {name: known.get(name, f"{UNPLACED_UPSTREAM_DIR}/{name}") for name in files}


def _patch_files(patch: Path) -> list[tuple[str, bool]]:
    """(path, created) for each file a patch touches."""
    touched = []
    for diff in re.split(r"^diff --git ", patch.read_text(), flags=re.M)[1:]:
        match = re.match(r"a/(\S+) b/(\S+)\n", diff)
        if match:
            touched.append((match[2], "\nnew file mode " in diff.split("\n@@", 1)[0]))
    return touched


def apply_patches(tree: Path) -> list[str]:
    """Apply every patch; hunks on upstream test files absent from ``tree`` (no UPSTREAM_TESTS) are left out."""
    applied = []
    for patch in patches():
        excluded = [path for path, created in _patch_files(patch)
                    if path.startswith("test/") and not created and not (tree / path).exists()]
        excludes = [f"--exclude={path}" for path in excluded]
        for args in (["--check"], []):
            proc = subprocess.run(["git", "apply", *args, *excludes, str(patch)], cwd=tree, capture_output=True,
                                  text=True)
            if proc.returncode != 0:
                step = "does not apply cleanly" if args else "failed to apply"
                raise VerifyError(f"{patch.name} {step}:\n{proc.stderr}")
        if excluded:
            print(f"{patch.name}: left out its changes to {', '.join(excluded)} (no upstream tests given)")
        applied.append(patch.name)
    return applied


def added_tests() -> list[str]:
    """test/... files the patches create, in patch order."""
    tests = []
    for patch in patches():
        for path, created in _patch_files(patch):
            if created and re.match(r"test/\S+/test_[^/\s]+\.py$", path) and path not in tests:
                tests.append(path)
    return tests


def modified_upstream_tests() -> list[str]:
    """Upstream test files the patches extend (not create), in patch order."""
    tests = []
    for patch in patches():
        for path, created in _patch_files(patch):
            if not created and path.startswith("test/") and path not in tests:
                tests.append(path)
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


def _run(argv: list[str], cwd: Path, env: dict[str, str], label: str, timeout: float = STEP_TIMEOUT,
         stdout: Any = None) -> None:
    print(f"\n== {label}\n$ {' '.join(argv)}  (cwd {cwd})", flush=True)
    proc = subprocess.Popen(argv, cwd=cwd, env=env, start_new_session=True, stdout=stdout)
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


#: pytest -rA summary lines: outcome and node id (subtest outcomes count for their test).
_OUTCOME = re.compile(r"^(?:SUB)?(PASSED|FAILED|ERROR)(?:\([^)]*\))? (\S+)")


def _outcomes(report: str) -> dict[str, str]:
    """Test (file basename::name) -> "passed" or "failed", from a ``pytest -rA`` report."""
    outcomes: dict[str, str] = {}
    for line in report.splitlines():
        match = _OUTCOME.match(line)
        if not match:
            continue
        test = match[2].rsplit("/", 1)[-1]
        if match[1] == "PASSED":
            outcomes.setdefault(test, "passed")
        else:
            outcomes[test] = "failed"
    return outcomes


def _run_upstream(files: list[Path], cwd: Path, env: dict[str, str], label: str, log: Path) -> dict[str, str]:
    env = {**env, "SGLANG_PLUGINS": NO_PLUGINS, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("SGLANG_GLM_MTP_SGLANG_PATH", None)
    with open(log, "w") as out:
        try:
            _run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-W",
                  "ignore::DeprecationWarning", *map(str, files)], cwd, env, label, stdout=out)
        except VerifyError as exc:
            if not str(exc).endswith("exit status 1"):  # 1: some tests failed, compared below
                raise
    outcomes = _outcomes(log.read_text())
    if not outcomes:
        raise VerifyError(f"{label}: no test outcome in {log}:\n{log.read_text()[-3000:]}")
    return outcomes


def run_upstream_tests(tree: Path, folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The upstream tests on the pristine installed sglang, then on the patched tree; raise on any regression.

    Pristine: the folder's files themselves (copied, so nothing is written there), against the installed
    package this script has checked against the wheel. Patched: the tree's copies, as the patches left them.
    """
    placed = upstream_test_paths(folder)
    pristine_dir = tree / "upstream-pristine"
    pristine_dir.mkdir(exist_ok=True)
    for name in placed:
        shutil.copyfile(folder / name, pristine_dir / name)
    pristine_env = dict(os.environ)
    pristine_env["PYTHONPATH"] = os.pathsep.join(p for p in pristine_env.get("PYTHONPATH", "").split(os.pathsep)
                                                 if p and not (Path(p) / "sglang").is_dir())
    patched_env = {**pristine_env, "PYTHONPATH": os.pathsep.join(
        p for p in (str(tree / "python"), pristine_env["PYTHONPATH"]) if p)}
    # The two runs are independent (own logs, own interpreters): run them side by side.
    with ThreadPoolExecutor(max_workers=2) as pool:
        pristine_run = pool.submit(_run_upstream, [pristine_dir / n for n in placed], pristine_dir, pristine_env,
                                   "upstream tests on the pristine installed sglang", tree / "upstream-pristine.log")
        patched_run = pool.submit(_run_upstream, [tree / p for p in placed.values()], tree, patched_env,
                                  "upstream tests on the patched tree", tree / "upstream-patched.log")
        pristine, patched = pristine_run.result(), patched_run.result()
    for label, outcomes in (("pristine", pristine), ("patched", patched)):
        counts = {o: sum(1 for v in outcomes.values() if v == o) for o in ("passed", "failed")}
        print(f"upstream tests, {label}: {counts['passed']} passed, {counts['failed']} failed")
    regressions = sorted(t for t, o in pristine.items() if o == "passed" and patched.get(t) != "passed")
    new_failing = sorted(t for t, o in patched.items() if t not in pristine and o != "passed")
    if regressions or new_failing:
        raise VerifyError("upstream tests that pass on pristine but not with the patches: "
                          f"{', '.join(regressions) or 'none'}; tests the patches add to upstream files that "
                          f"fail: {', '.join(new_failing) or 'none'} (logs: {tree}/upstream-*.log)")
    added = sorted(t for t in patched if t not in pristine)
    print(f"upstream tests: no regression; {len(added)} test(s) the patches add to them pass")
    return pristine, patched


def run_behaviour_tests(tree: Path, extra: list[str] = ()) -> None:
    env = {**os.environ, "SGLANG_GLM_MTP_SGLANG_PATH": str(tree / "python"), "SGLANG_PLUGINS": NO_PLUGINS}
    _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *BEHAVIOUR_TESTS, *extra], REPO, env,
         "project behaviour tests on the patched tree, plugin disabled")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("upstream_tests", nargs="?", type=Path,
                        default=DEFAULT_UPSTREAM_TESTS if DEFAULT_UPSTREAM_TESTS.is_dir() else None,
                        help="folder of SGLang's own unit tests with PROVENANCE.txt (default: "
                             f"{DEFAULT_UPSTREAM_TESTS} when it exists)")
    parser.add_argument("--keep", type=Path, help="build the patched tree here and keep it (must not exist)")
    parser.add_argument("--skip-unit", action="store_true", help="do not run the patches' unit tests")
    parser.add_argument("--skip-upstream", action="store_true", help="do not run the upstream tests")
    parser.add_argument("--skip-behaviour", action="store_true", help="do not run the project's behaviour tests")
    args = parser.parse_args(argv)
    if args.keep is not None and args.keep.exists():
        parser.error(f"{args.keep} exists")
    root = args.keep or Path(tempfile.mkdtemp(prefix="sglang-patched-"))
    try:
        root.mkdir(parents=True, exist_ok=True)
        upstream = args.upstream_tests.resolve() if args.upstream_tests is not None else None
        print(f"pristine sglang {SGLANG_VERSION} -> {pristine_copy(root, upstream)}"
              + (f" (upstream tests from {upstream})" if upstream else " (no upstream tests)"))
        for name in apply_patches(root):
            print(f"applied {name}")
        if not args.skip_unit:
            run_unit_tests(root)
        if upstream is not None and not args.skip_upstream:
            run_upstream_tests(root, upstream)
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
