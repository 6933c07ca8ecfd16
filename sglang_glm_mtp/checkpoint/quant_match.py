"""Exclusion matching, one function per quantization dialect, each mirroring SGLang 0.5.23's own code.

A quant config decides per module whether SGLang builds it quantized. Each dialect has
its own rule, and the draft's modules are asked by SGLang's names (``model.decoder.*``),
so the package answers with the same rule on the same names:

* ModelOpt (``ModelOptQuantConfig.is_layer_excluded``): globs, ``.`` literal and ``*`` any
  run, full match on the whole prefix or any single dot-separated part, the fused-QKV tail
  rule, and ``language_model.`` stripping;
* compressed-tensors (``compressed_tensors/utils.py`` ``should_ignore_layer``): ``re:`` +
  a regex tried with ``re.match`` (anchored at the start only), else equality or a dotted
  suffix; a fused module is judged by its shards, which must agree;
* Quark (``quark/utils.py`` ``should_ignore_layer``): ``re:`` regex or equality, the fused
  name first, then the shards; an ``…experts`` module is excluded by any entry under it;
* block FP8 (``quantization/utils.py`` ``is_layer_skipped``): dotted-path prefix match,
  with ``model.``-less twins added by ``Fp8Config.from_config``.

Hand-written because SGLang's functions need torch and SGLang itself; ``check`` and
``graft`` must run without both. tests/test_quant_dialects.py pins each against the real one.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable, Mapping

from ..errors import GlmMtpError

#: The MLA projections SGLang fuses whose checkpoint names a ModelOpt tail rule matches.
FUSED_TAILS = ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj")
#: Fused module -> checkpoint shards, as the DeepSeek/GLM classes declare ``packed_modules_mapping``
#: (the target adds ``fused_qkv_a_proj_with_mqa`` when it is constructed).
PACKED_MODULES: Mapping[str, tuple[str, ...]] = {
    "qkv_proj": ("q_proj", "k_proj", "v_proj"),
    "gate_up_proj": ("gate_proj", "up_proj"),
    "fused_qkv_a_proj_with_mqa": ("q_a_proj", "kv_a_proj_with_mqa"),
}
#: ``is_layer_skipped``'s own fallback when a config ships no packed_modules_mapping.
_FP8_FALLBACK_FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}

#: Characters that make a glob more than literal text and ``*`` once SGLang turns it into a regex.
REGEX_META = frozenset("[](){}?+|^$\\")


class FusedShardsDisagree(GlmMtpError, ValueError):
    """SGLang raises this too: a fused module whose shards are not all excluded or all quantized."""


# ----------------------------------------------------------------------------- ModelOpt


def glob_regex(glob: str) -> str:
    """SGLang's ``_compile_exclusion_pattern``: ``.`` is literal, ``*`` is any run."""
    return glob.replace(".", "\\.").replace("*", ".*")


class _GlobMatcher:
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
            if REGEX_META.intersection(head):
                head = ""  # not literal text: always a candidate
            self.any_text.setdefault(head, []).append(glob)
            if "." not in glob:
                self.one_part.setdefault(head, []).append(glob)
        self.tails = frozenset(t for t in (g.rsplit(".", 1)[-1] for g in patterns) if t in FUSED_TAILS)
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
    return re.compile("|".join(f"(?:{glob_regex(glob)})" for glob in globs))


@lru_cache(maxsize=64)
def _glob_matcher(patterns: tuple[str, ...]) -> _GlobMatcher:
    return _GlobMatcher(patterns)


def modelopt_excluded(prefix: str, patterns: Iterable[str]) -> bool:
    """SGLang 0.5.23's ``ModelOptQuantConfig.is_layer_excluded``."""
    patterns = tuple(patterns)
    if not patterns:
        return False
    matcher = _glob_matcher(patterns)
    candidates = [prefix]
    if prefix.startswith("language_model."):
        candidates.append(prefix[len("language_model."):])
    if any(matcher.excluded(candidate) for candidate in candidates):
        return True
    last = prefix.rsplit(".", 1)[-1]
    return any(tail in last for tail in matcher.tails)


# ----------------------------------------------------------------------------- compressed-tensors and Quark


@lru_cache(maxsize=4096)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


class _Entries:
    """An exclude list split once into exact names and ``re:`` patterns: a real list names hundreds of modules
    one by one, and a draft layer asks about ~800, so each query is a few set probes, not a scan."""

    def __init__(self, entries: tuple[str, ...]) -> None:
        self.exact = frozenset(e for e in entries if not e.startswith("re:"))
        self.regexes = [_regex(e[3:]) for e in dict.fromkeys(entries) if e.startswith("re:")]

    def regex(self, name: str) -> bool:
        return any(pattern.match(name) for pattern in self.regexes)


