"""Post-load coverage: every draft parameter must have received a checkpoint tensor.

SGLang 0.5.23's NextN loader ``continue``s past every name outside the draft layer
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

Every draft class, not only GLM/DeepSeek (the backstop): the hook goes on the
``load_weights`` of whatever class SGLang builds as a NextN/MTP draft. Classes that write
a parameter with ``param.data.copy_()`` instead of a loader (MiMo-V2's attention sink,
the DSA indexer fusion) are seen by a torch function mode that records in-place copies into
parameter storage, so they need no per-family list. The layer prefix used for "no draft
tensor at all" comes from the family table; for classes outside it, the judgement is
"no parameter received anything".

First load only: the check judges the draft's first ``load_weights``. Later calls on the
same model (RL weight sync: ``update_weights_from_tensor/_from_disk/_from_distributed``)
legitimately carry subsets and are passed through untouched.
"""

from __future__ import annotations

import inspect
import logging
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator

from ..errors import GlmMtpError
from ..text import listed
from ..checkpoint.families import draft_layer_id, family_for_draft_class
from . import settings
from .targets import BACKSTOP_VERIFIED

logger = logging.getLogger(__name__)

#: Draft parameters that no checkpoint tensor feeds: the target's are shared in later (any nesting level).
SHARED_FROM_TARGET = ("embed_tokens.", "word_embeddings.", "lm_head.")
#: Fused parameter -> shard ids it needs (SGLang's stacked_params_mapping).
STACKED_SHARDS = {"gate_up_proj": {0, 1}, "qkv_proj": {"q", "k", "v"}}
#: Written by copy_() from these two checkpoint tensors, never through a weight_loader.
FUSED_WITHOUT_LOADER = {"indexer.wk_weights_proj.": ("indexer.wk.", "indexer.weights_proj.")}
#: Created by a quant method from other parameters and rebuilt in process_weights_after_loading;
#: no checkpoint tensor feeds them (ModelOpt NVFP4 MoE on non-TRTLLM runners: cutlass, marlin, ...).
DERIVED_SUFFIXES = ("_blockscale_swizzled",)

LAST_RESULT: dict[str, Any] = {}


class DraftWeightsNotLoadedError(GlmMtpError, RuntimeError):
    """Draft parameters that received no checkpoint tensor; the draft would run on uninitialised memory."""


