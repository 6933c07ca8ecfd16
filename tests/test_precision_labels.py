"""How a draft layer's storage is labelled from tensor dtypes (checkpoint/precision.py), for the labels the
happy-path fixtures never produce: a layer split between formats, an unrecognised format, a U8 weight
without its NVFP4 scale. The plugin builds nothing for ``mixed``/``unknown`` (draft_precision.py) and
``check`` reports them as draft-precision-unsupported, so a wrong label here changes what is built."""

from __future__ import annotations

import pytest

from sglang_glm_mtp.checkpoint.precision import module_precision, overall_precision

M = "mlp.experts.0.down_proj"


@pytest.mark.parametrize("dtypes, label", [
    ({f"{M}.weight": "BF16"}, "bf16"),
    ({f"{M}.weight": "F16"}, "bf16"),
    ({f"{M}.weight": "F32"}, "bf16"),
    ({f"{M}.weight": "U8", f"{M}.weight_scale": "F8_E4M3", f"{M}.weight_scale_2": "F32"}, "nvfp4"),
    ({f"{M}.weight": "F8_E4M3", f"{M}.weight_scale_inv": "F32"}, "fp8"),
    ({f"{M}.weight": "U8"}, "unknown"),  # packed bytes without the NVFP4 block scale: not NVFP4
    ({f"{M}.weight": "U8", f"{M}.weight_scale_2": "F32"}, "unknown"),  # the global scale alone is not enough
    ({f"{M}.weight": "I8", f"{M}.weight_scale": "F32"}, "int8"),  # compressed-tensors naive-quantized W8A8
    # compressed-tensors: the packed weight has its own name
    ({f"{M}.weight_packed": "U8", f"{M}.weight_scale": "F8_E4M3", f"{M}.weight_global_scale": "F32"}, "nvfp4"),
    ({f"{M}.weight_packed": "I32", f"{M}.weight_scale": "BF16", f"{M}.weight_shape": "I64"}, "int4"),
    ({f"{M}.weight_packed": "F16"}, "unknown"),
    ({f"{M}.weight": "F8_E4M3", f"{M}.weight_scale": "F32"}, "fp8"),  # per-channel (compressed-tensors, Quark)
    ({f"{M}.weight": "U8", f"{M}.weight_scale": "U8"}, "mxfp4"),  # Quark MXFP4: E8M0 scales stored as U8
    ({f"{M}.weight": "U8", f"{M}.weight_scale": "F8_E8M0"}, "mxfp4"),  # ... or in safetensors' E8M0 dtype
    ({f"{M}.weight": "I16"}, "unknown"),
    ({f"{M}.weight_scale": "F8_E4M3"}, None),  # no weight: absent, not a precision
])
def test_module_precision(dtypes: dict[str, str], label: str | None) -> None:
    assert module_precision(M, dtypes) == label


ATTENTION = {"self_attn.q_a_proj": "bf16", "self_attn.o_proj": "bf16", "eh_proj": "bf16"}


@pytest.mark.parametrize("experts, label", [
    ({"mlp.experts.0.up_proj": "nvfp4", "mlp.experts.1.up_proj": "nvfp4"}, "nvfp4"),  # BF16 attention beside it
    ({"mlp.experts.0.up_proj": "bf16", "mlp.experts.1.up_proj": "bf16"}, "bf16"),
    ({"mlp.experts.0.up_proj": "nvfp4", "mlp.experts.1.up_proj": "fp8"}, "mixed"),  # two quantized formats
    ({"mlp.experts.0.up_proj": "nvfp4", "mlp.experts.1.up_proj": "bf16"}, "mixed"),  # experts split
    ({"mlp.experts.0.up_proj": "fp8", "mlp.shared_experts.up_proj": "nvfp4"}, "mixed"),
    ({"mlp.experts.0.up_proj": "nvfp4", "mlp.experts.1.up_proj": "unknown"}, "unknown"),  # unknown outranks
    ({"mlp.experts.0.up_proj": "unknown", "mlp.experts.1.up_proj": "fp8", "mlp.experts.2.up_proj": "nvfp4"},
     "unknown"),
])
def test_overall_precision_of_a_layer(experts: dict[str, str], label: str) -> None:
    assert overall_precision({**ATTENTION, **experts}) == label  # type: ignore[arg-type]
