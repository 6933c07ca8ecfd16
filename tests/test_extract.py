"""``extract``: a standalone draft in the layout of SGLang's scripts/export_deepseek_nextn.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fake_hub import FakeHub
from graft_helpers import INDEX, load_with_safetensors, snapshot, tensor_bytes
from sglang_glm_mtp import synthetic
from sglang_glm_mtp.graft import write as graft_write
from sglang_glm_mtp.checkpoint import inspect_checkpoint as inspect
from sglang_glm_mtp.cli import main
from sglang_glm_mtp.graft.extract import plan_extract, standalone_config
from sglang_glm_mtp.graft.shards import NEXTN_FILE
from sglang_glm_mtp.graft import execute

SKIPPED = ("embed_tokens.weight", "shared_head.head.weight")


def _assert_renamed_copy(original: Path, out: Path, layer: int = 4) -> None:
    want = {name.replace(f"model.layers.{layer}.", "model.layers.0.", 1): value
            for name, value in tensor_bytes(original, f"model.layers.{layer}.").items()
            if not name.endswith(SKIPPED)}
    assert tensor_bytes(out) == want
    load_with_safetensors(out / NEXTN_FILE)


def test_glm_extract(glm_pair: synthetic.SyntheticPair, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "GLM-NextN"
    before = snapshot(glm_pair.original)
    assert main(["extract", "--from", str(glm_pair.original), "--out", str(out)]) == 0
    assert "check:        READY" in capsys.readouterr().out
    assert snapshot(glm_pair.original) == before
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generation_config.json", INDEX, NEXTN_FILE]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 1 and cfg["architectures"] == ["GlmMoeDsaForCausalLMNextN"]
    assert cfg["mlp_layer_types"] == ["sparse"] and cfg["indexer_types"] == ["full"]
    index = json.loads((out / INDEX).read_text())
    assert set(index["weight_map"].values()) == {NEXTN_FILE} and len(index["weight_map"]) == 35
    assert index["metadata"]["total_size"] == 122_416
    _assert_renamed_copy(glm_pair.original, out)
    report = inspect(str(out))
    assert report.status == "ready" and report.standalone_draft and report.draft_layer == 0


@pytest.mark.slow  # importing transformers takes a few seconds
def test_glm_standalone_config_passes_transformers_validation(glm_pair: synthetic.SyntheticPair) -> None:
    """SGLang loads the draft config through transformers, which checks per-layer lists against num_hidden_layers."""
    module = pytest.importorskip("transformers.models.glm_moe_dsa.configuration_glm_moe_dsa")
    raw = json.loads((glm_pair.original / "config.json").read_text())
    cfg, changes = standalone_config(raw, "GlmMoeDsaForCausalLMNextN")
    assert "mlp_layer_types cut to ['sparse']" in changes
    module.GlmMoeDsaConfig(**{k: v for k, v in cfg.items() if k not in ("model_type",)})
    full = json.loads(json.dumps(synthetic.GLM52_CONFIG))
    module.GlmMoeDsaConfig(**{k: v for k, v in standalone_config(full, "GlmMoeDsaForCausalLMNextN")[0].items()
                             if k != "model_type"})


def test_deepseek_extract_skips_embed_and_head(deepseek_pair: synthetic.SyntheticPair, tmp_path: Path) -> None:
    out = tmp_path / "DeepSeek-NextN"
    plan = plan_extract(str(deepseek_pair.original), out)
    assert plan.draft_tensors == 30 and any("embed_tokens" in n for n in plan.notes)
    report = execute(plan)
    assert report.ok and report.output_layer == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["DeepseekV3ForCausalLMNextN"] and cfg["num_hidden_layers"] == 1
    assert not any(n.endswith(SKIPPED) for n in json.loads((out / INDEX).read_text())["weight_map"])
    _assert_renamed_copy(deepseek_pair.original, out)
    assert inspect(str(out)).status == "ready"


def test_extract_drops_the_quant_config_for_a_bf16_draft(tmp_path: Path) -> None:
    """A BF16 layer taken from a quantized checkpoint must not inherit its quantization."""
    pair = synthetic.tiny_pair(tmp_path, quant_format="flat", target_has_draft=True)
    out = tmp_path / "draft"
    report = execute(plan_extract(str(pair.target), out))
    assert report.ok
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert not (out / "hf_quant_config.json").exists()
    _assert_renamed_copy(pair.target, out)


def test_extract_keeps_a_quantized_draft_quantized(tmp_path: Path) -> None:
    pair = synthetic.tiny_pair(tmp_path, target_has_draft=True, draft_storage="nvfp4")
    out = tmp_path / "draft"
    report = execute(plan_extract(str(pair.target), out))
    assert report.check_status == "ready"
    excludes = json.loads((out / "hf_quant_config.json").read_text())["quantization"]["exclude_modules"]
    assert "model.layers.0.eh_proj" in excludes and "lm_head" in excludes
    assert not any(x.startswith(("model.layers.1", "model.layers.2", "model.layers.3", "model.layers.4"))
                   for x in excludes)
    _assert_renamed_copy(pair.target, out)


def test_extract_from_the_hub(glm_pair: synthetic.SyntheticPair, tmp_path: Path, isolated_hf: None) -> None:
    out = tmp_path / "draft"
    with FakeHub({"zai-org/GLM-5.2": glm_pair.original}) as hub:
        plan = plan_extract("zai-org/GLM-5.2", out, endpoint=hub.endpoint)
        hub.reset_stats()
        report = execute(plan)
        served = sum(hub.bytes_served("zai-org/GLM-5.2", p.name) for p in glm_pair.original.glob("*.safetensors"))
    assert report.ok and report.copy_method == "http-range"
    assert served == 122_416
    assert (out / "generation_config.json").exists()
    _assert_renamed_copy(glm_pair.original, out)


def test_extract_resumes_after_an_interruption(glm_pair: synthetic.SyntheticPair, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "draft"
    calls = {"n": 0}
    real = graft_write.copy_parallel

    def stop_midway(fd, display, pieces, readers, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        real(fd, display, pieces[:20], readers, **kw)
        raise KeyboardInterrupt
    monkeypatch.setattr(graft_write, "copy_parallel", stop_midway)
    with pytest.raises(KeyboardInterrupt):
        execute(plan_extract(str(glm_pair.original), out))
    monkeypatch.undo()
    assert not (out / NEXTN_FILE).exists() and not (out / INDEX).exists()
    plan = plan_extract(str(glm_pair.original), out)  # the leftovers are recognised, not "directory not empty"
    assert plan.shards[0].resume == "partial" and plan.bytes_reusable > 0
    report = execute(plan)
    assert report.ok and report.shards[0].reused_tensors == 20
    _assert_renamed_copy(glm_pair.original, out)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_extract_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pair = synthetic.tiny_pair(tmp_path)
    assert main(["extract", "--from", str(pair.target), "--out", str(tmp_path / "x")]) == 1
    assert "has no model.layers.4.* tensors" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "a.txt").write_text("x")
    assert main(["extract", "--from", str(pair.original), "--out", str(busy)]) == 2
    assert "not empty" in capsys.readouterr().err
    done = tmp_path / "done"
    assert main(["extract", "--from", str(pair.original), "--out", str(done)]) == 0
    capsys.readouterr()
    assert main(["graft", "--from", str(done), "--into", str(pair.target)]) == 1
    assert "standalone draft checkpoint" in capsys.readouterr().err


def test_extract_dry_run(glm_pair: synthetic.SyntheticPair, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "draft"
    assert main(["extract", "--from", str(glm_pair.original), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "model.layers.4 -> model.layers.0: 35 tensors, 122,416 bytes" in text
    assert f"{NEXTN_FILE}: 35 tensors" in text and "num_hidden_layers 4 -> 1" in text
    assert not out.exists()
