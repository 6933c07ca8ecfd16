"""Write a benchmark run: ``summary.md`` (for people), ``results.json`` (for scripts), PNG plots.

Plots need matplotlib (the ``bench`` extra); without it the run still succeeds and the
summary says why there are no plots. matplotlib is driven through ``Figure`` +
``FigureCanvasAgg`` only, so no pyplot/global backend state is touched.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

from .results import BenchReport

logger = logging.getLogger(__name__)

#: The published GLM-5.2 NVFP4 MTP results this harness reproduces the format of.
PUBLISHED = {
    "source": "sant1an/GLM-5.2-NVFP4-MTP model card, 'Verified results' (8xB200, SGLang, "
              "--moe-runner-backend flashinfer_cutlass for target and draft, context 32768)",
    "accept_length": [3.0, 3.5],
    "accept_rate": 0.65,
    "num_draft_tokens": 4,
    "gsm8k_accuracy": 0.955,
    "gsm8k": "5-shot, 200 questions, 0 invalid",
    "output_throughput_ceiling": 2900,
    "request_throughput_ceiling": 11,
}

SUMMARY = "summary.md"
RESULTS = "results.json"
THROUGHPUT_PNG = "throughput.png"
ACCEPT_PNG = "accept_length.png"
MISSING = "—"


def _fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    return f"{value:{spec}}{suffix}"


def _pct(value: float | None) -> str:
    return _fmt(None if value is None else 100 * value, ".1f", "%")


def results_table(report: BenchReport) -> list[str]:
    """The headline table: one row per concurrency, the columns of the published results."""
    rows = ["| concurrency | accept length | accept rate | GSM8K | output tok/s | req/s |",
            "|---:|---:|---:|---:|---:|---:|"]
    for level in report.levels:
        accept = level.sweep.accept
        gsm8k = _pct(level.gsm8k.accuracy) if level.gsm8k else "skipped"
        rows.append(f"| {level.concurrency} | {_fmt(accept.value if accept else None)} "
                    f"| {_fmt(accept.accept_rate if accept else None)} | {gsm8k} "
                    f"| {_fmt(level.sweep.output_throughput, '.1f')} | {_fmt(level.sweep.request_throughput)} |")
    return rows


def detail_table(report: BenchReport) -> list[str]:
    rows = ["| concurrency | completed | per-request accept length | GSM8K accept length | GSM8K accept rate "
            "| GSM8K invalid | GSM8K tok/s | mean TTFT ms | mean TPOT ms | mean ITL ms |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for level in report.levels:
        s, g = level.sweep, level.gsm8k
        ga = g.accept if g else None
        rows.append(
            f"| {level.concurrency} | {s.completed}/{s.num_prompts} "
            f"| {_fmt(s.accept.per_request_weighted if s.accept else None)} "
            f"| {_fmt(ga.value if ga else None)} | {_fmt(ga.accept_rate if ga else None)} "
            f"| {_pct(g.invalid) if g else MISSING} | {_fmt(g.output_throughput if g else None, '.1f')} "
            f"| {_fmt(s.mean_ttft_ms, '.1f')} | {_fmt(s.mean_tpot_ms, '.2f')} | {_fmt(s.mean_itl_ms, '.2f')} |")
    return rows


def _speculative_line(report: BenchReport) -> str:
    s = report.server
    if not s.speculative:
        return "off"
    parts = [s.speculative_algorithm or "?"]
    if s.num_steps is not None:
        parts.append(f"{s.num_steps} steps")
    if s.eagle_topk is not None:
        parts.append(f"topk {s.eagle_topk}")
    if s.num_draft_tokens is not None:
        parts.append(f"{s.num_draft_tokens} draft tokens")
    return ", ".join(parts)


def summary_markdown(report: BenchReport) -> str:
    c, s, sw = report.config, report.server, report.config.sweep
    runners = s.moe_runner_backend or "?"
    decision = (s.plugin or {}).get("moe_runner") or {}
    if s.draft_moe_runner_backend or decision.get("rule"):
        draft = s.draft_moe_runner_backend or decision.get("backend") or "?"
        rule = f", glm_mtp rule {decision['rule']}" if decision.get("rule") else ""
        runners += f" (draft {draft}{rule})"
    dataset = sw.dataset + (f" ({sw.dataset_path})" if sw.dataset_path else "")
    prompts = ", ".join(f"{c.prompts_for(k)}" for k in c.concurrencies)
    gsm8k = (f"{c.gsm8k_shots}-shot, {min(c.gsm8k_questions, report.gsm8k_rows or c.gsm8k_questions)} questions "
             f"from {report.gsm8k_data}, greedy, max {c.gsm8k_max_new_tokens} new tokens, parallel = concurrency"
             if c.gsm8k else "skipped (--skip-gsm8k)")
    lines = [
        f"# sglang-glm-mtp bench: {s.model_path or s.served_model_name or s.base_url}",
        "",
        "| | |",
        "|---|---|",
        f"| server | {s.base_url} (SGLang {s.version or '?'}) |",
        f"| model | {s.model_path or '?'} |",
        f"| speculative decoding | {_speculative_line(report)} |",
        f"| parallelism, quantization | TP {s.tp_size or '?'}, DP {s.dp_size or '?'}, {s.quantization or 'no quantization flag'}, "
        f"MoE runner {runners} |",
        f"| throughput workload | bench_serving --backend sglang, dataset {dataset}, {sw.input_len} in / "
        f"{sw.output_len} out tokens (range ratio {sw.range_ratio:g}), prompts per level: {prompts} |",
        f"| GSM8K | {gsm8k} |",
        f"| tokenizer | {report.tokenizer} |",
        f"| run | {report.started_at} to {report.finished_at}, client SGLang {report.client_sglang_version or '?'} |",
        "",
        "## Results per concurrency",
        "",
        *results_table(report),
        "",
        "*accept length*: the server's `avg_spec_accept_length` over the bench_serving requests of that "
        "level (flushed after warmup; tokens per verify step, bonus token included). "
        "*accept rate*: (accept length - 1) / speculative_num_steps. "
        "*GSM8K*: `sglang.test.few_shot_gsm8k` accuracy with parallel = concurrency. "
        "*output tok/s*, *req/s*: bench_serving's output token and request throughput. "
        "See docs/benchmarking.md.",
        "",
        "### Details",
        "",
        *detail_table(report),
        "",
        "## Published reference",
        "",
        f"GLM-5.2 NVFP4 + MTP, {PUBLISHED['source']}: accept length {PUBLISHED['accept_length'][0]}-"
        f"{PUBLISHED['accept_length'][1]} (stable across concurrency), accept rate ~{PUBLISHED['accept_rate']}, "
        f"num_draft_tokens {PUBLISHED['num_draft_tokens']}, GSM8K {100 * PUBLISHED['gsm8k_accuracy']:.1f}% "
        f"({PUBLISHED['gsm8k']}), decode-bound ceiling ~{PUBLISHED['output_throughput_ceiling']} tok/s / "
        f"~{PUBLISHED['request_throughput_ceiling']} req/s.",
    ]
    if report.problems:
        lines += ["", "## Problems", "", *[f"- {p}" for p in report.problems]]
    if report.notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in report.notes]]
    plots = [name for name in (THROUGHPUT_PNG, ACCEPT_PNG) if name in report.files]
    if plots:
        lines += ["", "## Plots", "", *[f"![{Path(name).stem}]({name})" for name in plots]]
    return "\n".join(lines) + "\n"


def _series(report: BenchReport) -> dict[str, list[Any]]:
    levels = report.levels
    return {
        "x": [lv.concurrency for lv in levels],
        "tok_s": [lv.sweep.output_throughput for lv in levels],
        "req_s": [lv.sweep.request_throughput for lv in levels],
        "accept": [lv.sweep.accept.value if lv.sweep.accept else None for lv in levels],
        "accept_gsm8k": [lv.gsm8k.accept.value if lv.gsm8k and lv.gsm8k.accept else None for lv in levels],
    }


def _xy(xs: Sequence[int], ys: Sequence[float | None]) -> tuple[list[int], list[float]]:
    pairs = [(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def write_plots(report: BenchReport, out: Path) -> list[str]:
    """Throughput and accept length against concurrency; [] (and a note) without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        report.notes.append("matplotlib is not installed, so no PNG plots: pip install '.[bench]' in a checkout of sglang-glm-mtp")
        return []
    data = _series(report)
    xs = data["x"]
    title = report.server.model_path or report.server.base_url
    written = []

    fig = Figure(figsize=(7, 4.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(*_xy(xs, data["tok_s"]), "o-", color="tab:blue", label="output tok/s")
    ax.set_xlabel("concurrency")
    ax.set_ylabel("output tokens/s", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(*_xy(xs, data["req_s"]), "s--", color="tab:orange", markerfacecolor="none", label="req/s")
    ax2.set_ylabel("requests/s", color="tab:orange")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="upper left")
    for axis in (ax, ax2):
        axis.set_ylim(bottom=0)
    if len(xs) > 1 and min(xs) > 0:
        ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_title(f"Throughput vs concurrency\n{title}", fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / THROUGHPUT_PNG)
    written.append(THROUGHPUT_PNG)

    fig = Figure(figsize=(7, 4.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    low, high = PUBLISHED["accept_length"]
    ax.axhspan(low, high, color="tab:green", alpha=0.15, label=f"published GLM-5.2 NVFP4 ({low}-{high})")
    ax.plot(*_xy(xs, data["accept"]), "o-", color="tab:blue", label="bench_serving")
    if any(v is not None for v in data["accept_gsm8k"]):
        ax.plot(*_xy(xs, data["accept_gsm8k"]), "s--", color="tab:purple", label="GSM8K")
    ax.axhline(report.config.min_accept_length, color="tab:red", linestyle=":", linewidth=1,
               label=f"collapse threshold ({report.config.min_accept_length:g})")
    top = max([v for v in data["accept"] + data["accept_gsm8k"] if v is not None] + [high, 1.0])
    draft_tokens = report.server.num_draft_tokens
    if draft_tokens:
        top = max(top, float(draft_tokens))
    ax.set_ylim(0, top * 1.1)
    if len(xs) > 1 and min(xs) > 0:
        ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("concurrency")
    ax.set_ylabel("accept length (tokens / verify step)")
    ax.set_title(f"Accept length vs concurrency\n{title}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / ACCEPT_PNG)
    written.append(ACCEPT_PNG)
    return written


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_report(report: BenchReport) -> None:
    """Plots first (they may add a note), then summary.md and results.json."""
    out = report.config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    for name in write_plots(report, out):
        report.files[name] = name
    report.files[SUMMARY] = SUMMARY
    report.files[RESULTS] = RESULTS
    report.files["logs"] = "logs/"
    (out / SUMMARY).write_text(summary_markdown(report), encoding="utf-8")
    doc = _jsonable(report.to_json())
    doc["published_reference"] = PUBLISHED
    (out / RESULTS).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    logger.info("wrote %s", ", ".join(str(out / name) for name in report.files))
