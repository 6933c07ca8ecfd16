"""What the plugin adds to SGLang's server-args resolution on the full-scale GLM-5.2 layout.

Target (issue "Speed"): the preflight adds <= 0.15 s. Baseline in the same run: the same
resolution with the plugin excluded (``SGLANG_PLUGINS`` naming nothing installed). Each
mode runs in its own process (resolution hooks cannot be unregistered); inside it one
warm-up resolution absorbs SGLang's lazy imports, then five timed ones, each either with
the files in the page cache (warm) or after dropping it (cold, root only: on a first
launch the index and the draft shards' headers have not been read yet). The two modes'
processes alternate over ``--rounds`` rounds, so a machine that slows down or speeds up
during the run weighs on both alike. Min and median over every timed resolution.

``--baseline DIR`` adds a third process per round: the plugin of an older version of the
package (``git archive <commit> | tar -x -C DIR``).

    python benchmarks/bench_preflight.py [--workdir DIR] [--rounds N] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench_check import python_child, stats  # this folder is sys.path[0] when a benchmark runs as a script

RESULTS = Path(__file__).parent / "results" / "preflight.json"
TESTS = Path(__file__).resolve().parent.parent / "tests"

CHILD = r"""
import json, sys, time
sys.path.insert(0, {tests!r})
sys.path.insert(0, {benchmarks!r})
from bench_check import drop_page_cache
from scenarios_resolution import resolve
from sglang.srt.plugins import load_plugins
load_plugins()
argv = ["--model-path", {model!r}, "--device", "cuda", "--speculative-algorithm", "NEXTN",
        "--quantization", "modelopt_fp4"]
resolve(argv, "sm100")  # warm-up: SGLang's lazy imports, page cache
times = []
for _ in range(5):
    if {cold!r}:
        drop_page_cache()
    start = time.perf_counter()
    resolve(argv, "sm100")
    times.append(time.perf_counter() - start)
print("TIMES:" + json.dumps(times))
"""


def run(model: Path, plugins: str, cold: bool, baseline: Path | None = None) -> list[float]:
    child = CHILD.format(tests=str(TESTS), benchmarks=str(Path(__file__).parent), model=str(model), cold=cold)
    argv, env = python_child(child, {**os.environ, "SGLANG_PLUGINS": plugins}, baseline)
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("TIMES:")), None)
    if line is None:
        raise SystemExit(f"child failed ({plugins}):\n{proc.stderr[-3000:]}")
    return json.loads(line[len("TIMES:"):])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR")
    args = parser.parse_args()
    from sglang_glm_mtp.synthetic import full_scale_glm52

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-preflight-"))
    model = work / "grafted"
    if not (model / "config.json").exists():
        full_scale_glm52(model, with_draft=True, num_shards=46)
    result: dict[str, object] = {
        "checkpoint": "full-scale GLM-5.2 NVFP4 layout + BF16 layer 78 (46 shards, 233,087 tensors)",
        "machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start",
        "rounds": args.rounds,
    }
    result["baseline"] = str(args.baseline) if args.baseline else None
    kinds = [("with_plugin", "glm_mtp", None), ("without_plugin", "no-such-plugin", None)]
    if args.baseline is not None:
        kinds.append(("baseline_plugin", "glm_mtp", args.baseline))
    for mode, cold in (("warm", False), ("cold", True)):
        times: dict[str, list[float]] = {kind: [] for kind, _, _ in kinds}
        for round_ in range(args.rounds):
            for kind, plugins, baseline in kinds[round_ % len(kinds):] + kinds[:round_ % len(kinds)]:
                times[kind] += run(model, plugins, cold, baseline)
        row: dict[str, object] = {f"{kind}_s": stats(values, 4) for kind, values in times.items()}
        for kind in times:
            if kind != "without_plugin":
                added = "plugin_adds_s" if kind == "with_plugin" else "baseline_adds_s"
                row[added] = {"min": round(min(times[kind]) - min(times["without_plugin"]), 4),
                              "median": round(statistics.median(times[kind])
                                              - statistics.median(times["without_plugin"]), 4)}
        result[mode] = row
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
