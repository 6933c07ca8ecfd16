"""The checkpoint's quantization declaration, in each dialect GLM and DeepSeek checkpoints ship in.

Contract (what SGLang 0.5.23 reads, and so what this module reads):

* **Where.** ``config.json`` ``quantization_config`` wins; only without it does the nested
  ModelOpt ``hf_quant_config.json`` (``quantization.{quant_algo, exclude_modules}``) count.
* **Dialect**, from ``quant_method``: ``modelopt`` (also missing, ``modelopt_fp4``,
  ``modelopt_fp8``, ``modelopt_mixed``), ``fp8`` (block FP8: the official FP8 releases),
  ``compressed-tensors`` (llm-compressor), ``quark`` (AMD Quark). Any other method is
  ``unknown``: its precision is ``unknown``, never read as BF16.
* **Target precision.** ModelOpt: ``quant_algo``. compressed-tensors: ``format``
  (``nvfp4-pack-quantized``, ``float-quantized``, ``pack-quantized``, ``naive-quantized``,
  ``int-quantized``, ``mixed-precision``) refined by every ``config_groups.*.weights``.
  Quark: ``global_quant_config.weight`` (a dict, or a list whose first entry is the weight).
* **Exclusions.** ModelOpt ``ignore`` / ``modules_to_not_convert`` / ``exclude_modules``
  (globs), FP8 ``modules_to_not_convert`` / ``ignored_layers`` (dotted prefixes),
  compressed-tensors ``ignore`` and Quark ``exclude`` (names, or ``re:`` + a regex). Each is
  matched by its dialect's rule (``quant_match.py``).
* **Malformed** (``QuantConfigError``, naming file, key and entry): a non-string entry, a
  regex SGLang cannot compile, a ``config_groups`` group without ``weights``, an unknown
  compressed-tensors ``format``, a Quark config without ``global_quant_config``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, Mapping

from ..errors import GlmMtpError
from ..text import short
from . import quant_match
from .draft_names import apply_name_map, draft_module, fp8_exclusions, regex_exclusions, remap_entries
from .families import layer_prefix
from .files import CONFIG_FILE, QUANT_FILE
from .precision import Precision

QuantSource = Literal["config.json", "hf_quant_config.json", "none"]
Dialect = Literal["modelopt", "fp8", "compressed-tensors", "quark", "none", "unknown"]

MODELOPT_METHODS = (None, "modelopt", "modelopt_fp4", "modelopt_fp8", "modelopt_mixed")
CT_METHODS = ("compressed-tensors", "compressed_tensors")
#: compressed-tensors formats SGLang 0.5.23 loads, and the precision each stands for when the weights say no more.
CT_FORMATS: Mapping[str, Precision] = {
    "nvfp4-pack-quantized": "nvfp4", "float-quantized": "fp8", "pack-quantized": "int4",
    "naive-quantized": "int8", "int-quantized": "int8", "mixed-precision": "mixed", "mxfp4-pack-quantized": "mxfp4",
}
#: Where each dialect keeps its exclusions, in the order SGLang looks (graft writes to the first present,
#: else to the first).
EXCLUDE_KEYS: Mapping[str, tuple[str, ...]] = {
    "modelopt": ("ignore", "modules_to_not_convert", "exclude_modules"),
    "fp8": ("modules_to_not_convert", "ignored_layers"),
    "compressed-tensors": ("ignore",),
    "quark": ("exclude",),
}


@dataclass(frozen=True)
class QuantDeclaration:
    """What the checkpoint's config files say about quantization."""

    source: QuantSource
    method: str | None  # e.g. "modelopt", "fp8", "compressed-tensors", "quark"
    quant_algo: str | None  # ModelOpt's "NVFP4" / "FP8"; for the other dialects, a label of their scheme
    exclude: tuple[str, ...] = ()
    exclude_key: str | None = None  # "ignore" / "exclude_modules" / "exclude" ...: where graft writes
    raw: Mapping[str, Any] = field(default_factory=dict)
    #: the precision the dialect's own fields give (compressed-tensors, Quark); ModelOpt reads quant_algo
    scheme: Precision | None = None

    @property
    def dialect(self) -> Dialect:
        if self.source == "none":
            return "none"
        if self.source == "hf_quant_config.json" or self.method in MODELOPT_METHODS:
            return "modelopt"
        if self.method == "fp8":
            return "fp8"
        if self.method in CT_METHODS:
            return "compressed-tensors"
        if self.method == "quark":
            return "quark"
        return "unknown"

    @property
    def precision(self) -> Precision:
        if self.dialect in ("compressed-tensors", "quark", "unknown"):
            return self.scheme or "unknown"
        algo = (self.quant_algo or "").upper()
        if "FP4" in algo:
            return "nvfp4"
        if "FP8" in algo or self.method == "fp8":
            return "fp8"
        return "bf16"

    @property
    def quantizes(self) -> bool:
        return self.source != "none" and self.precision != "bf16"

    @property
    def is_modelopt(self) -> bool:
        return self.dialect == "modelopt" and self.quant_algo is not None

    def is_excluded(self, prefix: str) -> bool:
        """Does the dialect's rule exclude the module ``prefix``, asked by this (checkpoint) name?"""
        return _excluded_by(self.dialect, prefix, self.exclude)

    def excludes_all_under(self, prefix: str) -> bool:
        """Is every module whose name starts with ``prefix`` excluded, by one glob of literal text and a final
        ``*`` (e.g. the ``model.layers.78*`` graft writes)? Then no module needs matching one by one."""
        if self.dialect != "modelopt":
            return False
        candidates = [prefix] + ([prefix[len("language_model."):]] if prefix.startswith("language_model.") else [])
        return any(glob.endswith("*") and "*" not in glob[:-1] and not quant_match.REGEX_META.intersection(glob)
                   and candidate.startswith(glob[:-1]) for glob in self.exclude for candidate in candidates)

    def stock_builds_quantized(self, relative: str, name_map: tuple[tuple[str, str], ...] = (),
                               quark_remap: str | None = None) -> bool:
        """Does stock SGLang 0.5.23 build the draft module ``relative`` (``mlp.experts.3.up_proj``) quantized?

        Asked by the draft's module name (``draft_names.draft_module``) against the entries the
        name map leaves. ModelOpt NVFP4 never: the NextN constructors null a ``modelopt_fp4``
        config. Routed experts are one fused module: compressed-tensors asks expert 0's
        projections, the others the ``…mlp.experts`` module. Only the MoE ``FusedMoE`` and linear
        modules are asked; a fused module whose shards disagree is quantized (SGLang refuses it).
        ``quark_remap``: the checkpoint prefix whose exact Quark entries the draft class itself
        rewrites to draft names (GLM-5's ``_resolve_nextn_quant_config``).
        """
        if not self.quantizes or (self.dialect == "modelopt" and self.precision == "nvfp4"):
            return False
        if self.dialect == "unknown":
            return True
        name = draft_module(relative)
        entries = _stock_draft_entries(self.exclude, name_map, quark_remap if self.dialect == "quark" else None)
        experts = re.match(r"(.*\.mlp\.experts)\.\d+\.(\w+)$", name)
        try:
            if experts and self.dialect == "compressed-tensors":
                return not any(quant_match.ct_ignored(f"{experts.group(1)}.0.{proj}", entries)
                               for proj in ("gate_proj", "up_proj", "down_proj"))
            if experts:
                name = experts.group(1)
            if self.dialect == "quark" and relative.startswith(("enorm", "hnorm", "shared_head")):
                return False
            if self.dialect != "quark" and relative.startswith("eh_proj"):
                return False  # a plain nn.Linear outside Quark
            return not _excluded_by(self.dialect, name, entries)
        except quant_match.FusedShardsDisagree:
            return True

    def bf16_draft_entries(self, ckpt_prefix: str, name_map: tuple[tuple[str, str], ...] = ()) -> list[str]:
        """What graft writes to keep a BF16 draft layer unquantized, in this dialect's own syntax."""
        dialect = self.dialect
        if dialect in ("compressed-tensors", "quark"):
            return regex_exclusions(ckpt_prefix, dialect, name_map)
        if dialect == "fp8":
            return fp8_exclusions(ckpt_prefix)
        return [ckpt_prefix + "*"]


