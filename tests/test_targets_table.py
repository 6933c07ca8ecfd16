"""The version-keyed target table (``plugin/targets.py``) and its ``--check`` report, without SGLang."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from sglang_glm_mtp.plugin import targets

ROOT = Path(__file__).resolve().parents[1]


def test_tested_range_holds_every_tested_release_and_the_extra_allows_it() -> None:
    assert all(targets.in_tested_range(v) for v in targets.TESTED_RELEASES)
    assert not any(targets.in_tested_range(v) for v in ("0.5.21", "0.5.24", "1.0.0", "not-a-version", None))
    extra = re.search(r'^sglang = \[(.*)\]$', (ROOT / "pyproject.toml").read_text(), re.M)  # Python 3.10: no tomllib
    assert extra and extra.group(1) == f'"sglang{targets.TESTED_RANGE}"', extra


def test_every_name_the_plugin_uses_is_in_the_table_once() -> None:
    names = [t.name for t in targets.TARGETS]
    assert len(names) == len(set(names))
    used = (*targets.EAGER_TARGETS, *targets.LAZY_TARGETS, *targets.REQUIRED_ATTRIBUTES, targets.RESOLUTION_HOOKS,
            targets.FP8_DRAFT_BLOCK_SIZE)
    assert set(used) <= set(names), set(used) - set(names)
    for entry in targets.TARGETS:
        assert entry.kind in ("hook", "lazy", "api", "relied") and entry.behaviours, entry
        assert set(entry.behaviours) <= set(targets.BEHAVIOURS), entry
        if entry.kind != "relied":
            assert entry.loses, f"{entry.name}: the WARNING needs to say what is lost"


def test_expected_on_follows_the_version_keys() -> None:
    server_info = targets.BY_NAME[targets.SERVER_INFO_TARGET]
    assert targets.expected_on(server_info, "0.5.23") == (targets.SERVER_INFO_TARGET, "")
    assert targets.expected_on(server_info, "0.5.22") == (targets.SERVER_INFO_TARGET, "")
    name, note = targets.expected_on(server_info, "0.5.21")
    assert name is None and "FastAPI route" in note
    resolution = targets.BY_NAME[targets.RESOLUTION_HOOKS]
    assert targets.expected_on(resolution, "0.5.19")[0] is None
    assert targets.expected_on(resolution, "0.5.20")[0] == targets.RESOLUTION_HOOKS


@pytest.fixture
def fake_release(monkeypatch: pytest.MonkeyPatch) -> None:
    """A module standing in for SGLang: one target as expected, one renamed parameter, one absent twice (once
    where the table says it is absent on this release)."""
    module = types.ModuleType("fake_sglang_release")

    def same(server_args, scheduler_info): ...  # noqa: E704, ANN001

    def changed(parser_renamed): ...  # noqa: E704, ANN001

    module.same, module.changed = same, changed
    monkeypatch.setitem(sys.modules, "fake_sglang_release", module)
    monkeypatch.setattr(targets, "TARGETS", (
        targets.Target("fake_sglang_release.same", "hook", ("server_info",), ("server_args", "scheduler_info")),
        targets.Target("fake_sglang_release.changed", "hook", ("strict",), ("parser",)),
        targets.Target("fake_sglang_release.gone", "lazy", ("coverage",), ("self", "weights")),
        targets.Target("fake_sglang_release.later", "hook", ("canary",), since="0.5.30",
                       before=(("<0.5.30", None, "arrives in 0.5.30"),)),
    ))
    monkeypatch.setattr(targets, "sglang_version", lambda: "0.5.23")


def test_check_reports_ok_changed_missing_and_expected(fake_release: None) -> None:
    reports = {r.name.rsplit(".", 1)[1]: r for r in targets.check()}
    assert reports["same"].status == "ok" and reports["same"].signature == ("server_args", "scheduler_info")
    assert reports["changed"].status == "changed" and "expected (parser, ...)" in reports["changed"].detail
    assert reports["gone"].status == "missing"
    assert reports["later"].status == "missing-expected" and reports["later"].note == "arrives in 0.5.30"


def test_check_cli_exit_status(fake_release: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert targets.main(["--check"]) == 1  # one changed, one missing
    out = capsys.readouterr().out
    assert "outside the tested range" not in out and "1 ok, 1 changed, 1 missing, 1 missing-expected" in out
    targets.TARGETS = targets.TARGETS[:1] + targets.TARGETS[3:]  # type: ignore[misc]  (monkeypatch restores it)
    assert targets.main(["--check", "--json"]) == 0  # absent only where the table says so
    assert '"status": "missing-expected"' in capsys.readouterr().out


def test_an_older_name_in_the_table_is_the_one_hooked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the table says an older release has the behaviour under another name, that name is used; where it has
    neither, nothing is returned (and the behaviour is recorded unavailable)."""
    from sglang_glm_mtp.plugin import availability

    module = types.ModuleType("fake_sglang_old")
    module.old_name = lambda server_args, scheduler_info: None
    monkeypatch.setitem(sys.modules, "fake_sglang_old", module)
    monkeypatch.setattr(targets, "TARGETS", (
        targets.Target("fake_sglang_old.new_name", "hook", ("server_info",), since="0.5.22",
                       before=(("<0.5.22", "fake_sglang_old.old_name", "renamed in 0.5.22"),), loses="x"),
        targets.Target("fake_sglang_old.absent", "hook", ("canary",), loses="the canary"),
    ))
    monkeypatch.setattr(targets, "BY_NAME", {t.name: t for t in targets.TARGETS})
    monkeypatch.setattr(targets, "sglang_version", lambda: "0.5.21")
    availability._reset_for_tests()
    try:
        assert availability.hook_name("fake_sglang_old.new_name") == "fake_sglang_old.old_name"
        assert availability.unavailable() == {}
        assert availability.hook_name("fake_sglang_old.absent") is None
        assert availability.unavailable()["canary"]["targets"] == ["fake_sglang_old.absent"]
    finally:
        availability._reset_for_tests()
