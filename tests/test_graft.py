"""``graft`` end to end on synthetic GLM-5.2-like and DeepSeek-V3-like pairs: bytes, index, configs, check."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fake_hub import FakeHub
from graft_helpers import INDEX, index_of, load_with_safetensors, snapshot, tensor_bytes
from sglang_glm_mtp import synthetic
from sglang_glm_mtp.checkpoint import inspect_checkpoint as inspect
from sglang_glm_mtp.checkpoint.writer import atomic_write_json
from sglang_glm_mtp.cli import main
from sglang_glm_mtp.errors import UsageError
from sglang_glm_mtp.graft import DEFAULT_MAX_SHARD_SIZE, checksum, execute, parse_size, plan_graft

LAYER4 = "model.layers.4."


def _drop_exclusion(target: Path) -> None:
    """Make the quant config quantize layer 4, as some community exports do."""
    quant_path = target / "hf_quant_config.json"
    if quant_path.exists():
        quant = json.loads(quant_path.read_text())
        quant["quantization"]["exclude_modules"] = [x for x in quant["quantization"]["exclude_modules"]
                                                    if x != "model.layers.4*"]
        atomic_write_json(quant_path, quant)
    cfg = json.loads((target / "config.json").read_text())
    if "quantization_config" in cfg:
        cfg["quantization_config"]["ignore"] = [x for x in cfg["quantization_config"]["ignore"]
                                                if x != "model.layers.4*"]
        atomic_write_json(target / "config.json", cfg)


def _assert_grafted(original: Path, result: Path, prefix: str = LAYER4) -> None:
    """Every draft tensor byte-identical to the source, every old tensor untouched, files loadable."""
    want = tensor_bytes(original, prefix)
    got = tensor_bytes(result, prefix)
    assert want.keys() == got.keys()
    for name, value in want.items():
        assert got[name] == value, name
    for shard in sorted(set(index_of(result)["weight_map"].values())):
        load_with_safetensors(result / shard)


@pytest.mark.parametrize("quant_format", ["nested", "flat"])
def test_glm_in_place(tmp_path: Path, quant_format: str, capsys: pytest.CaptureFixture[str]) -> None:
    pair = synthetic.tiny_pair(tmp_path, quant_format=quant_format)  # type: ignore[arg-type]
    _drop_exclusion(pair.target)
    before_index = index_of(pair.target)
    before_files = snapshot(pair.target)
    before_payload = tensor_bytes(pair.target)

    assert main(["graft", "--from", str(pair.original), "--into", str(pair.target)]) == 0
    out = capsys.readouterr().out
    assert "check:        READY" in out and f"35 tensor(s) {checksum.NAME.upper()}-hashed while copying" in out

    _assert_grafted(pair.original, pair.target)
    after = index_of(pair.target)
    # every old entry kept, draft entries added, total_size exact
    assert all(after["weight_map"][k] == v for k, v in before_index["weight_map"].items())
    new = {k: v for k, v in after["weight_map"].items() if k.startswith(LAYER4)}
    assert len(new) == 35 and set(new.values()) == {"model-mtp-layer4-00001-of-00001.safetensors"}
    assert after["metadata"]["total_size"] == before_index["metadata"]["total_size"] + 122_416 == 426_016
    # old shards untouched
    assert tensor_bytes(pair.target, "model.layers.0.") == {k: v for k, v in before_payload.items()
                                                            if k.startswith("model.layers.0.")}
    for name, digest in before_files.items():
        if name not in ("config.json", "hf_quant_config.json", INDEX):
            assert snapshot(pair.target)[name] == digest
    # backups of every replaced JSON file, byte-identical to the originals
    assert (pair.target / f"{INDEX}.pre-graft").read_bytes() and \
        snapshot(pair.target)[f"{INDEX}.pre-graft"] == before_files[INDEX]
    edited = "hf_quant_config.json" if quant_format == "nested" else "config.json"
    assert snapshot(pair.target)[f"{edited}.pre-graft"] == before_files[edited]
    if quant_format == "nested":
        excludes = json.loads((pair.target / "hf_quant_config.json").read_text())["quantization"]["exclude_modules"]
    else:
        excludes = json.loads((pair.target / "config.json").read_text())["quantization_config"]["ignore"]
    assert excludes[-1] == "model.layers.4*"
    report = inspect(str(pair.target))
    assert report.status == "ready" and report.problems == [] and report.quant_config["draft_excluded"]
    assert not [p for p in pair.target.iterdir() if p.name.startswith(".")], "temporaries left behind"


def test_both_quant_declarations_are_edited(tmp_path: Path) -> None:
    pair = synthetic.tiny_pair(tmp_path, quant_format="flat")
    cfg = json.loads((pair.target / "config.json").read_text())
    nested = {"quantization": {"quant_algo": "NVFP4", "group_size": 16,
                               "exclude_modules": [x for x in cfg["quantization_config"]["ignore"]
                                                   if x != "model.layers.4*"]}}
    atomic_write_json(pair.target / "hf_quant_config.json", nested)
    _drop_exclusion(pair.target)
    plan = plan_graft(str(pair.original), pair.target)
    assert {e.file: e.changes for e in plan.config_edits if e.file != INDEX} == {
        "hf_quant_config.json": ["quantization.exclude_modules += 'model.layers.4*'"],
        "config.json": ["quantization_config.ignore += 'model.layers.4*'"]}
    assert execute(plan).ok
    assert json.loads((pair.target / "config.json").read_text())["quantization_config"]["ignore"][-1] == \
        json.loads((pair.target / "hf_quant_config.json").read_text())["quantization"]["exclude_modules"][-1]


def test_deepseek_in_place(deepseek_pair: synthetic.SyntheticPair) -> None:
    plan = plan_graft(str(deepseek_pair.original), deepseek_pair.target)
    assert plan.draft_tensors == 32  # 3*4 experts + 20: no indexer, embed_tokens and shared_head.head included
    report = execute(plan)
    assert report.ok and report.tensors == 32
    _assert_grafted(deepseek_pair.original, deepseek_pair.target)
    assert inspect(str(deepseek_pair.target)).status == "ready"


def test_overlay_leaves_target_untouched(glm_pair: synthetic.SyntheticPair, tmp_path: Path) -> None:
    before = snapshot(glm_pair.target)
    out = tmp_path / "overlay"
    assert main(["graft", "--from", str(glm_pair.original), "--into", str(glm_pair.target), "--out", str(out)]) == 0
    assert snapshot(glm_pair.target) == before
    assert inspect(str(glm_pair.target)).status == "missing"
    links = sorted(p.name for p in out.iterdir() if p.is_symlink())
    assert links == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert all((out / n).resolve() == (glm_pair.target / n).resolve() for n in links)
    assert {p.name for p in out.iterdir()} == {*links, "model-mtp-layer4-00001-of-00001.safetensors", INDEX,
                                               "config.json", "hf_quant_config.json", "generation_config.json"}
    assert inspect(str(out)).status == "ready"
    _assert_grafted(glm_pair.original, out)


def test_overlay_only_is_the_upload_shape(glm_pair: synthetic.SyntheticPair, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(glm_pair.target)
    out = tmp_path / "upload"
    assert main(["graft", "--from", str(glm_pair.original), "--into", str(glm_pair.target), "--out", str(out),
                 "--overlay-only", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["result"]["ok"] and doc["result"]["verification"]["final_check_view"] == "overlay combined with TARGET"
    assert snapshot(glm_pair.target) == before
    assert not any(p.is_symlink() for p in out.iterdir())
    assert {p.name for p in out.iterdir()} == {"model-mtp-layer4-00001-of-00001.safetensors", INDEX, "config.json",
                                               "hf_quant_config.json", "generation_config.json"}
    # uploading the overlay onto TARGET gives the grafted checkpoint
    combined = tmp_path / "combined"
    synthetic.copy_checkpoint(glm_pair.target, combined)
    for p in out.iterdir():
        (combined / p.name).write_bytes(p.read_bytes())
    assert inspect(str(combined)).status == "ready"
    _assert_grafted(glm_pair.original, combined)


def test_dry_run_prints_the_plan_and_writes_nothing(glm_pair: synthetic.SyntheticPair,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _drop_exclusion(glm_pair.target)
    before = snapshot(glm_pair.target)
    assert main(["graft", "--from", str(glm_pair.original), "--into", str(glm_pair.target), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert snapshot(glm_pair.target) == before
    for needle in ("model-00005-of-00006.safetensors: 24,960 bytes in 1 range(s): [75,760, 100,720)",
                   "model-00006-of-00006.safetensors: 97,456 bytes in 1 range(s)",
                   "model-mtp-layer4-00001-of-00001.safetensors: 35 tensors, 126,192 bytes",
                   "hf_quant_config.json (backup hf_quant_config.json.pre-graft): quantization.exclude_modules += "
                   "'model.layers.4*'", "total_size 303,600 -> 426,016", "122,416 to read",
                   "model.safetensors.index.json (backup model.safetensors.index.json.pre-graft): 35 draft entries"):
        assert needle in text, text
    assert main(["graft", "--from", str(glm_pair.original), "--into", str(glm_pair.target), "--dry-run",
                 "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert plan["source_ranges"]["model-00005-of-00006.safetensors"] == [[75760, 100720]]
    assert plan["bytes_to_read"] == 122_416 and plan["enough_space"]
    assert snapshot(glm_pair.target) == before


def test_max_shard_size_splits_the_layer(glm_pair: synthetic.SyntheticPair) -> None:
    report = execute(plan_graft(str(glm_pair.original), glm_pair.target, max_shard_size=parse_size("40kB")))
    assert report.ok
    names = [s.name for s in report.shards]
    assert names == [f"model-mtp-layer4-0000{i}-of-00004.safetensors" for i in range(1, 5)]
    for name in names:
        assert (glm_pair.target / name).stat().st_size - 8 <= 40_000 + 4096  # payload <= 40 kB (+ header)
    _assert_grafted(glm_pair.original, glm_pair.target)


def test_sizes_parse_like_hugging_face() -> None:
    assert parse_size("5GB") == DEFAULT_MAX_SHARD_SIZE
    assert parse_size("512MiB") == 512 * 2**20 and parse_size("100") == 100 and parse_size("0") is None
    with pytest.raises(UsageError):
        parse_size("five gigs")


def test_complete_target_needs_force_then_old_layer_is_moved_aside(glm_pair: synthetic.SyntheticPair,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    args = ["graft", "--from", str(glm_pair.original), "--into", str(glm_pair.target)]
    assert main(args) == 0
    first = snapshot(glm_pair.target)
    capsys.readouterr()
    assert main(args) == 1
    assert "already has a complete draft layer" in capsys.readouterr().err
    assert snapshot(glm_pair.target) == first
    assert main([*args, "--force"]) == 0
    files = {p.name for p in glm_pair.target.iterdir()}
    assert "model-mtp-layer4-r2-00001-of-00001.safetensors" in files  # never reuses a live name
    assert "model-mtp-layer4-00001-of-00001.safetensors.pre-graft" in files
    assert "model-mtp-layer4-00001-of-00001.safetensors" not in files
    assert inspect(str(glm_pair.target)).status == "ready"
    _assert_grafted(glm_pair.original, glm_pair.target)


def test_incomplete_target_gets_a_clean_layer(tmp_path: Path) -> None:
    """Old draft tensors inside mixed shards must not stay loadable next to the new ones."""
    target = synthetic.make_variant(tmp_path, "draft-layer-incomplete")
    original = tmp_path / "original-bf16"
    old = tensor_bytes(target)
    assert inspect(str(target)).status == "incomplete"
    plan = plan_graft(str(original), target)
    stripped = [s for s in plan.shards if s.role == "stripped"]
    assert stripped and all(s.name.endswith("-no-layer4.safetensors") for s in stripped)
    report = execute(plan)
    assert report.ok, report.check_problems
    # no shard in the index holds an old layer-4 tensor; every other tensor is byte-identical
    got = tensor_bytes(target)
    assert {k: v for k, v in got.items() if not k.startswith(LAYER4)} == \
        {k: v for k, v in old.items() if not k.startswith(LAYER4)}
    _assert_grafted(original, target)
    assert all(m.endswith(".pre-graft") for m in (x.split(" -> ")[1] for x in report.moved_aside))


def test_unindexed_mtp_file_is_moved_out_of_the_way(tmp_path: Path) -> None:
    target = synthetic.make_variant(tmp_path, "unindexed-shard")
    report = execute(plan_graft(str(tmp_path / "original-bf16"), target))
    assert report.ok
    assert report.moved_aside == ["mtp.safetensors -> mtp.safetensors.pre-graft"]
    assert inspect(str(target)).problems == []


def test_glm45_graft(tmp_path: Path) -> None:
    pair = synthetic.tiny_pair(tmp_path, family="glm4.5")
    assert execute(plan_graft(str(pair.original), pair.target)).ok
    _assert_grafted(pair.original, pair.target)


def test_hub_source_reads_only_draft_ranges(tmp_path: Path, isolated_hf: None) -> None:
    """One big source shard: whole-shard downloads would be visible in the byte count."""
    pair = synthetic.tiny_pair(tmp_path)
    single = tmp_path / "single"
    cfg = json.loads((pair.original / "config.json").read_text())
    synthetic.write_checkpoint(single, cfg, synthetic.model_specs(cfg, "bf16", with_draft=True), num_shards=1)
    shard = "model-00001-of-00001.safetensors"
    size = (single / shard).stat().st_size
    with FakeHub({"zai-org/GLM-5.2": single}) as hub:
        plan = plan_graft("zai-org/GLM-5.2", pair.target, endpoint=hub.endpoint)
        planning = hub.bytes_served("zai-org/GLM-5.2", shard)
        hub.reset_stats()
        report = execute(plan)
        assert report.ok and report.copy_method == "http-range"
        assert hub.bytes_served("zai-org/GLM-5.2", shard) == 122_416  # exactly the draft bytes
        assert hub.request_count("zai-org/GLM-5.2", shard, method="GET") <= 2  # adjacent tensors share a request
        assert planning + 122_416 < size
    _assert_grafted(single, pair.target)


def test_hub_revision_and_cli(tmp_path: Path, isolated_hf: None, capsys: pytest.CaptureFixture[str]) -> None:
    pair = synthetic.tiny_pair(tmp_path)
    sha = "0123456789abcdef0123456789abcdef01234567"
    with FakeHub({"zai-org/GLM-5.2": pair.original}, revisions={"zai-org/GLM-5.2": {"v1": sha}}) as hub:
        assert main(["graft", "--from", "zai-org/GLM-5.2@v1", "--into", str(pair.target), "--endpoint",
                     hub.endpoint, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["result"]["source"] == "zai-org/GLM-5.2@v1" and doc["result"]["check_status"] == "ready"
    _assert_grafted(pair.original, pair.target)


def test_target_must_be_local(glm_pair: synthetic.SyntheticPair, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graft", "--from", str(glm_pair.original), "--into", "org/some-model"]) == 2
    assert "must be a local directory" in capsys.readouterr().err


def test_out_dir_must_be_new_or_empty(glm_pair: synthetic.SyntheticPair, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["graft", "--from", str(glm_pair.original), "--into", str(glm_pair.target), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert os.listdir(out) == ["notes.txt"]


def test_layer_guard(glm_pair: synthetic.SyntheticPair, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graft", "--from", str(glm_pair.original), "--into", str(glm_pair.target), "--layer", "3",
                 "--dry-run"]) == 2
    assert "draft layer is model.layers.4" in capsys.readouterr().err
    assert main(["graft", "--from", str(glm_pair.original), "--into", str(glm_pair.target), "--layer", "4",
                 "--dry-run"]) == 0


@pytest.mark.slow
def test_full_scale_glm52_plan(tmp_path: Path) -> None:
    """The real recipe's numbers on the layout-only GLM-5.2 (282 BF16 shards, 45 NVFP4 shards)."""
    source, target = tmp_path / "GLM-5.2", tmp_path / "GLM-5.2-NVFP4"
    synthetic.full_scale_glm52(source, with_draft=True, storage="bf16")
    synthetic.full_scale_glm52(target)
    before = sorted((p.name, p.stat().st_size) for p in target.iterdir())
    plan = plan_graft(str(source), target)
    assert plan.draft_tensors == 791 and plan.draft_bytes == 19_905_841_664
    assert (plan.total_size_before, plan.total_size_after) == (439_842_893_136, 459_748_734_800)
    assert len(plan.source_ranges) == 5
    assert [s.name for s in plan.shards] == [f"model-mtp-layer78-0000{i}-of-00004.safetensors" for i in range(1, 5)]
    assert all(s.payload <= DEFAULT_MAX_SHARD_SIZE for s in plan.shards)
    assert plan.index_entries_after == 232_296 + 791
    assert sorted((p.name, p.stat().st_size) for p in target.iterdir()) == before  # planning writes nothing


