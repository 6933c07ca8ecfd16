"""Post-load coverage: every draft parameter must have received a checkpoint tensor.

SGLang 0.5.23's NextN loader ``continue``s past every name outside ``model.layers.N``
and never checks what it did not load, so a missing or partial layer leaves
``torch.empty`` memory in the draft. Here every parameter's ``weight_loader`` is wrapped
for the duration of the draft's ``load_weights`` and the calls are recorded as
``(parameter, shard_id, expert_id)``; afterwards any parameter that got nothing is an error.

Legitimately unloaded parameters are not flagged: embed_tokens and lm_head (shared
from the target), ``_skip_weight_check`` parameters (kv-cache scales), quant-method
derived parameters (NVFP4 ``*_blockscale_swizzled``), the indexer's
fused ``wk_weights_proj`` (written without a weight_loader; covered when both of its
sources were streamed). Fused parameters are judged by their shards: gate/up into
``gate_up_proj`` and expert ``w13``, q_a + kv_a into ``fused_qkv_a_proj_with_mqa`` (one
call), shared experts fused in as expert ``n_routed_experts``. Under expert parallelism
SGLang calls the MoE loader for every global expert before it drops non-local ones;
only the experts this rank owns are expected, so a missing expert is reported by the
rank that owns it (its scheduler's failure ends the launch). TP shards every parameter
but calls its loader with the full tensor; PP builds the draft on one stage with all
its parameters.
"""

from __future__ import annotations

import inspect
import logging
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator

from . import settings

logger = logging.getLogger(__name__)

#: Draft parameters that no checkpoint tensor feeds: the target's are shared in later.
SHARED_FROM_TARGET = ("model.embed_tokens.", "lm_head.")
#: Fused parameter -> shard ids it needs (SGLang's stacked_params_mapping).
STACKED_SHARDS = {"gate_up_proj": {0, 1}, "qkv_proj": {"q", "k", "v"}}
#: Written by copy_() from these two checkpoint tensors, never through a weight_loader.
FUSED_WITHOUT_LOADER = {"indexer.wk_weights_proj.": ("indexer.wk.", "indexer.weights_proj.")}
#: Created by a quant method from other parameters and rebuilt in process_weights_after_loading;
#: no checkpoint tensor feeds them (ModelOpt NVFP4 MoE on non-TRTLLM runners: cutlass, marlin, ...).
DERIVED_SUFFIXES = ("_blockscale_swizzled",)
FIRST_NAMES = 10

LAST_RESULT: dict[str, Any] = {}


class DraftWeightsNotLoadedError(RuntimeError):
    """Draft parameters that received no checkpoint tensor; the draft would run on uninitialised memory."""


