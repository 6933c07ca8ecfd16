"""``sglang-glm-mtp demo``: the whole problem and its fix, end to end, on a tiny checkpoint, in seconds.

Why: the real case needs a 440 GB checkpoint and eight GPUs. The same failure and the
same fix fit in a few hundred kilobytes: a GLM-5.2-shaped BF16 original that has the
MTP layer, and an NVFP4 target that dropped it while its config still declares it. The
demo runs the real tools on them, in the order a user would:

1. build the pair (``synthetic.tiny_pair``);
2. ``check`` the target: MISSING, with the command that fixes it;
3. SGLang's real server-args resolution with ``--speculative-algorithm NEXTN`` on the
   target: the ``glm_mtp`` plugin refuses the launch before anything is spawned;
4. ``graft`` the layer from the original into the target;
5. ``check`` again: READY;
6. the same resolution again: accepted, with the draft precision and the draft MoE
   runner the plugin chose.

Steps 3 and 6 need SGLang; they run in one child process (``resolver.py``, driven through
``sglang_child.py``) started first, so SGLang's ~8 s import overlaps with steps 1-2. Without
a GPU the child emulates the GPU generation named by ``gpu`` the way SGLang's own tests do
(``gpu_emulation.py``), and the result says so. Without SGLang they are skipped with a note.

Library only: results are dataclasses (``results.py``) handed to ``on_step`` as each step
finishes; ``cli/demo.py`` prints them.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..checkpoint.inspection import inspect_checkpoint
from ..errors import GlmMtpError, UsageError
from ..synthetic import SyntheticPair, tiny_pair
from .results import BuildResult, DemoResult, DemoStep, SglangSession, SglangStep, StepKind
from .sglang_child import SglangResolver, sglang_available

logger = logging.getLogger(__name__)

#: GPU names the demo accepts -> the SGLang generation it emulates without a GPU.
GPUS: dict[str, str] = {
    "H100": "sm90", "H200": "sm90", "H800": "sm90", "H20": "sm90", "SM90": "sm90",
    "B200": "sm100", "GB200": "sm100", "SM100": "sm100",
    "RTX-PRO-6000": "sm120", "RTX-5090": "sm120", "SM120": "sm120",
}
DEFAULT_GPU = "B200"
MARKER = ".sglang-glm-mtp-demo"
SGLANG_LOG = "sglang-resolution.log"
#: The resolution a user's launch makes (``--device cuda`` spelled out: nothing to autodetect on a CPU box).
LAUNCH_FLAGS = ["--speculative-algorithm", "NEXTN", "--quantization", "modelopt_fp4"]
NOT_INSTALLED = ("SGLang is not installed here; pip install '.[sglang]' in a checkout of sglang-glm-mtp "
                 "to also see SGLang refuse the broken checkpoint and accept the fixed one")

T = TypeVar("T")


def generation_for(gpu: str) -> str:
    """``B200`` -> ``sm100``; case, spaces and underscores do not matter."""
    key = gpu.strip().upper().replace(" ", "-").replace("_", "-")
    key = key.removeprefix("NVIDIA-")
    if key not in GPUS:
        raise UsageError(f"--gpu {gpu}: unknown; one of {', '.join(GPUS)}")
    return GPUS[key]


def launch_command(target: Path) -> str:
    """The launch whose resolution the demo runs (nothing is launched)."""
    return f"python -m sglang.launch_server --model-path {target} " + " ".join(LAUNCH_FLAGS)


# ----------------------------------------------------------------------------- steps


def prepare_workdir(workdir: Path | None) -> Path:
    """A fresh temp dir, or DIR: created, or cleared of an earlier demo's checkpoints (never anything else)."""
    if workdir is None:
        return Path(tempfile.mkdtemp(prefix="sglang-glm-mtp-demo-"))
    workdir = workdir.expanduser().resolve()
    ours = [workdir / "original-bf16", workdir / "target-nvfp4"]
    if any(p.exists() for p in ours):
        if not (workdir / MARKER).exists():
            raise UsageError(f"{workdir} already holds original-bf16/ or target-nvfp4/ that the demo did not make; "
                             "choose another --workdir")
        for path in ours:
            shutil.rmtree(path, ignore_errors=True)
        logger.info("demo: removed the previous demo's checkpoints from %s", workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("made by sglang-glm-mtp demo; its checkpoints are rebuilt on every run\n")
    return workdir


def build_step(workdir: Path) -> BuildResult:
    """The pair, and what the original holds (the target is inspected by the check step that follows)."""
    pair: SyntheticPair = tiny_pair(workdir)
    original = inspect_checkpoint(str(pair.original))
    config = json.loads((pair.target / "config.json").read_text())

    def count(path: Path) -> int:
        return len(json.loads((path / "model.safetensors.index.json").read_text())["weight_map"])

    return BuildResult(original=pair.original, target=pair.target, original_tensors=count(pair.original),
                       target_tensors=count(pair.target), draft_layer=int(original.draft_layer or 0),
                       draft_tensors=original.found_tensors,
                       declared_nextn_layers=int(config.get("num_nextn_predict_layers", 0)),
                       draft_prefix=original.draft_prefix or "")


def graft_step(original: Path, target: Path) -> Any:
    """The one call into graft's library: plan (metadata only), then execute (copy, verify, check, commit)."""
    from ..graft import execute, plan_graft

    return execute(plan_graft(str(original), target))


def graft_command(original: Path, target: Path) -> str:
    return f"sglang-glm-mtp graft --from {original} --into {target}"


class _DemoRun:
    """One run in progress: its result, the SGLang child (None: skipped) and what the caller sees per step."""

    def __init__(self, result: DemoResult, resolver: SglangResolver | None,
                 on_step: Callable[[DemoStep], None] | None) -> None:
        self.result = result
        self.resolver = resolver
        self.on_step = on_step
        self.session: SglangSession | None = None
        self.failure: str | None = None  # the SGLang child's first failure; its later steps report it

    def record(self, kind: StepKind, title: str, ok: bool, t0: float, data: Any) -> None:
        step = DemoStep(len(self.result.steps) + 1, kind, title, ok, time.monotonic() - t0, data)
        self.result.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)

    def step(self, kind: StepKind, title: str, action: Callable[[], T], expected: Callable[[T], bool]) -> T:
        """Run one library step, timed; ``expected`` says whether it did what the demo expects."""
        t0 = time.monotonic()
        data = action()
        self.record(kind, title, expected(data), t0, data)
        return data

    def sglang(self, title: str, target: Path, expect_ok: bool) -> None:
        """One resolution in the child; a failing child fails this step and the later ones, not the demo."""
        t0 = time.monotonic()
        if self.resolver is None:
            self.record("sglang", title, True, t0, SglangStep(None, None, self.result.sglang_skipped))
            return
        try:
            if self.failure is not None:
                raise GlmMtpError(self.failure)
            if self.session is None:
                self.session = self.resolver.session(self.result.gpu)
            outcome = self.resolver.resolve(["--model-path", str(target), "--device", "cuda", *LAUNCH_FLAGS],
                                            launch_command(target))
        except GlmMtpError as exc:  # the rest of the demo still runs; the step says what went wrong
            self.failure = str(exc)
            self.record("sglang", title, False, t0, SglangStep(self.session, None, self.failure))
            return
        ok = self.session.plugin_active and outcome.ok == expect_ok and (expect_ok or outcome.children == 0)
        self.record("sglang", title, ok, t0, SglangStep(self.session, outcome))

    def six_steps(self) -> None:
        workdir = self.result.workdir
        built = self.step("build", "build a tiny GLM-5.2-like BF16 original and its NVFP4 conversion without the MTP "
                          "layer", lambda: build_step(workdir),
                          lambda b: b.draft_tensors > 0 and b.declared_nextn_layers == 1)
        check = f"sglang-glm-mtp check {built.target}"
        self.step("check", check, lambda: inspect_checkpoint(str(built.target)), lambda r: r.status == "missing")
        self.sglang("SGLang resolves a NEXTN launch on the broken target", built.target, expect_ok=False)
        self.step("graft", graft_command(built.original, built.target),
                  lambda: graft_step(built.original, built.target), lambda g: g.check_status == "ready")
        self.step("check", check, lambda: inspect_checkpoint(str(built.target)), lambda r: r.status == "ready")
        self.sglang("SGLang resolves the same launch on the grafted target", built.target, expect_ok=True)


def _why_no_sglang(with_sglang: bool) -> str | None:
    if not with_sglang:
        return "skipped on request (--skip-sglang)"
    return None if sglang_available() else NOT_INSTALLED


def run_demo(workdir: Path | None = None, gpu: str = DEFAULT_GPU, *, with_sglang: bool = True,
             on_step: Callable[[DemoStep], None] | None = None) -> DemoResult:
    """Run the six steps; ``on_step`` sees each one as soon as it is done."""
    generation = generation_for(gpu)
    started = time.monotonic()
    workdir = prepare_workdir(workdir)
    result = DemoResult(workdir=workdir, gpu=gpu, generation=generation, sglang_skipped=_why_no_sglang(with_sglang))
    resolver = None if result.sglang_skipped else SglangResolver(generation, workdir / SGLANG_LOG)
    try:
        _DemoRun(result, resolver, on_step).six_steps()
    finally:
        if resolver is not None:
            resolver.close()
    result.seconds = time.monotonic() - started
    return result
