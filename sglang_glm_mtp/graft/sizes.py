"""Sizes as people write them (``5GB``, ``512MiB``) and as the CLI prints them."""

from __future__ import annotations

import re

from ..errors import UsageError
from ..text import decimal_size


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
          "tb": 10**12, "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30, "gib": 2**30,
          "ti": 2**40, "tib": 2**40}


def parse_size(text: str | int | None) -> int | None:
    """``5GB`` -> 5*10**9, ``512MiB`` -> 512*2**20, ``0``/``none`` -> None (no limit)."""
    if text is None or isinstance(text, int):
        return text or None
    if text.strip().lower() in ("0", "none", "unlimited"):
        return None
    match = _SIZE.match(text)
    if match is None or match[2] is None and not match[1].isdigit() and "." in match[1]:
        raise UsageError(f"cannot read size {text!r}; write e.g. 5GB, 500MB, 20GiB or a number of bytes")
    value = float(match[1]) * _UNITS[(match[2] or "").lower()]
    if value < 1:
        raise UsageError(f"size {text!r} is smaller than one byte")
    return int(value)


def human_bytes(n: int) -> str:
    """``19.91 GB``: graft's plan and errors print two decimals (``text.decimal_size`` holds the units)."""
    return decimal_size(n, digits=2) or f"{n} B"
