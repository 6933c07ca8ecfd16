"""Build the NextN draft in the precision its checkpoint really stores.

SGLang 0.5.23 takes the draft's quant config from the target and then, for
``modelopt_fp4``, forces it to None: right for a BF16 draft, fatal for an NVFP4 one
(the BF16-built layer has no parameters for the NVFP4 scales: ``load_weights`` dies
with a KeyError on ``...shared_experts.gate_up_proj.input_scale``, and an FP8 draft
under an NVFP4 target is built BF16 as well). Here the decision comes from the draft
layer's safetensors headers instead:

* BF16 draft  -> None (unquantized), whatever the target is;
* FP8 draft   -> the block-FP8 config DeepSeek/GLM FP8 releases use;
* NVFP4 draft -> the target's ModelOpt FP4 config, excludes remapped from
  the draft layer's checkpoint names to the draft's ``model.*``/``model.decoder.*`` names, and
  protected from the ``modelopt_fp4 -> None`` override (see ``_shield_from_override``).

Two seams, one rule: DeepSeek-V3-derived drafts (GLM-5.x, GLM-5.3-Flash through ``super()``)
resolve their config in ``_resolve_nextn_quant_config``; GLM-4.5/4.6/4.7, GLM-4.7-Flash and
GLM-OCR have no such method and hand the target's config straight from ``__init__`` to a
NextN model constructor that nulls ``modelopt_fp4``, so their ``__init__`` is wrapped to pass
the draft's own config instead. Layer names come from the family table (``families.py``).
"""

from __future__ import annotations

import copy
import logging
import sys
from typing import Any, Callable

from ..checkpoint.draft_names import remap_entries, remap_globs
from ..checkpoint.families import LAYER_PREFIX, draft_layer_id, family_for_draft_class, layer_prefix
from ..checkpoint.precision import QUANTIZED
from .targets import NVFP4_OVERRIDERS, QUANT_CONSTRUCTORS

logger = logging.getLogger(__name__)

#: MTP-only checkpoint names that SGLang's NextN loader renames to ``model.*`` (the rest go to ``model.decoder.*``).
NEXTN_SPEC_NAMES = ("shared_head.norm", "eh_proj", "enorm", "hnorm")

_logged: set[str] = set()


def _log_once(message: str, *args: Any) -> None:
    text = message % args
    if text not in _logged:
        _logged.add(text)
        logger.info(text)


def draft_storage(config: Any) -> tuple[str | None, str]:
    """(precision, evidence) of the draft layer, from the preflight state or a fresh header read."""
    from sglang.srt.runtime_context import get_spec

    from .draft_source import open_draft_source
    from .preflight import inspect_draft
    from .resolution import STATE_ATTR

    state = _published_state(STATE_ATTR)
    preflight = (state or {}).get("preflight")
    if preflight and not preflight.get("skipped"):  # the main process read these headers: same answer
        shards = ", ".join(preflight.get("draft_shards") or []) or "no shard"
        where = preflight.get("draft_prefix") or layer_prefix(preflight.get("draft_layer"))
        return preflight.get("draft_precision"), f"{preflight.get('found_tensors', 0)} tensors of {where} in {shards}"
    spec = get_spec()
    path, revision = spec.speculative_draft_model_path, spec.speculative_draft_model_revision
    if not path:  # SGLang fills in no draft path for some families (GLM-5.3-Flash): the draft is the target
        from sglang.srt.runtime_context import get_model

        path, revision = get_model().model_path, get_model().revision
    found = open_draft_source(path, revision) if path else None
    if found is None or found.source is None:
        return None, f"draft checkpoint not readable before load ({found.why if found else 'no path'})"
    try:
        report = inspect_draft(found.source)
    except Exception as exc:  # unreadable or malformed: SGLang's own quant config stands, coverage still judges
        return None, f"draft checkpoint unreadable ({type(exc).__name__}: {exc})"
    where = report.draft_prefix or layer_prefix(report.draft_layer)
    return report.draft_precision, f"{report.found_tensors} tensors of {where} in " \
                                   f"{', '.join(report.draft_shards) or 'no shard'}"


