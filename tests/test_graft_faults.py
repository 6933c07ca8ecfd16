"""Bad input and faults: each ends in one clear error (or a completed graft) and an intact TARGET.

"Intact" means what a loader sees is byte-identical (hidden ``.*.partial``/``.journal``
files are resume state, not part of the checkpoint) and ``check`` still says what it said.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fake_hub import FakeHub
from graft_helpers import paced_cli, snapshot, tensor_bytes, visible
from sglang_glm_mtp import synthetic
from sglang_glm_mtp.graft import commit as graft_commit
from sglang_glm_mtp.graft import run as graft_run
from sglang_glm_mtp.checkpoint import range_reads as readers
from sglang_glm_mtp.graft import checksum, copying, records, space
from sglang_glm_mtp.checkpoint import inspect_checkpoint as inspect
from sglang_glm_mtp.cli import main
from sglang_glm_mtp.errors import GraftError
from sglang_glm_mtp.graft import execute, plan_graft

LAYER4 = "model.layers.4."


def _graft(source: Path | str, target: Path, *extra: str) -> list[str]:
    return ["graft", "--from", str(source), "--into", str(target), *extra]


def _assert_intact(target: Path, before: dict[str, str], status: str = "missing") -> None:
    assert visible(snapshot(target)) == visible(before)
    assert inspect(str(target)).status == status


def _assert_done(original: Path, target: Path) -> None:
    assert inspect(str(target)).status == "ready"
    assert tensor_bytes(target, LAYER4) == tensor_bytes(original, LAYER4)
    assert not [p.name for p in target.iterdir() if p.name.startswith(".")]


# ----------------------------------------------------------------------------- bad SOURCE


def test_source_without_the_layer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pair = synthetic.tiny_pair(tmp_path)
    other = synthetic.copy_checkpoint(pair.target, tmp_path / "also-nvfp4")
    before = snapshot(pair.target)
    assert main(_graft(other, pair.target)) == 1
    err = capsys.readouterr().err
    assert "has no model.layers.4.* tensors" in err and "--from zai-org/GLM-5.2" in err
    assert err.count("\n") == 1
    _assert_intact(pair.target, before)


@pytest.mark.parametrize("family, overrides, needle", [
    ("deepseek-v3", {}, "architecture DeepseekV3ForCausalLM vs GlmMoeDsaForCausalLM"),
    ("glm5", {"hidden_size": 128}, "hidden_size 128 vs 64"),
    ("glm5", {"n_routed_experts": 8}, "n_routed_experts 8 vs 4"),
    ("glm5", {"num_hidden_layers": 5, "mlp_layer_types": ["dense"] + ["sparse"] * 4,
              "indexer_types": ["full"] * 5}, "num_hidden_layers 5 vs 4"),
    ("glm5", {"vocab_size": 512}, "vocab_size 512 vs 256"),
])
def test_source_of_another_model(tmp_path: Path, family: str, overrides: dict, needle: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    target = synthetic.tiny_pair(tmp_path / "t").target
    other = synthetic.tiny_pair(tmp_path / "s", family=family, config_overrides=overrides).original  # type: ignore[arg-type]
    before = snapshot(target)
    assert main(_graft(other, target)) == 1
    err = capsys.readouterr().err
    assert "are not the same model" in err and needle in err, err
    _assert_intact(target, before)


@pytest.mark.parametrize("named", [True, False], ids=["target-names-its-release", "family-release"])
def test_release_of_another_family_names_the_targets_release(tmp_path: Path, named: bool,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """``graft --from <DeepSeek-V3 release> --into <GLM-5 target>``, as a new user types it: refused, and the
    release it suggests is GLM-5's (TARGET's, as its config.json names it, else its family's), not SOURCE's."""
    target = synthetic.tiny_pair(tmp_path / "glm5").target
    deepseek = synthetic.tiny_pair(tmp_path / "deepseek", family="deepseek-v3").original
    if not named:
        cfg = json.loads((target / "config.json").read_text())
        del cfg["_name_or_path"]
        (target / "config.json").write_text(json.dumps(cfg))
    before = snapshot(target)
    assert main(_graft(deepseek, target)) == 1
    err = capsys.readouterr().err
    assert "are not the same model" in err and err.count("\n") == 1, err
    assert "--from zai-org/GLM-5.2" in err and "deepseek-ai/DeepSeek-V3" not in err, err
    assert ("config.json _name_or_path" in err) == named, err
    _assert_intact(target, before)


def test_source_with_a_different_draft_tensor_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Same config numbers, different expected layer (index dims) -> refused."""
    target = synthetic.tiny_pair(tmp_path / "t").target
    other = synthetic.tiny_pair(tmp_path / "s", config_overrides={"index_head_dim": 32}).original
    assert main(_graft(other, target)) == 1
    assert "index_head_dim 32 vs 16" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["corrupt-header", "truncated-shard"])
