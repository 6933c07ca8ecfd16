"""Benchmark ``check`` as users run it, side by side with the naive header scan, in one run.

On the full-scale, layout-only GLM-5.2 NVFP4 checkpoint (``synthetic.full_scale_glm52``:
45 shards, 232,296 tensors; and the grafted variant, 46 shards) it times, as separate
processes, interleaved, with the page cache dropped before each run when we are root:

* ``sglang-glm-mtp check --json DIR`` (the installed console script, else ``python -m
  sglang_glm_mtp.cli``), the script itself rather than a pyenv-style shim;
* the naive way to look for layer 78: a Python process that ``safe_open``s every shard
  header and lists its keys;

and ``inspect_checkpoint`` in one warm Python process (a child as well). Reports min and median of
each and the ratio check / naive. Issue 11's goals: the CLI ≤ 0.5x the naive process and
≤ 0.6 s; in-process ≤ 0.15 s.

Both processes run with their modules byte-compiled, as ``pip install`` leaves a package
(the naive loop's safetensors is; a checkout with ``PYTHONDONTWRITEBYTECODE=1`` set would
otherwise recompile this package's sources in every run). ``--baseline DIR`` also times
an older version of the package (e.g. ``git archive <commit> | tar -x -C DIR``) the same
way, interleaved in the same runs.

    python benchmarks/bench_check.py [--workdir DIR] [--runs N] [--baseline DIR]

Writes benchmarks/results/check.json; docs/benchmarks.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "check.json"
IN_PROCESS_ROUNDS = 3

NAIVE = """
import sys
from pathlib import Path
from safetensors import safe_open
found = 0
for shard in sorted(Path(sys.argv[1]).glob("*.safetensors")):
    with safe_open(str(shard), framework="numpy") as handle:
        found += sum(1 for k in handle.keys() if k.startswith("model.layers.78."))
print(found)
"""

#: In-process timing, in a child too: this process stays small, so a child's peak RSS (which
#: counts the pages it shares with its parent until exec) is the child's own.
IN_PROCESS = """
import json, sys, time
from sglang_glm_mtp.checkpoint import inspect_checkpoint
from sglang_glm_mtp.checkpoint.jsonio import backend
inspect_checkpoint(sys.argv[1])  # warm
times = []
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    report = inspect_checkpoint(sys.argv[1])
    times.append(time.perf_counter() - start)
print(json.dumps({"times": times, "status": report.status, "found": report.found_tensors, "json": backend()}))
"""

GENERATE = """
import sys
from pathlib import Path
from sglang_glm_mtp.synthetic import full_scale_glm52
full_scale_glm52(Path(sys.argv[1]), with_draft=sys.argv[2] == "1", num_shards=int(sys.argv[3]))
"""


def drop_page_cache() -> bool:
    """Cold-cache runs need root on Linux; without it only warm numbers are reported."""
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def run_process(cmd: list[str]) -> tuple[float, float, int, float]:
    """Wall seconds, peak RSS (MB), exit code and CPU seconds (user + system) of one child process.

    CPU time is reported besides wall time because it barely moves when other work shares
    the cores; wall time on a cold cache also counts waiting for the disk.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.stderr is not None:
        proc.stderr.close()
    return wall, usage.ru_maxrss / 1024, proc.returncode, usage.ru_utime + usage.ru_stime


def byte_compile(package_root: Path) -> None:
    """What pip does at install: write the package's ``.pyc`` files, so no run pays for compiling it."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package_root / "sglang_glm_mtp")], check=True,
                   env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})


def baseline_command(baseline: Path, directory: Path) -> list[str]:
    """An older checkout's ``check``, through the same entry point as the console script."""
    entry = f"import sys; sys.path.insert(0, {str(baseline)!r}); from sglang_glm_mtp.cli import main; sys.exit(main())"
    return [sys.executable, "-c", entry, "check", "--json", str(directory)]


def check_command(directory: Path) -> list[str]:
    """The console script pip installed next to this interpreter (not a version-manager shim)."""
    script = Path(sys.executable).parent / "sglang-glm-mtp"
    found = str(script) if script.exists() else shutil.which("sglang-glm-mtp")
    base = [found] if found else [sys.executable, "-m", "sglang_glm_mtp.cli"]
    return [*base, "check", "--json", str(directory)]


def stats(values: list[float], digits: int = 3) -> dict[str, float]:
    return {"min": round(min(values), digits), "median": round(statistics.median(values), digits)}


def python_child(code: str, env: dict[str, str], baseline: Path | None) -> tuple[list[str], dict[str, str]]:
    """argv and environment of ``python -c code``, with an older version of the package first when given.

    ``-P``: nothing before PYTHONPATH on sys.path (``-c`` would put the current directory, a checkout, first).
    """
    if baseline is not None:
        env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(baseline), env.get("PYTHONPATH")]))}
    return [sys.executable, "-P", "-c", code], env