@lru_cache(maxsize=64)
def _stock_draft_entries(exclude: tuple[str, ...], name_map: tuple[tuple[str, str], ...],
                         quark_remap: str | None) -> tuple[str, ...]:
    """The entries stock SGLang holds for the draft: after the class's name map, and GLM-5's own rewrite of exact
    Quark entries of its layer (``quark_remap``). Asked once per draft module: computed once per declaration."""
    entries = tuple(apply_name_map(exclude, name_map)) if name_map else exclude
    if quark_remap:
        exact = [e for e in entries if e.startswith(quark_remap + ".")]
        entries = tuple(dict.fromkeys(entries + tuple(remap_entries(exact, quark_remap))))
        if any(".mlp.experts." in e for e in exact):
            entries += ("model.decoder.mlp.experts",)
    return entries


def _excluded_by(dialect: str, name: str, entries: tuple[str, ...]) -> bool:
    if dialect == "compressed-tensors":
        return quant_match.ct_ignored(name, entries)
    if dialect == "quark":
        return quant_match.quark_ignored(name, entries)
    if dialect == "fp8":
        return quant_match.fp8_skipped(name, entries)
    return quant_match.modelopt_excluded(name, entries)


class QuantConfigError(GlmMtpError, ValueError):
    """A quantization declaration SGLang could not use either; the message names file, key and entry.

    ``file`` is ``config.json`` or ``hf_quant_config.json``; ``key`` the field inside it (e.g.
    ``quantization_config.ignore[3]``), None when the whole document is wrong.
    """


