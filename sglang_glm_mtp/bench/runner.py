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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .capture import require_sglang
from .errors import BenchError
from .gsm8k import Gsm8kResult, resolve_gsm8k_data, run_gsm8k, validate_gsm8k_file
from .server_info import (ServerInfo, accept_stats, fetch_model_info, fetch_server_info, flush_cache,
                          normalize_base_url, parse_server_info)
from .sweep import SweepPoint, SweepSettings, resolve_tokenizer, run_level, serving_module

logger = logging.getLogger(__name__)

#: Below this the draft is almost never accepted (the plugin's runtime canary uses the same
#: default): typically a draft layer that loaded nothing.
DEFAULT_MIN_ACCEPT_LENGTH = 1.2


@dataclass(frozen=True)
class BenchConfig:
    base_url: str
    out_dir: Path
    concurrencies: tuple[int, ...] = (1, 4, 16, 64)
    #: Prompts per level; None: ``max(16, 4 * concurrency)``.
    num_prompts: int | None = None
    sweep: SweepSettings = field(default_factory=SweepSettings)
    tokenizer: str | None = None
    gsm8k: bool = True
    gsm8k_questions: int = 200
    gsm8k_shots: int = 5
    gsm8k_data: str | None = None
    gsm8k_max_new_tokens: int = 512
    min_accept_length: float = DEFAULT_MIN_ACCEPT_LENGTH
    timeout: float = 10.0

    def prompts_for(self, concurrency: int) -> int:
        return self.num_prompts if self.num_prompts else max(16, 4 * concurrency)

    def to_json(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url, "out_dir": str(self.out_dir), "concurrencies": list(self.concurrencies),
            "num_prompts": {str(c): self.prompts_for(c) for c in self.concurrencies},
            "sweep": asdict(self.sweep), "tokenizer": self.tokenizer, "gsm8k": self.gsm8k,
            "gsm8k_questions": self.gsm8k_questions, "gsm8k_shots": self.gsm8k_shots,
            "gsm8k_data": self.gsm8k_data, "gsm8k_max_new_tokens": self.gsm8k_max_new_tokens,
            "min_accept_length": self.min_accept_length,
        }


@dataclass
class LevelResult:
    concurrency: int
    sweep: SweepPoint
    gsm8k: Gsm8kResult | None = None

    def to_json(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "sweep": self.sweep.to_json(),
                "gsm8k": self.gsm8k.to_json() if self.gsm8k else None}


@dataclass
class BenchReport:
    config: BenchConfig
    server: ServerInfo
    tokenizer: str
    started_at: str
    finished_at: str = ""
    client_sglang_version: str | None = None
    gsm8k_data: str | None = None
    gsm8k_rows: int | None = None
    levels: list[LevelResult] = field(default_factory=list)
    #: Findings that make the exit code 1 (collapsed accept length, failed requests).
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": 1, "tool": "sglang-glm-mtp bench",
            "started_at": self.started_at, "finished_at": self.finished_at,
            "client_sglang_version": self.client_sglang_version,
            "config": self.config.to_json(), "server": self.server.to_json(), "tokenizer": self.tokenizer,
            "gsm8k_data": self.gsm8k_data, "gsm8k_rows": self.gsm8k_rows,
            "levels": [level.to_json() for level in self.levels],
            "problems": self.problems, "notes": self.notes, "files": self.files,
            "exit_code": self.exit_code,
        }


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
    from .report import write_report

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
