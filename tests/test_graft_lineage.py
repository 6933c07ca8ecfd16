"""Lineage: graft refuses a SOURCE that is not the release TARGET was quantized from.

Held-out-style pairs with real random weights (``synthetic.release_fill``): release A's
BF16 original, an NVFP4 target made from it (unquantized tensors byte-identical), and
release B with the same shapes and other weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fake_hub import FakeHub
from graft_helpers import index_of, snapshot, tensor_bytes
from sglang_glm_mtp import synthetic
from sglang_glm_mtp.checkpoint import inspect_checkpoint as inspect
from sglang_glm_mtp.checkpoint.safetensors_format import TensorSpec, read_header
from sglang_glm_mtp.checkpoint.writer import write_shard
from sglang_glm_mtp.checkpoint.source import HubCheckpoint, LocalCheckpoint
from sglang_glm_mtp.cli import main
from sglang_glm_mtp.errors import GraftError
from sglang_glm_mtp.graft import execute, plan_graft
from sglang_glm_mtp.checkpoint.lineage import WINDOW_BYTES, compare_lineage

#: vocab 4096 x hidden 64 BF16 = 512 KiB embeddings: bigger than the comparison window
BIG_VOCAB = {"vocab_size": 4096}


@pytest.fixture
def releases(tmp_path: Path) -> tuple[synthetic.SyntheticPair, synthetic.SyntheticPair]:
    """(release A: original + its NVFP4 target, release B: same shapes, other weights)."""
    a = synthetic.tiny_pair(tmp_path / "a", release="glm-5.2", config_overrides=BIG_VOCAB)
    b = synthetic.tiny_pair(tmp_path / "b", release="glm-5.1", config_overrides=BIG_VOCAB)
    return a, b


def test_release_fill_is_real_random_data(releases: tuple[synthetic.SyntheticPair, synthetic.SyntheticPair]) -> None:
    """The premise of the other tests: shared names hold equal bytes within a release, other bytes across."""
    a, b = releases
    name = "model.embed_tokens.weight"
    a_orig, a_tgt, b_orig = (tensor_bytes(d, name)[name][2] for d in (a.original, a.target, b.original))
    assert a_orig == a_tgt and a_orig != b_orig
    assert len(set(a_orig[:4096])) > 200  # not a repeated pattern


def test_other_release_is_refused_and_target_untouched(
        releases: tuple[synthetic.SyntheticPair, synthetic.SyntheticPair], capsys: pytest.CaptureFixture[str]) -> None:
    a, b = releases
    before = snapshot(a.target)
    assert main(["graft", "--from", str(b.original), "--into", str(a.target)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "is not the release TARGET" in err and "model.embed_tokens.weight" in err
    assert "router gates" in err and "--allow-other-release" in err
    assert snapshot(a.target) == before  # nothing written, not even hidden files
    assert inspect(str(a.target)).status == "missing"


def test_own_release_grafts_and_json_reports_the_comparison(
        releases: tuple[synthetic.SyntheticPair, synthetic.SyntheticPair], capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = releases
    assert main(["graft", "--from", str(a.original), "--into", str(a.target), "--json"]) == 0
    lineage = json.loads(capsys.readouterr().out)["plan"]["lineage"]
    assert lineage["verdict"] == "same-release" and lineage["differing"] == []
    names = {c["name"] for c in lineage["compared"]}
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"} <= names
    assert any(n.endswith("mlp.gate.e_score_correction_bias") for n in names)
    assert any(n.endswith("mlp.gate.weight") for n in names)
    embed = next(c for c in lineage["compared"] if c["name"] == "model.embed_tokens.weight")
    assert embed["window"][1] - embed["window"][0] == WINDOW_BYTES  # a window, not the whole 512 KiB
    assert inspect(str(a.target)).status == "ready"


def test_opt_out_grafts_across_releases(releases: tuple[synthetic.SyntheticPair, synthetic.SyntheticPair],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    a, b = releases
    assert main(["graft", "--from", str(b.original), "--into", str(a.target), "--allow-other-release"]) == 0
    out = capsys.readouterr().out
    assert "--allow-other-release: SOURCE is another release" in out
    assert inspect(str(a.target)).status == "ready"


def test_dry_run_shows_the_lineage(releases: tuple[synthetic.SyntheticPair, synthetic.SyntheticPair],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = releases
    assert main(["graft", "--from", str(a.original), "--into", str(a.target), "--dry-run"]) == 0
    assert "lineage:      same release: 15 unquantized tensors compared" in capsys.readouterr().out


def test_nothing_comparable_warns_and_grafts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A target that stores every unquantized tensor in another dtype: no verdict possible, no refusal."""
    a = synthetic.tiny_pair(tmp_path / "a", release="glm-5.2")
    cfg = json.loads((a.original / "config.json").read_text())
    odd = tmp_path / "f16-target"
    odd.mkdir()
    target_cfg = synthetic.write_quant_config(odd, cfg, "nested", synthetic.nvfp4_exclude_modules(cfg))
    specs = [TensorSpec(s.name, "F16" if s.dtype in ("BF16", "F32") else s.dtype, s.shape)
             for s in synthetic.model_specs(cfg, "nvfp4", with_draft=False)]
    synthetic.write_checkpoint(odd, target_cfg, specs, num_shards=3, fill=synthetic.release_fill("glm-5.2"))
    plan = plan_graft(str(a.original), odd)
    assert plan.lineage is not None and plan.lineage["verdict"] == "not-comparable"
    assert plan.lineage["skipped"]["model.embed_tokens.weight"].startswith("stored differently")
    assert any(n.startswith("lineage not checked") for n in plan.notes)
    assert "cannot confirm SOURCE is TARGET's release" in caplog.text
    assert execute(plan).ok


