"""Scheduler-side scenarios against the real SGLang 0.5.23: draft construction, loading, coverage, precision.

Run as ``python tests/sglang_scenarios.py <family> '<json params>'`` in a fresh process
(one family per process: SGLang's imports cost ~10 s and its state is per process).
The last stdout line is ``RESULT:<json>``; tests/test_plugin_draft.py asserts on it.

What is real and what is faked is listed in tests/sglang_harness.py; in short, only
GPU facts are faked (the GPU generation, the vLLM rotary kernel module, and on request
the CUDA-only DSA indexer fusion switch). Families:

* ``coverage``: complete / missing / partial draft layers, both BF16 expert layouts,
  DeepSeek-V3, fused parameters, weight_loader restoration.
* ``expert_parallel``: two real gloo ranks (``--tp-size 2 --ep-size 2``) building and
  loading the draft; complete and missing-expert layers.
* ``draft_precision``: NVFP4 target with BF16, NVFP4 and FP8 draft layers.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sglang_harness as harness  # noqa: E402  (path set above; this file runs as a script)
import sglang_internals as internals  # noqa: E402

from sglang_glm_mtp.demo.gpu_emulation import error_fields  # noqa: E402

LAYER = 4  # the tiny fixtures' draft layer (num_hidden_layers)


# ----------------------------------------------------------------------------- helpers


def _error(exc: BaseException) -> dict[str, Any]:
    return {**error_fields(exc), "where": "".join(traceback.format_exception(exc)[-12:])}


def _with_env(env: dict[str, str] | None, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    with harness.environment(env):
        return fn()


def _coverage_result() -> dict[str, Any]:
    from sglang_glm_mtp.plugin import coverage

    return dict(coverage.LAST_RESULT)


def _quant_name(config: Any) -> str | None:
    return None if config is None else config.get_name()


def model_facts(model: Any) -> dict[str, Any]:
    """Class, quant configs and methods, expert layout, parameters: what SGLang really built."""
    from sglang_glm_mtp.plugin.coverage import expected_experts

    experts = model.model.decoder.mlp.experts
    methods = {name: type(module.quant_method).__name__ for name, module in model.named_modules()
               if getattr(module, "quant_method", None) is not None}
    return {
        "class": type(model).__name__,
        "outer_quant": _quant_name(getattr(model, "quant_config", None)),
        "decoder_quant": _quant_name(getattr(model.model, "quant_config", None)),
        "decoder_quant_is_outer": getattr(model.model, "quant_config", None) is getattr(model, "quant_config", None),
        "outer_excludes": list(getattr(getattr(model, "quant_config", None), "exclude_modules", None) or []),
        "decoder_excludes": list(getattr(getattr(model.model, "quant_config", None), "exclude_modules", None) or []),
        "decoder_marked_nvfp4_draft": bool(getattr(getattr(model.model, "quant_config", None),
                                                   "_glm_mtp_nvfp4_draft", False)),
        "eh_proj_type": type(model.model.eh_proj).__name__,
        "methods": methods,
        "experts": {
            **internals.expert_facts(experts),
            "expected_experts": sorted(expected_experts(experts)),
        },
        "params": harness.parameter_summary(model),
        "skip_weight_check": sorted(n for n, p in model.named_parameters() if getattr(p, "_skip_weight_check", False)),
    }


def _relation(param: Any, tensor: Any, rank: int, size: int) -> str:
    """How a loaded parameter relates to a checkpoint tensor: full copy, a TP shard, or neither."""
    import torch

    value = param.detach().cpu()
    tensor = tensor.to(value.dtype) if tensor.dtype != value.dtype and tensor.dtype != torch.uint8 else tensor
    if value.shape == tensor.shape and torch.equal(value, tensor):
        return "equal"
    if value.numel() == tensor.numel() == 1 and torch.equal(value.reshape(()), tensor.reshape(())):
        return "equal"  # per-tensor scales: () in the checkpoint, (1,) as a parameter
    for dim in range(tensor.dim()):
        if size > 1 and tensor.shape[dim] % size == 0:
            shard = tensor.chunk(size, dim=dim)[rank]
            if value.shape == shard.shape and torch.equal(value, shard):
                return f"shard(dim={dim})"
    return "mismatch"


def ckpt_name(param_name: str) -> str | None:
    """SGLang's NextN rename rule, backwards: draft parameter -> model.layers.N.* checkpoint name."""
    from sglang_glm_mtp.checkpoint.draft_names import NEXTN_TOP_LEVEL

    if param_name.startswith("model.decoder."):
        return f"model.layers.{LAYER}." + param_name[len("model.decoder."):]
    rest = param_name[len("model."):]
    if any(rest.startswith(spec + ".") for spec in NEXTN_TOP_LEVEL):
        return f"model.layers.{LAYER}." + rest
    return None


