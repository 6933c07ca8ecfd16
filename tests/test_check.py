"""``check`` on synthetic checkpoints: every problem code, the exit codes, the JSON document."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sglang_glm_mtp import synthetic
from sglang_glm_mtp.checkpoint import inspect_checkpoint as inspect
from sglang_glm_mtp.checkpoint.report import PROBLEM_CODES
from sglang_glm_mtp.cli import main

EXPECTED_STATUS = {
    "draft-layer-missing": "missing",
    "draft-layer-incomplete": "incomplete",
    "shape-mismatch": "invalid",
    "dtype-mismatch": "invalid",
    "index-missing-shard": "invalid",
    "index-tensor-not-in-shard": "invalid",
    "tensor-not-in-index": "ready",  # SGLang still loads the tensor: a warning
    "unindexed-shard": "missing",  # the layer exists, but only in a file SGLang drops
    "total-size-mismatch": "ready",  # SGLang never reads total_size: a warning
    "corrupt-header": "invalid",
    "truncated-shard": "invalid",
    "quant-config-mismatch": "ready",  # modelopt: SGLang/the plugin build the draft from what is stored
    "draft-precision-unsupported": "ready",  # NVFP4 draft: the plugin makes it work
}


def _snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir()}


@pytest.mark.parametrize("code", sorted(EXPECTED_STATUS))
def test_each_problem_code_is_reported(tmp_path: Path, code: str) -> None:
    target = synthetic.make_variant(tmp_path, code)
    before = _snapshot(target)
    report = inspect(str(target))
    assert code in {p.code for p in report.problems}, report.problems
    assert report.status == EXPECTED_STATUS[code]
    assert _snapshot(target) == before, "check must never write"


def test_every_documented_code_has_a_variant() -> None:
    assert set(EXPECTED_STATUS) | {"unexpected-tensor"} == set(PROBLEM_CODES)


def test_original_is_ready_with_exact_glm_layout(glm_pair: synthetic.SyntheticPair) -> None:
    report = inspect(str(glm_pair.original))
    assert report.status == "ready" and report.problems == []
    assert (report.expected_tensors, report.found_tensors) == (35, 35)  # 3*4 experts + 23
    assert report.draft_bytes == 122_416
    assert report.draft_precision == "bf16" and report.target_precision == "bf16"
    assert report.draft_shards == ["model-00005-of-00006.safetensors", "model-00006-of-00006.safetensors"]


def test_missing_layer_names_the_graft_command(glm_pair: synthetic.SyntheticPair) -> None:
    report = inspect(str(glm_pair.target))
    assert report.status == "missing" and report.exit_code == 1
    assert report.target_precision == "nvfp4"
    assert len(report.missing) == 35 and report.missing[0].startswith("model.layers.4.")
    assert report.remedy == (f"sglang-glm-mtp graft --from zai-org/GLM-5.2 --into {glm_pair.target} "
                             "(zai-org/GLM-5.2 is the release config.json _name_or_path names)")


def test_incomplete_lists_exactly_the_missing_expert(tmp_path: Path) -> None:
    report = inspect(str(synthetic.make_variant(tmp_path, "draft-layer-incomplete")))
    assert report.missing == [f"model.layers.4.mlp.experts.3.{p}_proj.weight" for p in ("down", "gate", "up")]
    assert "--force" in (report.remedy or "")


def test_nvfp4_draft_is_classified_and_complete(tmp_path: Path) -> None:
    report = inspect(str(synthetic.tiny_pair(tmp_path, target_has_draft=True, draft_storage="nvfp4").target))
    assert report.draft_precision == "nvfp4"
    assert report.missing == []
    # 15 expert/shared linears x 4 tensors + 8 BF16 linears + 12 others
    assert report.found_tensors == report.expected_tensors == 15 * 4 + 20


def test_deepseek_v3_layer_has_embed_and_head(deepseek_pair: synthetic.SyntheticPair) -> None:
    ready = inspect(str(deepseek_pair.original))
    assert ready.status == "ready" and ready.family == "deepseek-v3"
    assert ready.expected_tensors == 3 * 4 + 20  # no indexer (-5), embed_tokens + shared_head.head (+2)
    assert "model.layers.4.shared_head.head.weight" in inspect(str(deepseek_pair.target)).missing


def test_flat_quant_config_is_read(tmp_path: Path) -> None:
    target = synthetic.tiny_pair(tmp_path, quant_format="flat").target
    report = inspect(str(target))
    assert report.quant_config["source"] == "config.json"
    assert report.quant_config["draft_excluded"] is True


def test_not_applicable_when_no_nextn_layer(glm_pair: synthetic.SyntheticPair) -> None:
    config = json.loads((glm_pair.target / "config.json").read_text())
    config["num_nextn_predict_layers"] = 0
    (glm_pair.target / "config.json").write_text(json.dumps(config))
    assert main(["check", str(glm_pair.target)]) == 0
    assert inspect(str(glm_pair.target)).status == "not-applicable"


# ----------------------------------------------------------------------------- CLI contract


def test_cli_exit_codes_and_json(glm_pair: synthetic.SyntheticPair, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(glm_pair.original)]) == 0
    assert "READY" in capsys.readouterr().out
    assert main(["check", "--json", str(glm_pair.target)]) == 1
    doc = json.loads(capsys.readouterr().out)
    for key in ("status", "architecture", "draft_layer", "expected_tensors", "found_tensors", "missing",
                "unexpected", "draft_precision", "target_precision", "draft_bytes", "draft_shards", "problems",
                "remedy"):
        assert key in doc
    assert doc["status"] == "missing" and doc["problems"][0]["code"] == "draft-layer-missing"


@pytest.mark.parametrize("setup", ["nodir", "noconfig", "badjson", "badindex", "unsupported", "badfield"])
def test_unreadable_input_is_one_line_exit_2(tmp_path: Path, glm_pair: synthetic.SyntheticPair, setup: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    target = glm_pair.target
    if setup == "nodir":
        target = tmp_path / "nope"
    elif setup == "noconfig":
        os.remove(target / "config.json")
    elif setup == "badjson":
        (target / "config.json").write_text("{not json")
    elif setup == "badindex":
        (target / "model.safetensors.index.json").write_text("[]")
    elif setup == "unsupported":
        (target / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    elif setup == "badfield":
        config = json.loads((target / "config.json").read_text())
        config["hidden_size"] = "wide"
        (target / "config.json").write_text(json.dumps(config))
    assert main(["check", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and err.startswith("sglang-glm-mtp check: error:")


def test_full_scale_layout_only_glm52(tmp_path: Path) -> None:
    """Real GLM-5.2 NVFP4 headers at full scale (sparse data): exact totals, and check's verdict."""
    weight_map = synthetic.full_scale_glm52(tmp_path / "full")
    index = json.loads((tmp_path / "full" / "model.safetensors.index.json").read_text())
    assert len(weight_map) == 232_296
    assert index["metadata"]["total_size"] == 439_842_893_136
    assert len(list((tmp_path / "full").glob("*.safetensors"))) == 45
    report = inspect(str(tmp_path / "full"))
    assert report.status == "missing" and report.expected_tensors == 791 and len(report.missing) == 791
    assert report.target_precision == "nvfp4"
    assert [p.code for p in report.problems] == ["draft-layer-missing"]
    assert "--from <BF16 release>" in (report.remedy or "")  # its config names no base: no guess
    # a shard cut short by an interrupted download, far from the draft layer: found and named
    shard = tmp_path / "full" / "model-00017-of-00045.safetensors"
    os.truncate(shard, shard.stat().st_size // 2)
    damaged = inspect(str(tmp_path / "full"))
    assert damaged.status == "invalid"
    assert [(p.code, p.file) for p in damaged.errors()][0] == ("truncated-shard", shard.name)


def test_glm45_unindexed_mtp_file_is_loaded_with_a_warning(tmp_path: Path) -> None:
    """GLM-4.7 NVFP4 exports shipped mtp.safetensors outside the index; SGLang appends it for Glm4Moe."""
    pair = synthetic.tiny_pair(tmp_path, family="glm4.5", target_has_draft=True)
    synthetic.VARIANTS["unindexed-shard"](pair.target)
    report = inspect(str(pair.target))
    assert report.family == "glm-4.5" and report.status == "ready", report.problems
    assert report.draft_shards == ["mtp.safetensors"]
    assert [(p.code, p.severity) for p in report.problems] == [("unindexed-shard", "warning")]
    # 4 experts x 3, q/k/v/o + 3 biases, enorm/hnorm/eh_proj/shared_head.norm, 2 layer norms, gate + bias, shared x 3
    assert report.expected_tensors == 12 + 7 + 4 + 2 + 2 + 3


def test_glm45_original_and_missing(tmp_path: Path) -> None:
    pair = synthetic.tiny_pair(tmp_path, family="glm4.5")
    assert inspect(str(pair.original)).status == "ready"
    assert inspect(str(pair.target)).status == "missing"


def test_json_document_is_every_public_field(tmp_path: Path) -> None:
    """to_json serialises field by field (no deep copy of the locations); the document is what asdict gives."""
    from dataclasses import asdict

    from sglang_glm_mtp.checkpoint.report import SCHEMA_VERSION

    for code in ("draft-precision-unsupported", "draft-layer-incomplete"):
        report = inspect(str(synthetic.make_variant(tmp_path / code, code)))
        expected = asdict(report)
        assert expected.pop("locations") and expected.pop("config")
        expected.pop("damaged"), expected.pop("remedy_lines")  # the terminal's forms, not the document's
        doc = report.to_json()
        assert doc == {"schema_version": SCHEMA_VERSION, **expected}
        doc["missing"].append("x")
        doc["quant_config"]["source"] = "x"
        assert "x" not in report.missing and report.quant_config["source"] != "x"  # a copy, as asdict's


def test_cyclic_gc_is_paused_while_inspecting_and_restored(glm_pair: synthetic.SyntheticPair,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside SGLang's million-object heap one full collection costs longer than the inspection itself."""
    import gc

    from sglang_glm_mtp.checkpoint.source import LocalCheckpoint

    seen: list[bool] = []
    real = LocalCheckpoint.read_json
    monkeypatch.setattr(LocalCheckpoint, "read_json", lambda self, name: seen.append(gc.isenabled()) or real(self, name))
    assert gc.isenabled()
    inspect(str(glm_pair.target))
    assert seen and not any(seen) and gc.isenabled()
    gc.disable()
    try:
        inspect(str(glm_pair.target))
        assert not gc.isenabled()  # a caller's own choice is left as it was
    finally:
        gc.enable()