def test_through_the_hub_refused_and_accepted_with_bounded_reads(
        releases: tuple[synthetic.SyntheticPair, synthetic.SyntheticPair], isolated_hf: None) -> None:
    a, b = releases
    with FakeHub({"zai-org/GLM-5.2": a.original, "zai-org/GLM-5.1": b.original}) as hub:
        before = snapshot(a.target)
        with pytest.raises(GraftError, match="is not the release TARGET"):
            plan_graft("zai-org/GLM-5.1", a.target, endpoint=hub.endpoint)
        assert snapshot(a.target) == before

        hub.reset_stats()
        report = compare_lineage(LocalCheckpoint(a.target), HubCheckpoint("zai-org/GLM-5.2", endpoint=hub.endpoint))
        assert report.verdict == "same-release"
        files = LocalCheckpoint(a.original).list_files()
        served = {name: hub.bytes_served("zai-org/GLM-5.2", name) for name in files}
        assert sum(served.values()) == report.bytes_read["source"]  # the count is honest
        # every shard was read in part at most: headers and windows, never a whole file
        for name, nbytes in served.items():
            if name.endswith(".safetensors"):
                assert nbytes < files[name], name
        assert report.bytes_read["source"] < 2 * WINDOW_BYTES + files["model.safetensors.index.json"] + (64 << 10)

        plan = plan_graft("zai-org/GLM-5.2", a.target, endpoint=hub.endpoint)
        assert execute(plan).ok


