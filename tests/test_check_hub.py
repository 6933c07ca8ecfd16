"""``check`` on Hub ids, through huggingface_hub's real HfFileSystem against a loopback fake Hub.

Same code path as the real Hub (HTTP listing, Range reads); only the server is local.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fake_hub import FakeHub
from sglang_glm_mtp import synthetic
from sglang_glm_mtp.checkpoint import inspect_checkpoint as inspect
from sglang_glm_mtp.cli import main

pytestmark = pytest.mark.usefixtures("isolated_hf")


def test_hub_check_reads_headers_only(tmp_path: Path) -> None:
    pair = synthetic.tiny_pair(tmp_path, target_has_draft=True)
    # Pad the draft shard so a whole-shard download would be visible in the byte count.
    with FakeHub({"org/glm-nvfp4": pair.target, "org/glm-bf16": pair.original}) as hub:
        report = inspect("org/glm-nvfp4", endpoint=hub.endpoint)
        assert report.status == "ready" and report.found_tensors == 35
        assert report.checkpoint == "org/glm-nvfp4"
        for shard in report.draft_shards:
            size = (pair.target / shard).stat().st_size
            served = hub.bytes_served("org/glm-nvfp4", shard)
            assert served < size, f"{shard}: {served} of {size} bytes fetched"
        other = sorted(set(p.name for p in pair.target.glob("*.safetensors")) - set(report.draft_shards))
        assert all(hub.bytes_served("org/glm-nvfp4", s) == 0 for s in other)


def test_hub_missing_layer_and_revision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pair = synthetic.tiny_pair(tmp_path)
    sha = "0123456789abcdef0123456789abcdef01234567"
    with FakeHub({"org/glm-nvfp4": pair.target}, revisions={"org/glm-nvfp4": {"main": sha}}) as hub:
        assert main(["check", "--json", f"org/glm-nvfp4@{sha}", "--endpoint", hub.endpoint]) == 1
        doc = json.loads(capsys.readouterr().out)
        assert doc["status"] == "missing" and doc["checkpoint"] == f"org/glm-nvfp4@{sha}"
        assert "hf download" in doc["remedy"] and "sglang-glm-mtp graft" in doc["remedy"]


@pytest.mark.parametrize("spec, needle", [("org/nope", "no such Hub repo"), ("org/glm@badrev", "no such revision")])
def test_hub_errors_are_one_line(tmp_path: Path, spec: str, needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    pair = synthetic.tiny_pair(tmp_path)
    with FakeHub({"org/glm": pair.target}) as hub:
        assert main(["check", spec, "--endpoint", hub.endpoint]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_hub_read_failure_is_unreadable_not_a_verdict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A Hub that fails mid-check says nothing about the checkpoint: exit 2, never 'invalid'."""
    pair = synthetic.tiny_pair(tmp_path, target_has_draft=True)
    shard = sorted(p.name for p in pair.target.glob("*.safetensors"))[-1]
    with FakeHub({"org/glm": pair.target}) as hub:
        hub.fail_with_status("org/glm", shard, status=500, times=100)
        assert main(["check", "org/glm", "--endpoint", hub.endpoint]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and shard in err and "Traceback" not in err, err
