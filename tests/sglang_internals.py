"""The one place the tests read SGLang model internals, version by version.

Scenario scripts (run in subprocesses against the SGLang under test, 0.5.22 or 0.5.23)
read attributes of what SGLang built only through these functions, so a renamed or
removed attribute in another release breaks one function here, not every test that
reports a fact. Each function says which release has what.
"""

from __future__ import annotations

from typing import Any


def uses_expert_location(moe: Any) -> bool:
    """Does this FusedMoE's weight loader map experts through the global expert-location metadata?

    0.5.23: ``FusedMoE.uses_expert_location`` (False for a draft layer). 0.5.22 has no such
    attribute: the loader consults the global metadata whenever one is set.
    """
    if hasattr(moe, "uses_expert_location"):
        return bool(moe.uses_expert_location)
    from sglang.srt.eplb.expert_location import get_global_expert_location_metadata

    return get_global_expert_location_metadata() is not None


def uses_flashinfer_cutlass(moe: Any) -> bool:
    """0.5.22-0.5.23: the quant method's ``use_flashinfer_cutlass``; older: the layer's flag."""
    return bool(getattr(moe.quant_method, "use_flashinfer_cutlass", getattr(moe, "enable_flashinfer_cutlass_moe", False)))


def local_routed_slots(moe: Any) -> tuple[int, int]:
    """(routed experts stored on this rank, global id of its first): 0.5.22-0.5.23 keep fused shared experts after
    ``_num_local_routed`` routed slots and place rank r's block at ``_expert_storage_rank * that``; without those
    private attributes every local slot is routed, from expert 0."""
    local_routed = int(getattr(moe, "_num_local_routed", moe.num_local_experts))
    return local_routed, int(getattr(moe, "_expert_storage_rank", 0)) * local_routed


def expert_facts(moe: Any) -> dict[str, Any]:
    """Method, sizes, ranks and layout of a FusedMoE layer, as the scenario RESULT documents report them."""
    return {
        "method": type(moe.quant_method).__name__,
        "num_experts": int(moe.num_experts),
        "num_local_experts": int(moe.num_local_experts),
        "num_fused_shared_experts": int(moe.num_fused_shared_experts),
        "moe_ep_size": int(moe.moe_ep_size), "moe_ep_rank": int(moe.moe_ep_rank),
        "moe_tp_size": int(moe.moe_tp_size),
        "uses_expert_location": uses_expert_location(moe),
        "flashinfer_cutlass": uses_flashinfer_cutlass(moe),
    }


def modelopt_fp4_config(exclude_modules: list[str]) -> dict[str, Any]:
    """An NVFP4 ``hf_quant_config.json`` document for ``ModelOptFp4Config.from_config``.

    The nested form, as ModelOpt writes it: every release reads its ``exclude_modules``. (The flat
    form's ``exclude_modules`` key is read from 0.5.23 on; 0.5.22 reads only ``ignore`` there.)
    """
    return {"producer": {"name": "modelopt"},
            "quantization": {"quant_algo": "NVFP4", "group_size": 16, "exclude_modules": list(exclude_modules)}}