def value_checks(model: Any, model_dir: str) -> dict[str, Any]:
    """Loaded values against the checkpoint, fused parameters by their parts, experts by layout."""
    import torch

    ck = harness.checkpoint_tensors(model_dir, f"model.layers.{LAYER}.")
    params = dict(model.named_parameters())
    experts = model.model.decoder.mlp.experts
    tp_rank, tp_size = _tp()
    out: dict[str, Any] = {"direct": {}, "expert_layout": {}, "w2": {}}
    for name, param in params.items():
        if ".experts.w" in name or "fused_qkv_a_proj_with_mqa" in name or "wk_weights_proj" in name:
            continue
        source = ckpt_name(name)
        if "gate_up_proj" in name and source and name.endswith(".weight"):
            parts = [ck.get(source.replace("gate_up_proj", part)) for part in ("gate_proj", "up_proj")]
            if all(part is not None for part in parts):  # column-parallel: [gate_r, up_r] on rank r
                fused = torch.cat([part.chunk(tp_size)[tp_rank] for part in parts])
                out["direct"][name] = _relation(param, fused, 0, 1)
            continue
        if source in ck:
            out["direct"][name] = _relation(param, ck[source], tp_rank, tp_size)
    attn = f"model.layers.{LAYER}.self_attn."
    fused_qkv = params.get("model.decoder.self_attn.fused_qkv_a_proj_with_mqa.weight")
    if fused_qkv is not None and attn + "q_a_proj.weight" in ck:
        out["direct"]["fused_qkv_a = cat(q_a, kv_a)"] = _relation(
            fused_qkv, torch.cat([ck[attn + "q_a_proj.weight"], ck[attn + "kv_a_proj_with_mqa.weight"]]), 0, 1)
    wkw = params.get("model.decoder.self_attn.indexer.wk_weights_proj.weight")
    if wkw is not None and attn + "indexer.wk.weight" in ck:
        out["direct"]["wk_weights_proj = cat(wk, weights_proj)"] = _relation(
            wkw, torch.cat([ck[attn + "indexer.wk.weight"], ck[attn + "indexer.weights_proj.weight"]]), 0, 1)
    for suffix in ("weight", "bias"):  # GLM-4.5 (no MLA): q, k, v fused into one qkv_proj, with biases
        fused = params.get(f"model.decoder.self_attn.qkv_proj.{suffix}")
        parts = [ck.get(f"{attn}{name}_proj.{suffix}") for name in "qkv"]
        if fused is not None and all(part is not None for part in parts):
            out["direct"][f"qkv_proj.{suffix} = cat(q, k, v)"] = _relation(fused, torch.cat(parts), 0, 1)
    # experts: local slot -> global expert id (EP), shared expert fused at the end
    local_routed, start = internals.local_routed_slots(experts)
    w13, w2 = params["model.decoder.mlp.experts.w13_weight"], params["model.decoder.mlp.experts.w2_weight"]
    for slot in range(int(experts.num_local_experts)):
        if slot < local_routed:
            label, src = str(start + slot), f"model.layers.{LAYER}.mlp.experts.{start + slot}."
        else:
            label, src = "shared", f"model.layers.{LAYER}.mlp.shared_experts."
        gate, up, down = (ck.get(src + f"{p}_proj.weight") for p in ("gate", "up", "down"))
        if gate is None or up is None:
            out["expert_layout"][label] = "not in checkpoint"
            continue
        value = w13[slot].detach()
        if value.shape[0] != gate.shape[0] + up.shape[0]:
            out["expert_layout"][label] = f"padded {tuple(value.shape)}"
        elif torch.equal(value, torch.cat([gate, up]).to(value.dtype)):
            out["expert_layout"][label] = "gate,up"
        elif torch.equal(value, torch.cat([up, gate]).to(value.dtype)):
            out["expert_layout"][label] = "up,gate"
        else:
            out["expert_layout"][label] = "mismatch"
        out["w2"][label] = _relation(w2[slot], down, 0, 1) if down is not None else "not in checkpoint"
    return out


def _tp() -> tuple[int, int]:
    from sglang.srt.runtime_context import get_parallel

    parallel = get_parallel()
    return int(parallel.tp_rank), int(parallel.tp_size)


