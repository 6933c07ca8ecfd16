"""``sglang-glm-mtp bench`` end to end: the real CLI and SGLang's own clients against a loopback fake.

The fake (tests/fake_sglang_server.py) runs in this process; the CLI runs in a subprocess
(SGLang's clients keep process-wide state and take ~10 s to import), with a tiny local
tokenizer and a 10-row GSM8K file, offline. Error paths that fail before SGLang is
imported run in-process.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import math
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from fake_sglang_server import FakeSGLangServer, make_tiny_tokenizer, read_gsm8k
from sglang_glm_mtp.bench.server_client import (ServerInfo, accept_stats, derive_accept_rate, parse_server_info,
                                              rank_accept_lengths)
from sglang_glm_mtp.cli import main

GSM8K = Path(__file__).parent / "data" / "gsm8k_tiny.jsonl"
WRONG, INVALID = (7,), (9,)
LEVELS = (1, 2, 4)
PROMPTS = 8
OUTPUT_LEN = 16
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None

_RUN_CLI = "import sys; from sglang_glm_mtp.cli import main; sys.exit(main(sys.argv[1:]))"

#: Runs several CLI invocations in one process (SGLang's clients take ~10 s to import),
#: each with its own captured stdout/stderr; anything reaching the real stderr is a leak.
_DRIVER = r"""
import contextlib, io, json, sys
from sglang_glm_mtp.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code
    results.append({"rc": rc, "out": out.getvalue(), "err": err.getvalue()})
print(json.dumps(results))
"""


def _env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("PYTHONWARNINGS", None)
    src = str(Path(__file__).parent.parent)
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cli(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _RUN_CLI, *args], capture_output=True, text=True,
                          timeout=timeout, env=_env())


def _bench_args(url: str, out: Path, tokenizer: Path | None, *extra: str) -> list[str]:
    args = ["bench", "--base-url", url, "--concurrency", ",".join(map(str, LEVELS)),
            "--num-prompts", str(PROMPTS), "--dataset", "random-ids", "--input-len", "32",
            "--output-len", str(OUTPUT_LEN), "--gsm8k-data", str(GSM8K), "--gsm8k-questions", "10",
            "--out", str(out), *extra]
    if tokenizer is not None:
        args += ["--tokenizer", str(tokenizer)]
    return args


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Three CLI runs in one subprocess, against fakes in this process.

    ``full``: 3 concurrency levels, bench_serving + GSM8K (10 questions, 5-shot) each.
    ``collapsed``: a server whose drafts are never accepted (accept length 1.0).
    ``no_tokenizer``: no --tokenizer, and the server's tokenizer path does not exist here.
    """
    tmp = tmp_path_factory.mktemp("bench")
    tokenizer = make_tiny_tokenizer(tmp / "tiny-tokenizer")
    out = {"full": tmp / "full", "collapsed": tmp / "collapsed", "no_tokenizer": tmp / "no_tokenizer"}
    with FakeSGLangServer(gsm8k_rows=read_gsm8k(GSM8K), wrong=WRONG, invalid=INVALID) as fake, \
            FakeSGLangServer(accept_length=1.0) as broken:
        argvs = [
            _bench_args(fake.url, out["full"], tokenizer),
            ["bench", "--base-url", broken.url, "--concurrency", "2", "--num-prompts", "4", "--dataset",
             "random-ids", "--input-len", "16", "--output-len", "8", "--skip-gsm8k", "--tokenizer", str(tokenizer),
             "--out", str(out["collapsed"])],
            ["bench", "--base-url", broken.url, "--skip-gsm8k", "--out", str(out["no_tokenizer"])],
        ]
        cwd = tmp / "cwd"
        cwd.mkdir()
        proc = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps(argvs)], capture_output=True, text=True,
                              timeout=240, env=_env(), cwd=cwd)
        assert proc.returncode == 0, proc.stderr[-3000:]
        full, collapsed, no_tokenizer = json.loads(proc.stdout)
        results = out["full"] / "results.json"
        yield {"driver": proc, "fake": fake, "out": out, "cwd": cwd, "full": full, "collapsed": collapsed,
               "no_tokenizer": no_tokenizer, "results": json.loads(results.read_text()) if results.exists() else None}


