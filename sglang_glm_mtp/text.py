"""How values and lists appear inside messages: the one home of these rules for every room.

Library messages (errors, log lines, report problems) and the CLI both format through here, so a
long list or a huge value reads the same wherever it appears.
"""

from __future__ import annotations

from typing import Any, Iterable

#: How many names a message lists before it says how many more there are.
NAMES_IN_MESSAGE = 8
#: The longest ``repr`` of an unexpected value a message quotes.
VALUE_IN_MESSAGE = 60
_DECIMAL_UNITS = (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3))
_TRUE_WORDS = ("1", "true", "yes", "on")


def listed(names: Iterable[Any], limit: int = NAMES_IN_MESSAGE) -> str:
    """``a, b, c, … (+12 more)``: the first ``limit`` names, then how many were left out."""
    names = [str(name) for name in names]
    shown = ", ".join(names[:limit])
    return shown + (f", … (+{len(names) - limit} more)" if len(names) > limit else "")


def short(value: Any) -> str:
    """A value's ``repr`` cut to ``VALUE_IN_MESSAGE`` characters (a malformed field can be megabytes)."""
    text = repr(value)
    return text if len(text) <= VALUE_IN_MESSAGE else text[:VALUE_IN_MESSAGE - 3] + "..."


def decimal_size(n: int, digits: int = 1) -> str | None:
    """``19.9 GB`` in decimal units (as Hugging Face prints sizes); None below one kB."""
    for unit, scale in _DECIMAL_UNITS:
        if abs(n) >= scale:
            return f"{n / scale:.{digits}f} {unit}"
    return None


def truthy(value: str | None) -> bool:
    """An environment switch as huggingface_hub reads its own (``1``/``true``/``yes``/``on``)."""
    return (value or "").strip().lower() in _TRUE_WORDS
