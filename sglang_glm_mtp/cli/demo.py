"""``demo`` sub-command: prints each step of ``demo.run.run_demo`` as it finishes.

Exit 0 when every step behaved as the demo expects (a refusal where it should refuse),
1 otherwise, 2 for unusable arguments.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

from ..demo.results import BuildResult, DemoResult, DemoStep, SglangStep
from ..demo.run import DEFAULT_GPU, GPUS, generation_for, run_demo
from ._format import out as _out
from .check import format_report

TOTAL_STEPS = 6
INDENT = "    "


def _indent(text: str, prefix: str = INDENT) -> str:
    return textwrap.indent(text, prefix)


def format_step(step: DemoStep, *, show_session: bool = True) -> str:
    """One step: a numbered title, then what the tool said, indented (the SGLang setup only the first time)."""
    seconds = f"({step.seconds:.1f} s)"
    verdict = "" if step.ok else "   <- NOT AS EXPECTED"
    if step.kind == "build":
        return "\n".join([f"[{step.number}/{TOTAL_STEPS}] {step.title} {seconds}{verdict}", _build(step.data)])
    if step.kind == "check":
        exit_code = step.data.exit_code
        return "\n".join([f"[{step.number}/{TOTAL_STEPS}] $ {step.title}   -> exit {exit_code} {seconds}{verdict}",
                          _indent(format_report(step.data))])
    if step.kind == "graft":
        from .graft import format_report as format_graft

        return "\n".join([f"[{step.number}/{TOTAL_STEPS}] $ {step.title}   -> exit {step.data.exit_code} "
                          f"{seconds}{verdict}",
                          _indent("(the remedy's zai-org/GLM-5.2 is the real BF16 release; the tiny original stands "
                                  "in for it here)"),
                          _indent(format_graft(step.data))])
    return "\n".join([f"[{step.number}/{TOTAL_STEPS}] {step.title} {seconds}{verdict}",
                      _sglang(step.data, show_session, step.ok)])


def _build(built: BuildResult) -> str:
    layer = built.draft_prefix
    return _indent("\n".join([
        f"original: {built.original}",
        f"          BF16, {built.draft_layer} decoder layers + the MTP draft layer {layer} "
        f"({built.draft_tensors} tensors); {built.original_tensors} tensors in all",
        f"target:   {built.target}",
        f"          NVFP4 (ModelOpt), {layer} dropped; {built.target_tensors} tensors (FP4 weights carry scale "
        f"tensors); config.json still says "
        f"num_nextn_predict_layers = {built.declared_nextn_layers}",
        "what some NVFP4 conversions of GLM-5.2 did to the real model (model.layers.78: 791 tensors, 19.9 GB)",
    ]))


def _sglang(data: SglangStep, show_session: bool = True, ok: bool = True) -> str:
    if data.skipped or data.session is None or data.outcome is None:
        return _indent(f"{'skipped' if ok else 'FAILED'}: {data.skipped}")
    session, outcome = data.session, data.outcome
    lines = [f"$ {outcome.command}"]
    if show_session and session.real_gpu:
        lines.append(f"GPU: {session.gpu} ({session.generation}); only server-args resolution runs, "
                     "nothing is launched")
    elif show_session:
        lines.append(f"No GPU here: emulating {session.gpu} ({session.generation.upper()}) the way SGLang's own tests "
                     "do (runtime_context.override_platform + torch.cuda.get_device_capability); "
                     "only server-args resolution runs, nothing is launched")
    if show_session and session.plugin_active:
        lines.append(f"SGLang {session.sglang_version} (import + plugin loading {session.import_seconds:.1f} s, "
                     "started before step 1): plugin glm_mtp loaded by load_plugins() through its "
                     f"sglang.srt.plugins entry point (installed: {', '.join(session.installed_plugins)})")
    elif not session.plugin_active:
        lines.append(f"SGLang {session.sglang_version}: plugin glm_mtp is NOT active (installed entry points: "
                     f"{', '.join(session.installed_plugins) or 'none'}); pip install -e . (or the package) first")
    if not outcome.ok:
        children = "" if outcome.children is None else f" ({outcome.children} child processes)"
        lines.append(f"REFUSED before anything was spawned{children}: {outcome.error_type}")
        lines.append(_indent(outcome.error or "", "  | "))
        lines.append("without the plugin, SGLang 0.5.23 starts on this checkpoint, loads nothing into the draft and "
                     "serves garbage drafts (accept length ~1) without an error")
    else:
        preflight = outcome.state.preflight
        runner = outcome.runner_decision
        lines.append(f"ACCEPTED: speculative algorithm NEXTN (served as {outcome.algorithm}), "
                     f"{outcome.num_steps} steps, {outcome.num_draft_tokens} draft tokens")
        if preflight:
            built = "unquantized (BF16)" if outcome.draft_precision == "bf16" else f"as {outcome.draft_precision}"
            lines.append(f"draft layer:      {outcome.state.draft_layer_name()}, "
                         f"{preflight.found_tensors}/{preflight.expected_tensors} tensors, stored "
                         f"{outcome.draft_precision}: built {built} inside the {preflight.target_precision} target")
        chooser = f"chosen by glm_mtp, rule {runner.rule}" if runner and runner.rule else "SGLang's default"
        lines.append(f"draft MoE runner: {outcome.draft_runner} ({chooser}); target MoE runner: "
                     f"{outcome.target_runner}")
        if runner and runner.reason:
            lines.append(_indent("\n".join(textwrap.wrap(f"why: {runner.reason}", 100)), "  "))
    return _indent("\n".join(lines))


def format_summary(result: DemoResult) -> str:
    lines = []
    sglang_steps = [s.data for s in result.steps if s.kind == "sglang" and s.data.session is not None]
    if sglang_steps:
        lines.append(f"SGLang's own log of both resolutions: {sglang_steps[0].session.log}")
    lines.append(f"checkpoints kept in {result.workdir}")
    if result.ok:
        lines.append(f"done in {result.seconds:.1f} s: every step behaved as expected.")
    else:
        bad = ", ".join(str(s.number) for s in result.steps if not s.ok)
        lines.append(f"done in {result.seconds:.1f} s: step(s) {bad} did NOT behave as expected.")
    if result.sglang_skipped:
        lines.append(f"note: steps 3 and 6 (SGLang) {result.sglang_skipped}")
    return "\n".join(lines)


def _demo(args: argparse.Namespace) -> int:
    generation_for(args.gpu)  # a bad name is a usage error before anything is printed or built
    _out("sglang-glm-mtp demo: a quantized GLM-5.2 checkpoint that lost its MTP draft layer, found, fixed and "
         "accepted by SGLang")
    _out(f"(tiny synthetic checkpoints with GLM-5.2's real tensor names, dtypes and shape rules; --gpu {args.gpu})")

    seen_session: list[bool] = []

    def show(step: DemoStep) -> None:
        first = step.kind == "sglang" and not seen_session
        if first:
            seen_session.append(True)
        _out()
        _out(format_step(step, show_session=first))

    result = run_demo(Path(args.workdir) if args.workdir else None, args.gpu, with_sglang=not args.skip_sglang,
                      on_step=show)
    _out()
    _out(format_summary(result))
    return 0 if result.ok else 1


def _register(sub: Any) -> None:
    demo = sub.add_parser(
        "demo", help="the problem and the fix end to end on a tiny synthetic checkpoint "
                     "(10-30 s, mostly SGLang's import)",
        description="Builds a tiny GLM-5.2-like BF16 original and an NVFP4 conversion without its MTP layer, then: "
                    "check (fails, names the fix), SGLang's real server-args resolution with "
                    "--speculative-algorithm NEXTN (the glm_mtp plugin refuses), graft, check (ready), the same "
                    "resolution (accepted, with the draft precision and MoE runner). Without a GPU the GPU "
                    "generation is emulated the way SGLang's tests do; without SGLang those steps are skipped.")
    demo.add_argument("--workdir", metavar="DIR",
                      help="where the checkpoints go (default: a new temporary directory, kept afterwards)")
    demo.add_argument("--gpu", default=DEFAULT_GPU, metavar="NAME",
                      help=f"GPU to emulate when there is none: {', '.join(GPUS)} (default {DEFAULT_GPU})")
    demo.add_argument("--skip-sglang", action="store_true", help="only check and graft; no SGLang resolution")


COMMANDS = {"demo": _demo}
register = _register