@dataclass
class CoverageResult:
    layer_prefix: str
    streamed_layer_tensors: int
    parameters: int
    covered: int
    uncovered: list[str] = field(default_factory=list)
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Recorder:
    """Wraps weight loaders; records what reached which parameter (thread-safe: loaders may run in a pool)."""

    def __init__(self, model: Any, layer_prefix: str) -> None:
        self.model = model
        self.layer_prefix = layer_prefix
        self.calls: dict[str, set[tuple[Any, Any]]] = {}
        self.streamed: set[str] = set()
        self._lock = threading.Lock()
        self._saved: list[tuple[Any, str, bool, Any]] = []

    def stream(self, weights: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
        for name, tensor in weights:
            if name.startswith(self.layer_prefix):
                self.streamed.add(name)
            yield name, tensor

    def install(self) -> None:
        from sglang.srt.model_loader.weight_utils import default_weight_loader

        for name, param in self.model.named_parameters():
            slot = _loader_slot(param)
            had = slot in param.__dict__
            if slot == "_weight_loader" and not had:
                continue  # SGLang itself could not call this parameter's loader
            original = param.__dict__.get(slot, default_weight_loader)
            self._saved.append((param, slot, had, original))
            setattr(param, slot, self._recording(name, original))

    def restore(self) -> None:
        """Later weight updates (RL sync) reuse these attributes: leave them exactly as found."""
        for param, slot, had, original in self._saved:
            if had:
                setattr(param, slot, original)
            else:
                param.__dict__.pop(slot, None)
        self._saved.clear()

    def _recording(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def weight_loader(param: Any, loaded_weight: Any, *args: Any, **kwargs: Any) -> Any:
            shard, expert = _shard_and_expert(args, kwargs)
            with self._lock:
                self.calls.setdefault(name, set()).add((shard, expert))
            return original(param, loaded_weight, *args, **kwargs)

        return weight_loader


def _loader_slot(param: Any) -> str:
    """Where a parameter keeps its loader.

    Plain parameters carry a ``weight_loader`` attribute (``set_weight_attrs``);
    SGLang's ``BasevLLMParameter`` family (quantized linears: ModelOpt NVFP4/FP8 weights
    and scales) exposes ``weight_loader`` as a read-only property over ``_weight_loader``.
    """
    if isinstance(inspect.getattr_static(type(param), "weight_loader", None), property):
        return "_weight_loader"
    return "weight_loader"


def _shard_and_expert(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """The three loader call shapes SGLang uses.

    ``FusedMoE.weight_loader(param, w, weight_name, shard_id=, expert_id=)`` (or all
    positional), stacked linears ``loader(param, w, shard_id)``, ``default_weight_loader(param, w)``.
    """
    if "shard_id" in kwargs:
        return kwargs["shard_id"], kwargs.get("expert_id")
    if len(args) >= 3:
        return args[1], args[2]
    if len(args) == 1:
        return args[0], None
    return None, None


def expected_experts(moe: Any) -> set[int]:
    """Global expert ids whose weights this rank keeps (all of them without EP)."""
    total = int(getattr(moe, "num_experts", 0))
    mapper = getattr(moe, "_map_global_expert_id_to_local_expert_id", None)
    if mapper is None or getattr(moe, "uses_expert_location", False):
        return set(range(total))
    return {e for e in range(total) if mapper(e) != -1}


def uncovered_parameters(model: Any, recorder: _Recorder) -> tuple[int, list[str]]:
    """Names of parameters (with the missing shard/expert when partial) that got no tensor."""
    moe_modules = {name: module for name, module in model.named_modules()
                   if hasattr(module, "_map_global_expert_id_to_local_expert_id")}
    streamed_suffixes = {n[len(recorder.layer_prefix):] for n in recorder.streamed}
    total, missing = 0, []
    for name, param in model.named_parameters():
        if (name.startswith(SHARED_FROM_TARGET) or name.endswith(DERIVED_SUFFIXES)
                or getattr(param, "_skip_weight_check", False)):
            continue
        total += 1
        calls = recorder.calls.get(name, set())
        fused = next((srcs for key, srcs in FUSED_WITHOUT_LOADER.items() if key in name), None)
        if fused is not None:
            if not all(any(src in s for s in streamed_suffixes) for src in fused):
                missing.append(name)
            continue
        owner = name.rsplit(".", 1)[0]
        if owner in moe_modules and name.rsplit(".", 1)[1].startswith(("w13_", "w2_")):
            shards = ("w1", "w3") if name.rsplit(".", 1)[1].startswith("w13_") else ("w2",)
            got = {(s, e) for s, e in calls}
            wanted = (set(range(int(moe_modules[owner].num_experts)))
                      if getattr(param, "_sglang_require_global_experts", False)  # kept for every expert
                      else expected_experts(moe_modules[owner]))
            gaps = sorted(e for e in wanted if not all((s, e) in got for s in shards))
            if gaps:
                missing.append(f"{name} (experts {_ranges(gaps)})")
            continue
        if not calls:
            missing.append(name)
            continue
        leaf = owner.rsplit(".", 1)[-1]
        needed = STACKED_SHARDS.get(leaf)
        if needed is not None:
            absent = needed - {s for s, _ in calls}
            if absent:
                missing.append(f"{name} (shards {sorted(map(str, absent))})")
    return total, missing


def _ranges(ids: list[int]) -> str:
    if len(ids) <= 6:
        return ", ".join(map(str, ids))
    return f"{', '.join(map(str, ids[:5]))}, … ({len(ids)} in all)"


def load_weights_with_coverage(original_fn: Callable[..., Any], model: Any, weights: Iterable[tuple[str, Any]],
                               *args: Any, **kwargs: Any) -> Any:
    """AROUND hook on ``<NextN class>.load_weights``; always calls the original exactly once."""
    if getattr(model, "_glm_mtp_recording", False):  # GLM's load_weights calls DeepSeek's: record once
        return original_fn(model, weights, *args, **kwargs)
    layer = int(model.config.num_hidden_layers)
    prefix = f"model.layers.{0 if layer == 1 else layer}."
    recorder = _Recorder(model, prefix)
    model._glm_mtp_recording = True
    recorder.install()
    try:
        result = original_fn(model, recorder.stream(weights), *args, **kwargs)
    finally:
        recorder.restore()
        model._glm_mtp_recording = False
    total, missing = uncovered_parameters(model, recorder)
    outcome = CoverageResult(prefix.rstrip("."), len(recorder.streamed), total, total - len(missing), missing)
    if not recorder.streamed or missing:
        message = _message(outcome)
        if settings.skip_coverage():
            outcome.skipped = True
            logger.warning("glm_mtp: %s=1, continuing although: %s", settings.SKIP_COVERAGE_ENV, message)
        else:
            LAST_RESULT.clear()
            LAST_RESULT.update(outcome.to_dict())
            raise DraftWeightsNotLoadedError(message)
    else:
        logger.info("glm_mtp: draft coverage OK: %d/%d parameters loaded from %d %s* tensors",
                    outcome.covered, total, outcome.streamed_layer_tensors, prefix)
    LAST_RESULT.clear()
    LAST_RESULT.update(outcome.to_dict())
    return result


def _message(outcome: CoverageResult) -> str:
    head = (f"glm_mtp: the NextN draft received no {outcome.layer_prefix}.* tensors at all"
            if not outcome.streamed_layer_tensors else
            f"glm_mtp: {len(outcome.uncovered)} of {outcome.parameters} NextN draft parameters received no "
            f"checkpoint tensor (from {outcome.streamed_layer_tensors} {outcome.layer_prefix}.* tensors)")
    names = ", ".join(outcome.uncovered[:FIRST_NAMES])
    more = f" (+{len(outcome.uncovered) - FIRST_NAMES} more)" if len(outcome.uncovered) > FIRST_NAMES else ""
    return (f"{head}: {names}{more}. The draft would run on uninitialised memory (accept length ~1). "
            f"Run `sglang-glm-mtp check <model>` and graft the layer; to continue anyway set "
            f"{settings.SKIP_COVERAGE_ENV}=1.")