def _gsm8k_expected_accept(accept: float = 3.5) -> float:
    """What the fake's counters give for one GSM8K pass: total tokens / total verify steps."""
    rows = read_gsm8k(GSM8K)
    tokens = []
    for i, row in enumerate(rows):
        if i in INVALID:
            text = "Let me think about it step by step, it is hard to say."
        else:
            text = row["answer"]
            if i in WRONG:
                label = re.findall(r"\d+", text)[-1]
                text = text[: text.rfind(label)] + str(int(label) + 1)
        tokens.append(len(text.split(" ")))
    return sum(tokens) / sum(math.ceil(t / accept) for t in tokens)


# ----------------------------------------------------------------------------- end to end

@pytest.mark.sglang
@pytest.mark.slow
def test_e2e_exit_code_and_clean_terminal(runs: dict[str, Any]) -> None:
    full = runs["full"]
    assert full["rc"] == 0, full["err"][-3000:]
    # stderr: progress lines only (SGLang's prints, bars and warnings are in logs/) ...
    assert all(line.startswith("bench: ") for line in full["err"].splitlines()), full["err"]
    # ... and nothing escaped to the real terminal, not even at interpreter exit
    assert runs["driver"].stderr == ""
    assert "| concurrency | accept length | accept rate | GSM8K | output tok/s | req/s |" in full["out"]
    assert f"report: {runs['out']['full'] / 'summary.md'}" in full["out"]


@pytest.mark.sglang
@pytest.mark.slow
def test_e2e_summary_table_matches_results(runs: dict[str, Any]) -> None:
    out, results = runs["out"]["full"], runs["results"]
    summary = (out / "summary.md").read_text()
    assert "| concurrency | accept length | accept rate | GSM8K | output tok/s | req/s |" in summary
    assert [level["concurrency"] for level in results["levels"]] == list(LEVELS)
    for level in results["levels"]:
        sweep = level["sweep"]
        # the fake drafts 16 tokens in ceil(16 / 3.2) = 5 verify steps: 3.2 exactly
        row = (f"| {level['concurrency']} | 3.20 | 0.73 | 80.0% | {sweep['output_throughput']:.1f} "
               f"| {sweep['request_throughput']:.2f} |")
        assert row in summary, summary
    assert "## Problems" not in summary
    assert "speculative decoding | EAGLE, 3 steps, topk 1, 4 draft tokens" in summary
    assert "MoE runner flashinfer_cutlass (draft flashinfer_cutlass, glm_mtp rule blackwell-bf16-draft)" in summary
    assert "GSM8K 95.5% (5-shot, 200 questions, 0 invalid)" in summary  # published reference


@pytest.mark.sglang
@pytest.mark.slow
def test_e2e_results_json(runs: dict[str, Any]) -> None:
    results = runs["results"]
    assert results["schema_version"] == 1 and results["exit_code"] == 0
    server = results["server"]
    assert (server["speculative_algorithm"], server["num_steps"], server["num_draft_tokens"]) == ("EAGLE", 3, 4)
    assert server["model_path"] == "/models/GLM-5.2-NVFP4" and server["version"] == "0.5.23"
    assert server["plugin"]["moe_runner"]["rule"] == "blackwell-bf16-draft"
    for level in results["levels"]:
        sweep, gsm8k = level["sweep"], level["gsm8k"]
        assert sweep["completed"] == PROMPTS and sweep["failed"] == 0
        assert sweep["output_throughput"] > 0 and sweep["request_throughput"] > 0
        # output tokens are exact (ignore_eos, range ratio 1): tok/s = 16 x req/s
        assert sweep["output_throughput"] == pytest.approx(OUTPUT_LEN * sweep["request_throughput"])
        accept = sweep["accept"]
        assert accept["server_avg"] == pytest.approx(3.2) and accept["per_rank"] == [pytest.approx(3.2)]
        assert accept["per_request_count"] == PROMPTS  # the warmup request is not counted
        assert accept["per_request_weighted"] == pytest.approx(3.2)
        assert accept["accept_rate"] == pytest.approx((3.2 - 1) / 3)
        assert sweep["bench_accept_length"] == pytest.approx(3.2)  # bench_serving's own reading agrees
        assert gsm8k["accuracy"] == pytest.approx(0.8) and gsm8k["invalid"] == pytest.approx(0.1)
        assert (gsm8k["num_questions"], gsm8k["num_shots"], gsm8k["parallel"]) == (10, 5, level["concurrency"])
        assert gsm8k["accept"]["server_avg"] == pytest.approx(_gsm8k_expected_accept())


