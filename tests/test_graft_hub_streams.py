"""Concurrent HTTP Range streams from the Hub (issue 18), offline through the loopback Hub.

The tiny pair's draft layer is 122 KB; ``copying.MIN_SEGMENT`` is lowered so that it is
cut into segments (and tensors split across streams) as a GB-sized layer would be.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from fake_hub import FakeHub
from graft_helpers import paced_cli, snapshot, tensor_bytes, visible
from sglang_glm_mtp import synthetic
from sglang_glm_mtp.checkpoint import inspect_checkpoint as inspect
from sglang_glm_mtp.cli import main
from sglang_glm_mtp.errors import GraftError
from sglang_glm_mtp.checkpoint import range_reads as readers
from sglang_glm_mtp.graft import copying, execute, plan_graft
from sglang_glm_mtp.graft.copying import Piece, split_segments

REPO = "zai-org/GLM-5.2"
SHARD5, SHARD6 = "model-00005-of-00006.safetensors", "model-00006-of-00006.safetensors"
LAYER4 = "model.layers.4."
LAYER_BYTES = 122_416
JOURNAL = ".model-mtp-layer4-00001-of-00001.safetensors.journal"


@pytest.fixture
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(copying, "MIN_SEGMENT", 4096)
    monkeypatch.setenv(readers.RETRY_DELAY_ENV, "0.001")


@pytest.fixture
def hub(glm_pair: synthetic.SyntheticPair, isolated_hf: None) -> Iterator[FakeHub]:
    with FakeHub({REPO: glm_pair.original}) as h:
        yield h


def _assert_done(original: Path, target: Path) -> None:
    assert inspect(str(target)).status == "ready"
    assert tensor_bytes(target, LAYER4) == tensor_bytes(original, LAYER4)
    assert not [p.name for p in target.iterdir() if p.name.startswith(".")]


def _layer_requests(hub: FakeHub) -> list:
    """Range GETs that carried layer bytes (headers were read during planning, before reset_stats)."""
    return [r for r in hub.requests if r.method == "GET" and r.filename in (SHARD5, SHARD6) and r.status == 206]


# ----------------------------------------------------------------------------- the split


def test_segments_are_equal_and_tile_every_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    """One 5 GB tensor does not serialise the copy: it is cut into equal segments that tile it exactly."""
    monkeypatch.setattr(copying, "MIN_SEGMENT", 1)
    pieces = [Piece("a", "r", 100, 0, 10), Piece("big", "r", 110, 10, 1000), Piece("z", "r", 1110, 1010, 0),
              Piece("c", "r", 1110, 1010, 30)]
    segments = split_segments(pieces, 4)  # 1040 bytes / 16 -> 65-byte segments
    sizes = [sum(p.nbytes for p in s) for s in segments]
    assert sizes[:-1] == [65] * (len(sizes) - 1) and 0 < sizes[-1] <= 65 and sum(sizes) == 1040
    flat = [p for s in segments for p in s]
    for name, size in (("a", 10), ("big", 1000), ("c", 30)):
        parts = [p for p in flat if p.name == name]
        assert sum(p.nbytes for p in parts) == size
        cursor = 0
        for p in parts:  # in order, contiguous, source and destination moved together
            assert p.offset == cursor and p.src_offset - p.dst_offset == 100 and p.tensor_nbytes in (None, size)
            cursor += p.nbytes
    assert len([p for p in flat if p.name == "big"]) >= 15 and not any(p.whole for p in flat if p.name == "big")
    assert [p for p in flat if p.name == "z"] == [pieces[2]]  # an empty tensor is carried whole


def test_segment_size_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(copying, "MAX_SEGMENT", 100)
    monkeypatch.setattr(copying, "MIN_SEGMENT", 10)
    segments = split_segments([Piece("t", "r", 0, 0, 10_000)], 2)
    assert len(segments) == 100 and all(sum(p.nbytes for p in s) == 100 for s in segments)
    assert len(split_segments([Piece("t", "r", 0, 0, 50)], 8)) == 5  # never below MIN_SEGMENT


# ----------------------------------------------------------------------------- streams


def test_hub_graft_runs_concurrent_streams(glm_pair: synthetic.SyntheticPair, hub: FakeHub,
                                           small_segments: None) -> None:
    plan = plan_graft(REPO, glm_pair.target, endpoint=hub.endpoint)
    hub.reset_stats()
    hub.rendezvous(4, timeout=10)  # each body waits until four are in flight: only concurrent streams get there
    seen: list[int] = []
    report = execute(plan, workers=4, progress=seen.append)  # one bar fed by every stream
    assert sum(seen) == LAYER_BYTES and len(seen) >= 8
    assert report.ok and report.shards[0].verified_tensors == 35
    t = report.transfer
    assert t["source"] == "hub" and t["streams"] == 4 and t["segments"] >= 8 and t["bytes"] == LAYER_BYTES
    assert t["rate_bytes_per_s"] > 0 and t["requests"] == len(_layer_requests(hub))
    gets = _layer_requests(hub)
    assert sum(r.body_bytes for r in gets) == LAYER_BYTES  # every byte fetched once, nothing beyond the layer
    assert hub.max_concurrent_bodies == 4  # four ranges in flight together (no timing involved)
    _assert_done(glm_pair.original, glm_pair.target)


def test_a_tensor_split_across_streams_is_verified_per_segment(glm_pair: synthetic.SyntheticPair, hub: FakeHub,
                                                               small_segments: None,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A segment that lands wrong bytes fails the graft, though no stream holds the whole tensor."""
    plan = plan_graft(REPO, glm_pair.target, endpoint=hub.endpoint)
    real = os.pwrite
    hits = {"n": 0}

    def flip_one(fd: int, data: memoryview, offset: int) -> int:  # one wrong byte in the 3rd write
        hits["n"] += 1
        if hits["n"] == 3:
            data = bytearray(data)
            data[0] ^= 0xFF
        return real(fd, bytes(data), offset)
    monkeypatch.setattr(copying, "_pwrite", flip_one)
    before = snapshot(glm_pair.target)
    with pytest.raises(GraftError, match="verification failed for model.layers.4."):
        execute(plan, workers=4)
    assert visible(snapshot(glm_pair.target)) == visible(before)