def _published_state(attr: str) -> dict[str, Any] | None:
    try:
        from sglang.srt.runtime_context import get_context

        return getattr(get_context().server_args, attr, None)
    except Exception:  # not published (unit tests building the model directly)
        return None


def _explicit_draft_quantization() -> str | None:
    """The user's own ``--speculative-draft-model-quantization`` (SGLang records whether it was given), else None."""
    try:
        from sglang.srt.arg_groups.overrides import resolved_view
        from sglang.srt.runtime_context import get_context

        view = resolved_view(get_context().server_args)
    except Exception:  # nothing published (a draft built outside a scheduler): nothing was given
        return None
    if not getattr(view, "_speculative_draft_quantization_explicitly_set", False):
        return None
    return view.speculative_draft_model_quantization or "unquant"


def resolve_nextn_quant_config(original_fn: Callable[..., Any], model: Any, config: Any, quant_config: Any) -> Any:
    """AROUND hook on ``<NextN class>._resolve_nextn_quant_config``; always calls the original first."""
    classes = [c.__name__ for c in type(model).__mro__]
    return draft_quant_config(original_fn(model, config, quant_config), config, classes)


def init_with_draft_quant_config(original_fn: Callable[..., Any], module: Any, config: Any, quant_config: Any = None,
                                 *args: Any, **kwargs: Any) -> Any:
    """AROUND hook on the NextN *model* constructor of drafts without ``_resolve_nextn_quant_config``
    (GLM-4.x, GLM-4.7-Flash, GLM-OCR): it gets the draft's own config; the outer lm_head keeps the target's."""
    if "quant_config" in kwargs:
        quant_config = kwargs.pop("quant_config")
    owner = type(module).__name__
    classes = [draft for draft, target in QUANT_CONSTRUCTORS.items() if target.rsplit(".", 2)[-2] == owner]
    return original_fn(module, config, draft_quant_config(quant_config, config, classes), *args, **kwargs)


def _draft_layer_name(config: Any, class_names: list[str]) -> tuple[int, str]:
    """The draft layer id and its checkpoint prefix (the family of the first known class name)."""
    text = getattr(config, "text_config", None) or config
    layer = draft_layer_id(int(getattr(text, "num_hidden_layers", 0) or 0))
    family = next((f for f in map(family_for_draft_class, class_names) if f), None)
    return layer, layer_prefix(layer, family.draft_prefixes[0] if family else LAYER_PREFIX)


#: SGLang quant config names (``get_name()``) whose draft the plugin builds from the checkpoint's storage.
DECIDED_METHODS = ("modelopt_fp4", "fp8", "modelopt_fp8", "compressed_tensors", "quark")


def draft_quant_config(resolved: Any, config: Any, class_names: list[str] | None = None) -> Any:
    """The config to build the draft with, given what SGLang resolved and what the checkpoint stores."""
    if resolved is None or resolved.get_name() not in DECIDED_METHODS:
        return resolved  # BF16 target, or a method we do not second-guess
    explicit = _explicit_draft_quantization()
    if explicit is not None:
        _log_once("glm_mtp: --speculative-draft-model-quantization %s was given; the draft's quant config (%s) is "
                  "left as SGLang resolved it", explicit, resolved.get_name())
        return resolved
    precision, evidence = draft_storage(config)
    layer, name = _draft_layer_name(config, class_names or [])
    target = resolved.get_name()
    if precision == "bf16":
        _log_once("glm_mtp: draft %s is stored BF16 (%s); building it unquantized (target keeps %s)",
                  name, evidence, target)
        return None
    if precision in QUANTIZED and target in ("compressed_tensors", "quark"):
        _log_once("glm_mtp: draft %s is stored %s (%s); building it with the target's %s scheme, its exclusions "
                  "translated to the draft's module names", name, precision.upper(), evidence, target)
        return translated_draft_config(resolved, name)
    if precision == "fp8":
        if target == "fp8":
            return resolved
        from sglang.srt.layers.quantization.fp8 import Fp8Config

        from . import availability, targets  # SGLang 0.5.22's loader cannot post-process this draft

        availability.require(targets.FP8_DRAFT_BLOCK_SIZE, f"a block-FP8 draft {name} under a {target} target")
        _log_once("glm_mtp: draft %s is stored FP8 (%s); building it with block FP8 [128, 128]", name, evidence)
        return Fp8Config(is_checkpoint_fp8_serialized=True, weight_block_size=[128, 128])
    if precision == "nvfp4":
        if target != "modelopt_fp4":
            logger.error("glm_mtp: draft %s is stored NVFP4 but the target is %s; no NVFP4 config to build it with",
                         name, target)
            return resolved
        _log_once("glm_mtp: draft %s is stored NVFP4 (%s); keeping modelopt_fp4 for the draft", name, evidence)
        return nvfp4_draft_config(resolved, layer, name)
    if precision is None:
        _log_once("glm_mtp: cannot tell how draft %s is stored (%s); leaving SGLang's quant config (%s); the "
                  "post-load coverage check judges the layer", name, evidence, target)
    else:
        logger.warning("glm_mtp: draft %s is stored %s (%s), which the plugin does not build; leaving SGLang's "
                       "quant config (%s)", name, precision, evidence, target)
    return resolved


