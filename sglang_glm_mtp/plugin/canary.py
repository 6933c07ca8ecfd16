"""Runtime accept-length canary: one ERROR when the drafts are being rejected while serving.

Why: the preflight and the coverage check catch a missing draft layer, but not every
way a draft can compute garbage (a wrong precision, a broken draft MoE runner, a check
that was skipped, weights synced in later). Garbage drafts do not fail anything; they
are just all rejected, so the mean accept length sits at ~1.0 and MTP costs throughput
instead of adding it. SGLang prints the number in its decode log, where nobody reads it.

How: an AFTER hook on ``SchedulerMetricsReporter.update_spec_metrics``, which every
scheduler rank calls once per verify step with the ints it already has on the CPU
(``bs`` requests, ``num_accept_tokens`` tokens committed, bonus token included). The
hook adds three ints; every ``warmup_steps`` steps it compares the window's mean accept
length (``num_accept_tokens / bs``, SGLang's own "accept len") with the threshold. Below
it: one ERROR, then silence until a later window is back above it (re-armed). No lock:
the scheduler thread is the only writer and ``get_internal_state`` (the only reader)
runs on the same thread. No GPU sync, no allocation per step.

Scope: every speculative draft (GLM, DeepSeek and every other MTP/EAGLE draft: a rejected
draft costs the same whoever built it), only when at least ``min_draft_tokens`` tokens per step are verified (with
one, the accept length is 1 by construction). Only the rank that prints SGLang's decode
stats logs (one ERROR per DP group, not one per TP rank); every rank keeps the state.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict, dataclass
from typing import Any

from . import settings
from .settings import CanarySettings
from .state import PluginState, published_state

logger = logging.getLogger(__name__)

TROUBLESHOOTING = "docs/troubleshooting.md, 'Accept length ≈ 1'"


@dataclass(frozen=True)
class CanarySnapshot:
    """The canary's state as ``/server_info`` shows it (msgpack-safe builtins only)."""

    status: str  # "off" | "waiting" | "warming-up" | "ok" | "tripped"
    enabled: bool
    reason: str | None
    min_accept_length: float
    warmup_steps: int
    min_draft_tokens: int
    num_draft_tokens: int | None
    steps: int
    mean_accept_length: float | None
    last_window_mean_accept_length: float | None
    tripped: bool
    trips: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Canary:
    """Per-process state; a scheduler process has exactly one metrics reporter."""

    __slots__ = ("settings", "active", "reason", "num_draft_tokens", "logs_here", "draft_path", "steps", "tokens",
                 "requests", "win_steps", "win_tokens", "win_requests", "last_window_mean", "tripped", "trips",
                 "known_family")

    def __init__(self, config: CanarySettings | None = None) -> None:
        self.configure(config or CanarySettings())

    def configure(self, config: CanarySettings) -> None:
        """(Re)start from nothing with ``config``; judged lazily on the first verify step."""
        self.settings = config
        self.active: bool | None = None if config.enabled else False
        self.reason: str | None = None if config.enabled else f"switched off ({settings.CANARY_ENV}=0)"
        self.num_draft_tokens: int | None = None
        self.logs_here = True
        self.draft_path: str | None = None
        self.known_family = True
        self.steps = self.tokens = self.requests = 0
        self.win_steps = self.win_tokens = self.win_requests = 0
        self.last_window_mean: float | None = None
        self.tripped = False
        self.trips = 0

    # ------------------------------------------------------------------ per step

    def activate(self, reporter: Any) -> None:
        """First verify step in this process: decide once whether there is anything to judge."""
        state, num_draft_tokens, draft_path = _published_facts()
        self.num_draft_tokens = num_draft_tokens
        preflight = state.preflight if state else None
        self.draft_path = draft_path or (preflight.checkpoint if preflight else None) or (state and state.draft_path)
        self.logs_here = bool(getattr(reporter, "is_stats_logging_rank", True))
        from ..checkpoint.families import family_for

        if state is not None:  # nothing published: keep the check advice
            self.known_family = family_for(state.architecture or "") is not None
        if num_draft_tokens is not None and num_draft_tokens < self.settings.min_draft_tokens:
            self.active = False
            self.reason = (f"speculative_num_draft_tokens={num_draft_tokens}: nothing to accept "
                           f"(needs >= {self.settings.min_draft_tokens})")
            return
        self.active = True
        logger.info("glm_mtp: accept-length canary armed: ERROR if the mean accept length over %d verify steps "
                    "is below %.2f (%s=0 switches it off)", self.settings.warmup_steps,
                    self.settings.min_accept_length, settings.CANARY_ENV)

    def close_window(self) -> None:
        mean = self.win_tokens / self.win_requests
        steps = self.win_steps
        self.steps += steps
        self.tokens += self.win_tokens
        self.requests += self.win_requests
        self.win_steps = self.win_tokens = self.win_requests = 0
        self.last_window_mean = mean
        if mean < self.settings.min_accept_length:
            if not self.tripped:
                self.tripped = True
                self.trips += 1
                log = logger.error if self.logs_here else logger.debug
                log("%s", self.rejection_message(mean, steps))
        elif self.tripped:
            self.tripped = False
            log = logger.warning if self.logs_here else logger.debug
            log("glm_mtp: speculative accept length recovered to %.2f over the last %d verify steps "
                "(threshold %.2f); the canary is re-armed", mean, steps, self.settings.min_accept_length)

    def rejection_message(self, mean: float, steps: int) -> str:
        """The one ERROR: what happened, what it usually means, what to run."""
        per_step = f"; up to {self.num_draft_tokens} tokens per step" if self.num_draft_tokens else ""
        target = self.draft_path or "<model>"
        lines = [
            f"glm_mtp: speculative drafts are being rejected: mean accept length {mean:.2f} over the last {steps} "
            f"verify steps (threshold {self.settings.min_accept_length:.2f}{per_step}). MTP is costing "
            "throughput instead of adding it.",
            "This usually means the draft layer computes garbage: draft weights missing or never loaded (an NVFP4 "
            "conversion that dropped the draft layer, a hand-made mtp.safetensors the index does not name), a draft "
            "loaded at the wrong precision, a broken draft MoE runner (--speculative-moe-runner-backend), or a "
            "startup check that was skipped.",
        ]
        lines += [f"Seen at startup: {fact}" for fact in _startup_evidence()]
        run = (f"Run: sglang-glm-mtp check {target}   (see {TROUBLESHOOTING})." if self.known_family else
               f"Check that {target} ships this architecture's MTP weights (see {TROUBLESHOOTING}).")
        lines += [
            run,
            f"Logged once; logged again only after the accept length recovers and collapses again. "
            f"Thresholds: {settings.CANARY_MIN_ACCEPT_ENV}, {settings.CANARY_WARMUP_ENV}; "
            f"off: {settings.CANARY_ENV}=0.",
        ]
        return "\n".join(lines)

    # ------------------------------------------------------------------ read side

    def snapshot(self) -> CanarySnapshot:
        steps = self.steps + self.win_steps
        requests = self.requests + self.win_requests
        reason = self.reason
        if self.active is False:
            status = "off"
        elif self.active is None:
            status = "waiting"  # no verify step yet
            if not _speculative_configured():
                status, reason = "off", "no speculative decoding on this server"
        elif self.tripped:
            status = "tripped"
        elif self.last_window_mean is None:
            status = "warming-up"
        else:
            status = "ok"
        mean = (self.tokens + self.win_tokens) / requests if requests else None
        return CanarySnapshot(
            status=status, enabled=self.settings.enabled, reason=reason,
            min_accept_length=self.settings.min_accept_length, warmup_steps=self.settings.warmup_steps,
            min_draft_tokens=self.settings.min_draft_tokens, num_draft_tokens=self.num_draft_tokens, steps=steps,
            mean_accept_length=None if mean is None else round(mean, 4),
            last_window_mean_accept_length=None if self.last_window_mean is None else round(self.last_window_mean, 4),
            tripped=self.tripped, trips=self.trips)


