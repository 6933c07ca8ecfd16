"""Benchmark ``graft``: throughput against ``cp``, peak memory at two layer sizes, and the naive way.

Targets (issue: graft speed):
* wall time of the CLI as a process <= 1.25x ``cp`` + ``sync`` of the same number of bytes on
  the same disk, page cache dropped before each run (stretch: 1.0x);
* peak RSS <= 256 MB whatever the layer size (shown at two sizes, the larger >= 4x the smaller);
* beside it, the naive baseline hand-made scripts use: ``safe_open`` + ``get_tensor`` for
  every draft tensor, then ``safetensors.torch.save_file`` (SGLang's export_deepseek_nextn.py).

Source: a synthetic BF16 GLM-5.2-like checkpoint (10 dense layers; the MoE draft layer
``model.layers.10`` sorts between layers 1 and 2, as 78 does between 77 and 8, so it is
spread over several shards interleaved with other layers' tensors), real bytes on disk.
Target: its NVFP4 counterpart without the draft layer. Every timed run starts with the
page cache dropped (``echo 3 > /proc/sys/vm/drop_caches``; root only, otherwise every
run is pre-warmed instead and the results say so). Each repetition runs cp, cp+sync and
graft (and the ``--baseline`` graft, if given) in shuffled order; minimum and median of
every column are reported, and the ratio graft / cp+sync both of the medians and per
repetition (paired, which cancels the drift of a shared machine). ``graft_execute`` is the
in-process part of the same CLI runs (``execute``'s elapsed_s: copy, verify, check,
commit), i.e. the CLI time minus interpreter start-up, imports and planning.

    python benchmarks/bench_graft.py [--workdir DIR] [--repeat 5] [--sizes 1gb] [--full-scale] [--lineage]
                                     [--baseline DIR]

``--baseline DIR`` also runs the graft CLI with ``PYTHONPATH=DIR`` (e.g. ``git archive``
of an earlier commit) in the same repetitions, to compare two versions under equal load.

``--full-scale`` also grafts the layout-only GLM-5.2 (282 BF16 shards -> 45 NVFP4 shards,
19.9 GB of zeros from sparse files) to show peak memory with the real 233,087-entry index.
Writes benchmarks/results/graft.json and prints the table docs/benchmarks.md quotes.
Needs about 4x the large layer size of free disk (7 GB for the default sizes), cleaned up at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_check import drop_page_cache  # same folder: run as a script
from sglang_glm_mtp import synthetic
from sglang_glm_mtp.checkpoint.writer import atomic_write_json

RESULTS = Path(__file__).parent / "results" / "graft.json"
#: draft-layer sizes by routed experts: ~0.56 GB, ~1.12 GB (the issue's ~1 GB), ~2.23 GB
SIZES = {"small": 88, "1gb": 176, "large": 352}
EXPERT_BYTES = 3 * 1024 * 1024 * 2  # gate, up, down at hidden 1024 x moe_intermediate 1024, BF16
SETTLE_S = 3.0


def bench_config(experts: int) -> dict[str, Any]:
    layers = 10
    return synthetic.tiny_glm52_config(
        num_hidden_layers=layers, first_k_dense_replace=layers, mlp_layer_types=["dense"] * layers,
        indexer_types=["full"] * layers, hidden_size=1024, intermediate_size=4096, moe_intermediate_size=1024,
        n_routed_experts=experts, vocab_size=4096)


def build(work: Path, experts: int) -> tuple[Path, Path, int]:
    cfg = bench_config(experts)
    source, target = work / "source-bf16", work / "target-nvfp4"
    specs = synthetic.model_specs(cfg, "bf16", with_draft=True)
    total = sum(s.nbytes for s in specs)
    if not (source / "config.json").exists():
        synthetic.write_checkpoint(source, cfg, specs, num_shards=max(4, total // 400_000_000))
    if not (target / "config.json").exists():
        target.mkdir(parents=True, exist_ok=True)
        target_cfg = synthetic.write_quant_config(target, cfg, "nested", synthetic.nvfp4_exclude_modules(cfg))
        synthetic.write_checkpoint(target, target_cfg, synthetic.model_specs(cfg, "nvfp4", with_draft=False),
                                   num_shards=2)
    index = json.loads((source / "model.safetensors.index.json").read_text())
    from sglang_glm_mtp.checkpoint import inspect_checkpoint as inspect

    report = inspect(str(source))
    assert report.status == "ready", report.problems
    assert len(report.draft_shards) >= 3, report.draft_shards
    mixed = {f for k, f in index["weight_map"].items() if not k.startswith("model.layers.10.")}
    assert len(mixed & set(report.draft_shards)) >= 2  # interleaved with other layers' tensors
    return source, target, report.draft_bytes




def prepare_cache(paths: list[Path], cold: bool) -> None:
    """Equal conditions for every run: all caches dropped, or (without root) every input pre-read.

    Deleting the previous run's output frees GBs of blocks, which ext4 (mounted with
    ``discard`` here) trims in the background: let the disk settle first, or whichever run
    comes next pays for it.
    """
    subprocess.run(["sync"], check=True)
    time.sleep(SETTLE_S)
    if cold:
        drop_page_cache()
        return
    for path in paths:
        for file in ([path] if path.is_file() else sorted(path.iterdir())):
            if file.is_file():
                with open(file, "rb") as handle:
                    while handle.read(64 << 20):
                        pass


TIME = shutil.which("time") if Path("/usr/bin/time").exists() else None


def run_measured(argv: list[str], stdout_path: Path | None = None,
                 pythonpath: str | None = None) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MB) and exit code of one child process.

    Peak RSS comes from GNU ``/usr/bin/time``: on Linux, ``exec`` keeps the memory
    high-water mark of the process image it replaces, so a child forked from this
    (larger) benchmark process would report at least our own RSS through ``wait4``.
    """
    rss_file = Path(tempfile.mktemp(prefix="rss-"))
    full = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *argv] if TIME else argv
    out = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
    try:
        start = time.perf_counter()
        env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath else None
        proc = subprocess.Popen(full, stdout=out, stderr=subprocess.PIPE if stdout_path else subprocess.DEVNULL,
                                env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    finally:
        if stdout_path:
            out.close()  # type: ignore[union-attr]
    rss_kb = float(rss_file.read_text().split()[-1]) if TIME and rss_file.exists() else usage.ru_maxrss
    rss_file.unlink(missing_ok=True)
    return wall, rss_kb / 1024, os.waitstatus_to_exitcode(status)


def make_blob(path: Path, nbytes: int) -> None:
    block = os.urandom(16 << 20)
    with open(path, "wb") as handle:
        left = nbytes
        while left:
            n = min(left, len(block))
            handle.write(block[:n])
            left -= n


NAIVE = """
import json, sys, os
from pathlib import Path
from safetensors import safe_open
from safetensors.torch import save_file
src, out, prefix = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
params = {}
index = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
for shard in sorted({f for k, f in index.items() if k.startswith(prefix)}):
    with safe_open(str(src / shard), framework="pt") as f:
        for key in f.keys():
            if key.startswith(prefix):
                params[key] = f.get_tensor(key)
save_file(params, str(out / "model-mtp.safetensors"), metadata={"format": "pt"})
"""


def bench_size(work: Path, label: str, experts: int, repeat: int, cold: bool, baseline: str | None = None,
               naive_runs: int = 3) -> dict[str, Any]:
    """Each repetition runs cp, cp+sync and graft in a shuffled order (the disk of a shared VM
    is noisy and order-dependent), then the naive script; medians and best runs are reported."""
    source, target, draft_bytes = build(work / label, experts)
    scratch = work / label / "scratch"
    scratch.mkdir(exist_ok=True)
    blob = scratch / "blob.bin"
    if not blob.exists() or blob.stat().st_size != draft_bytes:
        make_blob(blob, draft_bytes)
    # -P: nothing before PYTHONPATH on sys.path (``-m`` would put the current directory first, and run from a
    # checkout's root the --baseline graft would be this checkout's code)
    cli = [sys.executable, "-P", "-m", "sglang_glm_mtp.cli"]
    rows: dict[str, list[float]] = {k: [] for k in ("cp", "cp_sync", "graft", "graft_rss", "graft_execute",
                                                    "graft_baseline", "naive", "naive_rss")}
    method = ""
    order = random.Random(label)
    copy = scratch / "blob-copy.bin"

    def run_cp() -> None:
        prepare_cache([blob], cold)
        wall, _, rc = run_measured(["cp", str(blob), str(copy)])
        assert rc == 0
        rows["cp"].append(wall)
        copy.unlink()

    def run_cp_sync() -> None:
        prepare_cache([blob], cold)
        wall, _, rc = run_measured(["sh", "-c", f"cp '{blob}' '{copy}' && sync '{copy}'"])
        assert rc == 0
        rows["cp_sync"].append(wall)
        copy.unlink()

    def graft_once(pythonpath: str | None) -> tuple[float, float, dict[str, Any]]:
        run_target = scratch / "target"
        shutil.rmtree(run_target, ignore_errors=True)
        shutil.copytree(target, run_target)
        prepare_cache([source], cold)
        json_out = scratch / "graft.json"
        wall, rss, rc = run_measured([*cli, "graft", "--from", str(source), "--into", str(run_target), "--json"],
                                     json_out, pythonpath=pythonpath)
        assert rc == 0, json_out.read_text()
        doc = json.loads(json_out.read_text())
        assert doc["result"]["check_status"] == "ready"
        shutil.rmtree(run_target)
        return wall, rss, doc

    def run_graft() -> None:
        nonlocal method
        wall, rss, doc = graft_once(None)
        rows["graft"].append(wall)
        rows["graft_rss"].append(rss)
        rows["graft_execute"].append(doc["result"]["elapsed_s"])
        method = doc["result"]["copy_method"] + ", " + doc["result"]["verification"]["hash"]

    def run_baseline() -> None:
        rows["graft_baseline"].append(graft_once(baseline)[0])

    def run_naive() -> None:
        naive_out = scratch / "naive"
        shutil.rmtree(naive_out, ignore_errors=True)
        naive_out.mkdir()
        prepare_cache([source], cold)
        wall, rss, rc = run_measured([sys.executable, "-c", NAIVE, str(source), str(naive_out), "model.layers.10."])
        assert rc == 0
        rows["naive"].append(wall)
        rows["naive_rss"].append(rss)
        shutil.rmtree(naive_out)

    for i in range(repeat):
        steps = [run_cp, run_cp_sync, run_graft] + ([run_baseline] if baseline else [])
        order.shuffle(steps)
        for step in steps:
            step()
        if i < naive_runs:
            run_naive()
    med = {k: statistics.median(v) if v else 0.0 for k, v in rows.items()}
    best = {k: min(v) if v else 0.0 for k, v in rows.items()}
    paired = [g / c for g, c in zip(rows["graft"], rows["cp_sync"])]
    result = {
        "draft_bytes": draft_bytes, "draft_tensors": 3 * (experts + 1) + 23,
        "source_shards": len(list(source.glob("*.safetensors"))),
        "copy_method": method, "runs": repeat,
        "cp_s": round(med["cp"], 3), "cp_sync_s": round(med["cp_sync"], 3),
        "graft_cli_s": round(med["graft"], 3), "graft_execute_s": round(med["graft_execute"], 3),
        "graft_peak_rss_mb": round(max(rows["graft_rss"]), 1),
        "graft_over_cp": round(med["graft"] / med["cp"], 2),
        "graft_over_cp_sync": round(med["graft"] / med["cp_sync"], 2),
        "best_of": {"cp_s": round(best["cp"], 3), "cp_sync_s": round(best["cp_sync"], 3),
                    "graft_cli_s": round(best["graft"], 3), "graft_over_cp": round(best["graft"] / best["cp"], 2),
                    "graft_over_cp_sync": round(best["graft"] / best["cp_sync"], 2)},
        "graft_over_cp_sync_paired": {"median": round(statistics.median(paired), 2), "min": round(min(paired), 2),
                                      "max": round(max(paired), 2)},
        "graft_execute_over_cp_sync": round(med["graft_execute"] / med["cp_sync"], 2),
        "baseline_cli_s": ({"median": round(med["graft_baseline"], 3), "min": round(best["graft_baseline"], 3),
                            "over_cp_sync": round(med["graft_baseline"] / med["cp_sync"], 2)}
                           if rows["graft_baseline"] else None),
        "naive_s": round(med["naive"], 3) if rows["naive"] else None,
        "naive_peak_rss_mb": round(max(rows["naive_rss"]), 1) if rows["naive_rss"] else None,
        "all_runs": {k: [round(x, 3) for x in v] for k, v in rows.items()},
    }
    print(label, json.dumps({k: v for k, v in result.items() if k != "all_runs"}), flush=True)
    return result


def bench_full_scale(work: Path) -> dict[str, Any]:
    source, target = work / "GLM-5.2", work / "GLM-5.2-NVFP4"
    synthetic.full_scale_glm52(source, with_draft=True, storage="bf16")
    synthetic.full_scale_glm52(target)
    json_out = work / "graft.json"
    wall, rss, rc = run_measured([sys.executable, "-m", "sglang_glm_mtp.cli", "graft", "--from", str(source),
                                  "--into", str(target), "--json"], json_out)
    assert rc == 0, json_out.read_text()
    doc = json.loads(json_out.read_text())
    result = {"draft_bytes": doc["plan"]["draft_bytes"], "draft_tensors": doc["plan"]["draft_tensors"],
              "shards_written": [s["name"] for s in doc["plan"]["shards"]],
              "total_size": [doc["plan"]["index"]["total_size_before"], doc["plan"]["index"]["total_size_after"]],
              "index_entries_after": doc["plan"]["index"]["entries_after"], "graft_cli_s": round(wall, 2),
              "graft_peak_rss_mb": round(rss, 1), "check_status": doc["result"]["check_status"],
              "note": "source data regions are sparse (holes read as zeros): a memory and scale run, not a disk-speed run"}
    print("full-scale", json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, default=None, help="on the disk to measure (default: a temp dir)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", default="1gb", help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--naive-runs", type=int, default=1, help="runs of the naive load+save per size")
    parser.add_argument("--baseline", default=None, metavar="DIR",
                        help="also time the graft CLI with PYTHONPATH=DIR (another version of the package)")
    parser.add_argument("--full-scale", action="store_true")
    parser.add_argument("--lineage", action="store_true",
                        help="bytes the lineage check reads on the layout-only GLM-5.2 pair (sparse files, no copy)")
    parser.add_argument("--keep", action="store_true", help="keep the generated checkpoints")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-graft-", dir=str(Path.cwd())))
    work.mkdir(parents=True, exist_ok=True)
    cold = drop_page_cache()
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "page_cache": "dropped before every run" if cold else "pre-warmed before every run (no root)",
        "load_average_at_start": os.getloadavg(),
    }
    try:
        for label in args.sizes.split(","):
            results[label] = bench_size(work, label, SIZES[label], args.repeat, cold, args.baseline, args.naive_runs)
        if args.full_scale:
            results["full_scale_glm52"] = bench_full_scale(work / "full")
        if args.full_scale or args.lineage:
            if not args.full_scale:
                synthetic.full_scale_glm52(work / "full" / "GLM-5.2", with_draft=True, storage="bf16")
                synthetic.full_scale_glm52(work / "full" / "GLM-5.2-NVFP4")
            results["lineage_full_scale_glm52"] = bench_lineage(work / "full")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    save_results(RESULTS, results)
    print(table(results))


def save_results(path: Path, results: dict[str, Any]) -> None:
    """The raw numbers, with the load average the run ended under, written atomically (bench_graft_hub.py too)."""
    results["load_average_at_end"] = os.getloadavg()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, results)


