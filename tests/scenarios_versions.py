"""Clean degradation on an SGLang that lacks hook targets, against the real SGLang under test (0.5.22/0.5.23).

Run as ``python tests/scenarios_versions.py <family> '<json params>'`` in a fresh process
(plugins load once per process). Prints one ``RESULT:`` JSON line.

What an older release lacks is made absent in this process before ``load_plugins()``:
``delete`` names dotted attributes to remove (``sglang.srt.utils.common.build_server_info``
as on 0.5.20-0.5.21, the resolution-hook API as on 0.5.14-0.5.19, ...), and ``version``
makes the plugin read another SGLang version. Everything else is the real SGLang:
discovery through the installed entry point, ``HookRegistry``, resolution, strict mode.
"""

from __future__ import annotations

import os
import pkgutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sglang_harness as harness  # noqa: E402
from scenarios_resolution import _outcome, _resolved, resolve  # noqa: E402


def _delete(name: str) -> None:
    owner, _, attribute = name.rpartition(".")
    delattr(pkgutil.resolve_name(owner), attribute)


def family_degradation(params: dict[str, Any]) -> dict[str, Any]:
    """Load the plugin with ``params["delete"]`` absent; report hooks, logs, server info, and resolutions."""
    import sglang.srt.server_args  # noqa: F401  (as launch_server: imported before load_plugins)

    from sglang_glm_mtp.plugin import availability, server_info, targets

    for name in targets.EAGER_TARGETS:  # load_plugins imports these anyway; importing them first keeps modules
        pkgutil.resolve_name(name.rpartition(".")[0])  # that import a deleted name (from x import y) importable
    for name in params.get("delete", []):
        _delete(name)
    if params.get("version"):
        targets.sglang_version = lambda: params["version"]  # type: ignore[assignment]
    logs = harness.capture_logs("sglang_glm_mtp", "sglang.srt.plugins")
    from sglang.srt.plugins import load_plugins
    from sglang.srt.plugins.hook_registry import HookRegistry

    load_plugins()
    out: dict[str, Any] = {"patched": sorted(HookRegistry._patched), "registered": sorted(HookRegistry._hooks),
                           "unavailable": availability.unavailable(), "load_logs": list(logs.records)}
    logs.clear()
    argv = ["--model-path", params["model"], "--device", "cuda", "--speculative-algorithm", "NEXTN"]
    server_args: list[Any] = []

    def default() -> dict[str, Any]:
        server_args.append(resolve(argv, "sm100"))
        return _resolved(server_args[-1])

    out["default"] = _outcome(default)
    out["main_section"] = server_info.main_process_section(server_args[-1]) if server_args else None
    out["scheduler_section"] = server_info.scheduler_section()
    if params.get("missing_model"):
        out["missing_layer"] = _outcome(lambda: _resolved(resolve(
            ["--model-path", params["missing_model"], "--device", "cuda", "--speculative-algorithm", "NEXTN"],
            "sm100")))
    out["strict"] = _outcome(lambda: _resolved(resolve(argv + ["--enable-plugin", "glm_mtp"], "sm100")))
    os.environ.pop("SGLANG_ENABLE_PLUGIN", None)
    if params.get("draft_hooks"):
        from sglang.srt.models.glm4_moe import GlmMoeDsaForCausalLMNextN

        from sglang_glm_mtp.plugin import registration

        out["draft_hooked"] = registration.install_draft_hooks(GlmMoeDsaForCausalLMNextN)
        out["patched_after_draft"] = sorted(HookRegistry._patched)
        out["unavailable_after_draft"] = availability.unavailable()
    out["logs"] = list(logs.records)
    return out


FAMILIES = {"degradation": family_degradation}

if __name__ == "__main__":
    from sglang_mode import scenario_main

    scenario_main(FAMILIES)