_CANARY = _Canary()
#: What reading a published spec may raise: not published (ValueError), a leaf this SGLang lacks (AttributeError),
#: a value that is not a number (TypeError, ValueError).
_SPEC_ERRORS = (ValueError, AttributeError, TypeError)


def _published_facts() -> tuple[PluginState | None, int | None, str | None]:
    """The plugin's record (None: nothing published, a bare reporter) and this scheduler's spec facts."""
    state = published_state()  # never imports SGLang
    runtime = sys.modules.get("sglang.srt.runtime_context")
    if state is None or runtime is None:
        return None, None, None
    try:
        spec = runtime.get_spec()
        tokens = spec.speculative_num_draft_tokens
        return state, (int(tokens) if tokens is not None else None), spec.speculative_draft_model_path
    except _SPEC_ERRORS:  # judge the numbers alone
        return state, None, None


def _speculative_configured() -> bool:
    """False only when this process's published config has no speculative algorithm."""
    runtime = sys.modules.get("sglang.srt.runtime_context")
    if runtime is None:
        return True  # nothing published: unknown, assume it may come
    try:
        return runtime.get_spec().speculative_algorithm is not None
    except _SPEC_ERRORS:  # nothing published: unknown, assume it may come
        return True


def _startup_evidence() -> list[str]:
    """What the plugin saw at startup that points at a cause (read only when tripping)."""
    from .coverage import LAST_RESULT

    facts: list[str] = []
    state = published_state()
    preflight = state.preflight if state else None
    if preflight is not None and preflight.skipped:
        facts.append(f"the startup preflight was skipped ({settings.SKIP_PREFLIGHT_ENV}=1): the draft layer "
                     "was never checked before launch")
    elif preflight is not None:
        facts.append(f"draft layer {state.draft_layer_name()} {preflight.status}, "
                     f"{preflight.found_tensors}/{preflight.expected_tensors} tensors, stored "
                     f"{preflight.draft_precision}")
    elif state is not None:
        facts.append("no startup preflight ran (draft path not readable before launch, or skipped)")
    if LAST_RESULT.get("skipped"):
        facts.append(f"the post-load coverage check was skipped ({settings.SKIP_COVERAGE_ENV}=1)")
    elif LAST_RESULT.get("uncovered"):
        facts.append(f"{len(LAST_RESULT['uncovered'])} draft parameters received no checkpoint tensor")
    runner = state.moe_runner if state else None
    if runner is not None:
        facts.append(f"draft MoE runner {runner.backend} ({runner.rule})")
    return facts


