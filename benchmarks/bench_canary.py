"""What the accept-length canary adds to one verify step (moved here from a test: tests assert no timings).

The real ``SchedulerMetricsReporter.update_spec_metrics`` with the plugin's hook installed
through ``load_plugins()`` against SGLang's own method (``__wrapped__``), on a canary
that is judging (warm-up past, no window closing), as ``process_batch_result_decode``
calls it. One process (SGLang imports once); best of 5 runs of 20,000 calls each.

    python benchmarks/bench_canary.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "canary.json"
TESTS = Path(__file__).resolve().parent.parent / "tests"

CHILD = r"""
import json, sys, time
sys.path.insert(0, {tests!r})
from scenarios_serving import _as_scheduler, _reporter, _start, _verify_steps
from scenarios_resolution import resolve
from sglang_glm_mtp.plugin import canary
from sglang_glm_mtp.plugin.settings import CanarySettings

_start()
server_args = resolve(["--model-path", {model!r}, "--device", "cuda", "--speculative-algorithm", "NEXTN",
                       "--quantization", "modelopt_fp4"], "sm100")
_as_scheduler(server_args)
canary.configure_canary(CanarySettings(warmup_steps=10**9))
reporter = _reporter()
_verify_steps(reporter, 1, 4, 3.0)  # activation happens once, outside the timing
method = type(reporter).update_spec_metrics
n, out = 20000, {{}}
for label, fn in (("original", method.__wrapped__), ("wrapped", method)):
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn(reporter, 4, 8, num_accept_tokens=12, num_block_accept_tokens=0, num_cap_tokens=0)
        best = min(best, (time.perf_counter() - start) / n)
    out[label] = best
print("TIMES:" + json.dumps(out))
"""


def main() -> None:
    from sglang_glm_mtp.synthetic import tiny_pair

    with tempfile.TemporaryDirectory(prefix="bench-canary-") as work:
        model = tiny_pair(Path(work), target_has_draft=True).target
        env = {**os.environ, "SGLANG_PLUGINS": "glm_mtp"}
        proc = subprocess.run([sys.executable, "-c", CHILD.format(tests=str(TESTS), model=str(model))],
                              capture_output=True, text=True, env=env, timeout=900)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("TIMES:")), None)
    if line is None:
        raise SystemExit(f"child failed:\n{proc.stderr[-3000:]}")
    times = json.loads(line[len("TIMES:"):])
    result = {"original_us": round(times["original"] * 1e6, 3), "wrapped_us": round(times["wrapped"] * 1e6, 3)}
    result["canary_adds_us"] = round(result["wrapped_us"] - result["original_us"], 3)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