def in_process_times(directory: Path, runs: int, baseline: Path | None = None) -> dict[str, Any]:
    argv, env = python_child(IN_PROCESS, dict(os.environ), baseline)
    return json.loads(subprocess.run([*argv, str(directory), str(runs)], env=env,
                                     check=True, capture_output=True, text=True).stdout)


def measure(directory: Path, runs: int, baseline: Path | None = None) -> dict[str, Any]:
    cold = drop_page_cache()
    commands = {"check": check_command(directory), "naive": [sys.executable, "-c", NAIVE, str(directory)]}
    if baseline is not None:
        commands["baseline"] = baseline_command(baseline, directory)
    times: dict[str, list[float]] = {name: [] for name in commands}
    rss: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for i in range(runs):
        order = names[i % len(names):] + names[:i % len(names)]  # no command always goes first
        for name in order:
            if cold:
                drop_page_cache()
            wall, peak, code, cpu_s = run_process(commands[name])
            cpu[name].append(cpu_s)
            if name != "naive" and code not in (0, 1):
                raise SystemExit(f"{name} failed with exit {code} on {directory}")
            times[name].append(wall)
            rss[name].append(peak)
    # in-process: children of this version and of the baseline alternate, a few timings each, so that a
    # machine that slows down during the run (this VM does) weighs on both alike
    in_process: list[float] = []
    baseline_in_process: list[float] = []
    for _ in range(IN_PROCESS_ROUNDS):
        child = in_process_times(directory, max(1, runs // IN_PROCESS_ROUNDS))
        in_process += child["times"]
        if baseline is not None:
            baseline_in_process += in_process_times(directory, max(1, runs // IN_PROCESS_ROUNDS), baseline)["times"]
    return {
        "status": child["status"], "found_tensors": child["found"], "json_decoder": child["json"],
        "shards": len(list(directory.glob("*.safetensors"))),
        "page_cache": "dropped before every process run" if cold else "warm (not root)",
        "cli_process_s": stats(times["check"]), "naive_process_s": stats(times["naive"]),
        "cli_over_naive": {"min": round(min(times["check"]) / min(times["naive"]), 2),
                           "median": round(statistics.median(times["check"]) / statistics.median(times["naive"]), 2)},
        "cli_cpu_s": stats(cpu["check"]), "naive_cpu_s": stats(cpu["naive"]),
        "cli_peak_rss_mb": round(max(rss["check"]), 1), "naive_peak_rss_mb": round(max(rss["naive"]), 1),
        "in_process_warm_s": stats(in_process),
        **({"baseline_in_process_warm_s": stats(baseline_in_process or []),
            "baseline_process_s": stats(times["baseline"]), "baseline_cpu_s": stats(cpu["baseline"]),
            "baseline_over_naive": {"min": round(min(times["baseline"]) / min(times["naive"]), 2),
                                    "median": round(statistics.median(times["baseline"])
                                                    / statistics.median(times["naive"]), 2)},
            "baseline_runs_s": [round(t, 3) for t in times["baseline"]]} if "baseline" in times else {}),
        "runs": {"cli_s": [round(t, 3) for t in times["check"]], "naive_s": [round(t, 3) for t in times["naive"]],
                 "cli_cpu_s": [round(t, 3) for t in cpu["check"]], "naive_cpu_s": [round(t, 3) for t in cpu["naive"]]},
    }


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{os.cpu_count()} cores {cpu}, {platform.system()} {platform.release()}, Python "
            f"{platform.python_version()}, load average {load:.1f} at start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, default=None, help="keep the synthetic layouts here (reused)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                        help="an older version of the package (a `git archive` of its commit) to time beside")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-check-"))
    byte_compile(Path(__file__).resolve().parent.parent)
    if args.baseline is not None:
        byte_compile(args.baseline)
    results: dict[str, Any] = {"machine": machine(), "command": " ".join(check_command(Path("DIR"))),
                               "bytecode": "compiled before timing, as pip install leaves a package",
                               "baseline": str(args.baseline) if args.baseline else None}
    for label, with_draft, shards in (("missing", False, 45), ("grafted", True, 46)):
        directory = work / label
        if not (directory / "config.json").exists():
            subprocess.run([sys.executable, "-c", GENERATE, str(directory), str(int(with_draft)), str(shards)],
                           check=True)
        results[label] = measure(directory, args.runs, args.baseline)
        print(label, json.dumps({k: v for k, v in results[label].items() if k != "runs"}))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
