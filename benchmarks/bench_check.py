"""Benchmark ``check`` on the full-scale, layout-only GLM-5.2 NVFP4 checkpoint.

Targets (issue: check): in-process ``inspect`` <= 0.5 s after imports, peak memory <= 200 MB.
Baseline in the same run: opening every shard with ``safetensors.safe_open`` (the naive
way to look for layer 78). Also reports the cold process time of the CLI.

    python benchmarks/bench_check.py [--workdir DIR]

Writes benchmarks/results/check.json; docs/benchmarks.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors import safe_open

from sglang_glm_mtp.checkpoint import inspect
from sglang_glm_mtp.synthetic import full_scale_glm52

RESULTS = Path(__file__).parent / "results" / "check.json"


def _best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def drop_page_cache() -> bool:
    """Cold-cache runs need root on Linux; without it only warm numbers are reported."""
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def _cold(n: int, fn) -> float | None:
    times = []
    for _ in range(n):
        if not drop_page_cache():
            return None
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def naive_scan(directory: Path) -> int:
    found = 0
    for shard in sorted(directory.glob("*.safetensors")):
        with safe_open(str(shard), framework="numpy") as handle:
            found += sum(1 for k in handle.keys() if k.startswith("model.layers.78."))
    return found


def cli_run(directory: Path) -> tuple[float, float]:
    """Cold process: wall seconds and peak RSS (MB) of ``sglang-glm-mtp check``."""
    code = ("import resource, sys, time; t=time.perf_counter(); from sglang_glm_mtp.cli import main; "
            f"rc=main(['check', '--json', {str(directory)!r}]); "
            "sys.stderr.write(f'{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n')")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    wall = time.perf_counter() - start
    rss_kb = int(proc.stderr.strip().splitlines()[-1])
    return wall, rss_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-check-"))
    results: dict[str, object] = {"machine": f"{platform.machine()} {platform.python_version()}"}
    for label, with_draft, shards in (("missing", False, 45), ("grafted", True, 46)):
        directory = work / label
        if not (directory / "config.json").exists():
            full_scale_glm52(directory, with_draft=with_draft, num_shards=shards)
        report = inspect(str(directory))
        check_s = _best_of(5, lambda: inspect(str(directory)))
        naive_s = _best_of(3, lambda: naive_scan(directory))
        check_cold = _cold(3, lambda: inspect(str(directory)))
        naive_cold = _cold(3, lambda: naive_scan(directory))
        cold_s, rss_mb = cli_run(directory)
        results[label] = {
            "status": report.status, "found_tensors": report.found_tensors, "shards": len(list(directory.glob("*.safetensors"))),
            "check_in_process_s": round(check_s, 4), "naive_safe_open_all_s": round(naive_s, 4),
            "naive_over_check": round(naive_s / check_s, 1),
            "cold_cache": None if check_cold is None or naive_cold is None else {
                "check_s": round(check_cold, 4), "naive_s": round(naive_cold, 4),
                "naive_over_check": round(naive_cold / check_cold, 1)},
            "cli_cold_process_s": round(cold_s, 3),
            "cli_peak_rss_mb": round(rss_mb, 1),
        }
        print(label, json.dumps(results[label]))
    results["python_peak_rss_mb_this_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
