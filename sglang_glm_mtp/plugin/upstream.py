"""Stand down where SGLang itself already has the fix (the changes in patches/ once merged).

Each behaviour is detected by a marker the corresponding upstream change adds, looked
up without importing model modules; docs/upstream.md lists them beside the patches.
"""

from __future__ import annotations

import importlib
import logging
import sys

logger = logging.getLogger(__name__)

#: behaviour -> (module, attribute) that the upstream change introduces
MARKERS: dict[str, tuple[str, str]] = {
    "coverage": ("sglang.srt.models.deepseek_common.deepseek_weight_loader", "check_nextn_weight_coverage"),
    "draft_precision": ("sglang.srt.models.deepseek_nextn", "nextn_quant_config_from_checkpoint"),
    "moe_runner": ("sglang.srt.arg_groups.overrides", "_bf16_nextn_draft_moe_runner_default"),
    "preflight": ("sglang.srt.arg_groups.speculative_hook", "preflight_nextn_draft_weights"),
}


#: Answers found so far; a failed probe is never stored, so the next call probes again.
_answers: dict[str, bool] = {}


def has_fix(behaviour: str) -> bool:
    """True when the running SGLang already implements ``behaviour``."""
    if behaviour in _answers:
        return _answers[behaviour]
    module_name, attribute = MARKERS[behaviour]
    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if not module_name.startswith(exc.name or "\0"):
                return _probe_failed(behaviour, module_name, exc)
            _answers[behaviour] = False  # an SGLang without that module has no fix either
            return False
        except Exception as exc:
            return _probe_failed(behaviour, module_name, exc)
    present = hasattr(module, attribute)
    if present:
        logger.info("glm_mtp: SGLang provides %s.%s; the plugin's %s behaviour stands down",
                    module_name, attribute, behaviour)
    _answers[behaviour] = present
    return present


def _probe_failed(behaviour: str, module_name: str, exc: BaseException) -> bool:
    logger.warning("glm_mtp: cannot import %s to tell whether SGLang already has the %s fix (%s: %s); "
                   "the plugin keeps its own %s behaviour", module_name, behaviour, type(exc).__name__, exc,
                   behaviour)
    return False