@dataclass(frozen=True)
class _Where:
    """A place in a quant config file, as messages name it: ``config.json quantization_config.ignore[3]``."""

    file: str
    key: str

    def __str__(self) -> str:
        return f"{self.file} {self.key}"

    def child(self, key: str) -> _Where:
        return _Where(self.file, f"{self.key}.{key}")

    def item(self, position: int) -> _Where:
        return _Where(self.file, f"{self.key}[{position}]")

    def error(self, message: str) -> QuantConfigError:
        """``<file> <key> <message>``, with ``file`` and ``key`` set for callers that branch on them."""
        return QuantConfigError(f"{self} {message}", file=self.file, key=self.key)


def read_quant_declaration(config: Mapping[str, Any], hf_quant_config: Any) -> QuantDeclaration:
    """Apply SGLang's precedence: config.json's quantization_config wins.

    Raises ``QuantConfigError`` for a declaration of the wrong shape (see the module docstring).
    """
    flat = config.get("quantization_config")
    if flat is not None and not isinstance(flat, Mapping):
        raise _Where(CONFIG_FILE, "quantization_config").error(f"must be an object, got {short(flat)}")
    if flat:
        where = _Where(CONFIG_FILE, "quantization_config")
        method = _optional_str(flat, "quant_method", where)
        if method in CT_METHODS:
            return _compressed_tensors(flat, method, where)
        if method == "quark":
            return _quark(flat, where)
        algo = _optional_str(flat, "quant_algo", where)
        if method == "fp8":
            algo = algo or "FP8"
        if method not in MODELOPT_METHODS and method != "fp8":
            return QuantDeclaration("config.json", method, algo, (), None, flat, scheme="unknown")
        dialect = "fp8" if method == "fp8" else "modelopt"
        for key in EXCLUDE_KEYS[dialect] + (("ignore", "exclude_modules") if dialect == "fp8" else ()):
            if key in flat:
                patterns = _entries(flat.get(key), where.child(key), globs=dialect == "modelopt")
                return QuantDeclaration("config.json", method, algo, patterns, key, flat)
        return QuantDeclaration("config.json", method, algo, (), EXCLUDE_KEYS[dialect][0], flat)
    if hf_quant_config is not None:
        if not isinstance(hf_quant_config, Mapping):
            raise QuantConfigError(f"hf_quant_config.json must be a JSON object, got {short(hf_quant_config)}",
                                   file=QUANT_FILE)
        nested = hf_quant_config.get("quantization")
        if nested is not None and not isinstance(nested, Mapping):
            raise QuantConfigError(f"hf_quant_config.json 'quantization' must be an object, got {short(nested)}",
                                   file=QUANT_FILE, key="quantization")
        if isinstance(nested, Mapping):
            where = _Where(QUANT_FILE, "quantization")
            return QuantDeclaration("hf_quant_config.json", "modelopt", _optional_str(nested, "quant_algo", where),
                                    _entries(nested.get("exclude_modules"), where.child("exclude_modules"), globs=True),
                                    "exclude_modules", hf_quant_config)
    return QuantDeclaration("none", None, None)


# ----------------------------------------------------------------------------- compressed-tensors


def _compressed_tensors(flat: Mapping[str, Any], method: str, where: _Where) -> QuantDeclaration:
    fmt = _optional_str(flat, "format", where)
    if fmt is not None and fmt not in CT_FORMATS and fmt != "dense":
        raise where.child("format").error(f"{fmt!r} is not a compressed-tensors format SGLang 0.5.23 loads "
                                          f"({', '.join(CT_FORMATS)}); re-export the checkpoint with llm-compressor")
    groups = flat.get("config_groups")
    if groups is None:
        groups = {}
    if not isinstance(groups, Mapping):
        raise where.child("config_groups").error(f"must be an object of groups, got {short(groups)}")
    precisions: set[Precision] = set()
    for name, group in groups.items():
        here = where.child(f"config_groups.{name}")
        if not isinstance(group, Mapping):
            raise here.error(f"must be an object, got {short(group)}")
        weights = group.get("weights")
        if not isinstance(weights, Mapping):
            raise here.error(f"has no 'weights' object (got {short(weights)}); SGLang cannot build a "
                             "scheme without it: restore it from the release")
        _entries(group.get("targets"), here.child("targets"), globs=False)
        precisions.add(_ct_weight_precision(weights, fmt, here))
    if not precisions:
        precisions.add(CT_FORMATS.get(fmt or "", "unknown"))
    scheme: Precision = precisions.pop() if len(precisions) == 1 else "mixed"
    ignore = _entries(flat.get("ignore"), where.child("ignore"), globs=False)
    return QuantDeclaration("config.json", method, fmt, ignore, "ignore", flat, scheme=scheme)


