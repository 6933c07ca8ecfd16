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

Steps 3 and 6 need SGLang; they run in one child process
(``demo_resolver.py``) started first, so SGLang's ~8 s import overlaps with
steps 1-2. Without a GPU the child emulates the GPU generation named by ``gpu`` the way
SGLang's own tests do (``gpu_emulation.py``), and the result says so. Without SGLang they are skipped with a note.

Library only: results are dataclasses handed to ``on_step`` as each step finishes;
``cli_demo`` prints them.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Literal

from .checkpoint.inspection import inspect_checkpoint as inspect
from .checkpoint.report import InspectionReport
from .errors import GlmMtpError, UsageError
from .plugin.settings import SKIP_PREFLIGHT_ENV
from .synthetic import SyntheticPair, tiny_pair

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
#: Seconds to wait for the SGLang child (import + one resolution); generous for a busy 2-core machine.
SGLANG_TIMEOUT = 240.0
RESOLVER_MODULE = "sglang_glm_mtp.demo_resolver"

StepKind = Literal["build", "check", "sglang", "graft"]


def generation_for(gpu: str) -> str:
    """``B200`` -> ``sm100``; case, spaces and underscores do not matter."""
    key = gpu.strip().upper().replace(" ", "-").replace("_", "-")
    key = key.removeprefix("NVIDIA-")
    if key not in GPUS:
        raise UsageError(f"--gpu {gpu}: unknown; one of {', '.join(GPUS)}")
    return GPUS[key]


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class BuildResult:
    original: Path
    target: Path
    original_tensors: int
    target_tensors: int
    draft_layer: int
    draft_tensors: int
    declared_nextn_layers: int


@dataclass(frozen=True)
class SglangSession:
    """The child process that runs SGLang, as it reported itself."""

    sglang_version: str
    real_gpu: bool
    gpu: str  # the real device name, or the name the user asked to emulate
    generation: str
    installed_plugins: list[str]
    plugin_active: bool
    import_seconds: float
    log: Path


@dataclass(frozen=True)
class ResolutionOutcome:
    """One ``prepare_server_args`` + ``resolve_once`` as ``launch_server`` makes it."""

    command: str
    ok: bool
    error_type: str | None = None
    error: str | None = None
    algorithm: str | None = None
    draft_runner: str | None = None
    target_runner: str | None = None
    num_steps: int | None = None
    num_draft_tokens: int | None = None
    state: dict[str, Any] = field(default_factory=dict)
    children: int | None = None
    seconds: float = 0.0

    @property
    def draft_precision(self) -> str | None:
        return (self.state.get("preflight") or {}).get("draft_precision")

    @property
    def runner_decision(self) -> dict[str, Any]:
        return self.state.get("moe_runner") or {}


@dataclass(frozen=True)
class SglangStep:
    session: SglangSession | None
    outcome: ResolutionOutcome | None
    skipped: str | None = None  # why there was no resolution (not installed, or the SGLang process failed)


@dataclass(frozen=True)
class DemoStep:
    number: int
    kind: StepKind
    title: str
    ok: bool  # the step did what the demo expects it to do (a refusal can be ok)
    seconds: float
    data: Any  # BuildResult | InspectionReport | SglangStep | GraftReport


@dataclass
class DemoResult:
    workdir: Path
    gpu: str
    generation: str
    steps: list[DemoStep] = field(default_factory=list)
    seconds: float = 0.0
    sglang_skipped: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)


# ----------------------------------------------------------------------------- the SGLang child


class SglangResolver:
    """The child that imports SGLang once and answers resolution requests (JSON lines)."""

    def __init__(self, generation: str, log: Path) -> None:
        self.log = log
        self._log_handle: IO[str] = open(log, "w")
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        if env.pop(SKIP_PREFLIGHT_ENV, None) is not None:  # the demo shows the default behaviour
            logger.info("demo: %s is ignored for the demo's SGLang process", SKIP_PREFLIGHT_ENV)
        self.process = subprocess.Popen([sys.executable, "-m", RESOLVER_MODULE, generation], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self._log_handle, text=True, bufsize=1,
                                        env=env)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("DEMO "):
                self._lines.put(line[5:])
        self._lines.put(None)

    def reply(self, timeout: float = SGLANG_TIMEOUT) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise GlmMtpError(f"SGLang did not answer within {timeout:.0f} s; see {self.log}") from None
        if line is None:
            raise GlmMtpError(f"the SGLang process ended unexpectedly (exit {self.process.wait()}); see {self.log}")
        doc = json.loads(line)
        if doc.get("event") == "failed":
            raise GlmMtpError(f"SGLang failed: {doc['error'].strip().splitlines()[-1]}; see {self.log}")
        return doc

    def resolve(self, argv: list[str]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"argv": argv}) + "\n")
        self.process.stdin.flush()
        return self.reply()

    def close(self) -> None:
        """EOF ends the child; it leaves without interpreter teardown (seconds with SGLang loaded)."""
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
            self.process.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            self._log_handle.close()


def sglang_available() -> bool:
    return importlib.util.find_spec("sglang") is not None


