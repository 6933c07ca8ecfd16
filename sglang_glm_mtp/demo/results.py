"""What the demo's steps report: dataclasses handed to ``on_step`` as each step finishes (``cli/demo.py`` prints
them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..plugin.state import PluginState, RunnerChoice

StepKind = Literal["build", "check", "sglang", "graft"]


@dataclass(frozen=True)
class BuildResult:
    original: Path
    target: Path
    original_tensors: int
    target_tensors: int
    draft_layer: int
    draft_tensors: int
    declared_nextn_layers: int
    #: the draft layer as the original spells it (``model.layers.4``)
    draft_prefix: str


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
    #: the plugin's record on the resolved ServerArgs
    state: PluginState = field(default_factory=PluginState)
    children: int | None = None
    seconds: float = 0.0

    @property
    def draft_precision(self) -> str | None:
        return self.state.preflight.draft_precision if self.state.preflight else None

    @property
    def runner_decision(self) -> RunnerChoice | None:
        return self.state.moe_runner


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
