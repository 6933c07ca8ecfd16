"""``sglang-glm-mtp bench``: GSM8K, a concurrency sweep and accept length of a running server.

Registered by ``cli/__init__.py`` through ``register`` / ``COMMANDS``; the only module of
the benchmark that writes to the terminal. Exit 0: measured; 1: measured, and a problem
found (accept length collapsed, failed requests); 2: could not run (server unreachable,
SGLang missing, bad input), one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..bench.runner import DEFAULT_MIN_ACCEPT_LENGTH, BenchConfig, BenchReport
from ..bench.sweep import DATASETS, SweepSettings
from ..errors import UsageError
from ._format import out


def _concurrencies(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,4,16,64, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,4,16,64, got {text!r}")
    return values


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench", help="benchmark a running SGLang server: GSM8K, concurrency sweep, accept length",
        description="Drives SGLang's own sglang.test.few_shot_gsm8k and bench_serving against --base-url and "
                    "writes summary.md, results.json and PNG plots to --out. Exit 0 measured, 1 measured with "
                    "a problem (collapsed accept length, failed requests), 2 could not run.")
    p.add_argument("--base-url", required=True, help="the SGLang server, e.g. http://127.0.0.1:30000")
    p.add_argument("--concurrency", type=_concurrencies, default=(1, 4, 16, 64), metavar="LIST",
                   help="comma-separated concurrency levels (default 1,4,16,64)")
    p.add_argument("--num-prompts", type=_positive, default=None, metavar="N",
                   help="bench_serving prompts per level (default max(16, 4 x concurrency))")
    p.add_argument("--dataset", choices=DATASETS, default="random",
                   help="bench_serving dataset: random = ShareGPT text cut to length (downloads ShareGPT "
                        "unless --dataset-path), random-ids = random token ids (offline), sharegpt")
    p.add_argument("--dataset-path", default=None, metavar="PATH", help="local ShareGPT JSON for random/sharegpt")
    p.add_argument("--input-len", type=_positive, default=1024, metavar="N", help="prompt tokens (default 1024)")
    p.add_argument("--output-len", type=_positive, default=256, metavar="N", help="output tokens (default 256)")
    p.add_argument("--range-ratio", type=float, default=1.0, metavar="R",
                   help="bench_serving --random-range-ratio: lengths drawn from [R x len, len] (default 1: fixed)")
    p.add_argument("--tokenizer", default=None, metavar="PATH",
                   help="tokenizer dir or Hub id for bench_serving (default: the server's /model_info path, "
                        "which must then exist on this machine)")
    p.add_argument("--gsm8k-questions", type=_positive, default=200, metavar="N", help="default 200")
    p.add_argument("--gsm8k-shots", type=int, default=5, metavar="K", help="default 5")
    p.add_argument("--gsm8k-data", default=None, metavar="PATH",
                   help="GSM8K test.jsonl (default: SGLang downloads it from GitHub into /tmp)")
    p.add_argument("--gsm8k-max-new-tokens", type=_positive, default=512, metavar="N", help="default 512")
    p.add_argument("--skip-gsm8k", action="store_true", help="throughput and accept length only")
    p.add_argument("--min-accept-length", type=float, default=DEFAULT_MIN_ACCEPT_LENGTH, metavar="L",
                   help=f"exit 1 when a measured accept length is below this (default {DEFAULT_MIN_ACCEPT_LENGTH})")
    p.add_argument("--out", default="bench-results", metavar="DIR", help="report directory (default ./bench-results)")
    p.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=float, default=10.0, help=argparse.SUPPRESS)


def _progress(message: str) -> None:
    sys.stderr.write(f"bench: {message}\n")
    sys.stderr.flush()


def format_summary(report: BenchReport) -> str:
    """The headline table, problems, notes and where the full report is."""
    from ..bench.report import results_table

    others = ["results.json", *sorted(name for name in report.files if name.endswith(".png")), "logs/"]
    return "\n".join([*results_table(report),
                      *[f"problem: {p}" for p in report.problems],
                      *[f"note: {n}" for n in report.notes],
                      f"report: {report.config.out_dir / 'summary.md'} ({', '.join(others)})"])


def _bench(args: argparse.Namespace) -> int:
    from ..bench.runner import run_bench

    if args.gsm8k_shots < 0:
        raise UsageError("--gsm8k-shots must be 0 or more")
    config = BenchConfig(
        base_url=args.base_url, out_dir=Path(args.out).resolve(), concurrencies=tuple(args.concurrency),
        num_prompts=args.num_prompts,
        sweep=SweepSettings(dataset=args.dataset, dataset_path=args.dataset_path, input_len=args.input_len,
                            output_len=args.output_len, range_ratio=args.range_ratio, seed=args.seed),
        tokenizer=args.tokenizer, gsm8k=not args.skip_gsm8k, gsm8k_questions=args.gsm8k_questions,
        gsm8k_shots=args.gsm8k_shots, gsm8k_data=args.gsm8k_data, gsm8k_max_new_tokens=args.gsm8k_max_new_tokens,
        min_accept_length=args.min_accept_length, timeout=args.timeout)
    report = run_bench(config, progress=_progress)
    out(format_summary(report))
    return report.exit_code


COMMANDS = {"bench": _bench}
