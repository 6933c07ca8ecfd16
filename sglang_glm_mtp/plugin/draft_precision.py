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
from typing import Any, Callable, NamedTuple

from ..checkpoint.draft_names import remap_entries, remap_globs
from ..checkpoint.families import draft_layer_id, family_for_draft_class, layer_prefix
from ..checkpoint.precision import QUANTIZED
from ..checkpoint.source import CheckpointSource
from ..errors import GlmMtpError
from .state import PluginState, published_server_args, published_state
from .targets import NVFP4_OVERRIDERS, QUANT_CONSTRUCTORS

logger = logging.getLogger(__name__)

_logged: set[str] = set()


def _log_once(message: str, *args: Any) -> None:
    text = message % args
    if text not in _logged:
        _logged.add(text)
        logger.info(text)


class DraftStorage(NamedTuple):
    """How the draft layer is stored, the evidence for the log line, and the checkpoint's spelling of the layer."""

    precision: str | None
    evidence: str
    prefix: str | None = None


def draft_storage() -> DraftStorage:
    """How the draft layer is stored, from the preflight record or a fresh header read."""
    from .draft_source import open_draft_source

    state = published_state() or PluginState()
    preflight = state.preflight
    if preflight is not None and not preflight.skipped:  # the main process read these headers: same answer
        shards = ", ".join(preflight.draft_shards) or "no shard"
        where = state.draft_layer_name()
        return DraftStorage(preflight.draft_precision, f"{preflight.found_tensors} tensors of {where} in {shards}",
                            preflight.draft_prefix)
    path, revision = _published_draft_location()
    found = open_draft_source(path, revision) if path else None
    if found is None or found.source is None:
        return DraftStorage(None, f"draft checkpoint not readable before load ({found.why if found else 'no path'})")
    return _stored_precision(found.source)


def _published_draft_location() -> tuple[str | None, str | None]:
    """What this scheduler loads the draft from; (None, None) when no config is published."""
    from sglang.srt.runtime_context import get_model, get_spec

    try:
        spec = get_spec()
        if spec.speculative_draft_model_path:
            return spec.speculative_draft_model_path, spec.speculative_draft_model_revision
        model = get_model()  # SGLang fills in no draft path for some families (GLM-5.3-Flash): the draft is the target
        return model.model_path, model.revision
    except (ValueError, AttributeError):  # namespace not published (a draft built outside a scheduler), or a field
        return None, None  # this SGLang no longer has: the precision is then unknown and SGLang's config stands


def _stored_precision(source: CheckpointSource) -> DraftStorage:
    from .preflight import inspect_draft

    try:
        report = inspect_draft(source)
    except (GlmMtpError, OSError) as exc:  # unreadable or malformed: SGLang's own quant config stands, coverage judges
        return DraftStorage(None, f"draft checkpoint unreadable ({type(exc).__name__}: {exc})")
    except Exception as exc:  # a plugin bug must not fail a draft build SGLang can do: said, with its traceback
        logger.warning("glm_mtp: reading the draft layer's headers failed (%s: %s); SGLang's quant config for the "
                       "draft stands, the post-load coverage check still judges the layer", type(exc).__name__, exc,
                       exc_info=True)
        return DraftStorage(None, f"draft checkpoint not read ({type(exc).__name__}: {exc})")
    where = report.draft_prefix or "the draft layer"  # the family's spelling this checkpoint uses
    shards = ", ".join(report.draft_shards) or "no shard"
    return DraftStorage(report.draft_precision, f"{report.found_tensors} tensors of {where} in {shards}",
                        report.draft_prefix)


def explicit_draft_quantization() -> str | None:
    """The user's own ``--speculative-draft-model-quantization``, else None.

    The record's input field is the user's flag as given (SGLang's resolution declares its defaults beside it and
    never writes the field), so a flag given is seen without asking SGLang anything; SGLang's own
    ``_speculative_draft_quantization_explicitly_set`` (on the resolved view) is asked only when the field is empty,
    and a view that cannot be read then means "not given", said in a WARNING.
    """
    server_args = published_server_args()
    if server_args is None:  # nothing published (a draft built outside a scheduler): nothing was given
        return None
    given = getattr(server_args, "speculative_draft_model_quantization", None)
    if given is not None:
        return given
    try:
        from sglang.srt.arg_groups.overrides import resolved_view

        view = resolved_view(server_args)
        explicit = bool(getattr(view, "_speculative_draft_quantization_explicitly_set", False))
        value = view.speculative_draft_model_quantization if explicit else None
    except Exception as exc:  # SGLang's own view of its record: any failure is SGLang's, the raw field answered
        logger.warning("glm_mtp: cannot read SGLang's resolved view of the server args (%s: %s); "
                       "--speculative-draft-model-quantization was not given, so the draft is built as stored",
                       type(exc).__name__, exc, exc_info=True)
        return None
    return (value or "unquant") if explicit else None


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


def _draft_layer_name(config: Any, class_names: list[str], stored: str | None = None) -> tuple[int, str]:
    """The draft layer id and its checkpoint prefix: the spelling the checkpoint was read with (``stored``) when it
    is one the family of the first known class name accepts (GLM-5.3-Flash accepts two), else the family's first."""
    text = getattr(config, "text_config", None) or config
    layer = draft_layer_id(int(getattr(text, "num_hidden_layers", 0) or 0))
    family = next((f for f in map(family_for_draft_class, class_names) if f), None)
    spellings = [p[:-1] for p in family.prefixes_for_layer(layer)] if family else [layer_prefix(layer)]
    return layer, stored if stored in spellings else spellings[0]


#: SGLang quant config names (``get_name()``) whose draft the plugin builds from the checkpoint's storage.
DECIDED_METHODS = ("modelopt_fp4", "fp8", "modelopt_fp8", "compressed_tensors", "quark")


def draft_quant_config(resolved: Any, config: Any, class_names: list[str] | None = None) -> Any:
    """The config to build the draft with, given what SGLang resolved and what the checkpoint stores."""
    if resolved is None or resolved.get_name() not in DECIDED_METHODS:
        return resolved  # BF16 target, or a method we do not second-guess
    explicit = explicit_draft_quantization()
    if explicit is not None:
        _log_once("glm_mtp: --speculative-draft-model-quantization %s was given; the draft's quant config (%s) is "
                  "left as SGLang resolved it", explicit, resolved.get_name())
        return resolved
    precision, evidence, stored_prefix = draft_storage()
    layer, name = _draft_layer_name(config, class_names or [], stored_prefix)
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
