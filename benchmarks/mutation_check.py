"""Mutation check: does the suite catch the realistic bugs it claims to?

Each row of ``MUTANTS`` is one small, plausible bug (a dropped bound, ``or`` for ``and``,
an off-by-one) in ``sglang_glm_mtp``, with the few test files (or test ids) that should
catch it. The script copies the package and the tests to a temporary directory once,
then for each mutant: applies it to the copy, runs its tests there in a fresh process
(``pytest -x``, the copy first on ``PYTHONPATH``), and restores the file. A mutant is
*killed* when those tests fail, *survived* when they pass. Before any mutant, each
distinct test selection must pass on the unmutated copy, or the verdicts mean nothing.

Not part of the default pytest run (a few minutes: one pytest process per mutant).

    python benchmarks/mutation_check.py [--only ID ...] [--list] [--timeout S] [--json PATH]

Exit status 0 when every mutant run was killed, 1 when one survived, 2 on a stale table
(a mutant's text no longer in its file) or a red baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "mutation.json"
#: What the copy needs: the package, the tests, and what tests read (patches, docs, pyproject).
COPIED = ("sglang_glm_mtp", "tests", "patches", "docs", "README.md", "pyproject.toml")
PKG = "sglang_glm_mtp"


@dataclass(frozen=True)
class Mutant:
    """One realistic bug: ``old`` (exactly once in ``path``) becomes ``new``; ``tests`` must then fail."""

    id: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    harm: str


def _m(id: str, path: str, old: str, new: str, tests: tuple[str, ...] | str, harm: str) -> Mutant:
    return Mutant(id, f"{PKG}/{path}", old, new, (tests,) if isinstance(tests, str) else tests, harm)


DRAFT_SOURCE_TESTS = "tests/test_plugin_draft_source.py"
LINEAGE_TESTS = "tests/test_graft_lineage.py"
RULE_TESTS = "tests/test_runner_rules.py"
CANARY_TESTS = "tests/test_canary.py"
FORMAT_TESTS = "tests/test_safetensors_format.py"
DIALECT_TESTS = ("tests/test_quant_match.py", "tests/test_quant_dialects.py")

#: The ten rows of issue 21 first (the suite missed them), then more across plugin/, checkpoint/ (the quantization
#: dialects' matchers included), graft/ and runner_rules.py.
MUTANTS: tuple[Mutant, ...] = (
    # --- issue 21
    _m("preflight-never-confirms", "plugin/preflight.py",
       'if report.status not in ("ready", "not-applicable") and found.hub is not None:',
       'if report.status not in ("ready", "not-applicable") and found.hub is not None and False:',
       DRAFT_SOURCE_TESTS, "a checkpoint repaired on the Hub is refused from an old complete cache"),
    _m("preflight-unconfirmed-refusal-enforced", "plugin/preflight.py",
       "                           draft_path, report.status, exc)\n            return None\n",
       "                           draft_path, report.status, exc)\n",
       DRAFT_SOURCE_TESTS, "Hub unreachable: the launch is refused from a possibly stale cache"),
    _m("draft-source-no-hub-for-cache", "plugin/draft_source.py",
       "hub = None if offline else HubCheckpoint(path, revision)", "hub = None",
       DRAFT_SOURCE_TESTS, "a checkpoint repaired on the Hub is refused from an old complete cache"),
    _m("draft-source-single-file-never-complete", "checkpoint/source.py",
       "    if (folder / SINGLE_FILE).is_file():", "    if False and (folder / SINGLE_FILE).is_file():",
       DRAFT_SOURCE_TESTS, "single-file drafts are never judged from the cache"),
    _m("hub-id-prefix-match", "checkpoint/source.py",
       "return re.fullmatch(_HUB_REPO, name) is not None", "return re.match(_HUB_REPO, name) is not None",
       (DRAFT_SOURCE_TESTS, "-k", "hub"), "a/b/c and odd strings become Hub ids: needless requests"),
    _m("families-no-expert-bound", "checkpoint/families.py",
       '"n_routed_experts": (0, 30_000), ', "",
       ("tests/test_check_malformed.py", "-k", "bound or between"),
       "a corrupt config with 1,000,000 experts costs minutes instead of one line"),
    _m("families-drop-deepseek-v32", "checkpoint/families.py",
       'architectures=("DeepseekV3ForCausalLM", "DeepseekV32ForCausalLM"),',
       'architectures=("DeepseekV3ForCausalLM",),',
       "tests/test_families_table.py", "DeepSeek-V3.2 silently unsupported: no check, no preflight"),
    _m("lineage-one-difference-tolerated", "checkpoint/lineage.py",
       'report.verdict = "other-release" if report.differing else "same-release"',
       'report.verdict = "other-release" if len(report.differing) > 1 else "same-release"',
       LINEAGE_TESTS, "a source differing in one sampled tensor is accepted as the same release"),
    _m("lineage-dtype-only", "checkpoint/lineage.py",
       "if (te.dtype, tuple(te.shape)) != (se.dtype, tuple(se.shape)):", "if te.dtype != se.dtype:",
       LINEAGE_TESTS, "differently shaped tensors are byte-compared: a false other-release refusal"),
    _m("lineage-one-side-damage-crashes", "checkpoint/lineage.py",
       "    if isinstance(s_header, str):\n        return s_header\n", "",
       LINEAGE_TESTS, "one side's damaged shard crashes graft and check --source"),
    # --- plugin/
    _m("draft-source-partial-cache-complete", "checkpoint/source.py",
       "absent = sorted(s for s in shards if not (folder / s).is_file())", "absent: list[str] = []",
       DRAFT_SOURCE_TESTS, "a first launch's partial cache is judged: a false refusal of a complete Hub repo"),
    _m("draft-source-offline-spelling", "text.py",
       'return (value or "").strip().lower() in _TRUE_WORDS',
       'return (value or "") == "1"',
       DRAFT_SOURCE_TESTS, "HF_HUB_OFFLINE=true is read as online: the preflight waits on an unreachable Hub"),
    _m("preflight-incomplete-not-missing-error", "plugin/preflight.py",
       'error = DraftLayerMissingError if report.status in ("missing", "incomplete") else DraftCheckpointError',
       'error = DraftLayerMissingError if report.status == "missing" else DraftCheckpointError',
       ("tests/test_plugin_probes.py", DRAFT_SOURCE_TESTS), "an incomplete layer is refused as the wrong error type"),
    _m("settings-warmup-zero", "plugin/settings.py",
       "warmup_steps=max(1, warmup))", "warmup_steps=warmup)",
       CANARY_TESTS, "SGLANG_GLM_MTP_CANARY_WARMUP_STEPS=0 divides by zero in the serving loop"),
    _m("canary-threshold-inclusive", "plugin/canary.py",
       "        if mean < self.settings.min_accept_length:", "        if mean <= self.settings.min_accept_length:",
       CANARY_TESTS, "a draft accepting exactly the threshold is reported as broken"),
    _m("canary-window-one-late", "plugin/canary.py",
       "if canary.win_steps >= canary.settings.warmup_steps:", "if canary.win_steps > canary.settings.warmup_steps:",
       CANARY_TESTS, "the canary judges one step later than documented"),
    _m("canary-min-draft-tokens-inclusive", "plugin/canary.py",
       "num_draft_tokens < self.settings.min_draft_tokens:", "num_draft_tokens <= self.settings.min_draft_tokens:",
       CANARY_TESTS, "the canary stands down for 2-token drafts it should watch"),
    # --- checkpoint/
    _m("format-truncation-unseen", "checkpoint/safetensors_format.py",
       "        if file_size < header.expected_file_size:", "        if False and file_size < header.expected_file_size:",
       FORMAT_TESTS, "a truncated shard passes check; SGLang fails late on it"),
    _m("format-no-span-check", "checkpoint/safetensors_format.py",
       "    if end - begin != packed_bytes(bits):", "    if False:",
       FORMAT_TESTS, "a tensor whose byte span disagrees with its shape passes check"),
    _m("format-no-hole-check", "checkpoint/safetensors_format.py",
       "        if entry.begin != cursor:", "        if entry.begin < cursor:",
       FORMAT_TESTS, "holes between tensors pass check"),
    _m("format-packed-bytes-floor", "checkpoint/safetensors_format.py",
       "    return (bits + 7) // 8", "    return bits // 8",
       FORMAT_TESTS, "odd-sized 4-bit tensors are mis-sized"),
    _m("format-negative-dims", "checkpoint/safetensors_format.py",
       "        if type(dim) is not int or dim < 0:", "        if type(dim) is not int:",
       FORMAT_TESTS, "a negative dimension is accepted as a shape"),
    _m("source-repo-not-found-unnamed", "checkpoint/source.py",
       "    if any(isinstance(c, RepositoryNotFoundError) for c in causes):",
       "    if any(isinstance(c, RepositoryNotFoundError) for c in causes) and False:",
       "tests/test_check_hub.py", "a mistyped Hub id reports a raw HTTP error instead of 'no such Hub repo'"),
    _m("families-single-layer-draft-id", "checkpoint/families.py",
       "return 0 if num_hidden_layers == 1 else num_hidden_layers", "return num_hidden_layers",
       "tests/test_extract.py", "standalone one-layer drafts are looked for at layer 1"),
    _m("families-bool-is-int", "checkpoint/families.py",
       "if isinstance(value, bool) or not isinstance(value, int):", "if not isinstance(value, int):",
       "tests/test_check_malformed.py", "num_hidden_layers: true is read as 1 layer"),
    _m("jsonio-int64-run-too-long", "checkpoint/jsonio.py",
       '_LONG_DIGIT_RUN = b"1" * 19', '_LONG_DIGIT_RUN = b"1" * 20',
       "tests/test_jsonio.py", "int64's 19-digit overflows come back as floats"),
    _m("jsonio-metadata-through-msgspec", "checkpoint/jsonio.py",
       '("metadata", _msgspec.Raw, None)])\n    return _msgspec.json.Decoder(index)\n\n\n@lru_cache(maxsize=8)',
       '("metadata", Any, None)])\n    return _msgspec.json.Decoder(index)\n\n\n@lru_cache(maxsize=8)',
       "tests/test_jsonio.py", "index metadata integers beyond 64 bits come back as floats"),
    _m("quant-ct-no-dotted-suffix", "checkpoint/quant_match.py",
       "return name in table.exact or any(s in table.exact for s in _dotted_suffixes(name)) or table.regex(name)",
       "return name in table.exact or table.regex(name)",
       DIALECT_TESTS, "a compressed-tensors ignore entry naming a module's tail no longer excludes it"),
    _m("quant-quark-experts-entry", "checkpoint/quant_match.py",
       '    if name.endswith(".experts") and any(entry.startswith(name + ".") for entry in entries):',
       "    if False:",
       DIALECT_TESTS, "a Quark exclusion of one expert no longer keeps SGLang's fused experts module unquantized"),
    _m("quant-fused-shards-disagree-silently", "checkpoint/quant_match.py",
       "    if len(verdicts) > 1:", "    if False:",
       DIALECT_TESTS, "a fused module half excluded is judged instead of refused as SGLang refuses it"),
    _m("quant-fp8-no-bare-twins", "checkpoint/quant_match.py",
       '        out += [base, f"model.{base}"]', "        out += [entry]",
       DIALECT_TESTS, "block-FP8 modules_to_not_convert without model. stop matching the draft's names"),
    # --- graft/
    _m("lineage-nothing-compared-is-same", "checkpoint/lineage.py",
       "    if report.compared:\n", "    if True:\n",
       LINEAGE_TESTS, "a target with nothing comparable is called the same release instead of not-comparable"),
    _m("lineage-one-layer-sampled", "checkpoint/lineage.py",
       "picked = sorted({pool[0], pool[len(pool) // 2], pool[-1]}) if pool else []",
       "picked = [pool[0]] if pool else []",
       LINEAGE_TESTS, "two releases differing past the first layer are not told apart"),
    _m("graft-architecture-unchecked", "graft/checks.py",
       "    if src.architecture != dst.architecture:", "    if False:",
       ("tests/test_graft_faults.py", "-k", "another_model"),
       "layers of another architecture are grafted in"),
    _m("graft-ready-target-overwritten", "graft/checks.py",
       'if needs_force(report) and not force:', 'if needs_force(report) and force:',
       ("tests/test_graft.py", "-k", "ready or force"), "a complete draft layer is replaced without --force"),
    _m("graft-damaged-target-accepted", "graft/checks.py",
       "    if damaged:\n", "    if False:\n",
       ("tests/test_graft_faults.py", "tests/test_graft.py", "-k", "damaged or corrupt or truncated"),
       "grafting into a damaged target"),
    # --- runner_rules.py
    _m("rules-sm90-gets-cutlass", "runner_rules.py",
       "    if facts.device_sm < 100:", "    if facts.device_sm < 90:",
       RULE_TESTS, "Hopper BF16 drafts get flashinfer_cutlass without evidence"),
    _m("rules-ep-layout", "runner_rules.py",
       "    if facts.ep_size not in (1, facts.tp_size):", "    if facts.ep_size != 1:",
       RULE_TESTS, "ep_size == tp_size launches lose flashinfer_cutlass"),
    _m("rules-a2a-always-none", "runner_rules.py",
       'a2a = "none" if facts.moe_a2a_backend not in (None, "none") else None', 'a2a = "none"',
       RULE_TESTS, "an a2a backend is declared when the user set none"),
    _m("rules-fp8-cutedsl", "runner_rules.py",
       '("flashinfer_cutlass", "flashinfer_cutedsl"):', '("flashinfer_cutlass",):',
       RULE_TESTS, "an FP8 draft under flashinfer_cutedsl silently falls back"),
    _m("rules-flashinfer-a2a", "runner_rules.py",
       'if facts.moe_a2a_backend not in (None, "none", "flashinfer"):', 'if facts.moe_a2a_backend not in (None, "none"):',
       RULE_TESTS, "flashinfer all-to-all launches lose flashinfer_cutlass"),
)


@dataclass
class Outcome:
    id: str
    verdict: str  # "killed" | "survived" | "timeout" (killed)
    seconds: float
    tests: list[str]
    harm: str
    #: pytest's summary: the failing test of a killed mutant (the proof it was caught), the counts of a survivor
    tail: str = ""


def copy_repo(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis", ".pytest_cache", "*.pyc")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)


def check_table(mutants: tuple[Mutant, ...]) -> list[str]:
    """Problems of the table against the current code: each ``old`` exactly once, each mutant compiles, ids unique."""
    problems = []
    if len({m.id for m in mutants}) != len(mutants):
        problems.append("duplicate mutant ids")
    for m in mutants:
        text = (ROOT / m.path).read_text()
        count = text.count(m.old)
        if count != 1:
            problems.append(f"{m.id}: its text occurs {count} times in {m.path}")
            continue
        try:
            compile(text.replace(m.old, m.new), m.path, "exec")
        except SyntaxError as exc:
            problems.append(f"{m.id}: the mutant does not compile ({exc})")
    return problems


def child_env(copy: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SGLANG_GLM_MTP_") and k != "SGLANG_ENABLE_PLUGIN"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(copy), env.get("PYTHONPATH")) if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a restored file must never meet its mutant's stale .pyc
    return env


def run_pytest(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[int | None, str, float]:
    """(exit code or None on timeout, output tail, seconds); the whole process group dies with the run."""
    argv = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=copy, env=child_env(copy), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    code: int | None = None
    out = ""
    try:
        out, _ = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        pass
    finally:  # a timeout, Ctrl-C or SIGTERM (see main): the test run and anything it started die with it
        if code is None:
            _kill_group(proc)
    return code, _summary(out or ""), time.monotonic() - start


def _summary(out: str) -> str:
    """pytest's FAILED/ERROR lines (which test caught the mutant) and its last line (the counts)."""
    lines = out.strip().splitlines()
    caught = [line for line in lines if line.startswith(("FAILED ", "ERROR "))]
    return "\n".join(caught + lines[-1:])


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the run's process group (its own session); its leader is not reaped yet, so the id is still its."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def verify_copy_is_imported(copy: Path) -> None:
    out = subprocess.run([sys.executable, "-c", f"import {PKG}; print({PKG}.__file__)"], cwd=copy,
                         env=child_env(copy), capture_output=True, text=True, check=True).stdout.strip()
    if not out.startswith(str(copy)):
        raise SystemExit(f"the test processes would import {out}, not the copy in {copy}")