def on_verify_step(result: Any, reporter: Any, bs: int, num_correct_drafts: int = 0, num_accept_tokens: int = 0,
                   *args: Any, **kwargs: Any) -> None:
    """AFTER ``update_spec_metrics(bs, num_correct_drafts, num_accept_tokens=...)``: O(1), never raises."""
    canary = _CANARY
    if canary.active is False:
        return None
    try:
        if canary.active is None:
            canary.activate(reporter)
            if not canary.active:
                return None
        if bs <= 0:
            return None
        canary.win_steps += 1
        canary.win_tokens += num_accept_tokens
        canary.win_requests += bs
        if canary.win_steps >= canary.settings.warmup_steps:
            canary.close_window()
    except Exception:  # the serving loop must never fail because of the canary
        canary.active = False
        canary.reason = "disabled after an internal error (see the log)"
        logger.exception("glm_mtp: accept-length canary failed; it is off for this process")
    return None


def register_canary() -> None:
    """Install the hook (also when switched off, so strict mode sees every target; it then returns at once)."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from .targets import CANARY_TARGET

    _CANARY.configure(settings.canary_settings())
    HookRegistry.register(CANARY_TARGET, on_verify_step, HookType.AFTER)


def configure_canary(config: CanarySettings) -> None:
    """Restart the canary with other settings (tests, embedding applications)."""
    _CANARY.configure(config)


def canary_snapshot() -> dict[str, Any] | None:
    """The canary section of server info."""
    return _CANARY.snapshot().to_dict()
