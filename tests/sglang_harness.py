"""Build SGLang 0.5.23's real NextN draft on a CPU-only box, the way a scheduler does.

Used only *inside* the scenario subprocesses (``tests/sglang_scenarios.py``), never
imported by pytest itself: SGLang's imports cost ~8 s and leave process-global state
(plugins load once, ``init_parallel_runtime`` runs once, hooks cannot be removed).

Real: plugin discovery (``SGLANG_PLUGINS=glm_mtp`` + ``load_plugins()`` through the
installed entry point), ``prepare_server_args`` + resolution (the plugin's resolution
hook included), ``publish``, gloo process groups, ``initialize_moe_config``, the three
speculative contexts the draft worker builds under, ``ModelConfig(is_draft_model=True)``,
SGLang's model loader (``get_model``, or its own steps ``_initialize_model`` +
``load_weights_only`` when post-processing needs a GPU), and therefore the plugin's
lazy hooks installed from ``get_model_architecture``.

Faked, because they need a GPU: the GPU generation during resolution (SGLang's
``override_platform`` test primitive plus ``torch.cuda.get_device_capability``), the
vLLM rotary kernel module (imported at construction, only called in forward), NCCL
for multi-rank groups (made unavailable, so groups are gloo only), and, on request,
the CUDA-only DSA indexer fusion switch (``emulate_cuda_indexer_fusion``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import socket
import sys
import types
from typing import Any, Callable, Iterator

from sglang_glm_mtp.demo.gpu_emulation import emulate_device_capability, emulated_platform

PLUGIN = "glm_mtp"
_state: dict[str, Any] = {"generation": None, "parallel": False, "plugins": None}


# ----------------------------------------------------------------------------- shims (GPU-only facts)


def install_shims(generation: str = "sm90") -> None:
    """torch's capability probe (called unconditionally for DSA models) and the vLLM rotary module."""
    emulate_device_capability(generation)
    _state["generation"] = generation
    if "vllm._custom_ops" not in sys.modules:
        vllm = types.ModuleType("vllm")
        ops = types.ModuleType("vllm._custom_ops")

        def rotary_embedding(*args: Any, **kwargs: Any) -> None:
            raise NotImplementedError("vllm stub: the rotary kernel runs only in a forward pass (needs a GPU)")

        ops.rotary_embedding = rotary_embedding
        vllm._custom_ops = ops
        sys.modules.update({"vllm": vllm, "vllm._custom_ops": ops})


def emulate_quark_capability(generation: str) -> None:
    """GPU fact: Quark's scheme check asks ``sglang.srt.utils.get_device_capability`` (``(None, None)`` on a CPU)
    for the generation before it builds an FP8 or MXFP4 linear; answer as ``generation``."""
    from sglang.srt.layers.quantization.quark import quark

    from sglang_glm_mtp.demo.gpu_emulation import GENERATIONS

    capability = GENERATIONS[generation]["device_capability"]
    quark.get_device_capability = lambda *a, **k: capability


def emulate_cuda_indexer_fusion(sm_count: int = 132) -> None:
    """Let the DSA indexer take its CUDA branch: one bf16 ``wk_weights_proj`` instead of wk + weights_proj.

    ``Indexer.__init__`` decides on the module global ``_is_cuda`` (computed at import)
    and then sizes a schedule from the SM count; both are GPU facts. Everything the
    loader does with the fused parameter (``_load_fused_indexer_wk``) stays real.
    """
    from sglang.srt.layers.attention.dsa import dsa_indexer

    dsa_indexer._is_cuda = True
    dsa_indexer.resolve_num_sms = lambda: sm_count


# ----------------------------------------------------------------------------- plugin + logs


def load_plugins_real() -> dict[str, Any]:
    """Discover ``glm_mtp`` through its installed entry point, exactly as every SGLang process does."""
    if _state["plugins"] is not None:
        return _state["plugins"]
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="sglang.srt.plugins")}
    if PLUGIN not in eps:
        raise RuntimeError(f"entry point {PLUGIN} not installed (pip install -e .); found {sorted(eps)}")
    os.environ.setdefault("SGLANG_PLUGINS", PLUGIN)
    from sglang.srt.plugins import load_plugins
    from sglang.srt.plugins.hook_registry import HookRegistry

    load_plugins()
    _state["plugins"] = {"entry_point": eps[PLUGIN], "patched": sorted(HookRegistry._patched),
                         "glm4_moe_imported_by_load_plugins": "sglang.srt.models.glm4_moe" in sys.modules}
    return _state["plugins"]