@dataclass
class CoverageResult:
    layer_prefix: str
    streamed_layer_tensors: int
    parameters: int
    covered: int
    uncovered: list[str] = field(default_factory=list)
    skipped: bool = False
    #: a partial gap in a draft class the plugin has not verified: reported as an ERROR, not refused
    unverified: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Recorder:
    """Wraps weight loaders; records what reached which parameter (thread-safe: loaders may run in a pool)."""

    def __init__(self, model: Any, layer_prefixes: tuple[str, ...]) -> None:
        self.model = model
        self.layer_prefixes = layer_prefixes  # empty: a draft class outside the family table
        self.calls: dict[str, set[tuple[Any, Any]]] = {}
        self.streamed: set[str] = set()
        self.copied: set[str] = set()  # written by an in-place copy outside any loader
        self._lock = threading.Lock()
        self._saved: list[tuple[Any, str, bool, Any]] = []

    def stream(self, weights: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
        for name, tensor in weights:
            if not self.layer_prefixes or name.startswith(self.layer_prefixes):
                self.streamed.add(name)
            yield name, tensor

    def copy_watch(self) -> Any:
        """A torch function mode that marks parameters written by ``copy_`` into their storage."""
        import torch
        from torch.overrides import TorchFunctionMode

        storages: dict[int, list[str]] = {}
        for name, param in self.model.named_parameters():
            try:
                storages.setdefault(param.untyped_storage().data_ptr(), []).append(name)
            except (RuntimeError, ValueError, TypeError):  # no storage: wrapper subclasses (RuntimeError),
                continue  # torch's UninitializedParameter (ValueError); loaders still record them
        copied = self.copied
        copy_ops = {torch.Tensor.copy_}

        class _CopyWatch(TorchFunctionMode):
            def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
                if func in copy_ops and args and isinstance(args[0], torch.Tensor):
                    try:
                        names = storages.get(args[0].untyped_storage().data_ptr())
                    except (RuntimeError, ValueError, TypeError):  # a destination without storage: not a parameter
                        names = None
                    if names:
                        copied.update(names)
                return func(*args, **(kwargs or {}))

        return _CopyWatch()

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


def _shared_from_target(name: str) -> bool:
    return any(name.startswith(p) or f".{p}" in name for p in SHARED_FROM_TARGET)


def uncovered_parameters(model: Any, recorder: _Recorder) -> tuple[int, list[str]]:
    """Names of parameters (with the missing shard/expert when partial) that got no tensor."""
    moe_modules = {name: module for name, module in model.named_modules()
                   if hasattr(module, "_map_global_expert_id_to_local_expert_id")}
    streamed = recorder.streamed
    total, missing = 0, []
    for name, param in model.named_parameters():
        if (_shared_from_target(name) or name.endswith(DERIVED_SUFFIXES)
                or getattr(param, "_skip_weight_check", False)):
            continue
        total += 1
        calls = recorder.calls.get(name, set())
        fused = next((srcs for key, srcs in FUSED_WITHOUT_LOADER.items() if key in name), None)
        if fused is not None:
            if not all(any(src in s for s in streamed) for src in fused):
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
                missing.append(f"{name} (experts {listed(gaps)})")
            continue
        if not calls:
            if name not in recorder.copied:
                missing.append(name)
            continue
        leaf = owner.rsplit(".", 1)[-1]
        needed = STACKED_SHARDS.get(leaf)
        if needed is not None and (None, None) not in calls:  # a shard-less call loaded the fused tensor whole
            absent = needed - {s for s, _ in calls}
            if absent:
                missing.append(f"{name} (shards {sorted(map(str, absent))})")
    return total, missing



def load_weights_with_coverage(original_fn: Callable[..., Any], model: Any, weights: Iterable[tuple[str, Any]],
                               *args: Any, **kwargs: Any) -> Any:
    """AROUND hook on ``<draft class>.load_weights``; always calls the original exactly once."""
    if getattr(model, "_glm_mtp_recording", False):  # GLM's load_weights calls DeepSeek's: record once
        return original_fn(model, weights, *args, **kwargs)
    if getattr(model, "_glm_mtp_judged", False):  # RL weight sync after the first load: never judged
        logger.debug("glm_mtp: %s.load_weights called again (weight update); coverage judges the first load only",
                     type(model).__name__)
        return original_fn(model, weights, *args, **kwargs)
    prefixes = draft_prefixes(model)
    recorder = _Recorder(model, prefixes)
    model._glm_mtp_recording = True
    recorder.install()
    try:
        with recorder.copy_watch():
            result = original_fn(model, recorder.stream(weights), *args, **kwargs)
    finally:
        recorder.restore()
        model._glm_mtp_recording = False
    model._glm_mtp_judged = True
    total, missing = uncovered_parameters(model, recorder)
    where = prefixes[0].rstrip(".") if prefixes else type(model).__name__
    outcome = CoverageResult(where, len(recorder.streamed), total, total - len(missing), missing)
    nothing = not recorder.streamed if prefixes else (total > 0 and len(missing) == total)
    if nothing or missing:
        message = _message(outcome, known_layer=bool(prefixes))
        verified = bool(prefixes) or type(model).__name__ in BACKSTOP_VERIFIED
        if settings.skip_coverage():
            outcome.skipped = True
            logger.warning("glm_mtp: %s=1, continuing although: %s", settings.SKIP_COVERAGE_ENV, message)
        elif not verified and not nothing:  # proven only when nothing arrived: report, never refuse, a partial gap
            outcome.unverified = True
            logger.error("%s (Not refused: the plugin has not verified how %s fills its parameters; if these are "
                         "really absent the accept-length canary will also report it.)", message, type(model).__name__)
        else:
            LAST_RESULT.clear()
            LAST_RESULT.update(outcome.to_dict())
            raise DraftWeightsNotLoadedError(message)
    else:
        logger.info("glm_mtp: draft coverage OK: %d/%d parameters of %s loaded from %d %s tensors",
                    outcome.covered, total, type(model).__name__, outcome.streamed_layer_tensors,
                    f"{where}.*" if prefixes else "checkpoint")
    LAST_RESULT.clear()
    LAST_RESULT.update(outcome.to_dict())
    return result


def draft_prefixes(model: Any) -> tuple[str, ...]:
    """Where this draft's layer lives in the checkpoint, from the family table; () for other classes."""
    family = next((f for f in map(family_for_draft_class, (c.__name__ for c in type(model).__mro__)) if f), None)
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    layers = getattr(config, "num_hidden_layers", None)
    if family is None or not isinstance(layers, int):
        return ()
    return family.prefixes_for_layer(draft_layer_id(layers))


#: Parameter name endings that only a quantized build has (NVFP4, FP8, compressed-tensors, Quark).
QUANT_PARAMETER_SUFFIXES = ("weight_packed", "weight_scale", "weight_scale_2", "weight_scale_inv", "input_scale",
                            "weight_global_scale", "input_global_scale", "weight_zero_point", "weight_shape")


def _is_quant_parameter(name: str) -> bool:
    return name.rsplit(".", 1)[-1].removeprefix("w13_").removeprefix("w2_") in QUANT_PARAMETER_SUFFIXES


def _message(outcome: CoverageResult, *, known_layer: bool = True) -> str:
    if not known_layer:  # a draft class outside the family table: layer_prefix holds the class name
        head = (f"glm_mtp: {len(outcome.uncovered)} of {outcome.parameters} parameters of the MTP draft "
                f"{outcome.layer_prefix} received no checkpoint tensor")
    elif not outcome.streamed_layer_tensors:
        head = f"glm_mtp: the NextN draft received no {outcome.layer_prefix}.* tensors at all"
    else:
        head = (f"glm_mtp: {len(outcome.uncovered)} of {outcome.parameters} NextN draft parameters received no "
                f"checkpoint tensor (from {outcome.streamed_layer_tensors} {outcome.layer_prefix}.* tensors)")
    names = listed(outcome.uncovered)
    if known_layer and outcome.streamed_layer_tensors and all(_is_quant_parameter(n) for n in outcome.uncovered):
        remedy = ("The layer's tensors arrived but the draft was built quantized while its checkpoint layer is "
                  "stored in another precision (only quantization parameters are empty): run `sglang-glm-mtp check "
                  "<model>`, which names the exclusion the quant config lacks (`sglang-glm-mtp graft --force` "
                  "writes it), or drop --speculative-draft-model-quantization")
    elif known_layer:
        remedy = "Run `sglang-glm-mtp check <model>` and graft the layer"
    else:
        remedy = "The checkpoint lacks (part of) this architecture's MTP weights: use a release that ships them"
    return (f"{head}: {names}. The draft would run on uninitialised memory (accept length ~1). "
            f"{remedy}; to continue anyway set {settings.SKIP_COVERAGE_ENV}=1.")