@pytest.mark.parametrize("code", ["ready", "draft-layer-incomplete", "shape-mismatch", "dtype-mismatch",
                                  "index-tensor-not-in-shard", "tensor-not-in-index", "unindexed-shard",
                                  "total-size-mismatch", "quant-config-mismatch", "draft-precision-unsupported"])
def test_force_regraft_repairs_every_check_problem(tmp_path: Path, code: str) -> None:
    """check's remedy for each problem (graft, with --force where a layer exists) ends in a clean, ready target."""
    target = synthetic.make_variant(tmp_path, code)
    report = execute(plan_graft(str(tmp_path / "original-bf16"), target, force=True))
    assert report.ok, report.check_problems
    final = inspect(str(target))
    assert final.status == "ready" and final.draft_precision == "bf16"
    assert [p.code for p in final.problems] == []
    _assert_grafted(tmp_path / "original-bf16", target)
    index = index_of(target)
    assert index["metadata"]["total_size"] == sum(
        len(v[2]) for v in tensor_bytes(target).values())  # exact payload sum


@pytest.mark.parametrize("code", ["corrupt-header", "truncated-shard", "index-missing-shard"])
def test_damaged_targets_are_refused_even_with_force(tmp_path: Path, code: str) -> None:
    target = synthetic.make_variant(tmp_path, code)
    before = snapshot(target)
    with pytest.raises(Exception, match="damaged"):
        plan_graft(str(tmp_path / "original-bf16"), target, force=True)
    assert snapshot(target) == before


