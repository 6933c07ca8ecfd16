"""Shared terminal formatting for every sub-command: the only place numbers are styled."""

from __future__ import annotations

import json
import sys
from typing import Any


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


def count(n: int) -> str:
    """Counts and byte counts: thousands separators, always (``232,296``)."""
    return f"{n:,}"


def size(n: int) -> str:
    """A byte count for people: exact bytes plus a decimal unit (``19,905,841,664 bytes (19.9 GB)``)."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if abs(n) >= scale:
            return f"{n:,} bytes ({n / scale:.1f} {unit})"
    return f"{n:,} bytes"


def error_line(command: str, message: str) -> str:
    return f"sglang-glm-mtp {command}: error: {message}\n"
