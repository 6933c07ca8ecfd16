"""check, graft and the preflight on compressed-tensors, Quark and block-FP8 checkpoints (no SGLang needed).

What SGLang itself builds from the same checkpoints, with and without the plugin, is in
tests/test_plugin_dialects.py; this file pins the package's own verdicts on them.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sglang_glm_mtp import synthetic
from sglang_glm_mtp.checkpoint import inspect_checkpoint, quant_match
from sglang_glm_mtp.checkpoint.families import Config, family_for
from sglang_glm_mtp.checkpoint.draft_names import apply_name_map, regex_exclusions, remap_entries
from sglang_glm_mtp.checkpoint.quant_config import QuantConfigError, read_quant_declaration
from sglang_glm_mtp.cli import main
from sglang_glm_mtp.graft.plan import plan_graft
from sglang_glm_mtp.graft.run import execute

FORMATS = [(fmt, storage) for fmt, storages in synthetic.FORMAT_STORAGES.items() if fmt != "flat"
           for storage in storages]


def _pair(tmp_path: Path, fmt: str, storage: str, family: str = "glm5", **kw: Any) -> synthetic.SyntheticPair:
    overrides = synthetic.fp8_draft_overrides() if storage == "fp8" else None
    return synthetic.tiny_pair(tmp_path / f"{family}-{fmt}-{storage}", family=family, quant_format=fmt,  # type: ignore[arg-type]
                               target_storage=storage, config_overrides=overrides, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt, storage", FORMATS)
def test_target_and_stored_precision_in_every_dialect(tmp_path: Path, fmt: str, storage: str) -> None:
    """A layer stored in the target's own precision, in the dialect's tensor names, is complete (no
    ``unexpected-tensor``, no ``incomplete``): the false refusal compressed-tensors NVFP4 drafts used to get."""
    target = _pair(tmp_path, fmt, storage, target_has_draft=True, draft_storage=storage).target
    report = inspect_checkpoint(str(target))
    assert report.target_precision == storage and report.draft_precision == storage
    assert report.status == "ready" and not report.missing and not report.unexpected, report.problems
    assert report.quant_config["dialect"] == {"nested": "modelopt"}.get(fmt, fmt)


@pytest.mark.parametrize("fmt, storage", [f for f in FORMATS if f[0] != "nested"])
@pytest.mark.parametrize("family", ["glm5", "deepseek-v3", "glm4.5"])
def test_bf16_layer_that_stock_sglang_would_quantize_is_ready_with_the_entries_to_add(
        tmp_path: Path, fmt: str, storage: str, family: str) -> None:
    """Ready (the plugin builds it BF16), with a warning naming the exact entries stock SGLang needs."""
    target = _pair(tmp_path, fmt, storage, family, target_has_draft=True).target
    report = inspect_checkpoint(str(target))
    assert report.status == "ready" and report.draft_precision == "bf16" and report.target_precision == storage
    (problem,) = [p for p in report.problems if p.code == "quant-config-mismatch"]
    assert problem.severity == "warning" and "stock SGLang 0.5.23 would build" in problem.message
    assert "glm_mtp plugin builds it unquantized" in problem.message
    wanted = read_quant_declaration(json.loads((target / "config.json").read_text()), None).bf16_draft_entries(
        "model.layers.4", (("model.layers.61", "model.decoder"),) if family == "deepseek-v3" else ())
    assert report.quant_config["entries_to_add"] == wanted
    assert json.dumps(wanted) in problem.message  # copy-pasteable into the JSON file
    assert all(entry in problem.message for entry in wanted)  # and as the entries themselves
    assert report.quant_config["stock_sglang_builds_as_stored"] is False


@pytest.mark.parametrize("fmt, storage", FORMATS)
@pytest.mark.parametrize("family", sorted(synthetic.TINY_CONFIGS))
def test_graft_writes_the_dialects_exclusion_and_check_is_clean(tmp_path: Path, fmt: str, storage: str,
                                                                family: str) -> None:
    """Every family in every dialect: missing -> graft -> ready with no problem, the exclusion in the dialect's own
    key and syntax, a second graft adding nothing (docs/architectures.md's matrix)."""
    pair = _pair(tmp_path, fmt, storage, family)
    before = inspect_checkpoint(str(pair.target))
    assert before.status == "missing" and before.target_precision == storage
    result = execute(plan_graft(str(pair.original), pair.target))
    assert result.ok and not any("check that it keeps" in note for note in result.notes), result.notes
    report = inspect_checkpoint(str(pair.target))
    assert report.status == "ready" and report.problems == [], report.problems
    if fmt == "nested":
        return
    assert report.quant_config["stock_sglang_builds_as_stored"] is True
    config = json.loads((pair.target / "config.json").read_text())
    key = {"compressed-tensors": "ignore", "quark": "exclude", "fp8": "modules_to_not_convert"}[fmt]
    entries = config["quantization_config"][key]
    fam = family_for(config["architectures"][0])
    assert fam is not None
    prefix = fam.draft_prefixes_for(Config(config))[0][:-1]
    assert entries[-2:] == read_quant_declaration(config, None).bf16_draft_entries(prefix, fam.quant_name_map)
    execute(plan_graft(str(pair.original), pair.target, force=True))  # idempotent: nothing added twice
    assert json.loads((pair.target / "config.json").read_text())["quantization_config"][key] == entries


@pytest.mark.parametrize("fmt, storage", [("compressed-tensors", "nvfp4"), ("quark", "fp8")])
def test_extract_of_a_quantized_layer_keeps_its_exclusions_on_layer_0(tmp_path: Path, fmt: str, storage: str) -> None:
    from sglang_glm_mtp.graft.extract import plan_extract

    source = _pair(tmp_path, fmt, storage, target_has_draft=True, draft_storage=storage).target
    key = {"compressed-tensors": "ignore", "quark": "exclude"}[fmt]
    _edit_config(source, lambda q: q[key].append("re:model\\.layers\\.4\\.eh_proj"))
    out = tmp_path / "draft"
    assert execute(plan_extract(str(source), out)).ok
    entries = json.loads((out / "config.json").read_text())["quantization_config"][key]
    assert "re:model\\.layers\\.0\\.eh_proj" in entries and not any("layers\\.4" in e for e in entries)
    report = inspect_checkpoint(str(out))
    assert report.status == "ready" and report.draft_precision == storage, report.problems


def test_quark_exact_layer_names_reach_a_glm5_draft_but_not_a_deepseek_one(tmp_path: Path) -> None:
    """GLM-5's draft class rewrites exact ``model.layers.N.*`` Quark entries itself; DeepSeek-V3's maps only the
    literal ``model.layers.61``, so the same entries leave its tiny draft quantized."""
    glm = _pair(tmp_path, "quark", "fp8", target_has_draft=True, draft_exclusion="layer").target
    dsv3 = _pair(tmp_path, "quark", "fp8", "deepseek-v3", target_has_draft=True, draft_exclusion="layer").target
    assert inspect_checkpoint(str(glm)).quant_config["stock_sglang_builds_as_stored"] is True
    report = inspect_checkpoint(str(dsv3))
    assert report.quant_config["stock_sglang_builds_as_stored"] is False and report.status == "ready"


def test_compressed_tensors_layer_regex_alone_does_not_reach_the_draft(tmp_path: Path) -> None:
    """``re:model\\.layers\\.4\\..*`` (what quantizers write) keeps transformers and vLLM right but not SGLang."""
    target = _pair(tmp_path, "compressed-tensors", "nvfp4", target_has_draft=True, draft_exclusion="layer").target
    report = inspect_checkpoint(str(target))
    (problem,) = report.problems
    assert "stock SGLang 0.5.23 would build" in problem.message and "which transformers and vLLM" not in \
        problem.message
    assert report.quant_config["entries_to_add"] == ["re:model\\.decoder\\..*"]


@pytest.mark.parametrize("fmt, storage", FORMATS)
def test_missing_layer_is_missing_in_every_dialect(tmp_path: Path, fmt: str, storage: str) -> None:
    target = _pair(tmp_path, fmt, storage).target
    report = inspect_checkpoint(str(target))
    assert report.status == "missing" and report.target_precision == storage


def test_a_quantized_layer_whose_modules_the_checkpoint_excludes_is_invalid(tmp_path: Path) -> None:
    """Proven broken: stored NVFP4 but excluded, so SGLang (and the plugin's translated config) build it BF16."""
    target = _pair(tmp_path, "compressed-tensors", "nvfp4", target_has_draft=True, draft_storage="nvfp4").target
    _edit_config(target, lambda q: q["ignore"].append("re:model\\.layers\\.4\\.mlp\\..*"))
    report = inspect_checkpoint(str(target))
    assert report.status == "invalid"
    assert any(p.code == "quant-config-mismatch" and "stored quantized but" in p.message for p in report.problems)


def test_per_layer_ignore_of_a_quantized_layer_is_a_stock_only_warning(tmp_path: Path) -> None:
    target = _pair(tmp_path, "compressed-tensors", "nvfp4", target_has_draft=True, draft_storage="nvfp4").target

    def per_layer(q: dict[str, Any]) -> None:
        q["ignore"].remove("re:.*self_attn.*")
        q["ignore"] += [f"re:model\\.layers\\.{i}\\.self_attn.*" for i in range(5)]

    _edit_config(target, per_layer)
    report = inspect_checkpoint(str(target))
    assert report.status == "ready" and report.quant_config["stock_sglang_builds_as_stored"] is False
    (problem,) = report.problems
    assert problem.severity == "warning" and "model.decoder.self_attn" in problem.message


def test_unknown_quant_method_is_unknown_not_bf16(tmp_path: Path) -> None:
    target = _pair(tmp_path, "compressed-tensors", "nvfp4", target_has_draft=True).target
    _edit_config(target, lambda q: q.__setitem__("quant_method", "awq"))
    report = inspect_checkpoint(str(target))
    assert report.target_precision == "unknown" and report.status == "ready"
    assert any("'awq' is not a dialect" in p.message for p in report.problems)


# ----------------------------------------------------------------------------- malformed declarations


def _edit_config(target: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    config = json.loads((target / "config.json").read_text())
    edit(config["quantization_config"])
    (target / "config.json").write_text(json.dumps(config))


MALFORMED: dict[str, tuple[str, str, Callable[[dict[str, Any]], None], str]] = {
    "group without weights": ("compressed-tensors", "nvfp4", lambda q: q["config_groups"]["group_0"].pop("weights"),
                              "config_groups.group_0 has no 'weights' object"),
    "ignore entry not a string": ("compressed-tensors", "nvfp4", lambda q: q["ignore"].append(7),
                                  "quantization_config.ignore[3] is 7"),
    "invalid regex": ("compressed-tensors", "nvfp4", lambda q: q["ignore"].append("re:model\\.(decoder"),
                      "quantization_config.ignore[3] 're:model\\\\.(decoder' is not a valid pattern"),
    "unknown format": ("compressed-tensors", "fp8", lambda q: q.__setitem__("format", "fp8-blocked-v9"),
                       "format 'fp8-blocked-v9' is not a compressed-tensors format"),
    "quark without global_quant_config": ("quark", "fp8", lambda q: q.pop("global_quant_config"),
                                          "has no global_quant_config"),
    "quark exclude not a list": ("quark", "fp8", lambda q: q.__setitem__("exclude", "lm_head"),
                                 "quantization_config.exclude must be a list"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_declaration_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      case: str) -> None:
    fmt, storage, edit, text = MALFORMED[case]
    target = _pair(tmp_path, fmt, storage, target_has_draft=True).target
    _edit_config(target, edit)
    assert main(["check", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"{target}/config.json" in err and text in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_declaration_makes_the_preflight_warn_not_refuse(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                   case: str) -> None:
    from sglang_glm_mtp.plugin.preflight import run_preflight

    fmt, storage, edit, text = MALFORMED[case]
    target = _pair(tmp_path, fmt, storage).target  # even with the layer missing: not proven, so not refused
    _edit_config(target, edit)
    with caplog.at_level(logging.WARNING, logger="sglang_glm_mtp"):
        assert run_preflight(str(target), None, "GlmMoeDsaForCausalLM") is None
    assert any(text in r.getMessage() and "post-load coverage check" in r.getMessage() for r in caplog.records)


def test_quant_config_error_names_key_and_entry_without_a_checkpoint() -> None:
    with pytest.raises(QuantConfigError, match=r"config_groups\.g has no 'weights'"):
        read_quant_declaration({"quantization_config": {"quant_method": "compressed-tensors",
                                                        "config_groups": {"g": {"targets": ["Linear"]}}}}, None)


# ----------------------------------------------------------------------------- names


def test_checkpoint_entries_are_translated_to_the_drafts_names() -> None:
    entries = ["lm_head", "model.layers.4.self_attn.kv_b_proj", "re:model\\.layers\\.4\\.self_attn.*",
               "re:model\\.layers\\.4\\..*", "model.layers.4.eh_proj", "re:.*mlp\\.gate$", "model.layers.40.mlp"]
    out = remap_entries(entries, "model.layers.4")
    assert out[:len(entries)] == entries  # the checkpoint's spellings stay: the target's modules keep them
    assert out[len(entries):] == ["model.decoder.self_attn.kv_b_proj", "re:model\\.decoder\\.self_attn.*",
                                  "re:model\\.decoder\\..*", "re:model\\.(shared_head|eh_proj|enorm|hnorm).*",
                                  "model.eh_proj"]


def test_deepseeks_name_map_rewrites_only_the_literal_layer_61() -> None:
    name_map = (("model.layers.61", "model.decoder"),)
    assert apply_name_map(["re:model.layers.61.*", "re:model\\.layers\\.61\\..*"], name_map) == [
        "re:model.decoder.*", "re:model\\.layers\\.61\\..*"]
    assert regex_exclusions("model.layers.61", "compressed-tensors", name_map) == [
        "re:model\\.decoder\\..*", "re:model.layers.61.*"]
    assert regex_exclusions("model.layers.78", "quark") == ["re:model\\.(decoder\\.|eh_proj).*",
                                                            "re:model\\.layers\\.78\\..*"]


# ----------------------------------------------------------------------------- synth


@pytest.mark.parametrize("cli_format, family", [("compressed-tensors", "glm5"), ("quark", "deepseek-v3"),
                                                ("fp8", "glm4.5"), ("compressed-tensors", "glm4.7-flash"),
                                                ("quark", "glm5.3-flash"), ("modelopt", "glm-ocr")])
def test_synth_writes_every_dialect_for_every_family(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     cli_format: str, family: str) -> None:
    assert main(["synth", str(tmp_path / "s"), "--family", family, "--quant-format", cli_format]) == 0
    lines = capsys.readouterr().out.splitlines()
    target = Path(next(line for line in lines if line.startswith("target:")).split()[1])
    report = inspect_checkpoint(str(target))
    assert report.status == "missing" and report.quant_config["dialect"] == cli_format
    assert report.target_precision != "bf16"


# ----------------------------------------------------------------------------- matcher fast paths

_PARTS = st.sampled_from(["model", "decoder", "layers", "4", "mlp", "experts", "0", "gate_proj", "self_attn",
                          "kv_b_proj", "eh_proj"])
_NAMES = st.lists(_PARTS, min_size=1, max_size=6).map(".".join)
_ENTRIES = st.lists(st.one_of(st.lists(_PARTS, min_size=1, max_size=4).map(".".join),
                              st.sampled_from(["re:model\\.decoder\\..*", "re:.*self_attn.*", "re:.*mlp\\.gate$"])),
                    max_size=5).map(tuple)


@settings(max_examples=500, deadline=None)
@given(name=_NAMES, entries=_ENTRIES)
def test_indexed_matchers_read_as_sglangs_loops(name: str, entries: tuple[str, ...]) -> None:
    """The set-probe matchers give what SGLang's entry-by-entry loops give (written out here as they read)."""
    def ct_loop() -> bool:
        return any(re.match(e[3:], name) if e.startswith("re:") else e == name or name.endswith("." + e)
                   for e in entries)

    def path_loop(plain: tuple[str, ...]) -> bool:
        return any(e == name or name.startswith(e + ".") or f".{e}." in f".{name}." for e in plain)

    assert quant_match._ct_match(name, entries) == bool(ct_loop())
    plain = tuple(e for e in entries if not e.startswith("re:"))
    assert quant_match._path_match_any(name, plain) == path_loop(plain)


def test_a_checkpoint_without_safetensors_is_not_judged(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Weights in .bin files only: check cannot read them, so it says so (exit 2) and the preflight does not refuse
    (it warns; SGLang's loader reads .bin files and the post-load check judges the layer)."""
    from sglang_glm_mtp.plugin.preflight import run_preflight

    target = synthetic.tiny_pair(tmp_path, target_has_draft=True).target
    for shard in target.glob("*.safetensors"):
        shard.rename(shard.with_suffix(".bin"))
    (target / "model.safetensors.index.json").unlink()
    (target / "training_args.bin").write_bytes(b"\0")  # a fourth file: the list must still read as one list
    assert main(["check", str(target)]) == 2
    err = capsys.readouterr().err
    assert "not safetensors; check reads safetensors headers only" in err
    assert ".bin, not safetensors" in err, err  # every file named once, no stray ellipsis after the list
    with caplog.at_level(logging.WARNING, logger="sglang_glm_mtp"):
        assert run_preflight(str(target), None, "GlmMoeDsaForCausalLM") is None
    assert any("not safetensors" in r.getMessage() for r in caplog.records)