@pytest.mark.sglang
@pytest.mark.slow
def test_e2e_traffic_is_sglangs_own_clients(runs: dict[str, Any]) -> None:
    fake = runs["fake"]
    paths = [path for _method, path in fake.log]
    # bench_serving flushes once after its warmup per level; the harness once before GSM8K
    assert paths.count("/flush_cache") == 2 * len(LEVELS)
    assert "/v1/models" in paths and "/get_model_info" in paths and "/server_info" in paths
    gsm8k_prompts = [p for p in fake.prompts if "Question:" in p]
    bench_prompts = [p for p in fake.prompts if "Question:" not in p]
    assert len(gsm8k_prompts) == 10 * len(LEVELS)
    assert all(p.count("Question: ") == 6 for p in gsm8k_prompts)  # 5 shots + the question
    assert len(bench_prompts) == (PROMPTS + 1) * len(LEVELS)  # + 1 warmup per level


@pytest.mark.sglang
@pytest.mark.slow
def test_e2e_plots_and_logs(runs: dict[str, Any]) -> None:
    out = runs["out"]["full"]
    summary = (out / "summary.md").read_text()
    for name in ("throughput.png", "accept_length.png"):
        if HAS_MATPLOTLIB:
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"]({name})" in summary
        else:
            assert not (out / name).exists()
    if not HAS_MATPLOTLIB:
        assert "matplotlib is not installed" in summary
    logs = out / "logs"
    assert "Accuracy: 0.800" in (logs / "gsm8k_c1.log").read_text()
    assert "Serving Benchmark Result" in (logs / "bench_serving_c4.log").read_text()
    assert (logs / "tmp_output_gsm8k.txt").exists()  # run_eval's dump landed in logs/ ...
    assert list(runs["cwd"].iterdir()) == []  # ... and neither it nor bench_serving's file in the cwd
    assert len((logs / "bench_serving.jsonl").read_text().splitlines()) == len(LEVELS)


@pytest.mark.sglang
@pytest.mark.slow
def test_collapsed_accept_length_exits_1(runs: dict[str, Any]) -> None:
    """Accept length ~1 (a draft that loaded nothing) is measured, reported, and exits 1."""
    collapsed = runs["collapsed"]
    assert collapsed["rc"] == 1, collapsed["err"][-3000:]
    assert "problem: accept length 1.00 at concurrency 2 (bench_serving) is below 1.2" in collapsed["out"]
    summary = (runs["out"]["collapsed"] / "summary.md").read_text()
    assert "## Problems" in summary and "sglang-glm-mtp check /models/GLM-5.2-NVFP4" in summary
    assert "| 2 | 1.00 | 0.00 | skipped |" in summary


@pytest.mark.sglang
@pytest.mark.slow
def test_server_side_tokenizer_path_missing_here_exits_2(runs: dict[str, Any]) -> None:
    no_tokenizer = runs["no_tokenizer"]
    assert no_tokenizer["rc"] == 2
    lines = no_tokenizer["err"].strip().splitlines()
    assert lines[-1].startswith("sglang-glm-mtp bench: error: cannot load tokenizer '/models/GLM-5.2-NVFP4' "
                                "(from the server's /model_info)"), no_tokenizer["err"]
    assert "pass --tokenizer DIR" in lines[-1] and "Traceback" not in no_tokenizer["err"]


