"""The preflight's refusal text as a user reads it in SGLang's launch error (``format_refusal``).

In process: the refusal is built from the same preflight-scope inspection the plugin runs
inside SGLang (``Scope.PREFLIGHT``); the launch path itself is covered by test_plugin_launch.py.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from sglang_glm_mtp import synthetic
from sglang_glm_mtp.checkpoint import Scope, inspect_checkpoint
from sglang_glm_mtp.plugin.preflight import format_refusal


def test_the_fix_line_pastes_into_a_shell(tmp_path: Path) -> None:
    target = synthetic.tiny_pair(tmp_path).target
    lines = format_refusal(inspect_checkpoint(str(target), scope=Scope.PREFLIGHT)).splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("Fix: "))
    command = lines[at].removeprefix("Fix: ")
    assert shlex.split(command) == ["sglang-glm-mtp", "graft", "--from", "zai-org/GLM-5.2", "--into", str(target)]
    assert lines[at + 1].strip() == "# zai-org/GLM-5.2 is the release config.json _name_or_path names"


def test_a_damaged_draft_shard_is_not_called_missing(tmp_path: Path) -> None:
    target = synthetic.make_variant(tmp_path, "truncated-shard")
    text = format_refusal(inspect_checkpoint(str(target), scope=Scope.PREFLIGHT))
    assert "truncated-shard:" in text and "re-downloaded" in text
    assert "First missing" not in text, text