def test_one_stream_resumes_after_a_drop(glm_pair: synthetic.SyntheticPair, hub: FakeHub,
                                         small_segments: None) -> None:
    plan = plan_graft(REPO, glm_pair.target, endpoint=hub.endpoint)
    hub.reset_stats()
    hub.fail_after_bytes(REPO, SHARD5, after=1000, times=2)
    hub.fail_after_bytes(REPO, SHARD6, after=0, times=1, reset=True)
    report = execute(plan, workers=4)
    assert report.ok and report.transfer["retries"] == 3 and hub.pending_faults(REPO, SHARD5) == 0
    # resumed from the last byte received: the bytes sent before each drop are kept, not fetched again
    gets = _layer_requests(hub)
    assert len([r for r in gets if r.dropped]) == 3 and sum(r.body_bytes for r in gets) == LAYER_BYTES
    _assert_done(glm_pair.original, glm_pair.target)


# ----------------------------------------------------------------------------- 429 / 503


def test_a_429_pauses_every_stream_for_retry_after(glm_pair: synthetic.SyntheticPair, hub: FakeHub) -> None:
    """Stream A is told 429 Retry-After: 7; stream B, reading another range, waits those 7 s before its request."""
    clock = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # a fake clock: nothing really waits
        slept.append(seconds)
        clock[0] += seconds
    plan_graft(REPO, glm_pair.target, endpoint=hub.endpoint)  # the repo is readable
    from huggingface_hub import HfFileSystem

    gate = readers.HubGate(sleep=sleep, clock=lambda: clock[0])
    a = readers.HubReader(HfFileSystem(endpoint=hub.endpoint), f"{REPO}/{SHARD6}", "a", attempts=1,
                          base_delay=0.001, sleep=sleep, gate=gate)
    b = a.for_stream()
    hub.fail_with_status(REPO, SHARD6, status=429, times=1, methods=("GET",), retry_after=7)
    buf = memoryview(bytearray(100))
    with pytest.raises(GraftError, match="HTTP 429"):
        a.read_into(0, buf)  # one attempt only: A gives up, B has to respect the pause A was given
    assert slept == []
    b.read_into(1000, buf)
    assert slept == [7.0] and gate.stats()["throttled"] == 1
    assert bytes(buf) == (glm_pair.original / SHARD6).read_bytes()[1000:1100]
    b.read_into(2000, buf)
    assert slept == [7.0]  # the pause is over: no more waiting
    a.close()
    b.close()


@pytest.mark.parametrize("header, seconds", [("3", 3.0), ("0.5", 0.5), ("soon", None), (None, None)])
def test_retry_after_parsing(header: str | None, seconds: float | None) -> None:
    assert readers.retry_after({"Retry-After": header} if header else {}) == seconds