def _ct_weight_precision(weights: Mapping[str, Any], fmt: str | None, where: _Where) -> Precision:
    bits, kind = weights.get("num_bits"), weights.get("type", "int")
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise where.child("weights.num_bits").error(f"must be an integer, got {short(bits)}")
    if kind == "float":
        if bits == 8:
            return "fp8"
        if bits == 4:
            return "mxfp4" if weights.get("group_size") == 32 and fmt == "mxfp4-pack-quantized" else "nvfp4"
    if kind == "int":
        return {4: "int4", 8: "int8"}.get(bits, "unknown")
    return "unknown"


# ----------------------------------------------------------------------------- Quark


def _quark(flat: Mapping[str, Any], where: _Where) -> QuantDeclaration:
    global_config = flat.get("global_quant_config")
    if not isinstance(global_config, Mapping):
        raise where.error(f"(quant_method quark) has no global_quant_config object (got {short(global_config)}); "
                          "restore it from the release")
    weight = global_config.get("weight")
    scheme = _quark_weight_precision(weight)
    exclude = _entries(flat.get("exclude"), where.child("exclude"), globs=False)
    label = weight[0].get("dtype") if isinstance(weight, list) and weight and isinstance(weight[0], Mapping) else (
        weight.get("dtype") if isinstance(weight, Mapping) else None)
    return QuantDeclaration("config.json", "quark", label if isinstance(label, str) else None, exclude, "exclude",
                            flat, scheme=scheme)


def _quark_weight_precision(weight: Any) -> Precision:
    """``fp8_e4m3`` -> FP8; ``fp4`` in groups of 16 with an FP8 second scale -> NVFP4, else MXFP4; int4/int8."""
    parts = weight if isinstance(weight, list) else [weight]
    first = parts[0] if parts and isinstance(parts[0], Mapping) else None
    if first is None:
        return "bf16" if weight is None else "unknown"
    dtype = str(first.get("dtype", "")).lower()
    if dtype.startswith("fp8"):
        return "fp8"
    if dtype == "fp4":
        return "nvfp4" if first.get("group_size") == 16 or len(parts) == 2 else "mxfp4"
    if dtype in ("int4", "uint4"):
        return "int4"
    if dtype in ("int8", "uint8"):
        return "int8"
    return "unknown"


# ----------------------------------------------------------------------------- shared validation


def _optional_str(doc: Mapping[str, Any], key: str, where: _Where) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise where.child(key).error(f"must be a string, got {short(value)}")
    return value


def _entries(value: Any, where: _Where, *, globs: bool) -> tuple[str, ...]:
    """An exclude (or targets) list of strings SGLang can compile: ModelOpt globs, or names and ``re:`` regexes."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise where.error(f"must be a list of module names or patterns, got {short(value)}")
    for position, entry in enumerate(value):
        if not isinstance(entry, str):
            raise where.item(position).error(f"is {short(entry)}, not a module pattern; "
                                             "remove it or write the pattern as a string")
    for position, entry in enumerate(value):
        if globs and quant_match.REGEX_META.intersection(entry):  # literal text and '*' always compile
            pattern = quant_match.glob_regex(entry)
        elif not globs and entry.startswith("re:"):
            pattern = entry[3:]
        else:
            continue
        try:
            re.compile(pattern)
        except re.error as exc:
            raise where.item(position).error(f"{entry!r} is not a valid pattern (SGLang compiles it as a regex: "
                                             f"{exc}); fix or remove it") from None
    return tuple(value)



def precision_of_method(quantization: str | None) -> Precision:
    """A ``--quantization`` name's precision, when nothing was read from the checkpoint (the preflight could not).

    compressed-tensors and Quark name no precision: their checkpoint says it, so without it they count as
    unquantized here (the runner rule then keeps the target's runner).
    """
    if quantization in ("modelopt_fp4", "nvfp4_online", "modelopt_mixed"):
        return "nvfp4"
    if quantization in ("fp8", "modelopt_fp8", "mxfp8"):
        return "fp8"
    return "bf16"


def is_layer_excluded(prefix: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """ModelOpt's rule (``quant_match.modelopt_excluded``), the one every ModelOpt caller asks."""
    return quant_match.modelopt_excluded(prefix, patterns)


def draft_exclude_pattern(layer: int) -> str:
    """The ModelOpt glob graft adds (and the published overlays use) to keep the draft BF16."""
    return layer_prefix(layer) + "*"