def _outcome(doc: dict[str, Any], command: str) -> ResolutionOutcome:
    return ResolutionOutcome(
        command=command, ok=bool(doc.get("ok")), error_type=doc.get("error_type"), error=doc.get("error"),
        algorithm=doc.get("algorithm"), draft_runner=doc.get("draft_runner"), target_runner=doc.get("target_runner"),
        num_steps=doc.get("num_steps"), num_draft_tokens=doc.get("num_draft_tokens"), state=doc.get("state") or {},
        children=doc.get("children"), seconds=float(doc.get("seconds", 0.0)))


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
    pair: SyntheticPair = tiny_pair(workdir)
    original, target = inspect(str(pair.original)), inspect(str(pair.target))
    config = json.loads((pair.target / "config.json").read_text())

    def count(path: Path) -> int:
        return len(json.loads((path / "model.safetensors.index.json").read_text())["weight_map"])

    return BuildResult(original=pair.original, target=pair.target, original_tensors=count(pair.original),
                       target_tensors=count(pair.target), draft_layer=int(original.draft_layer or 0),
                       draft_tensors=original.found_tensors,
                       declared_nextn_layers=int(config.get("num_nextn_predict_layers", 0)))


def graft_step(original: Path, target: Path) -> Any:
    """The one call into graft's library: plan (metadata only), then execute (copy, verify, check, commit)."""
    from .graft import execute, plan_graft

    return execute(plan_graft(str(original), target))


def graft_command(original: Path, target: Path) -> str:
    return f"sglang-glm-mtp graft --from {original} --into {target}"


def run_demo(workdir: Path | None = None, gpu: str = DEFAULT_GPU, *, with_sglang: bool = True,
             on_step: Callable[[DemoStep], None] | None = None) -> DemoResult:
    """Run the six steps; ``on_step`` sees each one as soon as it is done."""
    generation = generation_for(gpu)
    started = time.monotonic()
    workdir = prepare_workdir(workdir)
    result = DemoResult(workdir=workdir, gpu=gpu, generation=generation)
    if not with_sglang:
        result.sglang_skipped = "skipped on request (--skip-sglang)"
    elif not sglang_available():
        result.sglang_skipped = ("SGLang is not installed here; pip install '.[sglang]' in a checkout of sglang-glm-mtp "
                                 "to also see SGLang refuse the broken checkpoint and accept the fixed one")
    resolver = None if result.sglang_skipped else SglangResolver(generation, workdir / SGLANG_LOG)
    session: SglangSession | None = None
    failure: str | None = None

    def record(kind: StepKind, title: str, ok: bool, t0: float, data: Any) -> None:
        step = DemoStep(len(result.steps) + 1, kind, title, ok, time.monotonic() - t0, data)
        result.steps.append(step)
        if on_step is not None:
            on_step(step)

    def sglang(title: str, target: Path, expect_ok: bool) -> None:
        nonlocal session, failure
        t0 = time.monotonic()
        if resolver is None:
            record("sglang", title, True, t0, SglangStep(None, None, result.sglang_skipped))
            return
        try:
            if failure is not None:
                raise GlmMtpError(failure)
            if session is None:
                ready = resolver.reply()
                session = SglangSession(
                    sglang_version=ready["sglang_version"], real_gpu=ready["real_gpu"],
                    gpu=ready.get("gpu_name") or gpu, generation=ready["generation"],
                    installed_plugins=list(ready["installed_plugins"]), plugin_active=bool(ready["plugin_active"]),
                    import_seconds=float(ready["seconds"]), log=resolver.log)
            outcome = _outcome(resolver.resolve(["--model-path", str(target), "--device", "cuda", *LAUNCH_FLAGS]),
                               launch_command(target))
        except GlmMtpError as exc:  # the rest of the demo still runs; the step says what went wrong
            failure = str(exc)
            record("sglang", title, False, t0, SglangStep(session, None, failure))
            return
        ok = session.plugin_active and outcome.ok == expect_ok and (expect_ok or outcome.children == 0)
        record("sglang", title, ok, t0, SglangStep(session, outcome))

    try:
        t0 = time.monotonic()
        built = build_step(workdir)
        record("build", "build a tiny GLM-5.2-like BF16 original and its NVFP4 conversion without the MTP layer",
               built.draft_tensors > 0 and built.declared_nextn_layers == 1, t0, built)

        t0 = time.monotonic()
        report: InspectionReport = inspect(str(built.target))
        record("check", f"sglang-glm-mtp check {built.target}", report.status == "missing", t0, report)

        sglang("SGLang resolves a NEXTN launch on the broken target", built.target, expect_ok=False)

        t0 = time.monotonic()
        grafted = graft_step(built.original, built.target)
        record("graft", graft_command(built.original, built.target), grafted.check_status == "ready", t0, grafted)

        t0 = time.monotonic()
        report = inspect(str(built.target))
        record("check", f"sglang-glm-mtp check {built.target}", report.status == "ready", t0, report)

        sglang("SGLang resolves the same launch on the grafted target", built.target, expect_ok=True)
    finally:
        if resolver is not None:
            resolver.close()
    result.seconds = time.monotonic() - started
    return result
