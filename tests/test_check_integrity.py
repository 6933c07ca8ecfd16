"""``check`` sees damage anywhere (issue 12), names the right release in its remedy, and its CLI contract."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sglang_glm_mtp import synthetic
from sglang_glm_mtp.checkpoint import inspect_checkpoint
from sglang_glm_mtp.checkpoint.inspection import Scope
from sglang_glm_mtp.checkpoint.files import INDEX_FILE
from sglang_glm_mtp.cli import main


@pytest.fixture(scope="module")
def ready(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic.tiny_pair(tmp_path_factory.mktemp("integrity"), target_has_draft=True).target


@pytest.fixture()
def target(ready: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(ready, tmp_path / "ckpt"))


def _non_draft_shard(directory: Path) -> str:
    weight_map = json.loads((directory / INDEX_FILE).read_text())["weight_map"]
    draft = {shard for name, shard in weight_map.items() if name.startswith("model.layers.4.")}
    others = sorted(set(weight_map.values()) - draft)
    assert others, "the fixture needs a shard without the draft layer"
    return others[0]


def _patch(path: Path, offset: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset:offset + len(data)] = data
    path.write_bytes(bytes(raw))


def _header_len(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[:8], "little")


def _run_check(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["check", *args])
    return code, capsys.readouterr().out


def test_valid_checkpoint_passes_every_integrity_test(target: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args in ([str(target)], ["--all-headers", str(target)]):
        code, out = _run_check(args, capsys)
        assert code == 0 and "status:       READY" in out and "[" not in out.split("status:")[1], out


@pytest.mark.parametrize("damage, code", [
    ("truncate", "truncated-shard"),
    ("truncate-into-header", "truncated-shard"),
    ("garbage-header-start", "corrupt-header"),
    ("garbage-last-entry", "corrupt-header"),
    ("appended-bytes", "corrupt-header"),
    ("empty-file", "corrupt-header"),
])
def test_damaged_non_draft_shard_is_invalid_and_named(target: Path, damage: str, code: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    shard = _non_draft_shard(target)
    path = target / shard
    size, header_len = path.stat().st_size, _header_len(path)
    if damage == "truncate":
        os.truncate(path, size - 100)
    elif damage == "truncate-into-header":
        os.truncate(path, 8 + header_len // 2)
    elif damage == "garbage-header-start":
        _patch(path, 8, b"\xff\xfe[1")
    elif damage == "garbage-last-entry":
        raw = path.read_bytes()[: 8 + header_len]
        _patch(path, raw.rindex(b'"data_offsets"') + 1, b"DATA")
    elif damage == "appended-bytes":
        with open(path, "ab") as handle:
            handle.write(b"\0" * 64)
    else:
        os.truncate(path, 0)
    report = inspect_checkpoint(str(target))
    assert report.status == "invalid" and report.found_tensors == report.expected_tensors  # the layer is fine
    assert [(p.code, p.file) for p in report.errors()] == [(code, shard)], report.problems
    assert "re-download" in (report.remedy or "")
    exit_code, out = _run_check([str(target)], capsys)
    assert exit_code == 1 and f"[error] {code}: {shard}:" in out, out


def test_integrity_off_reads_only_the_draft_shards(target: Path) -> None:
    """The opt-out a latency-bound caller (the preflight) may use: the draft verdict alone."""
    os.truncate(target / _non_draft_shard(target), 100)
    assert inspect_checkpoint(str(target), Scope.PREFLIGHT).status == "ready"
    assert inspect_checkpoint(str(target)).status == "invalid"


def test_damage_inside_a_non_draft_header_needs_all_headers(target: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The default test proves size and framing; --all-headers validates every entry (docs/check.md)."""
    shard = _non_draft_shard(target)
    path = target / shard
    raw = path.read_bytes()[: 8 + _header_len(path)]
    _patch(path, raw.index(b'"dtype":"') + 9, b"Q9")  # an unknown dtype in the first entry
    assert _run_check([str(target)], capsys)[0] == 0
    code, out = _run_check(["--all-headers", str(target)], capsys)
    assert code == 1 and f"[error] corrupt-header: {shard}: tensor" in out, out


def test_total_size_mismatch_says_what_it_means(tmp_path: Path) -> None:
    report = inspect_checkpoint(str(synthetic.make_variant(tmp_path, "total-size-mismatch")))
    (problem,) = report.problems
    assert problem.severity == "warning" and report.status == "ready"
    assert "not updated when shards were added or replaced" in problem.message
    assert "SGLang ignores total_size" in problem.message


def test_total_size_is_not_blamed_for_a_truncated_shard(target: Path) -> None:
    os.truncate(target / _non_draft_shard(target), (target / _non_draft_shard(target)).stat().st_size - 8)
    assert [p.code for p in inspect_checkpoint(str(target)).problems] == ["truncated-shard"]


# ----------------------------------------------------------------------------- remedy: whose --from


def _config(directory: Path, **changes: object) -> None:
    path = directory / "config.json"
    doc = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    path.write_text(json.dumps(doc))


def _missing_target(tmp_path: Path) -> Path:
    return synthetic.tiny_pair(tmp_path).target


