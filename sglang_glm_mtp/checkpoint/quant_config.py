"""The checkpoint's quantization declaration, read with SGLang 0.5.23's precedence and matching.

Two formats exist: the flat ``config.json`` ``quantization_config`` (newer ModelOpt;
excludes under ``ignore``) and the nested ``hf_quant_config.json``
(``quantization.exclude_modules``). SGLang reads config.json first and only falls back
to hf_quant_config.json, so that is the order here too. Exclusion matching mirrors
``ModelOptQuantConfig.is_layer_excluded``: glob -> regex fullmatch on the whole prefix
or any single dot-separated part, the fused-QKV tail rule, and ``language_model.``
stripping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, Mapping

from .families import layer_prefix
from .precision import Precision

QuantSource = Literal["config.json", "hf_quant_config.json", "none"]

_FUSED_TAILS = ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj")


@dataclass(frozen=True)
class QuantDeclaration:
    """What the checkpoint's config files say about quantization."""

    source: QuantSource
    method: str | None  # e.g. "modelopt", "fp8"
    quant_algo: str | None  # e.g. "NVFP4", "FP8"
    exclude: tuple[str, ...] = ()
    exclude_key: str | None = None  # "ignore" / "exclude_modules" / ...: where graft writes
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def precision(self) -> Precision:
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
        return self.method in (None, "modelopt", "modelopt_fp4", "modelopt_fp8") and self.quant_algo is not None

    def is_excluded(self, prefix: str) -> bool:
        return is_layer_excluded(prefix, self.exclude)

    def excludes_all_under(self, prefix: str) -> bool:
        """Is every module whose name starts with ``prefix`` excluded, by one glob of literal text and a final
        ``*`` (e.g. the ``model.layers.78*`` graft writes)? Then no module needs matching one by one."""
        candidates = [prefix] + ([prefix[len("language_model."):]] if prefix.startswith("language_model.") else [])
        return any(glob.endswith("*") and "*" not in glob[:-1] and not _REGEX_META.intersection(glob)
                   and candidate.startswith(glob[:-1]) for glob in self.exclude for candidate in candidates)


class QuantConfigError(ValueError):
    """A quantization declaration SGLang could not use either; the message names file, key and entry."""


def read_quant_declaration(config: Mapping[str, Any], hf_quant_config: Any) -> QuantDeclaration:
    """Apply SGLang's precedence: config.json's quantization_config wins.

    Raises ``QuantConfigError`` for a declaration of the wrong shape (an exclude entry that
    is not a string, a pattern that SGLang's regex compiler rejects, a non-string method).
    """
    flat = config.get("quantization_config")
    if flat is not None and not isinstance(flat, Mapping):
        raise QuantConfigError(f"config.json quantization_config must be an object, got {_short(flat)}")
    if flat:
        method = _optional_str(flat, "quant_method", "config.json quantization_config")
        algo = _optional_str(flat, "quant_algo", "config.json quantization_config")
        if algo is None and method == "fp8":
            algo = "FP8"
        for key in ("ignore", "modules_to_not_convert", "exclude_modules"):
            if key in flat:
                patterns = _patterns(flat.get(key), f"config.json quantization_config.{key}")
                return QuantDeclaration("config.json", method, algo, patterns, key, flat)
        return QuantDeclaration("config.json", method, algo, (), "ignore" if method in (None, "modelopt") else
                                "modules_to_not_convert", flat)
    if hf_quant_config is not None:
        if not isinstance(hf_quant_config, Mapping):
            raise QuantConfigError(f"hf_quant_config.json must be a JSON object, got {_short(hf_quant_config)}")
        nested = hf_quant_config.get("quantization")
        if nested is not None and not isinstance(nested, Mapping):
            raise QuantConfigError(f"hf_quant_config.json 'quantization' must be an object, got {_short(nested)}")
        if isinstance(nested, Mapping):
            where = "hf_quant_config.json quantization"
            return QuantDeclaration("hf_quant_config.json", "modelopt", _optional_str(nested, "quant_algo", where),
                                    _patterns(nested.get("exclude_modules"), f"{where}.exclude_modules"),
                                    "exclude_modules", hf_quant_config)
    return QuantDeclaration("none", None, None)