def test_index_without_metadata_and_no_index_at_all(tmp_path: Path) -> None:
    """An index with only a weight_map (as export scripts write) is still an index; no index gets one."""
    pair = synthetic.tiny_pair(tmp_path / "a")
    index = index_of(pair.target)
    atomic_write_json(pair.target / INDEX, {"weight_map": index["weight_map"]})
    report = execute(plan_graft(str(pair.original), pair.target))
    assert report.ok and index_of(pair.target)["metadata"]["total_size"] == 426_016
    assert (pair.target / f"{INDEX}.pre-graft").exists()

    pair = synthetic.tiny_pair(tmp_path / "b")
    (pair.target / INDEX).unlink()
    plan = plan_graft(str(pair.original), pair.target)
    assert any("had no model.safetensors.index.json" in n for n in plan.notes)
    assert execute(plan).ok and len(index_of(pair.target)["weight_map"]) == 252 + 35
    _assert_grafted(pair.original, pair.target)


def _bytes_written(before: dict[str, str], after_dir: Path, renamed: set[str]) -> int:
    """Sizes of the files a run created or rewrote (not the ones it only renamed, not symlinks)."""
    total = 0
    after = snapshot(after_dir)
    for path in after_dir.iterdir():
        if path.name.startswith(".") or path.is_symlink() or path.name in renamed:
            continue
        if before.get(path.name) != after[path.name]:
            total += path.stat().st_size
    return total