def table(results: dict[str, Any]) -> str:
    """Medians (min in brackets); ratios of medians, and the median of the per-repetition ratios."""
    lines = ["| draft layer | `cp` + `sync` | graft CLI (process) | of which `execute` | graft / `cp`+`sync` "
             "(medians; paired) | baseline CLI | graft peak RSS | naive load+save (RSS) |",
             "|---|---|---|---|---|---|---|---|"]
    for key in SIZES:
        r = results.get(key)
        if not r:
            continue
        b = r.get("baseline_cli_s")
        base = f"{b['median']:.2f} s ({b['min']:.2f}), {b['over_cp_sync']:.2f}x" if b else "-"
        naive = f"{r['naive_s']:.2f} s ({r['naive_peak_rss_mb']:.0f} MB)" if r.get("naive_s") else "-"
        lines.append(f"| {r['draft_bytes'] / 1e9:.2f} GB, {r['draft_tensors']} tensors, {r['source_shards']} source "
                     f"shards | {r['cp_sync_s']:.2f} s ({r['best_of']['cp_sync_s']:.2f}) | "
                     f"**{r['graft_cli_s']:.2f} s** ({r['best_of']['graft_cli_s']:.2f}) | {r['graft_execute_s']:.2f} s | "
                     f"**{r['graft_over_cp_sync']:.2f}x**; {r['graft_over_cp_sync_paired']['median']:.2f}x "
                     f"({r['graft_over_cp_sync_paired']['min']:.2f}-{r['graft_over_cp_sync_paired']['max']:.2f}) | "
                     f"{base} | {r['graft_peak_rss_mb']:.0f} MB | {naive} |")
    return "\n".join(lines)


def bench_lineage(full: Path) -> dict[str, Any]:
    """Bytes the lineage check reads on the real GLM-5.2 layout (NVFP4 target, BF16 release)."""
    from sglang_glm_mtp.checkpoint.source import LocalCheckpoint
    from sglang_glm_mtp.checkpoint.lineage import compare_lineage

    report = compare_lineage(LocalCheckpoint(full / "GLM-5.2-NVFP4"), LocalCheckpoint(full / "GLM-5.2"))
    result = {"verdict": report.verdict, "tensors_compared": len(report.compared),
              "compared_bytes_each_side": report.compared_bytes, "bytes_read": report.bytes_read,
              "bytes_detail": report.bytes_detail}
    print("lineage", json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