def translated_draft_config(target_config: Any, ckpt_prefix: str) -> Any:
    """A copy of a compressed-tensors or Quark config whose exclusions also name the draft's modules.

    The checkpoint names the layer ``<prefix>.N.*``; SGLang asks about ``model.decoder.*`` and
    ``model.{eh_proj,…}``, and the GLM classes map no names (``draft_names.remap_entries``).
    The target's own config object is left untouched: the outer model and its head keep it.
    """
    draft = copy.copy(target_config)
    if target_config.get_name() == "quark":
        draft.quant_config = copy.deepcopy(target_config.quant_config)
        draft.exclude_layers = remap_entries(list(target_config.exclude_layers or []), ckpt_prefix)
    else:
        draft.ignore = remap_entries(list(target_config.ignore or []), ckpt_prefix)
    return draft


def remap_excludes(patterns: list[str], layer: int, prefix: str | None = None) -> list[str]:
    """ModelOpt: add the draft-module spelling of every glob that names layer N or all layers."""
    return remap_globs(patterns, prefix or layer_prefix(layer), layer)


def nvfp4_draft_config(target_config: Any, layer: int, prefix: str | None = None) -> Any:
    draft = copy.copy(target_config)
    draft.exclude_modules = remap_excludes(list(target_config.exclude_modules or []), layer, prefix)
    _shield_from_override(draft)
    return draft


def _shield_from_override(config: Any) -> None:
    """Hide the name ``modelopt_fp4`` from exactly the NextN model constructors (``targets.NVFP4_OVERRIDERS``).

    Each of them (``DeepseekModelNextN``, ``Glm4MoeModelNextN``, ...) nulls any config named ``modelopt_fp4`` before building the
    decoder. Every other reader (FusedMoE, linear methods, enable_nextn_moe_bf16_cast_to_fp8)
    runs in its own frame and still sees the real name, so quant-method selection is
    untouched; the constructor's other name test (``== "quark"``) stays False as it
    should. Alternatives are worse: re-implementing the 80-line constructor forks SGLang
    code, a config class with another name changes what every reader sees, and
    rebuilding the decoder afterwards allocates the BF16 MoE first. Checked against the
    real constructor by tests/test_plugin_draft.py (NVFP4 draft, and stock SGLang failing).
    """
    codes = {getattr(fn, "__code__", None) for init in _overriders() for fn in _unwrap_chain(init)}
    codes.discard(None)
    real_get_name = config.get_name

    def get_name() -> str:
        if sys._getframe(1).f_code in codes:
            return "modelopt_fp4_draft"
        return real_get_name()

    config.get_name = get_name
    config._glm_mtp_nvfp4_draft = True


def _overriders() -> list[Any]:
    """The overriding constructors of the modules already imported (the draft being built imported its own)."""
    found = []
    for target in NVFP4_OVERRIDERS:
        module_name, class_name, attribute = target.rsplit(".", 2)
        owner = getattr(sys.modules.get(module_name), class_name, None)
        if owner is not None:
            found.append(getattr(owner, attribute))
    return found


def _unwrap_chain(fn: Any) -> list[Any]:
    chain = [fn]
    while hasattr(chain[-1], "__wrapped__"):
        chain.append(chain[-1].__wrapped__)
    return chain
