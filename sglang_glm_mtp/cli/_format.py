"""Shared terminal formatting for every sub-command: the only place numbers are styled."""

from __future__ import annotations

import json
import sys
from typing import Any

from ..text import decimal_size


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


def count(n: int) -> str:
    """Counts and byte counts: thousands separators, always (``232,296``)."""
    return f"{n:,}"


def size(n: int) -> str:
    """A byte count for people: exact bytes plus a decimal unit (``19,905,841,664 bytes (19.9 GB)``)."""
    unit = decimal_size(n)
    return f"{n:,} bytes ({unit})" if unit else f"{n:,} bytes"


def error_line(command: str, message: str) -> str:
    return f"sglang-glm-mtp {command}: error: {message}\n"