@pytest.mark.parametrize("mode", ["in-place", "in-place-displacing", "overlay", "extract"])
def test_dry_run_estimate_is_the_bytes_written(tmp_path: Path, mode: str) -> None:
    """--dry-run's bytes_to_write is exactly what the run adds: shards, JSON as written, backups, small files."""
    from sglang_glm_mtp.graft.extract import plan_extract

    if mode == "in-place-displacing":  # old layer files moved aside (renames, not writes) and a stripped shard
        target = synthetic.make_variant(tmp_path, "draft-layer-incomplete")
        original = tmp_path / "original-bf16"
    else:
        pair = synthetic.tiny_pair(tmp_path / "pair")
        _drop_exclusion(pair.target)  # the configs are edited (and backed up) too
        target, original = pair.target, pair.original
    out = tmp_path / "out"
    if mode == "extract":
        plan = plan_extract(str(original), out)
    else:
        plan = plan_graft(str(original), target, out=out if mode == "overlay" else None)
    dest = plan.dest
    before = snapshot(dest) if dest.exists() else {}
    report = execute(plan)
    assert report.ok
    renamed = {moved.split(" -> ")[1] for moved in report.moved_aside}
    assert plan.bytes_to_write == _bytes_written(before, dest, renamed)
    assert plan.needed_bytes >= plan.bytes_to_write


