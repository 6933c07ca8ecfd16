"""Storage precision of linear modules, in each quantization dialect's tensor layout.

A checkpoint says how a linear is stored only through the tensors next to its weight;
this module turns those tensors into a label (and a layout), and, conversely, a label and
layout into the exact tensors (names, shapes, dtypes) a complete module of that kind has.

| layout | precision | tensors per linear |
|---|---|---|
| ``modelopt`` | nvfp4 | ``weight`` U8 [o, i/2], ``weight_scale`` F8_E4M3 [o, i/16], ``weight_scale_2`` F32 [], ``input_scale`` F32 [] (optional) |
| ``ct-nvfp4`` | nvfp4 | ``weight_packed`` U8 [o, i/2], ``weight_scale`` F8_E4M3 [o, i/16], ``weight_global_scale`` F32 [1], ``input_global_scale`` F32 [1] (optional: W4A16) |
| ``block-fp8`` | fp8 | ``weight`` F8_E4M3 [o, i], ``weight_scale_inv`` F32 [ceil(o/128), ceil(i/128)] |
| ``scaled-fp8`` | fp8 | ``weight`` F8_E4M3 [o, i], ``weight_scale`` F32 (compressed-tensors per channel [o, 1], Quark [o], or per tensor), ``input_scale`` (optional) |
| ``mxfp4`` | mxfp4 | ``weight`` U8 [o, i/2], ``weight_scale`` U8 (E8M0) [o, i/32] |
| ``ct-int4`` | int4 | ``weight_packed`` I32 [o, i/8], ``weight_scale`` [o, i/group], ``weight_shape`` I64 [2], ``weight_zero_point`` (optional) |
| ``int8`` | int8 | ``weight`` I8 [o, i], ``weight_scale`` (per channel) |

Scale shapes that depend on a strategy the tensors do not state (per channel, per
tensor, group size) are checked for presence only (``FLEXIBLE_SUFFIXES``).
"""

from __future__ import annotations

from math import ceil
from typing import Literal, Mapping

from .families import LayerTensor
from .safetensors_format import TensorSpec

Precision = Literal["bf16", "nvfp4", "fp8", "mxfp4", "int4", "int8", "mixed", "unknown"]
Layout = Literal["bf16", "modelopt", "ct-nvfp4", "block-fp8", "scaled-fp8", "quark-fp8", "mxfp4", "ct-int4", "int8"]

#: NVFP4 packs two E2M1 values per U8 byte and scales blocks of 16; MXFP4 blocks of 32.
NVFP4_GROUP = 16
MXFP4_GROUP = 32
#: DeepSeek/GLM FP8 releases scale 128x128 blocks.
FP8_BLOCK = 128
#: compressed-tensors packs eight int4 values per I32 and scales groups of 128 by default.
INT4_GROUP = 128

UNQUANTIZED_DTYPES = {"BF16", "F16", "F32"}
QUANTIZED: frozenset[str] = frozenset({"nvfp4", "fp8", "mxfp4", "int4", "int8"})

#: Companion tensors a quantized module may carry without them being required.
OPTIONAL_SUFFIXES: Mapping[str, tuple[str, ...]] = {
    "modelopt": ("input_scale",), "ct-nvfp4": ("input_global_scale",), "scaled-fp8": ("input_scale",),
    "block-fp8": ("input_scale",), "ct-int4": ("weight_zero_point",), "int8": ("input_scale",),
}
#: Scales whose shape follows a strategy the tensors do not state: checked for presence, not shape or dtype.
FLEXIBLE_SUFFIXES: Mapping[str, tuple[str, ...]] = {
    "scaled-fp8": ("weight_scale", "input_scale"), "ct-int4": ("weight_scale", "weight_zero_point"),
    "int8": ("weight_scale", "input_scale"), "mxfp4": ("weight_scale",),
}


def module_layout(module: str, dtypes: Mapping[str, str]) -> Layout | Literal["unknown"] | None:
    """The layout of ``module`` from the dtypes of the tensors present (``name -> dtype``); None when it has
    no weight at all."""
    weight = dtypes.get(f"{module}.weight")
    if weight is None:
        packed = dtypes.get(f"{module}.weight_packed")
        if packed is None:
            return None
        if packed == "U8":
            return "ct-nvfp4"
        return "ct-int4" if packed == "I32" else "unknown"
    if weight in UNQUANTIZED_DTYPES:
        return "bf16"
    if weight == "U8":
        scale = dtypes.get(f"{module}.weight_scale")
        if scale in ("U8", "F8_E8M0"):  # E8M0 block scales, stored as bytes or in safetensors' own dtype
            return "mxfp4"
        return "modelopt" if scale is not None else "unknown"
    if weight == "F8_E4M3":
        return "block-fp8" if f"{module}.weight_scale_inv" in dtypes or f"{module}.weight_scale" not in dtypes \
            else "scaled-fp8"
    if weight == "I8":
        return "int8"
    return "unknown"