def test_remedy_from_name_or_path(tmp_path: Path) -> None:
    target = _missing_target(tmp_path)
    _config(target, _name_or_path="zai-org/GLM-5.1")
    assert inspect_checkpoint(str(target)).remedy == (
        f"sglang-glm-mtp graft --from zai-org/GLM-5.1 --into {target} "
        "(zai-org/GLM-5.1 is the release config.json _name_or_path names)")


def test_remedy_from_model_card_outranks_config(tmp_path: Path) -> None:
    target = _missing_target(tmp_path)
    (target / "README.md").write_text("---\nlicense: mit\nbase_model:\n- zai-org/GLM-5\n---\n# GLM-5 NVFP4\n")
    remedy = inspect_checkpoint(str(target)).remedy or ""
    assert remedy.startswith(f"sglang-glm-mtp graft --from zai-org/GLM-5 --into {target} ")
    assert "README.md base_model" in remedy


@pytest.mark.parametrize("name_or_path", ["/models/GLM-5.1", "nvidia/GLM-5.1-NVFP4", None])
def test_generic_remedy_never_guesses(tmp_path: Path, name_or_path: str | None) -> None:
    target = _missing_target(tmp_path)
    _config(target, _name_or_path=name_or_path)
    if name_or_path is None:
        (target / "README.md").write_text("---\nbase_model: [a/b, c/d]\n---\n")  # two bases: no single answer
    remedy = inspect_checkpoint(str(target)).remedy or ""
    assert remedy.startswith(f"sglang-glm-mtp graft --from <BF16 release> --into {target} "), remedy
    assert "zai-org/GLM-5, zai-org/GLM-5.1, zai-org/GLM-5.2" in remedy
    assert "--from zai-org" not in remedy


def test_remedy_of_a_broken_model_card_is_generic(tmp_path: Path) -> None:
    target = _missing_target(tmp_path)
    _config(target, _name_or_path=None)
    (target / "README.md").write_text("---\nbase_model: [\n---\n")
    assert "--from <BF16 release>" in (inspect_checkpoint(str(target)).remedy or "")


def test_remedy_from_quantizer_config(tmp_path: Path) -> None:
    target = _missing_target(tmp_path)
    _config(target, _name_or_path=None)
    quant = json.loads((target / "hf_quant_config.json").read_text())
    quant["producer"]["base_model"] = "zai-org/GLM-5.1"
    (target / "hf_quant_config.json").write_text(json.dumps(quant))
    assert "--from zai-org/GLM-5.1 " in (inspect_checkpoint(str(target)).remedy or "")


# ----------------------------------------------------------------------------- CLI contract


def test_verbose_after_the_subcommand(target: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(target), "-v"]) == 0
    assert main(["-v", "check", str(target)]) == 0


def test_unexpected_error_is_one_line_please_report(target: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from sglang_glm_mtp.checkpoint import inspection

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated bug\nsecond line")

    monkeypatch.setattr(inspection, "inspect_checkpoint", boom)
    assert main(["check", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected RuntimeError: simulated bug" in err and "please report" in err


def test_synth_makes_checkpoints_to_try_check_and_graft(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", str(tmp_path / "broken"), "--defect", "truncated-shard"]) == 0
    assert "sglang-glm-mtp check" in capsys.readouterr().out
    report = inspect_checkpoint(str(tmp_path / "broken" / "target-nvfp4"))
    assert report.status == "invalid" and "truncated-shard" in {p.code for p in report.problems}
    assert main(["synth", str(tmp_path / "plain"), "--family", "deepseek-v3"]) == 0
    assert inspect_checkpoint(str(tmp_path / "plain" / "target-nvfp4")).status == "missing"
    assert inspect_checkpoint(str(tmp_path / "plain" / "original-bf16")).status == "ready"
    assert main(["synth", str(tmp_path / "plain")]) == 2  # not empty: refused, nothing overwritten
    assert "not an empty directory" in capsys.readouterr().err


def test_module_entry_point_and_lazy_imports(target: Path) -> None:
    """``python -m sglang_glm_mtp.cli check`` works and imports neither graft, demo nor bench."""
    code = ("import sys, runpy; sys.argv = ['x', 'check', sys.argv[1]]\n"
            "try:\n    runpy.run_module('sglang_glm_mtp.cli', run_name='__main__')\n"
            "except SystemExit as e:\n    rc = e.code\n"
            "heavy = [m for m in ('sglang_glm_mtp.graft', 'sglang_glm_mtp.demo', 'sglang_glm_mtp.bench') "
            "if m in sys.modules]\nprint('HEAVY', heavy, 'RC', rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, timeout=120)
    assert "HEAVY [] RC 0" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("family", sorted(set(synthetic.TINY_CONFIGS) - set(synthetic.NVFP4_PAIR_FAMILIES)))
def test_synth_every_family_gives_a_pair_that_graft_repairs(tmp_path: Path, family: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", str(tmp_path / "pair"), "--family", family]) == 0
    out = capsys.readouterr().out
    original, target = (line.split()[1] for line in out.splitlines()[:2])
    assert main(["check", target]) == 1
    assert main(["graft", "--from", original, "--into", target]) == 0
    assert main(["check", target]) == 0