def test_damaged_source(tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]) -> None:
    pair = synthetic.tiny_pair(tmp_path)
    shard = pair.original / "model-00006-of-00006.safetensors"
    if damage == "corrupt-header":
        data = bytearray(shard.read_bytes())
        data[8:12] = b"\xff\xfe[1"
        shard.write_bytes(bytes(data))
    else:
        with open(shard, "r+b") as handle:
            handle.truncate(shard.stat().st_size - 100)
    before = snapshot(pair.target)
    assert main(_graft(pair.original, pair.target)) == 1
    err = capsys.readouterr().err
    assert "cannot supply the draft layer" in err and "model-00006-of-00006.safetensors" in err
    assert ("not valid UTF-8 JSON" if damage == "corrupt-header" else "bytes long") in err or "truncated" in err, err
    _assert_intact(pair.target, before)


def test_source_truncated_after_planning(glm_pair: synthetic.SyntheticPair) -> None:
    """A shard that shrinks between plan and copy: the copy notices the early end of file."""
    plan = plan_graft(str(glm_pair.original), glm_pair.target)
    before = snapshot(glm_pair.target)
    shard = glm_pair.original / "model-00006-of-00006.safetensors"
    with open(shard, "r+b") as handle:
        handle.truncate(shard.stat().st_size - 5000)
    with pytest.raises(GraftError, match=r"model-00006-of-00006.safetensors ends at byte .* truncated"):
        execute(plan)
    _assert_intact(glm_pair.target, before)


# ----------------------------------------------------------------------------- TARGET and disk


@pytest.fixture
def tmpfs(tmp_path: Path) -> object:
    """A small tmpfs we can fill or remount read-only (root only: skipped elsewhere)."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a tmpfs")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_read_only_target(tmp_path: Path, tmpfs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pair = synthetic.tiny_pair(tmp_path)
    target = synthetic.copy_checkpoint(pair.target, tmpfs / "target")
    before = snapshot(target)
    assert subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], capture_output=True).returncode == 0
    assert main(_graft(pair.original, target)) == 1
    err = capsys.readouterr().err
    assert "Read-only file system" in err and "--out DIR" in err
    _assert_intact(target, before)
    # the advice works: an overlay on a writable disk, TARGET still untouched
    assert main(_graft(pair.original, target, "--out", str(tmp_path / "overlay"))) == 0
    assert inspect(str(tmp_path / "overlay")).status == "ready"
    _assert_intact(target, before)


def test_read_only_target_without_root(glm_pair: synthetic.SyntheticPair, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Same error where mounting is impossible: EROFS injected at the first write."""
    def refuse(path: Path) -> tuple[int, str]:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
    monkeypatch.setattr(graft_run, "make_temp", refuse)
    before = snapshot(glm_pair.target)
    assert main(_graft(glm_pair.original, glm_pair.target)) == 1
    assert "Read-only file system" in capsys.readouterr().err
    _assert_intact(glm_pair.target, before)


