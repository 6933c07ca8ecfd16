"""GSM8K few-shot accuracy through SGLang's own ``sglang.test.few_shot_gsm8k.run_eval``.

Same prompts, stop strings, greedy sampling and answer parsing as SGLang's CI and the
published GLM-5.2 results (5-shot, 200 questions), so the numbers compare directly.
``run_eval``'s quirks, handled here:

* with ``data_path=None`` it downloads ``test.jsonl`` from GitHub into ``/tmp``; the harness
  resolves the file first (``--gsm8k-data``, else the same download through SGLang's own
  ``download_and_cache_file``) so an offline machine fails before any measuring;
* it only takes ``host`` and ``port`` (plain ``http://``); other base URLs are passed by
  substituting the module's ``normalize_base_url``;
* the few-shot examples are the first ``k`` rows, which are also the first ``k`` of the
  questions asked (SGLang's choice, kept for comparability);
* it asserts every label parses, and a failed request surfaces as ``KeyError('answer')``;
  both are checked or translated here;
* it writes ``tmp_output_gsm8k.txt`` into the current directory (run from the log dir).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .capture import import_sglang, last_lines, sglang_output
from .errors import BenchError
from .server_client import AcceptStats

logger = logging.getLogger(__name__)

#: What ``run_eval`` downloads when given no ``data_path`` (hard-coded inside it).
GSM8K_URL = "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data/test.jsonl"


@dataclass(frozen=True)
class Gsm8kData:
    """A validated GSM8K jsonl: ``{"question": str, "answer": "... #### N"}`` per line."""

    path: Path
    rows: int


@dataclass
class Gsm8kResult:
    parallel: int
    num_questions: int
    num_shots: int
    accuracy: float
    invalid: float
    latency_s: float
    output_throughput: float
    accept: AcceptStats | None = None

    @property
    def request_throughput(self) -> float:
        return self.num_questions / self.latency_s if self.latency_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["request_throughput"] = self.request_throughput
        doc["accept"] = self.accept.to_json() if self.accept else None
        return doc


def _has_label(answer: str) -> bool:
    # run_eval's get_answer_value: the last run of digits after removing commas.
    return re.search(r"\d", answer.replace(",", "")) is not None


def validate_gsm8k_file(path: Path, *, num_shots: int) -> Gsm8kData:
    """Check the schema ``run_eval`` relies on, so a bad file fails in one clear line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BenchError(f"cannot read GSM8K data {path}: {exc.strerror or exc}") from None
    rows = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):  # read_jsonl skips '#' lines
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise BenchError(f"GSM8K data {path}:{lineno}: not JSON") from None
        if not (isinstance(row, dict) and isinstance(row.get("question"), str)
                and isinstance(row.get("answer"), str)):
            raise BenchError(f"GSM8K data {path}:{lineno}: expected {{\"question\": str, \"answer\": str}}")
        if not _has_label(row["answer"]):
            raise BenchError(f"GSM8K data {path}:{lineno}: answer has no number (expected '... #### N')")
        rows += 1
    if rows <= num_shots:
        raise BenchError(f"GSM8K data {path} has {rows} rows; {num_shots}-shot needs more than {num_shots}")
    return Gsm8kData(path=path.resolve(), rows=rows)


def resolve_gsm8k_data(path: str | None, *, num_shots: int, log_path: Path) -> Gsm8kData:
    """``--gsm8k-data``, else SGLang's own cached download of the GSM8K test split."""
    if path is not None:
        return validate_gsm8k_file(Path(path).expanduser(), num_shots=num_shots)
    utils = import_sglang("sglang.utils")
    try:
        with sglang_output(log_path):
            downloaded = utils.download_and_cache_file(GSM8K_URL)
    except Exception as exc:  # requests errors, HTTP status, disk
        raise BenchError(f"cannot download the GSM8K test set ({type(exc).__name__}: {exc}); "
                         "pass --gsm8k-data PATH to a local test.jsonl, or --skip-gsm8k") from None
    return validate_gsm8k_file(Path(downloaded), num_shots=num_shots)


def _host_port(base_url: str) -> tuple[str, int, bool]:
    """(host, port, exact): ``exact`` is False when host/port cannot express the URL."""
    parts = urllib.parse.urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    exact = parts.scheme == "http" and parts.path in ("", "/")
    return parts.hostname or "127.0.0.1", port, exact


def run_gsm8k(base_url: str, data: Gsm8kData, *, num_questions: int, num_shots: int, parallel: int,
              max_new_tokens: int, log_path: Path) -> Gsm8kResult:
    """One ``run_eval`` at ``parallel`` concurrent requests; SGLang's output goes to ``log_path``."""
    module = import_sglang("sglang.test.few_shot_gsm8k")
    host, port, exact = _host_port(base_url)
    args = argparse.Namespace(  # the fields of few_shot_gsm8k's own argparse parser
        num_shots=num_shots, data_path=str(data.path), num_questions=num_questions,
        max_new_tokens=max_new_tokens, parallel=parallel, host=host, port=port, temperature=0.0)
    original = module.normalize_base_url
    if not exact:
        module.normalize_base_url = lambda _host, _port: base_url
    logger.info("GSM8K: %d questions, %d-shot, parallel %d", min(num_questions, data.rows), num_shots, parallel)
    try:
        with sglang_output(log_path, cwd=log_path.parent):
            metrics = module.run_eval(args)
    except KeyError as exc:
        raise BenchError(f"GSM8K at parallel {parallel}: requests to {base_url}/generate failed "
                         f"(run_eval lost {exc}); see {log_path}") from None
    except Exception as exc:
        detail = last_lines(log_path) or f"{type(exc).__name__}: {exc}"
        raise BenchError(f"GSM8K at parallel {parallel} failed: {detail}; see {log_path}") from None
    finally:
        module.normalize_base_url = original
    return Gsm8kResult(
        parallel=parallel, num_questions=min(num_questions, data.rows), num_shots=num_shots,
        accuracy=float(metrics["accuracy"]), invalid=float(metrics["invalid"]),
        latency_s=float(metrics["latency"]), output_throughput=float(metrics["output_throughput"]))