def _optional_str(doc: Mapping[str, Any], key: str, where: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise QuantConfigError(f"{where}.{key} must be a string, got {_short(value)}")
    return value


def _patterns(value: Any, where: str) -> tuple[str, ...]:
    """An exclude list: a list of glob strings that SGLang can compile (it turns each into a regex)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise QuantConfigError(f"{where} must be a list of module patterns, got {_short(value)}")
    for position, entry in enumerate(value):
        if not isinstance(entry, str):
            raise QuantConfigError(f"{where}[{position}] is {_short(entry)}, not a module pattern; "
                                   "remove it or write the pattern as a string")
    for position, entry in enumerate(value):
        if _REGEX_META.intersection(entry):  # literal text and '*' always compile; only these can fail
            try:
                re.compile(_glob_regex(entry))
            except re.error as exc:
                raise QuantConfigError(f"{where}[{position}] {entry!r} is not a valid pattern (SGLang compiles "
                                       f"it as a regex: {exc}); fix or remove it") from None
    return tuple(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _glob_regex(glob: str) -> str:
    """SGLang's ``_compile_exclusion_pattern``: ``.`` is literal, ``*`` is any run."""
    return glob.replace(".", "\\.").replace("*", ".*")


#: Characters that make a glob more than literal text and ``*`` once SGLang turns it into a regex.
_REGEX_META = frozenset("[](){}?+|^$\\")


class _Matcher:
    """SGLang's per-glob regex semantics, without compiling hundreds of globs into one regex.

    Python's regex compiler is written in Python: a 400-glob alternation (a GLM-5.2 NVFP4
    exclude list) costs ~0.1 s per process. A glob can only fullmatch text that starts with
    its literal head (the text before its first ``*``), and a glob with a ``.`` never matches
    a dot-free part, so each query compiles (once, cached) only the few globs that can match.
    """

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.any_text: dict[str, list[str]] = {}  # head -> globs, for the whole prefix
        self.one_part: dict[str, list[str]] = {}  # head -> dot-free globs, for single parts
        for glob in dict.fromkeys(patterns):
            head = glob.split("*", 1)[0]
            if _REGEX_META.intersection(head):
                head = ""  # not literal text: always a candidate
            self.any_text.setdefault(head, []).append(glob)
            if "." not in glob:
                self.one_part.setdefault(head, []).append(glob)
        self.tails = frozenset(t for t in (g.rsplit(".", 1)[-1] for g in patterns) if t in _FUSED_TAILS)
        self._parts: dict[str, bool] = {}  # "model", "layers", "78", "mlp", ...: asked hundreds of times
        self._any_lengths = sorted({len(head) for head in self.any_text})
        self._part_lengths = sorted({len(head) for head in self.one_part})

    @staticmethod
    def _match(text: str, table: dict[str, list[str]], lengths: list[int]) -> bool:
        globs: list[str] = []
        for length in lengths:  # only the head lengths that occur: a few dozen dict probes
            if length > len(text):
                break
            globs += table.get(text[:length], ())
        return bool(globs) and _alternation(tuple(globs)).fullmatch(text) is not None

    def _part(self, part: str) -> bool:
        known = self._parts.get(part)
        if known is None:
            known = self._parts[part] = self._match(part, self.one_part, self._part_lengths)
        return known

    def excluded(self, candidate: str) -> bool:
        return (self._match(candidate, self.any_text, self._any_lengths)
                or any(self._part(part) for part in candidate.split(".")))


@lru_cache(maxsize=1024)
def _alternation(globs: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{_glob_regex(glob)})" for glob in globs))


@lru_cache(maxsize=64)
def _matcher(patterns: tuple[str, ...]) -> _Matcher:
    return _Matcher(patterns)


def is_layer_excluded(prefix: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """SGLang 0.5.23's ``ModelOptQuantConfig.is_layer_excluded`` semantics, without SGLang."""
    if not patterns:
        return False
    matcher = _matcher(tuple(patterns))
    candidates = [prefix]
    if prefix.startswith("language_model."):
        candidates.append(prefix[len("language_model."):])
    if any(matcher.excluded(candidate) for candidate in candidates):
        return True
    last = prefix.rsplit(".", 1)[-1]
    return any(tail in last for tail in matcher.tails)


def draft_exclude_pattern(layer: int) -> str:
    """The pattern graft adds (and the published overlays use) to keep the draft BF16."""
    return layer_prefix(layer) + "*"