def test_not_enough_space_is_refused_before_writing(tmp_path: Path, tmpfs: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    pair = synthetic.tiny_pair(tmp_path)
    target = synthetic.copy_checkpoint(pair.target, tmpfs / "target")  # ~0.4 MB of 2 MB
    before = snapshot(target)
    assert main(_graft(pair.original, target, "--dry-run")) == 1
    assert "NOT ENOUGH" in capsys.readouterr().out
    assert main(_graft(pair.original, target)) == 1
    assert "not enough free space" in capsys.readouterr().err
    _assert_intact(target, before)


def test_disk_full_mid_write_on_tmpfs(tmp_path: Path, tmpfs: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The kernel's own ENOSPC: the space check is fooled, the tmpfs fills up during the write."""
    pair = synthetic.tiny_pair(tmp_path)
    target = synthetic.copy_checkpoint(pair.target, tmpfs / "target")
    filler = tmpfs / "filler"
    free = os.statvfs(tmpfs).f_bavail * os.statvfs(tmpfs).f_frsize
    with open(filler, "wb") as handle:  # leave less room than the new shard needs
        handle.write(b"\0" * max(0, free - 64 * 1024))
    monkeypatch.setattr(space, "free_space", lambda _dest: 1 << 40)
    before = snapshot(target)
    assert main(_graft(pair.original, target)) == 1
    err = capsys.readouterr().err
    assert "no space left" in err and "re-run the same command" in err
    _assert_intact(target, before)
    filler.unlink()
    assert main(_graft(pair.original, target)) == 0
    _assert_done(pair.original, target)


@pytest.mark.parametrize("call", ["copy_file_range", "pwrite"])
def test_disk_full_injected_at_the_write_call(glm_pair: synthetic.SyntheticPair, monkeypatch: pytest.MonkeyPatch,
                                              call: str, capsys: pytest.CaptureFixture[str]) -> None:
    calls = {"n": 0}

    def full(*args: object) -> int:
        calls["n"] += 1
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if call == "pwrite":
        monkeypatch.setattr(copying, "_copy_file_range", None)
    monkeypatch.setattr(copying, "_copy_file_range" if call == "copy_file_range" else "_pwrite", full)
    before = snapshot(glm_pair.target)
    assert main(_graft(glm_pair.original, glm_pair.target)) == 1
    assert calls["n"] == 1 and "no space left" in capsys.readouterr().err
    _assert_intact(glm_pair.target, before)
    monkeypatch.undo()
    assert main(_graft(glm_pair.original, glm_pair.target)) == 0
    _assert_done(glm_pair.original, glm_pair.target)


def _flip_last_byte_of_every_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every write lands one wrong byte (the kernel copy path is switched off so every byte goes through pwrite)."""
    real = os.pwrite

    def flip(fd: int, data: memoryview, offset: int) -> int:
        data = bytearray(data)
        data[-1] ^= 0xFF
        return real(fd, bytes(data), offset)
    monkeypatch.setattr(copying, "_copy_file_range", None)
    monkeypatch.setattr(copying, "_pwrite", flip)


@pytest.mark.parametrize("streams", ["one", "many"])
def test_written_bytes_that_differ_are_caught(glm_pair: synthetic.SyntheticPair, monkeypatch: pytest.MonkeyPatch,
                                              request: pytest.FixtureRequest, streams: str) -> None:
    """Read-back verification: a write that lands wrong bytes fails the graft before any commit; with concurrent
    streams, one stream's bad write stops every stream."""
    if streams == "many":
        request.getfixturevalue("many_streams")
    _flip_last_byte_of_every_write(monkeypatch)
    before = snapshot(glm_pair.target)
    with pytest.raises(GraftError, match="verification failed for model.layers.4.* source bytes hash to"):
        execute(plan_graft(str(glm_pair.original), glm_pair.target))
    _assert_intact(glm_pair.target, before)


def test_damaged_target_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = synthetic.make_variant(tmp_path, "index-missing-shard")
    assert main(_graft(tmp_path / "original-bf16", target, "--force")) == 1
    assert "is damaged" in capsys.readouterr().err


# ----------------------------------------------------------------------------- interruptions


def test_kill_9_mid_copy_then_rerun(glm_pair: synthetic.SyntheticPair, tmp_path: Path) -> None:
    before = snapshot(glm_pair.target)
    proc = subprocess.Popen([sys.executable, "-c", paced_cli(0.15), *_graft(glm_pair.original, glm_pair.target)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal = glm_pair.target / ".model-mtp-layer4-00001-of-00001.safetensors.journal"
    deadline = time.monotonic() + 30
    recorded = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            recorded = len(json.loads(journal.read_text())["tensors"])
        except (OSError, ValueError):
            recorded = 0
        if recorded >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # loadable exactly as before: same visible files, index unchanged, no new final-named shard
    _assert_intact(glm_pair.target, before)
    assert (glm_pair.target / ".model-mtp-layer4-00001-of-00001.safetensors.partial").exists()
    report = execute(plan_graft(str(glm_pair.original), glm_pair.target))
    assert report.ok
    assert report.shards[0].reused_tensors >= 3 and report.bytes_reused > 0
    assert report.shards[0].reused_tensors + report.shards[0].verified_tensors == 35
    _assert_done(glm_pair.original, glm_pair.target)


def _killed_before_the_index(pair: synthetic.SyntheticPair, monkeypatch: pytest.MonkeyPatch) -> None:
    """A three-shard graft killed between its shard renames and the index rename."""
    def die_on_index(tmp: str, path: Path) -> None:
        raise KeyboardInterrupt
    monkeypatch.setattr(graft_commit, "_commit_index", die_on_index)
    with pytest.raises(KeyboardInterrupt):
        execute(plan_graft(str(pair.original), pair.target, max_shard_size=50_000))
    monkeypatch.undo()


def test_stop_after_shards_renamed_before_index(glm_pair: synthetic.SyntheticPair,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed between the shard renames and the index: TARGET unchanged for loaders; re-run reuses the files."""
    before = snapshot(glm_pair.target)
    _killed_before_the_index(glm_pair, monkeypatch)
    assert inspect(str(glm_pair.target)).status == "missing"  # the index still names only the old shards
    assert snapshot(glm_pair.target)["model.safetensors.index.json"] == before["model.safetensors.index.json"]
    plan = plan_graft(str(glm_pair.original), glm_pair.target, max_shard_size=50_000)
    assert [s.resume for s in plan.shards] == ["final"] * 3 and plan.bytes_to_read == 0
    report = execute(plan)
    assert report.ok and report.bytes_copied == 0 and report.bytes_reused == 122_416
    _assert_done(glm_pair.original, glm_pair.target)


def test_stopped_run_then_a_different_plan(glm_pair: synthetic.SyntheticPair, monkeypatch: pytest.MonkeyPatch) -> None:
    """Uncommitted shards of an abandoned plan (other --max-shard-size) are ours: deleted, not kept or indexed."""
    _killed_before_the_index(glm_pair, monkeypatch)
    report = execute(plan_graft(str(glm_pair.original), glm_pair.target))
    assert report.ok and [s.name for s in report.shards] == ["model-mtp-layer4-00001-of-00001.safetensors"]
    assert not list(glm_pair.target.glob("model-mtp-layer4-*-of-00003.safetensors*"))
    _assert_done(glm_pair.original, glm_pair.target)


def test_stop_after_commit_is_finished_by_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Killed after the index commit, before the old files were moved aside: re-run finishes."""
    target = synthetic.make_variant(tmp_path, "unindexed-shard")
    original = tmp_path / "original-bf16"

    def crash(plan: object, report: object) -> None:
        raise KeyboardInterrupt
    monkeypatch.setattr(graft_run, "finish", crash)
    with pytest.raises(KeyboardInterrupt):
        execute(plan_graft(str(original), target))
    monkeypatch.undo()
    assert (target / "mtp.safetensors").exists()
    assert main(_graft(original, target)) == 0
    out = capsys.readouterr().out
    assert "mtp.safetensors -> mtp.safetensors.pre-graft" in out and "READY" in out
    assert inspect(str(target)).problems == []
    assert not [p.name for p in target.iterdir() if p.name.startswith(".")]


def test_lock_refuses_a_concurrent_run(glm_pair: synthetic.SyntheticPair) -> None:
    import fcntl

    fd = os.open(glm_pair.target / records.LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(GraftError, match="another sglang-glm-mtp graft/extract is writing"):
            execute(plan_graft(str(glm_pair.original), glm_pair.target))
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- remote faults


REPO = "zai-org/GLM-5.2"
SHARD6 = "model-00006-of-00006.safetensors"


def test_remote_drop_is_retried(glm_pair: synthetic.SyntheticPair, isolated_hf: None,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(readers.RETRY_DELAY_ENV, "0.001")
    with FakeHub({REPO: glm_pair.original}) as hub:
        plan = plan_graft(REPO, glm_pair.target, endpoint=hub.endpoint)
        hub.fail_after_bytes(REPO, SHARD6, after=10_000, times=2)
        hub.fail_after_bytes(REPO, SHARD6, after=0, times=1, reset=True)
        report = execute(plan)
        assert report.ok and hub.pending_faults(REPO, SHARD6) == 0
    _assert_done(glm_pair.original, glm_pair.target)


def test_remote_failure_gives_up_then_rerun_resumes(glm_pair: synthetic.SyntheticPair, isolated_hf: None,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(readers.RETRY_DELAY_ENV, "0.001")
    before = snapshot(glm_pair.target)
    with FakeHub({REPO: glm_pair.original}) as hub:
        plan = plan_graft(REPO, glm_pair.target, endpoint=hub.endpoint)  # headers read before the faults start
        hub.fail_after_bytes(REPO, SHARD6, after=40_000, times=1)  # progress first ...
        hub.fail_after_bytes(REPO, SHARD6, after=0, times=20)  # ... then a dead connection
        with pytest.raises(GraftError) as failure:
            execute(plan)
        err = str(failure.value)
        assert f"reading {REPO}/{SHARD6} failed at byte" in err and "after 5 attempts" in err
        assert "re-run the same command to resume" in err and "\n" not in err
        _assert_intact(glm_pair.target, before)
        args = [*_graft(REPO, glm_pair.target), "--endpoint", hub.endpoint]
        hub.clear_faults()
        hub.reset_stats()
        plan_graft(REPO, glm_pair.target, endpoint=hub.endpoint)
        headers = hub.bytes_served(REPO, SHARD6) + hub.bytes_served(REPO, "model-00005-of-00006.safetensors")
        hub.reset_stats()
        assert main([*args, "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["result"]["bytes_reused"] > 0  # tensors verified before the failure are not fetched again
        served = hub.bytes_served(REPO, SHARD6) + hub.bytes_served(REPO, "model-00005-of-00006.safetensors")
        assert served == headers + 122_416 - doc["result"]["bytes_reused"]
    _assert_done(glm_pair.original, glm_pair.target)


def test_remote_http_errors(glm_pair: synthetic.SyntheticPair, isolated_hf: None,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(readers.RETRY_DELAY_ENV, "0.001")
    with FakeHub({REPO: glm_pair.original}) as hub:
        plan = plan_graft(REPO, glm_pair.target, endpoint=hub.endpoint)
        hub.fail_with_status(REPO, SHARD6, status=503, times=2, methods=("GET",))
        assert execute(plan).ok  # 5xx is retried
    target2 = synthetic.tiny_pair(Path(str(glm_pair.target) + "-2")).target
    with FakeHub({REPO: glm_pair.original}) as hub:
        plan = plan_graft(REPO, target2, endpoint=hub.endpoint)
        hub.fail_with_status(REPO, SHARD6, status=403, times=1, methods=("GET",))
        with pytest.raises(GraftError, match="HTTP 403"):
            execute(plan)  # other 4xx are not


# ----------------------------------------------------------------------------- copy streams and checksums


@pytest.fixture
def many_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny layers copied as several concurrent streams, as big local ones are."""
    monkeypatch.setattr(copying, "MIN_STREAM_BYTES", 1)


def test_concurrent_streams_copy_every_byte(glm_pair: synthetic.SyntheticPair, many_streams: None) -> None:
    plan = plan_graft(str(glm_pair.original), glm_pair.target)
    pieces = [copying.Piece(t.name, f"{t.origin}:{t.shard}", t.src_offset, plan.shards[0].offsets[t.name], t.nbytes)
              for t in plan.shards[0].tensors]
    from sglang_glm_mtp.graft.readers import open_readers
    readers = open_readers(plan)
    try:
        groups = copying.split_streams(pieces, readers)
    finally:
        for reader in readers.values():
            reader.close()
    assert len(groups) == copying.STREAMS and [p for g in groups for p in g] == pieces  # contiguous, in order
    report = execute(plan)
    assert report.ok and report.shards[0].verified_tensors == 35
    _assert_done(glm_pair.original, glm_pair.target)


def test_crc32_fallback_without_xxhash(glm_pair: synthetic.SyntheticPair, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without xxhash, CRC32 verifies (and catches a bad write) just the same."""
    import builtins

    real_import = builtins.__import__

    def no_xxhash(name: str, *args: object, **kwargs: object) -> object:
        if name == "xxhash":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]
    monkeypatch.setattr(builtins, "__import__", no_xxhash)
    name, new = checksum._pick()
    monkeypatch.undo()
    assert name == "crc32"
    monkeypatch.setattr(checksum, "NAME", name)
    monkeypatch.setattr(copying, "new_hasher", new)
    report = execute(plan_graft(str(glm_pair.original), glm_pair.target))
    assert report.ok and report.verification["hash"] == "crc32"
    _assert_done(glm_pair.original, glm_pair.target)


def test_journal_of_another_checksum_is_not_reused(glm_pair: synthetic.SyntheticPair,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A partial verified with CRC32 is re-copied, not compared with xxh3 digests (or vice versa)."""
    def die_on_index(tmp: str, path: Path) -> None:
        raise KeyboardInterrupt
    monkeypatch.setattr(graft_commit, "_commit_index", die_on_index)
    monkeypatch.setattr(checksum, "NAME", "crc32")
    monkeypatch.setattr(copying, "new_hasher", checksum._Crc32)
    with pytest.raises(KeyboardInterrupt):
        execute(plan_graft(str(glm_pair.original), glm_pair.target))
    monkeypatch.undo()
    monkeypatch.setattr(checksum, "NAME", "other")  # whatever runs next is not crc32
    plan = plan_graft(str(glm_pair.original), glm_pair.target)
    assert plan.bytes_reusable == 0
    report = execute(plan)
    assert report.ok and report.bytes_reused == 0 and report.shards[0].verified_tensors == 35
    _assert_done(glm_pair.original, glm_pair.target)