class LogCapture(logging.Handler):
    """Collects the plugin's log lines; attached below the root, so SGLang's basicConfig(force=True) keeps it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[str, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.name, record.levelname, record.getMessage()))

    def messages(self, contains: str = "") -> list[str]:
        return [m for _, _, m in self.records if contains in m]

    def clear(self) -> None:
        self.records.clear()


def capture_logs(*names: str) -> LogCapture:
    handler = LogCapture()
    for name in names or ("sglang_glm_mtp",):
        log = logging.getLogger(name)
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)
    return handler


# ----------------------------------------------------------------------------- server args + runtime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare_and_publish(argv: list[str], *, generation: str | None = "sm90", world_rank: int = 0) -> Any:
    """Parse and resolve as the main process does, then publish as a scheduler does (last publish wins)."""
    from sglang.srt.runtime_context import SpawnRanks, publish
    from sglang.srt.server_args import prepare_server_args

    with emulated_platform(generation):
        server_args = prepare_server_args(list(argv))
        server_args.resolve_once()
    publish(server_args, role="scheduler", ranks=SpawnRanks(world_rank=world_rank, gpu_id=world_rank))
    return server_args


def init_parallel_once(server_args: Any, *, port: int | None = None) -> None:
    """gloo groups for the published widths; SGLang allows this once per process.

    With more than one rank on a single NUMA node SGLang's CPU path wants explicit
    per-rank core binding (``SGLANG_CPU_OMP_THREADS_BIND``, e.g. ``"0|1"``); the caller
    sets it before spawning ranks.
    """
    if _state["parallel"] is True:
        return
    if _state["parallel"]:
        raise RuntimeError(f"init_parallel_runtime failed earlier in this process: {_state['parallel']}")
    from sglang.srt.distributed.bootstrap import init_parallel_runtime

    if int(getattr(server_args, "tp_size", 1) or 1) > 1:
        # torch's CUDA wheel ships libnccl, so SGLang would build a PyNccl communicator on a
        # CUDA device for every group of 2+ ranks; NCCL needs a GPU. Pointing SGLang's own
        # override at nothing takes its documented "no NCCL library" path (gloo only).
        os.environ.setdefault("SGLANG_NCCL_SO_PATH", "/nonexistent/no-gpu/libnccl.so.2")
    try:
        init_parallel_runtime(server_args=server_args, device="cpu", dist_port=port or free_port())
    except Exception as exc:  # SGLang refuses a second call; keep the first cause instead
        _state["parallel"] = f"{type(exc).__name__}: {exc}"
        raise
    _state["parallel"] = True


def draft_argv(model_dir: str, extra_argv: list[str] | tuple[str, ...] = ()) -> list[str]:
    return ["--model-path", str(model_dir), "--speculative-algorithm", "NEXTN", "--device", "cuda", *extra_argv]


def build_draft(model_dir: str, extra_argv: list[str] | tuple[str, ...] = (), *, generation: str | None = "sm90",
                via: str = "get_model", postprocess: bool = True, world_rank: int = 0, port: int | None = None,
                before_load: Callable[[Any], None] | None = None, build_on_platform: bool = False,
                drop_preflight_state: bool = False) -> Any:
    """The draft model, constructed and loaded as ``EagleDraftWorker`` -> ``ModelRunner.load_model`` does.

    ``via="get_model"``: SGLang's ``get_model`` end to end (works for BF16 drafts on CPU).
    ``via="steps"``: the same steps ``DefaultModelLoader.load_model`` runs (quantization
    config, ``_initialize_model``, ``load_weights_only`` over ``_get_all_weights``, then
    ``postprocess_weights`` if ``postprocess``); needed to stop before NVFP4
    post-processing (``.cuda()`` calls, reference Q3.7) or to look at the model
    between construction and load (``before_load``).
    ``build_on_platform``: also construct under the emulated GPU generation (NVFP4 MoE
    methods refuse a non-Blackwell platform in ``__init__``; on CPU ``is_cuda()`` is False,
    so even the SM80-SM90 marlin fallback is not taken).
    ``drop_preflight_state``: the scheduler gets a record without the main process's
    preflight result (as when the main process ran another SGLang or the plugin there
    could not read the checkpoint), so the draft precision comes from its own header read.
    Raises whatever SGLang or the plugin raises.
    """
    import torch
    from sglang.srt.configs.device_config import DeviceConfig
    from sglang.srt.configs.load_config import LoadConfig
    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.layers.moe.utils import (draft_model_build_scope, initialize_moe_config,
                                             speculative_moe_a2a_backend_context, speculative_moe_backend_context)
    from sglang.srt.runtime_context import get_model, get_spec

    server_args = prepare_and_publish(draft_argv(model_dir, extra_argv), generation=generation, world_rank=world_rank)
    if drop_preflight_state:
        from dataclasses import replace

        from sglang.srt.runtime_context import get_context

        from sglang_glm_mtp.plugin.state import plugin_state, set_plugin_state

        published = get_context().server_args
        set_plugin_state(published, replace(plugin_state(published), preflight=None))
    init_parallel_once(server_args, port=port)
    initialize_moe_config()  # scheduler.py does this after publish; it carries the speculative MoE backend
    model_config = ModelConfig.from_server_args(server_args, model_path=get_spec().speculative_draft_model_path,
                                                model_revision=get_spec().speculative_draft_model_revision,
                                                is_draft_model=True)
    load_config = LoadConfig(load_format=get_model().load_format)
    device = torch.device("cpu")
    platform = emulated_platform(generation if build_on_platform else None)
    with platform, speculative_moe_backend_context(), speculative_moe_a2a_backend_context(), draft_model_build_scope():
        if via == "get_model" and before_load is None and postprocess:
            from sglang.srt.model_loader import get_model as load_model

            return load_model(model_config=model_config, load_config=load_config,
                              device_config=DeviceConfig("cpu", 0))
        from sglang.srt.model_loader.loader import _get_quantization_config, _initialize_model, get_model_loader
        from sglang.srt.model_loader.utils import set_default_torch_dtype

        loader = get_model_loader(load_config, model_config)
        quant_config = _get_quantization_config(model_config, loader.load_config)
        with set_default_torch_dtype(model_config.dtype):
            with device:
                model = _initialize_model(model_config, loader.load_config, quant_config)
            if before_load is not None:
                before_load(model)
            loader.load_weights_only(model, loader._get_all_weights(model_config, model), device)
            if postprocess:
                loader.postprocess_weights(model, device)
    return model


def resolved_spec() -> dict[str, Any]:
    """What the draft worker reads: the published speculative MoE settings."""
    from sglang.srt.runtime_context import get_spec

    spec = get_spec()
    return {"speculative_moe_runner_backend": spec.speculative_moe_runner_backend,
            "speculative_moe_a2a_backend": spec.speculative_moe_a2a_backend,
            "speculative_draft_model_quantization": getattr(spec, "speculative_draft_model_quantization", None)}


# ----------------------------------------------------------------------------- reading results


def checkpoint_tensors(model_dir: str, prefix: str) -> dict[str, Any]:
    """Every tensor under ``prefix`` across the checkpoint's shards (to compare loaded values)."""
    from pathlib import Path

    from safetensors import safe_open

    out: dict[str, Any] = {}
    for shard in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as handle:
            for name in handle.keys():
                if name.startswith(prefix):
                    out[name] = handle.get_tensor(name)
    return out


def loader_attributes(model: Any) -> dict[str, tuple[bool, int]]:
    """Per parameter: is ``weight_loader`` an instance attribute, and the identity of what it resolves to."""
    out: dict[str, tuple[bool, int]] = {}
    for name, param in model.named_parameters():
        own = "weight_loader" in param.__dict__ or "_weight_loader" in param.__dict__
        target = param.__dict__.get("weight_loader", param.__dict__.get("_weight_loader"))
        out[name] = (own, id(target) if own else 0)
    return out


def parameter_summary(model: Any) -> dict[str, dict[str, Any]]:
    return {name: {"shape": list(p.shape), "dtype": str(p.dtype).replace("torch.", "")}
            for name, p in model.named_parameters()}


@contextlib.contextmanager
def environment(env: dict[str, str] | None) -> Iterator[None]:
    """``env`` set for the block; afterwards every variable is as before (unset stays unset)."""
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
