"""SGLang's real server-args resolution for ``sglang-glm-mtp demo``, in a child process.

Why a child: SGLang's imports take ~8 s and leave process-global state (plugins load
once per process, resolution hooks cannot be removed), so the demo starts this process
first, lets it import while the checkpoints are being built, and asks it for one
resolution before and one after the graft.

What is real: SGLang's plugin discovery (``load_plugins()`` finds ``glm_mtp`` through its
entry point, as ``launch_server`` does), ``prepare_server_args`` and ``resolve_once``,
the very call every launcher makes before spawning anything. What is emulated on a
machine without a GPU: the GPU generation (``gpu_emulation.py``, shared with the tests);
the demo says so in its output.

Protocol (``python -m sglang_glm_mtp.demo.resolver GENERATION``; the parent's side is
``sglang_child.py``): one JSON request per stdin line (``{"argv": [...]}``); every reply is
one stdout line starting with ``PREFIX`` (SGLang's own output goes to stderr, which the demo
keeps in a log file).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any

from .gpu_emulation import emulated_platform, error_fields

#: What starts each reply line on stdout (anything else there is not the protocol's).
PREFIX = "DEMO "


def _emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(PREFIX + json.dumps(doc, default=str) + "\n")
    sys.stdout.flush()


def _start(generation: str) -> tuple[dict[str, Any], Any]:
    """Import SGLang, load plugins the normal way; returns the ready message and the platform context factory."""
    started = time.monotonic()
    import importlib.metadata

    import torch

    real_gpu = bool(torch.cuda.is_available())
    from sglang.srt.arg_groups import resolution_hooks
    from sglang.srt.plugins import load_plugins

    load_plugins()
    hooks = resolution_hooks._HOOKS.get("handle_speculative_decoding", [])
    installed = sorted(ep.name for ep in importlib.metadata.entry_points(group="sglang.srt.plugins"))
    ready = {
        "event": "ready", "sglang_version": importlib.metadata.version("sglang"), "real_gpu": real_gpu,
        "gpu_name": torch.cuda.get_device_name(0) if real_gpu else None, "generation": generation,
        "installed_plugins": installed,
        "plugin_active": any(getattr(f, "__module__", "").startswith("sglang_glm_mtp.") for f in hooks),
        "seconds": round(time.monotonic() - started, 2),
    }

    def platform() -> Any:
        return emulated_platform(None if real_gpu else generation)

    return ready, platform


def resolve(argv: list[str], platform: Any) -> dict[str, Any]:
    """``prepare_server_args`` + ``resolve_once`` exactly as launch_server does, then what it decided."""
    started = time.monotonic()
    from sglang.srt.arg_groups.overrides import resolved_view
    from sglang.srt.server_args import prepare_server_args

    from ..plugin.state import plugin_state

    outcome: dict[str, Any] = {"event": "resolved", "argv": argv}
    try:
        with platform():
            server_args = prepare_server_args(argv)
            server_args.resolve_once()
    except Exception as exc:  # the refusal the demo wants to show, or any other launch error
        outcome.update(error_fields(exc))
    else:
        view = resolved_view(server_args)
        outcome.update(
            ok=True, algorithm=view.speculative_algorithm, draft_path=view.speculative_draft_model_path,
            draft_runner=view.speculative_moe_runner_backend, target_runner=view.moe_runner_backend,
            quantization=view.quantization, num_steps=view.speculative_num_steps,
            num_draft_tokens=view.speculative_num_draft_tokens, topk=view.speculative_eagle_topk,
            state=plugin_state(server_args).to_dict(),
            declared_by=[source for source, _ in getattr(server_args, "_resolved_overrides", [])])
    try:
        import psutil

        outcome["children"] = len(psutil.Process().children(recursive=True))
    except ImportError:
        outcome["children"] = None
    outcome["seconds"] = round(time.monotonic() - started, 3)
    return outcome


def main(argv: list[str]) -> int:
    generation = argv[1] if len(argv) > 1 else "sm100"
    try:
        ready, platform = _start(generation)
    except Exception:
        _emit({"event": "failed", "error": traceback.format_exc()})
        return 1
    _emit(ready)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            _emit(resolve(json.loads(line)["argv"], platform))
        except Exception:
            _emit({"event": "failed", "error": traceback.format_exc()})
    return 0


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown: seconds with SGLang's ~7,000 modules loaded, nothing to clean
