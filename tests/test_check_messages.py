"""``check``'s messages as a new user meets them: typed at a shell, read, and copied back into it (issue 19).

Each test runs the command a user would type (``sglang-glm-mtp ...`` in a fresh process, or
``cli.main``) on checkpoints built by ``sglang-glm-mtp synth``, and reads what comes back.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sglang_glm_mtp import synthetic
from sglang_glm_mtp.checkpoint.families import Config, ConfigError
from sglang_glm_mtp.checkpoint.quant_config import QuantConfigError, read_quant_declaration
from sglang_glm_mtp.checkpoint.source import hub_error
from sglang_glm_mtp.cli import main


def _cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``sglang-glm-mtp ARGS`` in a fresh process, as typed at a shell in ``cwd``."""
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HOME": str(cwd / ".hf"),
               "HF_HUB_DISABLE_XET": "1", **env}
    environ.pop("HF_TOKEN", None)
    if "HF_HUB_OFFLINE" not in env:
        environ.pop("HF_HUB_OFFLINE", None)
    return subprocess.run([sys.executable, "-m", "sglang_glm_mtp.cli", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=120)


# ----------------------------------------------------------------------------- a name that is nowhere


@pytest.mark.parametrize("how, env, args, answer", [
    ("offline", {"HF_HUB_OFFLINE": "1"}, [], "offline mode is on (HF_HUB_OFFLINE is set)"),
    ("unreachable", {}, ["--endpoint", "http://127.0.0.1:9"], "the Hub cannot be reached"),
])
def test_a_mistyped_local_path_says_there_is_no_such_directory_and_what_the_hub_said(
        tmp_path: Path, how: str, env: dict[str, str], args: list[str], answer: str) -> None:
    """``check s2/target`` where ``s2/`` does not exist: not only "cannot read s2/target from the Hub"."""
    (tmp_path / "s1" / "target").mkdir(parents=True)  # the user meant s1/
    proc = _cli(["check", "s2/target", *args], tmp_path, **env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "no local directory s2/target" in proc.stderr, proc.stderr
    assert answer in proc.stderr, proc.stderr


# ----------------------------------------------------------------------------- a damaged draft shard


def test_a_truncated_draft_shard_is_damage_not_a_missing_layer(tmp_path: Path) -> None:
    """The index lists every draft tensor; their shard is cut short. Say so; never "the layer is missing"."""
    assert _cli(["synth", "demo", "--defect", "truncated-shard"], tmp_path).returncode == 0
    proc = _cli(["check", "demo/target-nvfp4"], tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert "status:       INVALID" in out
    assert "draft-layer-missing" not in out and "missing" not in out.split("status:")[0], out
    assert "0 found / 35 expected, 35 in a damaged shard" in out, out
    (problem,) = [line for line in out.splitlines() if line.startswith("  [error]")]
    assert problem.startswith("  [error] truncated-shard: model-") and "35 of the draft layer's tensors" in problem
    assert "re-download" in out.split("remedy:")[1]

    doc = json.loads(_cli(["check", "--json", "demo/target-nvfp4"], tmp_path).stdout)
    assert doc["status"] == "invalid" and [p["code"] for p in doc["problems"]] == ["truncated-shard"]
    assert len(doc["missing"]) == 35 and doc["found_tensors"] == 0  # the document's fields keep their meaning


def test_a_damaged_shard_holding_part_of_the_layer_names_only_the_absent_tensors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Some draft tensors missing outright, the rest in a damaged shard: incomplete counts the absent ones."""
    target = synthetic.make_variant(tmp_path, "draft-layer-incomplete")
    index = json.loads((target / "model.safetensors.index.json").read_text())["weight_map"]
    shard = sorted({f for n, f in index.items() if n.startswith("model.layers.4.")})[0]
    os.truncate(target / shard, (target / shard).stat().st_size - 10)
    assert main(["check", str(target)]) == 1
    out = capsys.readouterr().out
    assert "[error] truncated-shard" in out and "draft-layer-missing" not in out, out
    assert "in a damaged shard" in out.split("status:")[0], out


# ----------------------------------------------------------------------------- the remedy, copied into a shell


def test_the_remedy_command_is_a_line_of_its_own(tmp_path: Path) -> None:
    """Copying the remedy's command line into a shell runs exactly graft; the reason is a line of its own."""
    assert _cli(["synth", "demo"], tmp_path).returncode == 0
    proc = _cli(["check", "demo/target-nvfp4"], tmp_path)
    assert proc.returncode == 1
    remedy = [line.strip() for line in proc.stdout.split("remedy:\n")[1].splitlines()]
    target = str((tmp_path / "demo" / "target-nvfp4").resolve())
    assert shlex.split(remedy[0]) == ["sglang-glm-mtp", "graft", "--from", "zai-org/GLM-5.2", "--into", target]
    assert remedy[1] == "# zai-org/GLM-5.2 is the release config.json _name_or_path names"
    assert shlex.split(remedy[1], comments=True) == []  # pasted along, the reason is a comment

    doc = json.loads(_cli(["check", "--json", "demo/target-nvfp4"], tmp_path).stdout)
    assert doc["remedy"] == (f"sglang-glm-mtp graft --from zai-org/GLM-5.2 --into {target} "
                             "(zai-org/GLM-5.2 is the release config.json _name_or_path names)")  # JSON as it was


def test_a_regraft_remedy_says_why_then_the_command_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = synthetic.make_variant(tmp_path, "shape-mismatch")
    assert main(["check", str(target)]) == 1
    remedy = capsys.readouterr().out.split("remedy:\n")[1].splitlines()
    assert remedy[0] == "  re-graft the draft layer:"
    assert shlex.split(remedy[1]) == ["sglang-glm-mtp", "graft", "--from", "zai-org/GLM-5.2", "--into", str(target),
                                      "--force"]
    assert remedy[2].startswith("  # zai-org/GLM-5.2 is the release")


# ----------------------------------------------------------------------------- errors say where, as fields


@pytest.mark.parametrize("config, quant, file, key", [
    ({"quantization_config": {"quant_method": "compressed-tensors", "ignore": [1]}}, None,
     "config.json", "quantization_config.ignore[0]"),
    ({"quantization_config": [1]}, None, "config.json", "quantization_config"),
    ({}, {"quantization": {"quant_algo": "NVFP4", "exclude_modules": ["a[("]}}, "hf_quant_config.json",
     "quantization.exclude_modules[0]"),
    ({}, [1], "hf_quant_config.json", None),
])
def test_quant_config_errors_name_their_file_and_key(config: dict[str, object], quant: object, file: str,
                                                     key: str | None) -> None:
    with pytest.raises(QuantConfigError) as caught:
        read_quant_declaration(config, quant)
    assert (caught.value.file, caught.value.key) == (file, key)
    assert str(caught.value).startswith(file)  # the message reads as before


def test_config_errors_name_their_field() -> None:
    with pytest.raises(ConfigError) as caught:
        Config({"num_hidden_layers": "x"})
    assert (caught.value.file, caught.value.key) == ("config.json", "num_hidden_layers")


def test_hub_errors_are_told_apart_by_type_not_by_message_text() -> None:
    """A server error whose body happens to say "repository not found" is not a missing repo."""
    import httpx
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    def response(status: int) -> httpx.Response:
        return httpx.Response(status, request=httpx.Request("GET", "https://huggingface.co/api/models/org/x"))

    def wrapped(cause: BaseException) -> FileNotFoundError:
        try:
            raise FileNotFoundError("org/x") from cause
        except FileNotFoundError as exc:
            return exc

    assert hub_error("org/x", wrapped(RepositoryNotFoundError("404", response=response(404)))) == "no such Hub repo or local directory: org/x"
    assert hub_error("org/x", wrapped(GatedRepoError("gated", response=response(401)))).startswith("no such Hub repo")
    said = hub_error("org/x", HfHubHTTPError("500 Server Error: repository not found in shard map", response=response(500)))
    assert said.startswith("cannot read org/x from the Hub (HfHubHTTPError: 500"), said
