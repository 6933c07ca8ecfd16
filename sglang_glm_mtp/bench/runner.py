"""Sequence one benchmark: probe, then per concurrency bench_serving and GSM8K, then report.

Per concurrency level ``c``:

1. ``bench_serving`` with ``max_concurrency = c`` (it flushes after its warmup), then
   ``/server_info``: throughput and the accept length of exactly those requests;
2. ``/flush_cache``, GSM8K with ``parallel = c``, ``/server_info``: accuracy and the accept
   length on GSM8K text.

Accuracy is measured at every level because a batch-size-dependent bug (a CUDA-graph
bucket, a draft MoE runner) shows as accuracy or accept length moving with concurrency.
"""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path
from typing import Callable

from .capture import require_sglang
from .errors import BenchError
from .gsm8k import resolve_gsm8k_data, run_gsm8k, validate_gsm8k_file
from .report import write_report
from .results import DEFAULT_MIN_ACCEPT_LENGTH, BenchConfig, BenchReport, LevelResult
from .server_client import (accept_stats, fetch_model_info, fetch_server_info, flush_cache, normalize_base_url,
                          parse_server_info)
from .sweep import resolve_tokenizer, run_level, serving_module

__all__ = ["DEFAULT_MIN_ACCEPT_LENGTH", "BenchConfig", "BenchReport", "LevelResult", "run_bench"]

logger = logging.getLogger(__name__)

def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _client_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sglang")
    except PackageNotFoundError:
        return None


def _check(report: BenchReport) -> None:
    """Turn the numbers into problems (exit 1) and notes."""
    server = report.server
    if not server.speculative:
        report.notes.append("the server runs without speculative decoding: no accept length to report")
    for level in report.levels:
        phases = [("bench_serving", level.sweep.accept)]
        if level.gsm8k:
            phases.append(("GSM8K", level.gsm8k.accept))
        for phase, stats in phases:
            value = stats.value if stats else None
            if server.speculative and value is None:
                report.notes.append(f"concurrency {level.concurrency}, {phase}: the server reported no accept length")
            elif server.speculative and value is not None and value < report.config.min_accept_length:
                report.problems.append(
                    f"accept length {value:.2f} at concurrency {level.concurrency} ({phase}) is below "
                    f"{report.config.min_accept_length:g}: drafts are almost never accepted; is the draft "
                    f"layer loaded? (sglang-glm-mtp check {server.model_path or 'MODEL'})")
        if level.sweep.failed:
            report.problems.append(f"concurrency {level.concurrency}: {level.sweep.failed} of "
                                   f"{level.sweep.num_prompts} requests failed ({level.sweep.first_error})")
    ranks = {len(level.sweep.accept.per_rank) for level in report.levels if level.sweep.accept}
    if max(ranks, default=0) > 1:
        report.notes.append(f"accept length is the mean of {max(ranks)} DP ranks' avg_spec_accept_length")
    if report.client_sglang_version and server.version and report.client_sglang_version != server.version:
        report.notes.append(f"client SGLang {report.client_sglang_version}, server SGLang {server.version}")


def run_bench(config: BenchConfig, progress: Callable[[str], None] | None = None) -> BenchReport:
    """Run the whole benchmark and write its report into ``config.out_dir``."""
    say = progress or (lambda message: logger.info("%s", message))
    require_sglang()
    base_url = normalize_base_url(config.base_url)
    if not config.concurrencies or min(config.concurrencies) < 1:
        raise BenchError("--concurrency needs positive integers, e.g. 1,4,16,64")
    data = None
    if config.gsm8k and config.gsm8k_data is not None:  # a local file: check it before anything runs
        data = validate_gsm8k_file(Path(config.gsm8k_data).expanduser(), num_shots=config.gsm8k_shots)
    doc = fetch_server_info(base_url, timeout=config.timeout)
    server = parse_server_info(doc, base_url, fetch_model_info(base_url, timeout=config.timeout))
    say(f"server {base_url}: SGLang {server.version or '?'}, model {server.model_path or '?'}, "
        f"speculative {server.speculative_algorithm or 'off'}")

    out = config.out_dir
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results_file = logs / "bench_serving.jsonl"
    results_file.unlink(missing_ok=True)  # bench_serving appends; one run per report directory
    if config.gsm8k and data is None:  # SGLang's own download of the GSM8K test split
        data = resolve_gsm8k_data(None, num_shots=config.gsm8k_shots, log_path=logs / "gsm8k_data.log")
    serving = serving_module()
    tokenizer = resolve_tokenizer(serving, config.tokenizer, server, log_path=logs / "tokenizer.log")
    report = BenchReport(config=config, server=server, tokenizer=tokenizer, started_at=_now(),
                         client_sglang_version=_client_version(),
                         gsm8k_data=str(data.path) if data else None, gsm8k_rows=data.rows if data else None)
    if data and data.rows < config.gsm8k_questions:
        report.notes.append(f"GSM8K data has {data.rows} rows: {data.rows} questions asked, "
                            f"not {config.gsm8k_questions}")

    for concurrency in config.concurrencies:
        prompts = config.prompts_for(concurrency)
        say(f"concurrency {concurrency}: bench_serving, {prompts} prompts")
        point, per_request = run_level(
            serving, base_url, tokenizer, concurrency=concurrency, num_prompts=prompts, settings=config.sweep,
            log_path=logs / f"bench_serving_c{concurrency}.log", results_file=results_file)
        point.accept = accept_stats(fetch_server_info(base_url, timeout=config.timeout), server, per_request)
        level = LevelResult(concurrency=concurrency, sweep=point)
        if data is not None:
            say(f"concurrency {concurrency}: GSM8K, {min(config.gsm8k_questions, data.rows)} questions, "
                f"{config.gsm8k_shots}-shot")
            if not flush_cache(base_url):
                report.notes.append(f"concurrency {concurrency}: /flush_cache refused before GSM8K; its accept "
                                    "length includes earlier requests")
            result = run_gsm8k(base_url, data, num_questions=config.gsm8k_questions,
                               num_shots=config.gsm8k_shots, parallel=concurrency,
                               max_new_tokens=config.gsm8k_max_new_tokens,
                               log_path=logs / f"gsm8k_c{concurrency}.log")
            result.accept = accept_stats(fetch_server_info(base_url, timeout=config.timeout), server)
            level.gsm8k = result
        report.levels.append(level)

    report.finished_at = _now()
    _check(report)
    write_report(report)
    return report