_LAYOUT_PRECISION: Mapping[str, Precision] = {
    "bf16": "bf16", "modelopt": "nvfp4", "ct-nvfp4": "nvfp4", "block-fp8": "fp8", "scaled-fp8": "fp8",
    "mxfp4": "mxfp4", "ct-int4": "int4", "int8": "int8", "unknown": "unknown"}


def layout_precision(layout: str) -> Precision:
    return _LAYOUT_PRECISION[layout]


def module_precision(module: str, dtypes: Mapping[str, str]) -> Precision | None:
    """Precision of ``module`` from the dtypes of the tensors present; None when its weight is absent."""
    layout = module_layout(module, dtypes)
    return None if layout is None else layout_precision(layout)


#: The layout a precision is written in when nothing says otherwise (ModelOpt NVFP4, block FP8).
DEFAULT_LAYOUT: Mapping[str, Layout] = {"nvfp4": "modelopt", "fp8": "block-fp8", "mxfp4": "mxfp4",
                                        "int4": "ct-int4", "int8": "int8"}


def quantized_form(tensor: LayerTensor, precision: Precision, *, with_input_scale: bool = True,
                   layout: str | None = None) -> list[TensorSpec]:
    """The tensors a linear weight becomes in ``precision`` (written as ``layout``); name prefixes are kept."""
    if not tensor.linear or precision not in QUANTIZED:
        return [TensorSpec(tensor.name, tensor.dtype, tensor.shape)]
    layout = layout if layout not in (None, "bf16", "unknown") else DEFAULT_LAYOUT[precision]
    out_features, in_features = tensor.shape
    m = tensor.module
    specs: list[TensorSpec]
    if layout == "modelopt":
        specs = [TensorSpec(f"{m}.weight", "U8", (out_features, in_features // 2)),
                 TensorSpec(f"{m}.weight_scale", "F8_E4M3", (out_features, in_features // NVFP4_GROUP)),
                 TensorSpec(f"{m}.weight_scale_2", "F32", ())]
        if with_input_scale:
            specs.append(TensorSpec(f"{m}.input_scale", "F32", ()))
    elif layout == "ct-nvfp4":
        specs = [TensorSpec(f"{m}.weight_packed", "U8", (out_features, in_features // 2)),
                 TensorSpec(f"{m}.weight_scale", "F8_E4M3", (out_features, in_features // NVFP4_GROUP)),
                 TensorSpec(f"{m}.weight_global_scale", "F32", (1,))]
        if with_input_scale:
            specs.append(TensorSpec(f"{m}.input_global_scale", "F32", (1,)))
    elif layout in ("scaled-fp8", "quark-fp8"):  # the same tensors; Quark writes per-channel scales 1-D
        specs = [TensorSpec(f"{m}.weight", "F8_E4M3", (out_features, in_features)),
                 TensorSpec(f"{m}.weight_scale", "F32", (out_features, 1) if layout == "scaled-fp8" else (out_features,))]
    elif layout == "mxfp4":
        specs = [TensorSpec(f"{m}.weight", "U8", (out_features, in_features // 2)),
                 TensorSpec(f"{m}.weight_scale", "U8", (out_features, ceil(in_features / MXFP4_GROUP)))]
    elif layout == "ct-int4":
        specs = [TensorSpec(f"{m}.weight_packed", "I32", (out_features, ceil(in_features / 8))),
                 TensorSpec(f"{m}.weight_scale", "BF16", (out_features, ceil(in_features / INT4_GROUP))),
                 TensorSpec(f"{m}.weight_shape", "I64", (2,))]
    elif layout == "int8":
        specs = [TensorSpec(f"{m}.weight", "I8", (out_features, in_features)),
                 TensorSpec(f"{m}.weight_scale", "F32", (out_features, 1))]
    else:  # block-fp8
        specs = [TensorSpec(f"{m}.weight", "F8_E4M3", (out_features, in_features)),
                 TensorSpec(f"{m}.weight_scale_inv", "F32",
                            (ceil(out_features / FP8_BLOCK), ceil(in_features / FP8_BLOCK)))]
    return specs


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