@lru_cache(maxsize=64)
def _entries(entries: tuple[str, ...]) -> _Entries:
    return _Entries(entries)


def _dotted_suffixes(name: str) -> Iterable[str]:
    start = name.find(".")
    while start >= 0:
        yield name[start + 1:]
        start = name.find(".", start + 1)


def _ct_match(name: str, entries: tuple[str, ...]) -> bool:
    """compressed-tensors ``check_equal_or_regex_match``: regex, equality, or a dotted suffix."""
    table = _entries(entries)
    return name in table.exact or any(s in table.exact for s in _dotted_suffixes(name)) or table.regex(name)


def _quark_match(name: str, entries: tuple[str, ...]) -> bool:
    """Quark ``check_equal_or_regex_match``: regex or equality (no suffix rule)."""
    table = _entries(entries)
    return name in table.exact or table.regex(name)


def _shards_agree(name: str, fused: Mapping[str, tuple[str, ...]], entries: tuple[str, ...], match) -> bool | None:
    proj = name.rsplit(".", 1)[-1]
    if proj not in fused:
        return None
    verdicts = {match(name.replace(proj, shard), entries) for shard in fused[proj]}
    if len(verdicts) > 1:
        raise FusedShardsDisagree(f"{name}: some but not all of {', '.join(fused[proj])} are excluded; SGLang "
                                  "requires one scheme for every shard of a fused module")
    return verdicts.pop()


def ct_ignored(name: str, ignore: Iterable[str], fused: Mapping[str, tuple[str, ...]] = PACKED_MODULES) -> bool:
    """compressed-tensors ``should_ignore_layer``."""
    entries = tuple(ignore)
    if name not in entries:
        verdict = _shards_agree(name, fused, entries, _ct_match)
        if verdict is not None:
            return verdict
    return _ct_match(name, entries)


def quark_ignored(name: str, exclude: Iterable[str], fused: Mapping[str, tuple[str, ...]] = PACKED_MODULES) -> bool:
    """Quark ``should_ignore_layer``."""
    entries = tuple(exclude)
    if _quark_match(name, entries):
        return True
    if name.endswith(".experts") and any(entry.startswith(name + ".") for entry in entries):
        return True
    return bool(_shards_agree(name, fused, entries, _quark_match))


# ----------------------------------------------------------------------------- block FP8


def _module_path_match(ignored: str, prefix: str) -> bool:
    ignored, prefix = ignored.rstrip("."), prefix.rstrip(".")
    return ignored == prefix or prefix.startswith(ignored + ".") or f".{ignored}." in f".{prefix}."


@lru_cache(maxsize=64)
def _stripped_entries(entries: tuple[str, ...]) -> _Entries:
    return _entries(tuple(e.rstrip(".") for e in entries))


def _path_match_any(prefix: str, entries: tuple[str, ...]) -> bool:
    """``any(_module_path_match(e, prefix) for e in entries)``, as set probes: the rule matches exactly the
    entries equal to a contiguous run of ``prefix``'s dotted parts (a leading run included)."""
    table = _stripped_entries(entries)
    parts = prefix.rstrip(".").split(".")
    return any(".".join(parts[i:j]) in table.exact for i in range(len(parts)) for j in range(i + 1, len(parts) + 1))


@lru_cache(maxsize=64)
def _fp8_normalized(ignored: tuple[str, ...]) -> tuple[str, ...]:
    return fp8_normalized(ignored)


def fp8_normalized(ignored: Iterable[str]) -> tuple[str, ...]:
    """``Fp8Config.from_config`` keeps both the ``model.``-prefixed and the bare spelling of each entry."""
    out: list[str] = []
    for entry in ignored:
        base = entry.removeprefix("model.")
        out += [base, f"model.{base}"]
    return tuple(out)


def fp8_skipped(prefix: str, ignored: Iterable[str], fused: Mapping[str, tuple[str, ...]] = PACKED_MODULES) -> bool:
    """``is_layer_skipped`` over ``fp8_normalized`` entries."""
    entries = _fp8_normalized(tuple(ignored))  # asked once per draft module: normalised once per list
    proj = prefix.rsplit(".", 1)[-1]
    table = fused if proj in fused else _FP8_FALLBACK_FUSED
    if proj in table:
        return bool(_shards_agree(prefix, table, entries, _path_match_any))
    skipped = _path_match_any(prefix, entries)
    if "experts" in prefix:
        skipped = skipped or any(prefix in entry for entry in entries if "experts" in entry)
    return skipped