def test_check_source_reports_lineage_without_grafting(
        releases: tuple[synthetic.SyntheticPair, synthetic.SyntheticPair], capsys: pytest.CaptureFixture[str]) -> None:
    """``check TARGET --source SOURCE``: the comparison graft runs, nothing written, verdict in the exit code."""
    a, b = releases
    before = snapshot(a.target)
    # The target lacks its draft (exit 1 already); a complete target isolates the lineage verdict.
    ready = synthetic.tiny_pair(a.target.parent / "ready", release="glm-5.2", target_has_draft=True,
                                config_overrides=BIG_VOCAB).target
    assert main(["check", str(ready), "--source", str(a.original)]) == 0
    assert "lineage:      same release" in capsys.readouterr().out
    assert main(["check", str(ready), "--source", str(b.original)]) == 1
    text = capsys.readouterr().out
    assert "other-release" in text and "model.embed_tokens.weight" in text
    assert main(["check", "--json", str(a.target), "--source", str(b.original)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "missing" and doc["lineage"]["verdict"] == "other-release"
    assert doc["lineage"]["compared"] and all(c["window"] for c in doc["lineage"]["compared"])
    assert snapshot(a.target) == before



# ----------------------------------------------------------------------------- one tensor off, a shape, a damaged shard
#: a sampled global tensor (128 bytes: the comparison window covers it whole)
NORM = "model.norm.weight"


def _shard_tensors(path: Path) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """name -> (dtype, shape, bytes) of one shard, in file order."""
    with open(path, "rb") as handle:
        header = read_header(handle, path.stat().st_size)
        out = {}
        for tensor, entry in header.tensors.items():
            handle.seek(header.data_start + entry.begin)
            out[tensor] = (entry.dtype, tuple(entry.shape), handle.read(entry.nbytes))
    return out


def _rewrite_tensor(directory: Path, name: str, *, shape: tuple[int, ...] | None = None) -> str:
    """Rewrite the shard holding ``name``: that tensor reshaped (bytes repeated) or, without ``shape``, one bit
    flipped mid-tensor; every other tensor byte-identical. Returns the shard's file name."""
    shard = index_of(directory)["weight_map"][name]
    tensors = _shard_tensors(directory / shard)
    specs = [TensorSpec(n, dtype, shape if n == name and shape else dims) for n, (dtype, dims, _) in tensors.items()]

    def fill(spec: TensorSpec, handle: Any) -> None:
        data = bytearray(tensors[spec.name][2])
        if spec.name == name and shape:
            data = bytearray((bytes(data) * (spec.nbytes // len(data) + 1))[:spec.nbytes])
        elif spec.name == name:
            data[len(data) // 2] ^= 0x01
        handle.write(bytes(data))

    write_shard(directory / shard, specs, fill)
    return shard


def test_one_differing_sampled_tensor_is_another_release(
        releases: tuple[synthetic.SyntheticPair, synthetic.SyntheticPair], tmp_path: Path) -> None:
    """Identical but for one bit of one sampled tensor: not the release TARGET was made from."""
    a, _ = releases
    source = synthetic.copy_checkpoint(a.original, tmp_path / "one-off")
    _rewrite_tensor(source, NORM)
    report = compare_lineage(LocalCheckpoint(a.target), LocalCheckpoint(source))
    assert report.differing == [NORM] and len(report.compared) > 10
    assert report.verdict == "other-release"
    assert compare_lineage(LocalCheckpoint(a.target), LocalCheckpoint(a.original)).verdict == "same-release"


def test_a_difference_in_the_last_sampled_layer_is_found(
        releases: tuple[synthetic.SyntheticPair, synthetic.SyntheticPair], tmp_path: Path) -> None:
    """The first, middle and last MoE layers are sampled: a source that differs only in the last one is another
    release."""
    a, _ = releases
    last_gate = "model.layers.3.mlp.gate.weight"
    source = synthetic.copy_checkpoint(a.original, tmp_path / "late")
    _rewrite_tensor(source, last_gate)
    report = compare_lineage(LocalCheckpoint(a.target), LocalCheckpoint(source))
    assert {c.name.split(".mlp.")[0] for c in report.compared if ".mlp." in c.name} == {
        "model.layers.1", "model.layers.2", "model.layers.3"}
    assert report.differing == [last_gate] and report.verdict == "other-release"


def test_a_differently_shaped_tensor_is_skipped_not_compared(
        releases: tuple[synthetic.SyntheticPair, synthetic.SyntheticPair], tmp_path: Path) -> None:
    """Same dtype, other shape: not comparable (a skip), never a byte comparison that calls it another release."""
    a, _ = releases
    source = synthetic.copy_checkpoint(a.original, tmp_path / "reshaped")
    _rewrite_tensor(source, NORM, shape=(128,))
    report = compare_lineage(LocalCheckpoint(a.target), LocalCheckpoint(source))
    assert NORM not in {c.name for c in report.compared}
    assert report.skipped[NORM] == "stored differently: TARGET BF16 [64], SOURCE BF16 [128]"
    assert report.verdict == "same-release" and report.differing == []


@pytest.mark.parametrize("damaged", ["source", "target"])
def test_a_damaged_shard_on_one_side_is_skipped(
        releases: tuple[synthetic.SyntheticPair, synthetic.SyntheticPair], tmp_path: Path, damaged: str) -> None:
    """A shard whose header is unreadable on either side: its tensors are skipped, the rest still decide."""
    a, _ = releases
    sides = {"target": a.target, "source": a.original}
    sides[damaged] = synthetic.copy_checkpoint(sides[damaged], tmp_path / damaged)
    shard = index_of(sides[damaged])["weight_map"][NORM]
    data = bytearray((sides[damaged] / shard).read_bytes())
    data[8:12] = b"\xff\xfe[1"
    (sides[damaged] / shard).write_bytes(bytes(data))
    report = compare_lineage(LocalCheckpoint(sides["target"]), LocalCheckpoint(sides["source"]))
    assert NORM not in {c.name for c in report.compared}
    assert report.skipped[NORM].startswith(f"{shard} has an unreadable header")
    assert report.verdict == "same-release" and report.compared
