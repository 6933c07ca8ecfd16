"""Stand down where SGLang itself already has the fix (the changes in patches/ once merged).

Each behaviour is detected by a marker the corresponding upstream change adds, looked
up without importing model modules; docs/upstream.md lists them beside the patches.
A behaviour may have several markers (one per way the change can land: on its own, or
rebased onto a related upstream pull request); any one of them present means the fix is
there. ``LANDINGS`` are behaviour probes for the related upstream pull requests themselves
(#37322, #34906), which fix part of the same problem under names we cannot know in advance.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
from types import SimpleNamespace
from typing import Callable, Union

logger = logging.getLogger(__name__)

Marker = tuple[str, str]

#: behaviour -> the (module, attribute) the upstream change introduces, or a tuple of such alternatives
MARKERS: dict[str, Union[Marker, tuple[Marker, ...]]] = {
    "coverage": ("sglang.srt.models.deepseek_common.deepseek_weight_loader", "check_nextn_weight_coverage"),
    # patches/0002 lands its decision function in deepseek_nextn.py whichever of it and #37322 merges first;
    # nextn_layer_excluded is the helper it adds beside it (a second name, should a reviewer rename the first).
    "draft_precision": (("sglang.srt.models.deepseek_nextn", "nextn_quant_config_from_checkpoint"),
                        ("sglang.srt.models.deepseek_nextn", "nextn_layer_excluded")),
    "moe_runner": ("sglang.srt.arg_groups.overrides", "_bf16_nextn_draft_moe_runner_default"),
    "preflight": ("sglang.srt.arg_groups.speculative_hook", "preflight_nextn_draft_weights"),
}


def markers_of(behaviour: str) -> tuple[Marker, ...]:
    """The alternatives for ``behaviour``: a single (module, attribute) pair counts as one."""
    value = MARKERS[behaviour]
    if len(value) == 2 and all(isinstance(part, str) for part in value):
        return (value,)  # type: ignore[return-value]
    return tuple(value)  # type: ignore[arg-type]


#: Answers found so far; a failed probe is never stored, so the next call probes again.
_answers: dict[str, bool] = {}


def has_fix(behaviour: str) -> bool:
    """True when the running SGLang already implements ``behaviour`` (any of its markers is present)."""
    if behaviour in _answers:
        return _answers[behaviour]
    failed = False
    for module_name, attribute in markers_of(behaviour):
        present = _has_attribute(behaviour, module_name, attribute)
        if present is None:
            failed = True
            continue
        if present:
            logger.info("glm_mtp: SGLang provides %s.%s; the plugin's %s behaviour stands down",
                        module_name, attribute, behaviour)
            _answers[behaviour] = True
            return True
    if not failed:
        _answers[behaviour] = False
    return False


def _has_attribute(behaviour: str, module_name: str, attribute: str) -> bool | None:
    """Whether ``module_name`` has ``attribute``; None when the module could not be probed."""
    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if not module_name.startswith(exc.name or "\0"):
                return _probe_failed(behaviour, module_name, exc)
            return False  # an SGLang without that module has no fix either
        except Exception as exc:  # the module fails at import time (any error): the plugin keeps its own behaviour
            return _probe_failed(behaviour, module_name, exc)
    return hasattr(module, attribute)


def _probe_failed(behaviour: str, module_name: str, exc: BaseException) -> None:
    logger.warning("glm_mtp: cannot import %s to tell whether SGLang already has the %s fix (%s: %s); "
                   "the plugin keeps its own %s behaviour", module_name, behaviour, type(exc).__name__, exc,
                   behaviour)
    logger.debug("glm_mtp: the probe of %s failed here", module_name, exc_info=exc)
    return None


# ----------------------------------------------------------------------------- related upstream PRs


def _decoder_keeps_modelopt_fp4() -> bool:
    """#37322 (and patches/0002): DeepseekModelNextN no longer replaces a modelopt_fp4 config with None."""
    from sglang.srt.models.deepseek_nextn import DeepseekModelNextN

    return '"modelopt_fp4"' not in inspect.getsource(DeepseekModelNextN.__init__)


def _mapper_from_layer_index() -> bool:
    """#34906 (and patches/0002): the GLM-5 draft's quant-config mapper follows the config's NextN index."""
    from sglang.srt.models.glm4_moe import GlmMoeDsaForCausalLMNextN

    mapper = GlmMoeDsaForCausalLMNextN.get_hf_to_sglang_mapper(SimpleNamespace(num_hidden_layers=78))
    return mapper._map_name("model.layers.78.mlp.experts") == "model.decoder.mlp.experts"


#: landing -> (upstream pull request, probe of its behaviour). Probes import model modules: call them
#: in the scheduler, where a NextN draft class is about to be built, not in the main process.
LANDINGS: dict[str, tuple[str, Callable[[], bool]]] = {
    "decoder_keeps_modelopt_fp4": ("sgl-project/sglang#37322", _decoder_keeps_modelopt_fp4),
    "mapper_from_layer_index": ("sgl-project/sglang#34906", _mapper_from_layer_index),
}


def has_landed(landing: str) -> bool:
    """True when the running SGLang behaves as ``landing``'s pull request makes it; False on any doubt."""
    if landing in _answers:
        return _answers[landing]
    pull_request, probe = LANDINGS[landing]
    try:
        answer = bool(probe())
    except Exception as exc:  # an SGLang that moved these classes: keep the plugin's own behaviour
        logger.warning("glm_mtp: cannot tell whether SGLang has %s (%s) (%s: %s); assuming not", landing,
                       pull_request, type(exc).__name__, exc)
        logger.debug("glm_mtp: the probe of %s failed here", landing, exc_info=True)
        return False
    if answer:
        logger.info("glm_mtp: SGLang has %s (%s)", landing, pull_request)
    _answers[landing] = answer
    return answer
