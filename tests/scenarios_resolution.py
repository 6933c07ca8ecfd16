"""Main-process scenarios against the real SGLang 0.5.23: plugin discovery and server-args resolution.

Run as ``python tests/scenarios_resolution.py <family> '<json params>'`` in a fresh
process (SGLang's imports cost seconds and leave process-global state: plugins load
once per process, resolution hooks cannot be unregistered). Prints one ``RESULT:``
JSON line. Faked, because it needs a GPU: the GPU generation (SGLang's own
``override_platform`` test primitive plus ``torch.cuda.get_device_capability``, from
``sglang_glm_mtp/demo/gpu_emulation.py``, shared with the demo).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

from sglang_glm_mtp.demo.gpu_emulation import emulated_platform, error_fields


def resolve(argv: list[str], generation: str, **facts: Any) -> Any:
    """prepare_server_args + resolve_once exactly as launch_server does, under an emulated GPU."""
    from sglang.srt.server_args import prepare_server_args

    with emulated_platform(generation, **facts):
        server_args = prepare_server_args(argv)
        server_args.resolve_once()
    return server_args


def _outcome(fn: Callable[[], Any]) -> dict[str, Any]:
    try:
        return {"ok": True, **fn()}
    except Exception as exc:  # the scenario reports what SGLang raised; the test asserts on it
        return error_fields(exc)


def _resolved(server_args: Any) -> dict[str, Any]:
    from sglang.srt.arg_groups.overrides import resolved_view

    from sglang_glm_mtp.plugin.state import plugin_state

    view = resolved_view(server_args)
    return {"spec_runner": view.speculative_moe_runner_backend, "target_runner": view.moe_runner_backend,
            "spec_a2a": view.speculative_moe_a2a_backend, "algorithm": view.speculative_algorithm,
            "state": plugin_state(server_args).server_info(),
            "sources": [src for src, _ in getattr(server_args, "_resolved_overrides", [])]}


def family_resolution(params: dict[str, Any]) -> dict[str, Any]:
    """Discovery through SGLang's load_plugins, then one resolution per case."""
    import psutil
    from sglang.srt.plugins import load_plugins
    from sglang.srt.plugins.hook_registry import HookRegistry

    load_plugins()
    load_plugins()  # idempotent: SGLang guards it; the plugin's register() must be too
    from sglang.srt.arg_groups import resolution_hooks

    result: dict[str, Any] = {
        "patched": sorted(HookRegistry._patched),
        "resolution_hooks": {k: [f.__module__ + "." + f.__qualname__ for f in v]
                             for k, v in resolution_hooks._HOOKS.items()},
        "glm4_moe_imported": "sglang.srt.models.glm4_moe" in sys.modules,
        "cases": {},
    }
    for case in params["cases"]:
        argv = ["--model-path", case["model"], "--device", "cuda", *case.get("argv", [])]
        outcome = _outcome(lambda: _resolved(resolve(argv, case.get("generation", "sm100"), **case.get("facts", {}))))
        outcome["children"] = len(psutil.Process().children(recursive=True))
        result["cases"][case["name"]] = outcome
    return result


def family_version_drift(params: dict[str, Any]) -> dict[str, Any]:
    """An SGLang without one of the hooked methods: strict mode must refuse, default mode must not."""
    from sglang.srt.models.deepseek_nextn import DeepseekV3ForCausalLMNextN
    from sglang.srt.models.glm4_moe import GlmMoeDsaForCausalLMNextN
    from sglang.srt.plugins import load_plugins

    # As in an SGLang before PR #30265, which introduced _resolve_nextn_quant_config.
    delattr(GlmMoeDsaForCausalLMNextN, "_resolve_nextn_quant_config")
    delattr(DeepseekV3ForCausalLMNextN, "_resolve_nextn_quant_config")
    load_plugins()
    argv = ["--model-path", params["model"], "--device", "cuda", "--speculative-algorithm", "NEXTN"]
    out = {"default": _outcome(lambda: _resolved(resolve(argv, "sm100")))}
    out["strict"] = _outcome(lambda: _resolved(resolve(argv + ["--enable-plugin", "glm_mtp"], "sm100")))
    os.environ.pop("SGLANG_ENABLE_PLUGIN", None)
    out["unknown_plugin"] = _outcome(lambda: _resolved(resolve(argv + ["--enable-plugin", "glm_mtp,nope"], "sm100")))
    return out


class SpawnBlocked(RuntimeError):
    """Raised instead of starting a process: no scheduler can run without a GPU, and the test needs none."""


def family_engine(params: dict[str, Any]) -> dict[str, Any]:
    """The Python API: sglang.Engine(...) must raise the preflight error before it starts any process.

    Faked: ``multiprocessing``'s ``Process.start`` records the spawn and raises instead (a
    scheduler needs a GPU). Everything before it is SGLang's real launch path; the
    ``ready`` control shows that path does reach a spawn.
    """
    import multiprocessing.process
    import psutil
    import torch

    torch.cuda.get_device_capability = lambda *a, **k: (10, 0)
    from sglang.srt.entrypoints.engine import Engine

    spawns: list[str] = []

    def start(process: Any) -> None:
        spawns.append(getattr(process, "name", "?"))
        raise SpawnBlocked(f"would start {process.name}")

    multiprocessing.process.BaseProcess.start = start  # type: ignore[method-assign]
    out: dict[str, Any] = {}
    for name in ("missing", "ready"):
        spawns.clear()
        outcome = _outcome(lambda: {"engine": repr(Engine(model_path=params[name], speculative_algorithm="NEXTN",
                                                          device="cuda"))})
        outcome["spawns"] = list(spawns)
        outcome["children"] = len(psutil.Process().children(recursive=True))
        out[name] = outcome
    return out


FAMILIES = {"resolution": family_resolution, "version_drift": family_version_drift, "engine": family_engine}

if __name__ == "__main__":
    from sglang_mode import scenario_main

    scenario_main(FAMILIES)
