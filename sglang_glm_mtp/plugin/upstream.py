"""Stand down where SGLang itself already has the fix (the changes in patches/ once merged).

Each behaviour is detected by a marker the corresponding upstream change adds, looked
up without importing model modules; docs/upstream.md lists them beside the patches.
"""

from __future__ import annotations

import importlib
import logging
import sys
from functools import lru_cache

logger = logging.getLogger(__name__)

#: behaviour -> (module, attribute) that the upstream change introduces
MARKERS: dict[str, tuple[str, str]] = {
    "coverage": ("sglang.srt.models.deepseek_common.deepseek_weight_loader", "check_nextn_weight_coverage"),
    "draft_precision": ("sglang.srt.models.deepseek_nextn", "nextn_quant_config_from_checkpoint"),
    "moe_runner": ("sglang.srt.arg_groups.overrides", "_bf16_nextn_draft_moe_runner_default"),
    "preflight": ("sglang.srt.arg_groups.speculative_hook", "preflight_nextn_draft_weights"),
}


@lru_cache(maxsize=None)
def has_fix(behaviour: str) -> bool:
    """True when the running SGLang already implements ``behaviour``."""
    module_name, attribute = MARKERS[behaviour]
    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except Exception:  # an SGLang without that module has no fix either
            return False
    present = hasattr(module, attribute)
    if present:
        logger.info("glm_mtp: SGLang provides %s.%s; the plugin's %s behaviour stands down",
                    module_name, attribute, behaviour)
    return present
