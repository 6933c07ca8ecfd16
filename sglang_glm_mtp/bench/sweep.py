"""Throughput at one concurrency through SGLang's own ``bench_serving.run_benchmark``.

How it is driven, and why:

* the argument namespace comes from bench_serving's own parser (``cli_main`` with its
  ``run_benchmark`` swapped for a catcher while it parses), so every option this harness
  does not set keeps SGLang's default, and SGLang validates the ones it does set;
* ``--backend sglang`` (native ``/generate``, streamed): the only backend whose client keeps
  the per-request ``meta_info.spec_accept_length``;
* ``--flush-cache``: after its warmup bench_serving POSTs ``/flush_cache``, which on SGLang
  also resets the accept-length counters, so ``/server_info`` afterwards covers exactly the
  measured requests (the server must be otherwise idle);
* per-request accept lengths: bench_serving computes them but returns only aggregates, so
  the request function is wrapped for the duration of the run to keep its outputs;
* everything it prints, and its results file, go next to the report.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

from .capture import import_sglang, last_lines, sglang_output
from .errors import BenchError
from .server_client import AcceptStats, ServerInfo

logger = logging.getLogger(__name__)

BACKEND = "sglang"
DATASETS = ("random", "random-ids", "sharegpt")


@dataclass(frozen=True)
class SweepSettings:
    """Workload of every concurrency level (bench_serving's ``--dataset-name random`` family)."""

    dataset: str = "random"
    dataset_path: str | None = None
    input_len: int = 1024
    output_len: int = 256
    range_ratio: float = 1.0
    seed: int = 42
    warmup_requests: int = 1


@dataclass
class SweepPoint:
    """One ``run_benchmark`` at ``max_concurrency = concurrency``: its numbers, as floats."""

    concurrency: int
    num_prompts: int
    completed: int
    duration_s: float
    request_throughput: float
    output_throughput: float
    total_throughput: float
    mean_ttft_ms: float
    p99_ttft_ms: float
    mean_tpot_ms: float
    mean_itl_ms: float
    mean_e2e_latency_ms: float
    #: What bench_serving itself read from ``internal_states[0]`` (rank 0 only).
    bench_accept_length: float | None = None
    first_error: str | None = None
    accept: AcceptStats | None = None

    @property
    def failed(self) -> int:
        return self.num_prompts - self.completed

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["failed"] = self.failed
        doc["accept"] = self.accept.to_json() if self.accept else None
        return doc


def serving_module() -> ModuleType:
    """bench_serving's implementation (``sglang.benchmark.serving`` since the 0.5 split)."""
    import_sglang("sglang")  # find_spec of a submodule imports the package: do it quietly
    if importlib.util.find_spec("sglang.benchmark") is not None:
        return import_sglang("sglang.benchmark.serving")
    return import_sglang("sglang.bench_serving")


def parse_bench_args(serving: ModuleType, argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed by bench_serving's own ``cli_main`` parser, without running anything."""
    caught: list[argparse.Namespace] = []
    saved_argv, saved_run = sys.argv, serving.run_benchmark
    errors = io.StringIO()
    sys.argv = ["bench_serving", *argv]
    serving.run_benchmark = caught.append
    try:
        with contextlib.redirect_stderr(errors):
            serving.cli_main()
    except SystemExit:
        message = errors.getvalue().strip().splitlines()
        raise BenchError(f"bench_serving rejected its arguments: {message[-1] if message else argv}") from None
    finally:
        sys.argv, serving.run_benchmark = saved_argv, saved_run
    if not caught:
        raise BenchError("bench_serving's cli_main did not reach run_benchmark; unsupported SGLang version?")
    return caught[0]


@contextlib.contextmanager
def _recorded_outputs(serving: ModuleType, backend: str) -> Iterator[list[Any]]:
    """Keep every RequestFuncOutput of the run (warmup first: it is awaited before the rest)."""
    table = serving.ASYNC_REQUEST_FUNCS
    original = table[backend]
    outputs: list[Any] = []

    async def recording(request_func_input: Any, pbar: Any = None) -> Any:
        output = await original(request_func_input=request_func_input, pbar=pbar)
        outputs.append(output)
        return output

    table[backend] = recording
    try:
        yield outputs
    finally:
        table[backend] = original


def resolve_tokenizer(serving: ModuleType, explicit: str | None, server: ServerInfo, *, log_path: Path) -> str:
    """The tokenizer bench_serving will load, loaded once here so a bad one fails early.

    bench_serving counts prompt tokens with it and, for ``random*`` datasets, builds the
    prompts from it. Without ``--tokenizer`` it is what the server reports
    (``/model_info`` ``tokenizer_path``/``model_path``), a path on the *server's* machine.
    """
    candidate = explicit or server.tokenizer_path or server.model_path
    if not candidate:
        raise BenchError("the server reports no tokenizer or model path; pass --tokenizer DIR")
    try:
        with sglang_output(log_path):
            serving.get_tokenizer(candidate)
    except Exception as exc:
        source = "--tokenizer" if explicit else "the server's /model_info"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BenchError(f"cannot load tokenizer {candidate!r} (from {source}): {reason[:200]}; "
                         "pass --tokenizer DIR with the model's tokenizer files") from None
    return candidate


def bench_argv(base_url: str, tokenizer: str, concurrency: int, num_prompts: int,
               settings: SweepSettings, results_file: Path) -> list[str]:
    argv = [
        "--backend", BACKEND, "--base-url", base_url, "--tokenizer", tokenizer,
        "--dataset-name", settings.dataset, "--num-prompts", str(num_prompts),
        "--random-input-len", str(settings.input_len), "--random-output-len", str(settings.output_len),
        "--random-range-ratio", str(settings.range_ratio),
        "--max-concurrency", str(concurrency), "--request-rate", "inf",
        "--seed", str(settings.seed), "--warmup-requests", str(settings.warmup_requests),
        "--flush-cache", "--disable-tqdm", "--output-file", str(results_file),
        "--ready-check-timeout-sec", "30",
    ]
    if settings.dataset_path:
        argv += ["--dataset-path", settings.dataset_path]
    if settings.dataset == "sharegpt":
        argv += ["--sharegpt-output-len", str(settings.output_len)]
    return argv


def _first_line(text: str | None) -> str | None:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else None


def run_level(serving: ModuleType, base_url: str, tokenizer: str, *, concurrency: int, num_prompts: int,
              settings: SweepSettings, log_path: Path, results_file: Path) -> tuple[SweepPoint, list[tuple[int, float]]]:
    """One bench_serving run; returns its numbers and the per-request (tokens, accept length)."""
    args = parse_bench_args(serving, bench_argv(base_url, tokenizer, concurrency, num_prompts, settings, results_file))
    logger.info("bench_serving: %d prompts at concurrency %d (%s)", num_prompts, concurrency, settings.dataset)
    try:
        with _recorded_outputs(serving, BACKEND) as outputs, sglang_output(log_path):
            result = serving.run_benchmark(args)
    except SystemExit:
        raise BenchError(f"bench_serving at concurrency {concurrency} gave up: {last_lines(log_path)}; "
                         f"see {log_path}") from None
    except Exception as exc:
        reason = _first_line(str(exc)) or type(exc).__name__
        raise BenchError(f"bench_serving at concurrency {concurrency} failed: {reason}; see {log_path}") from None
    if not isinstance(result, dict) or "completed" not in result:
        raise BenchError(f"bench_serving at concurrency {concurrency} returned no results; see {log_path}")
    errors = [e for e in result.get("errors") or [] if e]
    first_error = _first_line(errors[0]) if errors else None
    if int(result["completed"]) == 0:
        raise BenchError(f"bench_serving at concurrency {concurrency}: all {num_prompts} requests failed"
                         f" ({first_error or 'no error text'}); see {log_path}")
    measured = outputs[settings.warmup_requests:]
    per_request = [(int(o.output_len), float(o.spec_accept_length)) for o in measured
                   if o.success and getattr(o, "spec_accept_length", 0)]

    def num(key: str) -> float:
        value = result.get(key)
        return float(value) if isinstance(value, (int, float)) else float("nan")

    bench_accept = result.get("accept_length")
    point = SweepPoint(
        concurrency=concurrency, num_prompts=num_prompts, completed=int(result["completed"]),
        duration_s=num("duration"), request_throughput=num("request_throughput"),
        output_throughput=num("output_throughput"), total_throughput=num("total_throughput"),
        mean_ttft_ms=num("mean_ttft_ms"), p99_ttft_ms=num("p99_ttft_ms"), mean_tpot_ms=num("mean_tpot_ms"),
        mean_itl_ms=num("mean_itl_ms"), mean_e2e_latency_ms=num("mean_e2e_latency_ms"),
        bench_accept_length=float(bench_accept) if isinstance(bench_accept, (int, float)) else None,
        first_error=first_error)
    return point, per_request