def _assert_aligned(text: str) -> None:
    """Every ``label:`` line puts its text in the same column; no rate for a copy too small to measure."""
    import re

    labelled = [line for line in text.splitlines() if re.match(r"^[a-z][a-z ]*:", line)]
    assert len(labelled) >= 5, text
    for line in labelled:
        label, rest = line.split(":", 1)
        assert len(label) + 1 + len(rest) - len(rest.lstrip(" ")) == 14, line
    assert "GB/s" not in text


def test_graft_and_extract_output_is_aligned(glm_pair: synthetic.SyntheticPair, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graft", "--from", str(glm_pair.original), "--into", str(glm_pair.target), "--dry-run"]) == 0
    _assert_aligned(capsys.readouterr().out)
    assert main(["graft", "--from", str(glm_pair.original), "--into", str(glm_pair.target)]) == 0
    _assert_aligned(capsys.readouterr().out)
    assert main(["extract", "--from", str(glm_pair.original), "--out", str(tmp_path / "x")]) == 0
    _assert_aligned(capsys.readouterr().out)


@pytest.mark.parametrize("family", ["glm4.7-flash", "glm5.3-flash", "glm-ocr"])
def test_graft_on_every_glm_family(tmp_path: Path, family: str) -> None:
    """The draft is written under the family's own prefix (model.language_model.layers.N for the wrappers)."""
    original = synthetic.tiny_bf16(tmp_path / "orig", family)
    target = synthetic.tiny_bf16(tmp_path / "target", family, with_draft=False)
    assert inspect(str(target)).status == "missing"
    assert main(["graft", "--from", str(original), "--into", str(target)]) == 0
    report = inspect(str(target))
    assert report.status == "ready", report.problems
    assert report.found_tensors == inspect(str(original)).found_tensors
    assert all(name.startswith(report.draft_prefix + ".") for name in report.missing + list(report.locations))


@pytest.mark.parametrize("family", ["glm5.3-flash", "glm-ocr"])
def test_extract_refuses_drafts_sglang_loads_only_from_the_target(tmp_path: Path, family: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    original = synthetic.tiny_bf16(tmp_path / "orig", family)
    assert main(["extract", "--from", str(original), "--out", str(tmp_path / "draft")]) == 2
    err = capsys.readouterr().err
    assert "extract does not support" in err and "use graft" in err and err.count("\n") == 1
    assert not (tmp_path / "draft").exists() or not any((tmp_path / "draft").iterdir())
