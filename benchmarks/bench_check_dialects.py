"""``check`` on the full-scale GLM-5.2 layout in each quantization dialect, against ModelOpt, in one run.

The same layout-only GLM-5.2 (45 NVFP4 shards, real headers, sparse data, the BF16 draft
layer grafted) written as ModelOpt NVFP4, compressed-tensors NVFP4, Quark NVFP4 and Quark
FP8. Each ``sglang-glm-mtp check --json DIR`` runs as its own process (the console script,
byte-compiled as pip leaves it), interleaved so that no layout always goes first, the page
cache dropped before each run when we are root. Reports min and median per layout and each
dialect's median over ModelOpt's (issue 17's goal: within 10%).

    python benchmarks/bench_check_dialects.py [--workdir DIR] [--runs N]

Writes benchmarks/results/check_dialects.json; docs/benchmarks.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_check import byte_compile, check_command, drop_page_cache, machine, run_process, stats  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "check_dialects.json"
LAYOUTS = {"modelopt-nvfp4": ("nested", "nvfp4"), "compressed-tensors-nvfp4": ("compressed-tensors", "nvfp4"),
           "quark-nvfp4": ("quark", "nvfp4"), "quark-fp8": ("quark", "fp8")}
GENERATE = """
import sys
from pathlib import Path
from sglang_glm_mtp.synthetic import full_scale_glm52
full_scale_glm52(Path(sys.argv[1]), with_draft=True, quant_format=sys.argv[2], storage=sys.argv[3], num_shards=45)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None, help="keep the synthetic layouts here (reused)")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-dialects-"))
    byte_compile(Path(__file__).resolve().parents[1])
    dirs: dict[str, Path] = {}
    for name, (fmt, storage) in LAYOUTS.items():
        dirs[name] = root / name
        if not (dirs[name] / "model.safetensors.index.json").exists():
            subprocess.run([sys.executable, "-c", GENERATE, str(dirs[name]), fmt, storage], check=True)
    cold = drop_page_cache()
    times: dict[str, list[float]] = {name: [] for name in dirs}
    cpu: dict[str, list[float]] = {name: [] for name in dirs}
    names = list(dirs)
    for i in range(args.runs):
        for name in names[i % len(names):] + names[:i % len(names)]:
            if cold:
                drop_page_cache()
            wall, _, code, cpu_s = run_process(check_command(dirs[name]))
            if code != 0:
                raise SystemExit(f"check exited {code} on {dirs[name]}: the grafted layout should be ready")
            times[name].append(wall)
            cpu[name].append(cpu_s)
    base = statistics.median(times["modelopt-nvfp4"])
    result: dict[str, Any] = {
        "machine": machine(), "runs": args.runs,
        "page_cache": "dropped before every process run" if cold else "warm (not root)",
        "layouts": {name: {"process_s": stats(times[name]), "cpu_s": stats(cpu[name]),
                           "median_over_modelopt": round(statistics.median(times[name]) / base, 3),
                           "runs_s": [round(t, 3) for t in times[name]]} for name in names},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
