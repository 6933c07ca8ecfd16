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

    python benchmarks/bench_check.py [--workdir DIR] [--runs N]

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


def check_command(directory: Path) -> list[str]:
    """The console script pip installed next to this interpreter (not a version-manager shim)."""
    script = Path(sys.executable).parent / "sglang-glm-mtp"
    found = str(script) if script.exists() else shutil.which("sglang-glm-mtp")
    base = [found] if found else [sys.executable, "-m", "sglang_glm_mtp.cli"]
    return [*base, "check", "--json", str(directory)]


def stats(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3)}


def measure(directory: Path, runs: int) -> dict[str, Any]:
    cold = drop_page_cache()
    check_cmd, naive_cmd = check_command(directory), [sys.executable, "-c", NAIVE, str(directory)]
    times: dict[str, list[float]] = {"check": [], "naive": []}
    rss: dict[str, list[float]] = {"check": [], "naive": []}
    cpu: dict[str, list[float]] = {"check": [], "naive": []}
    for i in range(runs):
        order = ("check", "naive") if i % 2 == 0 else ("naive", "check")  # neither always goes first
        for name in order:
            if cold:
                drop_page_cache()
            wall, peak, code, cpu_s = run_process(check_cmd if name == "check" else naive_cmd)
            cpu[name].append(cpu_s)
            if name == "check" and code not in (0, 1):
                raise SystemExit(f"check failed with exit {code} on {directory}")
            times[name].append(wall)
            rss[name].append(peak)
    child = json.loads(subprocess.run([sys.executable, "-c", IN_PROCESS, str(directory), str(runs)],
                                      check=True, capture_output=True, text=True).stdout)
    in_process = child["times"]
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
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-check-"))
    results: dict[str, Any] = {"machine": machine(), "command": " ".join(check_command(Path("DIR")))}
    for label, with_draft, shards in (("missing", False, 45), ("grafted", True, 46)):
        directory = work / label
        if not (directory / "config.json").exists():
            subprocess.run([sys.executable, "-c", GENERATE, str(directory), str(int(with_draft)), str(shards)],
                           check=True)
        results[label] = measure(directory, args.runs)
        print(label, json.dumps({k: v for k, v in results[label].items() if k != "runs"}))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
