"""Which MoE runner the NextN draft should use: the plugin's rule table.

Pure logic, no SGLang import: the plugin gathers the facts from SGLang at resolution
time, this module decides. The evidence behind each rule is in docs/moe-runner.md;
the rule ids below are the anchors there. Patch 0003 (patches/sglang-v0.5.23/) writes
the same rules again inside SGLang's ``overrides.py``, which cannot import this package;
tests/test_runner_rules.py runs the patch's function from the patch text and checks both
agree over the full cross product of the facts they share.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunnerFacts:
    """What the decision depends on; every field is available in SGLang's main process."""

    draft_precision: str  # "bf16" | "nvfp4" | "fp8" | "mixed" | "unknown"
    target_precision: str  # same labels, of the target's MoE
    target_backend: str  # the target's resolved moe_runner_backend
    device_sm: int | None  # 90, 100, 120, ...; None when unknown
    is_hip: bool = False
    flashinfer_available: bool = True
    tp_size: int = 1
    ep_size: int = 1
    moe_a2a_backend: str | None = None


@dataclass(frozen=True)
class RunnerDecision:
    backend: str | None  # None: keep SGLang's own default (the draft inherits the target's runner)
    a2a_backend: str | None  # speculative_moe_a2a_backend to declare, if any
    rule: str
    reason: str


def _keep(rule: str, reason: str) -> RunnerDecision:
    return RunnerDecision(None, None, rule, reason)


def _triton(rule: str, reason: str, facts: RunnerFacts) -> RunnerDecision:
    # A triton draft cannot use the FlashInfer all-to-all the target may use (moe_hook.py:531-541).
    a2a = "none" if facts.moe_a2a_backend not in (None, "none") else None
    return RunnerDecision("triton", a2a, rule, reason)


def choose_draft_runner(facts: RunnerFacts) -> RunnerDecision:
    """First matching rule wins; an explicit --speculative-moe-runner-backend never reaches here."""
    draft, target = facts.draft_precision, facts.target_precision
    if target == "bf16":
        return _keep("unquantized-target", f"{draft} draft under an unquantized target keeps the target's runner "
                                           "(the draft is built unquantized like the target)")
    if facts.target_backend == "flashinfer_megamoe":
        return _keep("megamoe-target", "flashinfer_megamoe target: SGLang's own draft default is kept (runner "
                                       "flashinfer_trtllm, all-to-all none); --speculative-moe-runner-backend chooses "
                                       "another")
    if draft != "bf16":
        if draft == "fp8" and facts.target_backend in ("flashinfer_cutlass", "flashinfer_cutedsl"):
            return _triton("fp8-no-cutlass",
                           "FP8 draft: SGLang's Fp8MoEMethod has no flashinfer_cutlass path and would silently "
                           "swap in triton; declared explicitly", facts)
        return _keep("quantized-like-target",
                     f"{draft} draft keeps the target's runner ({facts.target_backend})")
    if facts.is_hip:
        return _triton("hip-bf16-draft",
                       "ROCm: SGLang's own default for a BF16 NextN layer in a quantized DeepSeek-family checkpoint "
                       "(which 0.5.23 misses for --speculative-algorithm NEXTN)", facts)
    if facts.device_sm is None or facts.device_sm < 80:
        return _triton("unknown-gpu", f"GPU generation unknown (sm={facts.device_sm}); triton runs BF16 on any SM80+",
                       facts)
    if facts.device_sm < 100:
        return _triton("pre-blackwell-bf16-draft",
                       f"SM{facts.device_sm}: no evidence for FlashInfer's BF16 CUTLASS MoE with this model; "
                       "triton is SGLang's BF16 MoE path there", facts)
    if not facts.flashinfer_available:
        return _triton("no-flashinfer", "flashinfer is not installed; triton is the BF16 path that remains", facts)
    if facts.ep_size not in (1, facts.tp_size):
        return _triton("ep-layout", f"flashinfer_cutlass needs ep_size 1 or tp_size; ep_size={facts.ep_size}", facts)
    if facts.moe_a2a_backend not in (None, "none", "flashinfer"):
        return _triton("a2a-backend", f"flashinfer_cutlass cannot run under moe_a2a_backend={facts.moe_a2a_backend}",
                       facts)
    return RunnerDecision(
        "flashinfer_cutlass", None, "blackwell-bf16-draft",
        f"SM{facts.device_sm}: BF16 draft under a {target} target runs flashinfer_cutlass (published GLM-5.2 NVFP4 "
        "recipe: accept length 3.0-3.5, GSM8K 95.5% on 8xB200); the inherited "
        f"{facts.target_backend} " + ("hits illegal memory accesses with a BF16 draft (SGLang #30209)"
                                      if facts.target_backend.startswith("flashinfer_trtllm") else "is not preferred")
        + ", and a triton draft cost GSM8K accuracy in #30209 (0.636 -> 0.592)")