def test_retry_after_http_date() -> None:
    import email.utils

    value = readers.retry_after({"Retry-After": email.utils.formatdate(time.time() + 60, usegmt=True)})
    assert value is not None and 50 < value <= 60


def test_429_and_503_during_a_graft(glm_pair: synthetic.SyntheticPair, hub: FakeHub, small_segments: None) -> None:
    plan = plan_graft(REPO, glm_pair.target, endpoint=hub.endpoint)
    hub.fail_with_status(REPO, SHARD6, status=429, times=2, methods=("GET",), retry_after="0.05")
    hub.fail_with_status(REPO, SHARD5, status=503, times=1, methods=("GET",))
    report = execute(plan, workers=4)
    t = report.transfer
    assert report.ok and t["throttled"] == 3 and t["retries"] == 3
    assert t["throttle_wait_s"] > 0  # the streams did pause (what they were asked, not measured time)
    _assert_done(glm_pair.original, glm_pair.target)


# ----------------------------------------------------------------------------- CDN redirects


def test_redirect_to_cdn_keeps_range_and_drops_the_token(glm_pair: synthetic.SyntheticPair, hub: FakeHub,
                                                         small_segments: None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_the_hub_only")
    hub.redirect_to_cdn()
    plan = plan_graft(REPO, glm_pair.target, endpoint=hub.endpoint)
    hub.reset_stats()
    report = execute(plan, workers=4)
    assert report.ok and report.transfer["resolutions"] == 2  # one HEAD per source shard, shared by the streams
    cdn = [r for r in hub.requests if r.host == "cdn"]
    assert len(cdn) == report.transfer["requests"] >= 8
    assert all(r.range and r.status == 206 and not r.authorization for r in cdn)
    assert sum(r.body_bytes for r in cdn) == LAYER_BYTES
    heads = [r for r in hub.requests if r.host == "hub"]
    assert heads and all(r.method == "HEAD" and r.status == 302 and r.authorization for r in heads)
    _assert_done(glm_pair.original, glm_pair.target)


def test_expired_signed_url_is_resolved_again(glm_pair: synthetic.SyntheticPair, hub: FakeHub,
                                              small_segments: None) -> None:
    hub.redirect_to_cdn(uses=2)  # every signed URL serves two requests, then says 403
    plan = plan_graft(REPO, glm_pair.target, endpoint=hub.endpoint)
    hub.reset_stats()
    report = execute(plan, workers=4)
    expired = [r for r in hub.requests if r.host == "cdn" and r.status == 403]
    assert report.ok and expired and report.transfer["resolutions"] > 2
    _assert_done(glm_pair.original, glm_pair.target)


def test_403_from_the_hub_itself_is_not_retried(glm_pair: synthetic.SyntheticPair, hub: FakeHub,
                                                small_segments: None) -> None:
    plan = plan_graft(REPO, glm_pair.target, endpoint=hub.endpoint)
    hub.fail_with_status(REPO, SHARD6, status=403, times=100, methods=("GET",))
    with pytest.raises(GraftError, match="HTTP 403"):
        execute(plan, workers=4)
    assert hub.request_count(REPO, SHARD6, method="GET", status=403) <= 4  # at most one per stream, no retries


# ----------------------------------------------------------------------------- resume per segment


def test_kill_9_mid_hub_copy_resumes_per_segment(glm_pair: synthetic.SyntheticPair, hub: FakeHub,
                                                 small_segments: None) -> None:
    """Killed with segments of split tensors in the journal: the re-run fetches only what is not verified."""
    before = snapshot(glm_pair.target)
    code = paced_cli(0.1, "copying.MIN_SEGMENT = 4096")
    args = ["graft", "--from", REPO, "--into", str(glm_pair.target), "--endpoint", hub.endpoint, "--workers", "2"]
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal = glm_pair.target / JOURNAL
    doc: dict = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                doc = json.loads(journal.read_text())
            except (OSError, ValueError):
                doc = {}
            if sum(len(v) for v in doc.get("segments", {}).values()) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert visible(snapshot(glm_pair.target)) == visible(before)
    assert inspect(str(glm_pair.target)).status == "missing"
    hub.reset_stats()
    plan = plan_graft(REPO, glm_pair.target, endpoint=hub.endpoint)
    assert plan.bytes_reusable > 0  # segments count as reusable bytes in the plan
    hub.reset_stats()
    report = execute(plan, workers=4)
    assert report.ok and report.bytes_reused >= plan.bytes_reusable
    assert report.shards[0].reused_tensors + report.shards[0].verified_tensors == 35
    # completed segments were not fetched again: the layer minus what was reused, no more
    assert sum(r.body_bytes for r in _layer_requests(hub)) == LAYER_BYTES - report.bytes_reused
    _assert_done(glm_pair.original, glm_pair.target)


def test_a_stale_segment_is_fetched_again(glm_pair: synthetic.SyntheticPair, hub: FakeHub,
                                          small_segments: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A journaled segment whose bytes in the partial file changed is not trusted: re-hashed, found wrong, re-fetched."""
    from sglang_glm_mtp.graft import commit as graft_commit

    def die_on_index(tmp: str, path: Path) -> None:
        raise KeyboardInterrupt
    monkeypatch.setattr(graft_commit, "_commit_index", die_on_index)
    with pytest.raises(KeyboardInterrupt):
        execute(plan_graft(REPO, glm_pair.target, endpoint=hub.endpoint), workers=4)
    monkeypatch.undo()
    monkeypatch.setattr(copying, "MIN_SEGMENT", 4096)
    final = glm_pair.target / "model-mtp-layer4-00001-of-00001.safetensors"
    doc = json.loads((glm_pair.target / JOURNAL).read_text())
    name, entries = next((k, v) for k, v in doc["segments"].items())
    plan = plan_graft(REPO, glm_pair.target, endpoint=hub.endpoint)
    offset = plan.shards[0].offsets[name] + entries[0][0]
    with open(final, "r+b") as handle:  # damage the first recorded segment of one split tensor
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))
    plan = plan_graft(REPO, glm_pair.target, endpoint=hub.endpoint)
    assert plan.bytes_reusable == LAYER_BYTES
    hub.reset_stats()
    report = execute(plan, workers=4)
    assert report.ok and report.bytes_copied == entries[0][1]  # exactly that segment again
    assert sum(r.body_bytes for r in _layer_requests(hub)) == entries[0][1]
    _assert_done(glm_pair.original, glm_pair.target)


# ----------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("value", ["0", "-3", "1000", "eight", "2.5"])
def test_bad_workers_is_one_line_exit_2(glm_pair: synthetic.SyntheticPair, value: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(glm_pair.target)
    assert main(["graft", "--from", str(glm_pair.original), "--into", str(glm_pair.target),
                 f"--workers={value}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--workers" in err and "1 to 64" in err
    assert snapshot(glm_pair.target) == before


def test_bad_workers_env_is_one_line_exit_2(glm_pair: synthetic.SyntheticPair, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(copying.WORKERS_ENV, "0")
    assert main(["extract", "--from", str(glm_pair.original), "--out", str(glm_pair.target.parent / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and copying.WORKERS_ENV in err


def test_json_reports_streams_bytes_and_rate(glm_pair: synthetic.SyntheticPair, hub: FakeHub,
                                             small_segments: None, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(copying.WORKERS_ENV, "3")  # the environment sets the default ...
    args = ["graft", "--from", REPO, "--into", str(glm_pair.target), "--endpoint", hub.endpoint, "--json"]
    assert main(args) == 0
    t = json.loads(capsys.readouterr().out)["result"]["transfer"]
    assert t["workers"] == 3 and t["streams"] == 3 and t["bytes"] == LAYER_BYTES
    assert t["rate_bytes_per_s"] == pytest.approx(t["bytes"] / t["seconds"], rel=0.01)  # seconds are rounded
    _assert_done(glm_pair.original, glm_pair.target)


def test_workers_flag_beats_the_environment(glm_pair: synthetic.SyntheticPair, hub: FakeHub, small_segments: None,
                                            monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(copying.WORKERS_ENV, "3")
    args = ["extract", "--from", REPO, "--out", str(glm_pair.target.parent / "nextn"), "--endpoint", hub.endpoint,
            "--json", "--workers", "5"]
    assert main(args) == 0
    t = json.loads(capsys.readouterr().out)["result"]["transfer"]
    assert t["workers"] == 5 and t["streams"] == 5


def test_local_copies_keep_their_streams(glm_pair: synthetic.SyntheticPair, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local SOURCE still copies as at most copying.STREAMS groups of whole tensors; --workers 1 means one."""
    monkeypatch.setattr(copying, "MIN_STREAM_BYTES", 1)
    report = execute(plan_graft(str(glm_pair.original), glm_pair.target), workers=1)
    assert report.ok and report.transfer["source"] == "local" and report.transfer["streams"] == 1
    target2 = synthetic.tiny_pair(glm_pair.target.parent.parent / "second").target
    report = execute(plan_graft(str(glm_pair.original), target2))
    assert report.ok and report.transfer["streams"] == copying.STREAMS and report.transfer["segments"] == 0
