"""``synth`` as a new user meets it: every command it suggests runs as printed."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from sglang_glm_mtp.checkpoint.report import DAMAGE_CODES, PROBLEM_CODES
from sglang_glm_mtp.cli import main

DEFECTS = sorted(c for c in PROBLEM_CODES if c != "unexpected-tensor")


def _suggested(capsys: pytest.CaptureFixture[str], argv: list[str]) -> list[str]:
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    return [line.strip() for line in printed[printed.index("try:") + 1:]]


@pytest.mark.parametrize("defect", [None, *DEFECTS])
def test_every_suggested_graft_succeeds(tmp_path: Path, capsys: pytest.CaptureFixture[str], defect: str | None) -> None:
    lines = _suggested(capsys, ["synth", str(tmp_path / "s"), *(["--defect", defect] if defect else [])])
    assert lines[0].startswith("sglang-glm-mtp check "), lines
    grafts = [line for line in lines if line.startswith("sglang-glm-mtp graft ")]
    if defect in DAMAGE_CODES:
        # graft refuses a damaged target whatever the flags: suggesting it would be a command that fails
        assert grafts == [] and "damaged" in lines[1], lines
        return
    assert len(grafts) == 1, lines
    assert main(shlex.split(grafts[0])[1:]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["check", shlex.split(lines[0])[-1]]) == 0


def test_only_a_defect_that_leaves_a_draft_layer_gets_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = _suggested(capsys, ["synth", str(tmp_path / "a"), "--defect", "draft-layer-missing"])
    rejected = _suggested(capsys, ["synth", str(tmp_path / "b"), "--defect", "shape-mismatch"])
    assert not missing[1].endswith("--force") and rejected[1].endswith(" --force")


def test_help_says_defects_need_the_glm5_modelopt_pair(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    assert "only with the default --family glm5" in " ".join(capsys.readouterr().out.split())
