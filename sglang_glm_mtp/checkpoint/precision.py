"""Storage precision of linear modules: BF16, NVFP4 (ModelOpt), FP8 (block or per-tensor).

A checkpoint says how a linear is stored only through the tensors next to its
``.weight``; this module turns those tensors into a label and, conversely, a label
into the exact tensors (names, shapes, dtypes) a complete module of that precision has.
"""

from __future__ import annotations

from math import ceil
from typing import Literal, Mapping

from .families import LayerTensor
from .safetensors_format import TensorSpec

Precision = Literal["bf16", "nvfp4", "fp8", "mixed", "unknown"]

#: ModelOpt NVFP4 packs two E2M1 values per U8 byte and scales blocks of 16.
NVFP4_GROUP = 16
#: DeepSeek/GLM FP8 releases scale 128x128 blocks.
FP8_BLOCK = 128

UNQUANTIZED_DTYPES = {"BF16", "F16", "F32"}


def module_precision(module: str, dtypes: Mapping[str, str]) -> Precision | None:
    """Precision of ``module`` from the dtypes of the tensors present (``name -> dtype``).

    Returns None when the module's ``.weight`` is absent.
    """
    weight = dtypes.get(f"{module}.weight")
    if weight is None:
        return None
    if weight in UNQUANTIZED_DTYPES:
        return "bf16"
    if weight == "U8" and f"{module}.weight_scale" in dtypes:
        return "nvfp4"
    if weight == "F8_E4M3":
        return "fp8"
    return "unknown"


def quantized_form(tensor: LayerTensor, precision: Precision, *, with_input_scale: bool = True) -> list[TensorSpec]:
    """The tensors a linear weight becomes in ``precision``; name prefixes are kept."""
    if not tensor.linear or precision in ("bf16", "mixed", "unknown"):
        return [TensorSpec(tensor.name, tensor.dtype, tensor.shape)]
    out_features, in_features = tensor.shape
    module = tensor.module
    if precision == "nvfp4":
        specs = [
            TensorSpec(f"{module}.weight", "U8", (out_features, in_features // 2)),
            TensorSpec(f"{module}.weight_scale", "F8_E4M3", (out_features, in_features // NVFP4_GROUP)),
            TensorSpec(f"{module}.weight_scale_2", "F32", ()),
        ]
        if with_input_scale:
            specs.append(TensorSpec(f"{module}.input_scale", "F32", ()))
        return specs
    return [
        TensorSpec(f"{module}.weight", "F8_E4M3", (out_features, in_features)),
        TensorSpec(f"{module}.weight_scale_inv", "F32",
                   (ceil(out_features / FP8_BLOCK), ceil(in_features / FP8_BLOCK))),
    ]


#: Companion tensors that a quantized module may carry without them being required.
OPTIONAL_SUFFIXES = {"nvfp4": ("input_scale",), "fp8": ("input_scale",)}


def overall_precision(per_module: Mapping[str, Precision]) -> Precision:
    """One label for a set of modules.

    Modules left BF16 beside quantized ones (attention, eh_proj, the gate) are the
    norm in NVFP4 and FP8 exports, so they don't make a layer "mixed"; two different
    quantized formats, or routed experts split between formats, do.
    """
    quantized = {p for p in per_module.values() if p not in ("bf16",)}
    if "unknown" in quantized:
        return "unknown"
    if len(quantized) > 1:
        return "mixed"
    if not quantized:
        return "bf16"
    (only,) = quantized
    experts = {p for m, p in per_module.items() if ".experts." in m}
    if len(experts) > 1:
        return "mixed"
    return only