# ----------------------------------------------------------------------------- errors before SGLang runs


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    assert main(["bench", "--base-url", url, "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"sglang-glm-mtp bench: error: cannot reach an SGLang server at {url}: ")


def test_unreachable_server_subprocess_one_line(tmp_path: Path) -> None:
    proc = _cli(["bench", "--base-url", f"http://127.0.0.1:{_closed_port()}", "--out", str(tmp_path)], timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "cannot reach an SGLang server" in proc.stderr


def test_not_an_sglang_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        assert main(["bench", "--base-url", url, "--out", str(tmp_path)]) == 2
    finally:
        httpd.shutdown()
        httpd.server_close()
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "does not look like an SGLang server (GET /server_info -> HTTP 404; GET /get_server_info -> HTTP 404)" in err


def test_sglang_not_installed(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sglang" else real(name, *a))
    assert main(["bench", "--base-url", "http://127.0.0.1:1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SGLang is not installed" in err and "pip install '.[sglang]'" in err


@pytest.mark.parametrize("row, message", [
    ('{"question": "q"}', "expected {\"question\": str, \"answer\": str}"),
    ('{"question": "q", "answer": "no number here"}', "answer has no number"),
    ("not json", "not JSON"),
])
def test_bad_gsm8k_data_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], row: str, message: str) -> None:
    data = tmp_path / "gsm8k.jsonl"
    data.write_text(GSM8K.read_text() + row + "\n")
    with FakeSGLangServer() as fake:
        assert main(["bench", "--base-url", fake.url, "--gsm8k-data", str(data), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{data}:11: {message}" in err


def test_too_few_gsm8k_rows_for_the_shots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "gsm8k.jsonl"
    data.write_text("".join(GSM8K.read_text().splitlines(keepends=True)[:3]))
    with FakeSGLangServer() as fake:
        assert main(["bench", "--base-url", fake.url, "--gsm8k-data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "has 3 rows; 5-shot needs more than 5" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "1,x", ""])
def test_bad_concurrency_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--base-url", "http://127.0.0.1:1", "--concurrency", value])
    assert exc.value.code == 2
    assert "--concurrency" in capsys.readouterr().err


# ----------------------------------------------------------------------------- accept length arithmetic


def test_accept_rate_formula() -> None:
    assert derive_accept_rate(3.2, 3) == pytest.approx(0.7333, abs=1e-4)
    assert derive_accept_rate(1.0, 3) == 0.0
    assert derive_accept_rate(2.95, 3) == pytest.approx(0.65)  # the published ~0.65 at 4 draft tokens
    assert derive_accept_rate(None, 3) is None and derive_accept_rate(3.0, None) is None


def test_accept_stats_weights_requests_like_the_server() -> None:
    server = ServerInfo(base_url="http://x", num_draft_tokens=4)  # no num_steps: draft tokens - 1
    # 30 tokens in 10 steps (3.0) and 10 tokens in 2 steps (5.0): 40 / 12, not the mean 4.0
    stats = accept_stats(None, server, [(30, 3.0), (10, 5.0), (0, 0.0)])
    assert stats.server_avg is None and stats.per_request_count == 2
    assert stats.per_request_mean == pytest.approx(4.0)
    assert stats.per_request_weighted == pytest.approx(40 / 12) == stats.value
    assert stats.accept_rate == pytest.approx((40 / 12 - 1) / 3)


def test_server_info_dp_ranks_and_pd_router() -> None:
    doc = {"decode": [{"speculative_algorithm": "EAGLE", "speculative_num_steps": 3, "tp_size": 8,
                       "internal_states": [{"avg_spec_accept_length": 3.0}, {"avg_spec_accept_length": 3.4},
                                           {"last_gen_throughput": 1.0}]}], "version": "0.5.23"}
    info = parse_server_info(doc, "http://x")
    assert info.speculative and info.num_steps == 3 and info.version == "0.5.23"
    assert rank_accept_lengths(doc) == [3.0, 3.4]
    assert accept_stats(doc, info).server_avg == pytest.approx(3.2)
    assert not parse_server_info({"speculative_algorithm": None}, "http://x").speculative
