"""Run SGLang's real server-args resolution and model construction on a machine without a GPU.

Shared by ``sglang-glm-mtp demo`` (its SGLang child, ``resolver.py``) and the test
scenarios, so both emulate a GPU generation the same way: SGLang's own test primitive
``override_platform`` with the facts below (as SGLang's tests set them), plus
``torch.cuda.get_device_capability``, which DSA models probe directly. Nothing else is
faked here. SGLang and torch are imported lazily: importing this module is free.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

#: Platform facts SGLang reads during resolution, per GPU generation.
GENERATIONS: dict[str, dict[str, Any]] = {
    "sm90": dict(is_sm90=True, is_sm100=False, is_sm100_or_sm110=False, is_sm110=False, is_sm120=False,
                 is_blackwell=False, is_hopper_with_cuda_12_3=True, device_sm=90, device_capability=(9, 0)),
    "sm100": dict(is_sm90=False, is_sm100=True, is_sm100_or_sm110=True, is_sm110=False, is_sm120=False,
                  is_blackwell=True, is_hopper_with_cuda_12_3=False, device_sm=100, device_capability=(10, 0)),
    "sm120": dict(is_sm90=False, is_sm100=False, is_sm100_or_sm110=False, is_sm110=False, is_sm120=True,
                  is_blackwell=True, is_hopper_with_cuda_12_3=False, device_sm=120, device_capability=(12, 0)),
}
#: Facts common to every emulated CUDA generation.
COMMON_FACTS: dict[str, Any] = dict(is_cuda=True, is_hip=False, is_npu=False, is_xpu=False, is_musa=False,
                                    is_mps=False, has_amx=False, has_flashinfer=True)


def platform_facts(generation: str, **overrides: Any) -> dict[str, Any]:
    """Every fact of ``generation``; ``overrides`` change single facts (e.g. ``has_flashinfer=False``)."""
    return {**COMMON_FACTS, **GENERATIONS[generation], **overrides}


def emulate_device_capability(generation: str) -> None:
    """Answer torch's capability probe as that generation (process-wide; DSA models call it unconditionally)."""
    import torch

    capability = GENERATIONS[generation]["device_capability"]
    torch.cuda.get_device_capability = lambda *a, **k: capability


@contextlib.contextmanager
def emulated_platform(generation: str | None, **overrides: Any) -> Iterator[None]:
    """Every ``get_platform()`` reader inside sees ``generation``; None: the real platform, untouched."""
    if generation is None:
        yield
        return
    from sglang.srt import runtime_context

    emulate_device_capability(generation)
    facts = platform_facts(generation, **overrides)
    # An older SGLang knows fewer facts (0.5.21: no is_mps, is_sm110) and refuses unknown ones; a fact it does not
    # know is one it never reads, so leaving it out emulates the same GPU.
    known = set(getattr(runtime_context, "_PLATFORM_PROBES", ())) | set(getattr(runtime_context, "_PLATFORM_VALUES", ()))
    if known:
        facts = {name: value for name, value in facts.items() if name in known}
    with runtime_context.override_platform(**facts):
        yield


def error_fields(exc: BaseException) -> dict[str, Any]:
    """How a refused or failed resolution is reported (the demo and the test scenarios assert on these keys)."""
    return {"ok": False, "error_type": type(exc).__name__, "error_mro": [c.__name__ for c in type(exc).__mro__],
            "error": str(exc)}