def run_case(case: dict[str, Any], logs: harness.LogCapture, *, values: bool = True,
             build_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build (and load) one draft; record outcome, coverage, what SGLang built and the loaded values."""
    from sglang_glm_mtp.plugin import coverage

    logs.clear()
    coverage.LAST_RESULT.clear()
    snapshots: dict[str, Any] = {}
    holder: dict[str, Any] = {}

    def before_load(model: Any) -> None:
        holder["model"] = model
        snapshots["before"] = harness.loader_attributes(model)

    def build() -> dict[str, Any]:
        started = time.perf_counter()
        want_snapshot = case.get("snapshot_loaders", False)
        try:
            model = harness.build_draft(
                case["model"], case.get("argv", []), generation=case.get("generation", "sm90"),
                via="steps" if want_snapshot or not case.get("postprocess", True) else "get_model",
                postprocess=case.get("postprocess", True), before_load=before_load if want_snapshot else None,
                build_on_platform=case.get("build_on_platform", False),
                drop_preflight_state=case.get("drop_preflight_state", False), **(build_kwargs or {}))
            result: dict[str, Any] = {"ok": True, "facts": model_facts(model)}
            if values:
                result["values"] = value_checks(model, case["model"])
        except Exception as exc:  # the test asserts on what SGLang / the plugin raised
            model = holder.get("model")
            result = _error(exc)
        if "before" in snapshots and model is not None:
            after = harness.loader_attributes(model)
            result["loaders_restored"] = after == snapshots["before"]
            result["loaders_changed"] = sorted(n for n in after if after[n] != snapshots["before"].get(n))
            result["loaders_total"] = len(after)
            result["loaders_own"] = sum(1 for own, _ in after.values() if own)
        result["seconds"] = round(time.perf_counter() - started, 2)
        return result

    with _stock_quant_config(case.get("stock_quant_config", False)), _failing_view(case.get("fail_resolved_view")):
        outcome = _with_env(case.get("env"), build)
    outcome["coverage"] = _coverage_result()
    outcome["spec"] = harness.resolved_spec()
    outcome["logs"] = logs.messages("glm_mtp")
    return outcome


@contextlib.contextmanager
def _failing_view(active: bool | None) -> Iterator[None]:
    """Fault injection: SGLang's ``resolved_view`` raises when the plugin calls it, as a renamed or broken SGLang
    internal would; SGLang's own calls (publication) and the published ServerArgs stay real."""
    if not active:
        yield
        return
    from sglang.srt.arg_groups import overrides

    real = overrides.resolved_view

    def broken(*args: Any, **kwargs: Any) -> Any:
        if sys._getframe(1).f_globals.get("__name__", "").startswith("sglang_glm_mtp."):
            raise RuntimeError("simulated: resolved_view failed")
        return real(*args, **kwargs)

    overrides.resolved_view = broken
    try:
        yield
    finally:
        overrides.resolved_view = real


@contextlib.contextmanager
def _stock_quant_config(active: bool) -> Iterator[None]:
    """Control case: SGLang's own ``_resolve_nextn_quant_config`` for this build (the plugin's hook bypassed).

    The plugin installs its hooks lazily; installing them first (idempotent) and putting
    the unwrapped original back on both NextN classes for the duration of the build shows
    what stock SGLang 0.5.23 does with the same checkpoint.
    """
    if not active:
        yield
        return
    from sglang_glm_mtp.plugin import registration

    registration.install_draft_hooks()  # idempotent; makes sure the wrapper exists to bypass
    from sglang.srt.models.deepseek_nextn import DeepseekV3ForCausalLMNextN
    from sglang.srt.models.glm4_moe import GlmMoeDsaForCausalLMNextN

    saved = {cls: cls.__dict__["_resolve_nextn_quant_config"]
             for cls in (GlmMoeDsaForCausalLMNextN, DeepseekV3ForCausalLMNextN)}
    for cls, wrapped in saved.items():
        setattr(cls, "_resolve_nextn_quant_config", getattr(wrapped, "__wrapped__", wrapped))
    try:
        yield
    finally:
        for cls, wrapped in saved.items():
            setattr(cls, "_resolve_nextn_quant_config", wrapped)


def _prologue(generation: str = "sm90") -> harness.LogCapture:
    harness.install_shims(generation)
    harness.load_plugins_real()
    return harness.capture_logs("sglang_glm_mtp")


# ----------------------------------------------------------------------------- families


def family_coverage(params: dict[str, Any]) -> dict[str, Any]:
    hook_logs = harness.capture_logs("sglang.srt.plugins.hook_registry")
    logs = _prologue()
    result: dict[str, Any] = {"plugins": harness.load_plugins_real(), "cases": {}}
    for case in params["cases"]:
        if case.get("emulate_cuda_indexer_fusion"):
            harness.emulate_cuda_indexer_fusion()  # process-global: such cases go last
        result["cases"][case["name"]] = run_case(case, logs)
    from sglang.srt.plugins.hook_registry import HookRegistry

    result["patched_after"] = sorted(HookRegistry._patched)
    result["hook_logs"] = [m for m in hook_logs.messages("Applied") if "NextN" in m]
    return result


def family_draft_precision(params: dict[str, Any]) -> dict[str, Any]:
    logs = _prologue(params.get("generation", "sm100"))
    result: dict[str, Any] = {"cases": {}}
    for case in params["cases"]:
        result["cases"][case["name"]] = run_case(case, logs)
    result["exclusion"] = _exclusion_facts(params.get("exclusion_model"))
    result["shield"] = _shield_facts()
    result["quant_config_decisions"] = _quant_config_decisions()
    return result


def _quant_config_decisions() -> dict[str, Any]:
    """The plugin's ``_resolve_nextn_quant_config`` hook on SGLang's real quant configs, per target config and draft
    storage, the storage coming from the published preflight record as in a scheduler (FP8 and ModelOpt FP8
    targets have no tiny checkpoint to build; their configs and the decision are real)."""
    import logging
    import types

    from sglang.srt.layers.quantization.fp8 import Fp8Config
    from sglang.srt.layers.quantization.modelopt_quant import ModelOptFp4Config, ModelOptFp8Config
    from sglang.srt.runtime_context import get_context

    from sglang_glm_mtp.plugin.draft_precision import resolve_nextn_quant_config
    from sglang_glm_mtp.plugin.preflight import PreflightResult
    from sglang_glm_mtp.plugin.state import PluginState, plugin_state, set_plugin_state

    targets = {
        "fp8": lambda: Fp8Config(is_checkpoint_fp8_serialized=True, weight_block_size=[128, 128]),
        "modelopt_fp8": lambda: ModelOptFp8Config.from_config({"quant_algo": "FP8"}),
        "modelopt_fp4": lambda: ModelOptFp4Config.from_config(internals.modelopt_fp4_config(["lm_head"])),
    }
    server_args = get_context().server_args
    saved = plugin_state(server_args)
    logs = harness.capture_logs("sglang_glm_mtp.plugin.draft_precision")
    out: dict[str, Any] = {}
    try:
        for target_name, make in targets.items():
            for storage in ("bf16", "fp8", "nvfp4"):
                set_plugin_state(server_args, PluginState(preflight=PreflightResult(
                    checkpoint="x", status="ready", architecture="", draft_layer=LAYER, found_tensors=35,
                    expected_tensors=35, draft_precision=storage, target_precision=None, draft_shards=["x"])))
                target = make()
                logs.clear()
                try:
                    resolved = resolve_nextn_quant_config(lambda model, config, quant: quant, None,
                                                          types.SimpleNamespace(num_hidden_layers=LAYER), target)
                except Exception as exc:  # the plugin refuses what this SGLang cannot build (issue 20)
                    out[f"{target_name}/{storage}"] = {"target_name": target.get_name(), "refused": _error(exc)}
                    continue
                out[f"{target_name}/{storage}"] = {
                    "target_name": target.get_name(), "same_object": resolved is target,
                    "result": None if resolved is None else type(resolved).__name__,
                    "result_name": None if resolved is None else resolved.get_name(),
                    "block": getattr(resolved, "weight_block_size", None),
                    "errors": [m for n, lvl, m in logs.records if lvl == "ERROR"]}
    finally:
        set_plugin_state(server_args, saved)
        logging.getLogger("sglang_glm_mtp.plugin.draft_precision").removeHandler(logs)
    return out


def _exclusion_facts(model_dir: str | None) -> dict[str, Any]:
    """Per draft module: is it excluded under the target's NVFP4 config and under the plugin's draft config?"""
    if not model_dir:
        return {}
    from sglang.srt.layers.quantization.modelopt_quant import ModelOptFp4Config
    from sglang.srt.layers.quantization.utils import is_layer_skipped

    from sglang_glm_mtp.plugin.draft_precision import remap_excludes

    quant = json.loads((Path(model_dir) / "hf_quant_config.json").read_text())
    target = ModelOptFp4Config.from_config(quant)
    patterns = remap_excludes(list(target.exclude_modules), LAYER)
    prefixes = ["model.decoder.self_attn.fused_qkv_a_proj_with_mqa", "model.decoder.self_attn.q_b_proj",
                "model.decoder.self_attn.kv_b_proj", "model.decoder.self_attn.o_proj",
                "model.decoder.self_attn.indexer.wq_b", "model.decoder.mlp.gate", "model.decoder.mlp.experts",
                "model.decoder.mlp.shared_experts.gate_up_proj", "model.eh_proj", "model.shared_head.norm"]

    def excluded(config_patterns: list[str], prefix: str) -> bool:
        probe = ModelOptFp4Config.from_config(quant)
        probe.exclude_modules = config_patterns
        return bool(is_layer_skipped(prefix, probe.exclude_modules, probe.packed_modules_mapping or {})
                    or probe.is_layer_excluded(prefix))

    return {"target_patterns": list(target.exclude_modules), "draft_patterns": patterns,
            "by_prefix": {p: {"target": excluded(list(target.exclude_modules), p), "draft": excluded(patterns, p)}
                          for p in prefixes}}


def _shield_facts() -> dict[str, Any]:
    """The NVFP4 shield hides the name from DeepseekModelNextN.__init__ only; every other caller sees modelopt_fp4."""
    from sglang.srt.layers.quantization.modelopt_quant import ModelOptFp4Config

    from sglang_glm_mtp.plugin.draft_precision import nvfp4_draft_config

    target = ModelOptFp4Config.from_config(internals.modelopt_fp4_config(["lm_head", f"model.layers.{LAYER}.self_attn*"]))
    draft = nvfp4_draft_config(target, LAYER)
    return {"draft_name_elsewhere": draft.get_name(), "target_name": target.get_name(),
            "draft_is_copy": draft is not target, "target_excludes_untouched": list(target.exclude_modules),
            "draft_excludes": list(draft.exclude_modules), "draft_class": type(draft).__name__}


def family_expert_parallel(params: dict[str, Any]) -> dict[str, Any]:
    """Two real ranks over gloo: each builds and loads the draft with --tp-size 2 --ep-size 2."""
    import multiprocessing as mp
    import tempfile

    world = int(params.get("world_size", 2))
    port = harness.free_port()
    # SGLang's CPU runtime binds each rank's OpenMP threads; one NUMA node here, so say which core each rank gets.
    cores = os.cpu_count() or 1
    os.environ.setdefault("SGLANG_CPU_OMP_THREADS_BIND", "|".join(str(r % cores) for r in range(world)))
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        procs = [ctx.Process(target=_ep_rank, args=(rank, port, params, tmp), daemon=False)
                 for rank in range(world)]
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + float(params.get("timeout", 240))
        for proc in procs:
            proc.join(max(1.0, deadline - time.monotonic()))
        exit_codes = {}
        for rank, proc in enumerate(procs):
            if proc.is_alive():
                proc.terminate()  # only our own children
                proc.join(10)
            exit_codes[rank] = proc.exitcode
        ranks = {}
        for rank in range(world):
            path = Path(tmp) / f"rank{rank}.json"
            ranks[rank] = json.loads(path.read_text()) if path.exists() else {"crashed": "no result file"}
    return {"world_size": world, "exit_codes": exit_codes, "ranks": ranks}


def _ep_rank(rank: int, port: int, params: dict[str, Any], out_dir: str) -> None:
    """One scheduler-like rank: its own SGLang import, plugins, publish with its world rank, draft builds."""
    payload: dict[str, Any]
    try:
        logs = _prologue()
        payload = {"cases": {}}
        for case in params["cases"]:
            payload["cases"][case["name"]] = run_case(case, logs, build_kwargs={"world_rank": rank, "port": port})
            from sglang.srt.runtime_context import get_parallel

            parallel = get_parallel()
            payload["cases"][case["name"]]["parallel"] = {
                "tp_rank": parallel.tp_rank, "tp_size": parallel.tp_size, "moe_ep_rank": parallel.moe_ep_rank,
                "moe_ep_size": parallel.moe_ep_size, "moe_tp_size": parallel.moe_tp_size}
        import torch.distributed as dist

        payload["backend"] = dist.get_backend() if dist.is_initialized() else None
        payload["world"] = dist.get_world_size() if dist.is_initialized() else None
    except Exception:
        payload = {"crashed": traceback.format_exc()}
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(payload, default=str))


FAMILIES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "coverage": family_coverage,
    "expert_parallel": family_expert_parallel,
    "draft_precision": family_draft_precision,
}

if __name__ == "__main__":
    from sglang_mode import scenario_main

    scenario_main(FAMILIES)