def baseline(copy: Path, mutants: tuple[Mutant, ...], timeout: float) -> list[str]:
    """Each distinct test selection on the unmutated copy: all must pass."""
    failures = []
    for tests in dict.fromkeys(m.tests for m in mutants):
        code, tail, seconds = run_pytest(copy, tests, timeout)
        print(f"baseline {' '.join(tests)}: exit {code} ({seconds:.1f} s)", flush=True)
        if code != 0:
            failures.append(f"{' '.join(tests)}: exit {code}\n{tail}")
    return failures


def run_mutant(copy: Path, m: Mutant, timeout: float) -> Outcome:
    path = copy / m.path
    original = path.read_text()
    path.write_text(original.replace(m.old, m.new, 1))
    try:
        code, tail, seconds = run_pytest(copy, m.tests, timeout)
    finally:
        path.write_text(original)
        shutil.rmtree(copy / ".hypothesis", ignore_errors=True)  # no mutant's saved failure replays for the next
    verdict = "timeout" if code is None else "survived" if code == 0 else "killed"
    if code == 5:
        raise SystemExit(f"{m.id}: its test selection collects nothing: {' '.join(m.tests)}")
    return Outcome(m.id, verdict, round(seconds, 1), list(m.tests), m.harm, tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="ID", help="run these mutants only")
    parser.add_argument("--list", action="store_true", help="list the mutants and check the table, run nothing")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per pytest run (default 600)")
    parser.add_argument("--json", type=Path, default=None, help=f"write the outcomes here (full runs: {RESULTS})")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of each test selection")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)  # unwind like Ctrl-C: the running test group is killed, the copy removed

    mutants = MUTANTS if not args.only else tuple(m for m in MUTANTS if m.id in args.only)
    unknown = set(args.only or ()) - {m.id for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutant ids: {', '.join(sorted(unknown))}")
    problems = check_table(mutants)
    if args.list:
        for m in mutants:
            print(f"{m.id:45} {m.path:45} {' '.join(m.tests)}")
    if problems:
        print("stale mutation table:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    if args.list:
        return 0

    with tempfile.TemporaryDirectory(prefix="mutation-check-") as tmp:
        copy = Path(tmp)
        copy_repo(copy)
        verify_copy_is_imported(copy)
        if not args.no_baseline:
            failures = baseline(copy, mutants, args.timeout)
            if failures:
                print("the unmutated tests fail; fix them first:\n" + "\n".join(failures), file=sys.stderr)
                return 2
        outcomes = []
        for m in mutants:
            outcome = run_mutant(copy, m, args.timeout)
            outcomes.append(outcome)
            print(f"{outcome.verdict:9} {m.id:45} {outcome.seconds:6.1f} s", flush=True)
    return report(outcomes, args.json if args.json else (RESULTS if not args.only else None))


def report(outcomes: list[Outcome], json_path: Path | None) -> int:
    killed = sum(o.verdict != "survived" for o in outcomes)
    rate = killed / len(outcomes) if outcomes else 1.0
    print(f"\n{killed} of {len(outcomes)} mutants killed ({rate:.0%}); "
          f"{sum(o.seconds for o in outcomes):.0f} s of test runs")
    for o in outcomes:
        if o.verdict == "survived":
            print(f"  survived: {o.id}: {o.harm} (tests: {' '.join(o.tests)})")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"killed": killed, "total": len(outcomes), "kill_rate": round(rate, 4),
                                         "mutants": [asdict(o) for o in outcomes]}, indent=2) + "\n")
    return 0 if killed == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
