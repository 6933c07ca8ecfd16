"""What inspection needs from ``model.safetensors.index.json``: one pass, from the decoded map or the raw text.

``IndexScan.of(weight_map, prefixes)`` reads a decoded index: every entry, every shard it
names. ``check`` uses it, and so does any verdict other than "ready".

``IndexScan.draft_only(raw, prefixes)`` reads only what the draft layer's verdict needs,
straight from the file's bytes, without building the 232k-entry map of a GLM-5.2 index
(the latency-bound preflight). The contract, which makes a byte search exact:

* the document is valid JSON (msgspec parses all of it, skipping ``weight_map`` without
  building it), ``weight_map`` is an object and ``metadata`` is absent, null or an object;
* the text is ASCII without a single backslash, so every ``"`` delimits a string and every
  key appears verbatim. A ``"`` can then only open a string when letters follow it, and a
  string followed by ``:`` is a key;
* every draft key's value is a string.

When any of this does not hold it returns None and the caller decodes the whole index. A
duplicated key keeps its last value, as every JSON decoder here does. What it cannot see,
by construction: the other tensors' entries (which shard files they name, and whether
those shards hold them). Those are SGLang's loader's to judge at load, as the other
shards' headers already are for the preflight.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from . import jsonio

#: Quantized-weight scale suffixes that reveal the target's precision: NVFP4 and FP8 block scales.
QUANT_SUFFIXES = {".weight_scale_2": "nvfp4", ".weight_scale_inv": "fp8"}

_WHITESPACE = b" \t\r\n"


@dataclass
class IndexScan:
    """Everything inspection needs from the weight map, from one pass (mostly inside C)."""

    #: the whole map, or (``complete`` False) only the draft layer's entries
    weight_map: dict[str, str]
    #: the shard files named by ``weight_map``
    referenced: set[str]
    draft_names: list[str]
    quant_suffixes: set[str]
    #: False: read by ``draft_only``, so ``weight_map`` holds the draft entries alone
    complete: bool = True
    #: the index's ``metadata`` (read by ``draft_only``; ``of`` leaves it to the caller's document)
    metadata: Any = None
    _counts: Counter[str] | None = None

    @classmethod
    def of(cls, weight_map: dict[str, Any], prefixes: tuple[str, ...]) -> IndexScan | None:
        """None when a value is not a file name (the caller reports the index as unreadable)."""
        try:
            referenced = set(weight_map.values())
        except TypeError:  # a list or object among the values
            return None
        if not all(isinstance(value, str) for value in referenced):
            return None
        names = "\n" + "\n".join(weight_map) + "\n"  # one string: every search below runs in C
        suffixes = {s for s in QUANT_SUFFIXES if f"{s}\n" in names}
        draft: list[str] = []
        for prefix in prefixes:
            needle = "\n" + prefix
            start = names.find(needle)
            while start >= 0:
                end = names.index("\n", start + 1)
                draft.append(names[start + 1:end])
                start = names.find(needle, end)
        return cls(weight_map, referenced, draft, suffixes)

    @classmethod
    def draft_only(cls, raw: bytes, prefixes: tuple[str, ...]) -> IndexScan | None:
        """The draft layer's entries and the scale suffixes present, from the index's bytes; None: decode it all."""
        parts = _split_index(raw)
        if parts is None:
            return None
        text, metadata = parts
        entries: dict[str, str] = {}
        for prefix in prefixes:
            found = _entries_starting_with(text, prefix.encode("ascii"))
            if found is None:
                return None
            entries.update(found)
        suffixes = {s for s in QUANT_SUFFIXES if _has_key_ending_with(text, s.encode("ascii"))}
        return cls(entries, set(entries.values()), list(entries), suffixes, complete=False, metadata=metadata)

    def count_in(self, shard: str) -> int:
        """Entries that name ``shard`` (of the draft layer alone when not ``complete``)."""
        if self._counts is None:  # one C pass for every shard asked about
            self._counts = Counter(self.weight_map.values())
        return self._counts[shard]

    def names_in(self, shard: str) -> list[str]:
        return [name for name, file in self.weight_map.items() if file == shard]


def _split_index(raw: bytes) -> tuple[bytes, Any] | None:
    """(the weight_map object's text, metadata) when the contract above holds, else None."""
    if not raw.isascii() or b"\\" in raw:
        return None
    parts = jsonio.index_parts(raw)  # None without msgspec, or malformed: the full decode names the problem
    if parts is None:
        return None
    text, metadata = parts
    if metadata is not None and not isinstance(metadata, dict):
        return None  # the full inspection has a warning for it
    if not text.startswith(b"{"):
        return None  # a list or a string: the full decode reports it
    return text, metadata


def _entries_starting_with(text: bytes, prefix: bytes) -> dict[str, str] | None:
    """Every ``"<prefix>…": "<file>"`` member of the object ``text``; None when such a key's value is no string."""
    entries: dict[str, str] = {}
    needle = b'"' + prefix
    start = text.find(needle)
    while start >= 0:
        close = text.index(b'"', start + 1)
        after = _skip_space(text, close + 1)
        if text[after:after + 1] != b":":  # a value (or an array element) that starts with the prefix
            start = text.find(needle, close + 1)
            continue
        value = _skip_space(text, after + 1)
        if text[value:value + 1] != b'"':
            return None
        end = text.index(b'"', value + 1)
        entries[text[start + 1:close].decode("ascii")] = text[value + 1:end].decode("ascii")
        start = text.find(needle, end + 1)
    return entries


def _has_key_ending_with(text: bytes, suffix: bytes) -> bool:
    needle = suffix + b'"'
    at = text.find(needle)
    while at >= 0:
        after = _skip_space(text, at + len(needle))
        if text[after:after + 1] == b":":
            return True
        at = text.find(needle, at + 1)
    return False


def _skip_space(text: bytes, at: int) -> int:
    while at < len(text) and text[at] in _WHITESPACE:
        at += 1
    return at

