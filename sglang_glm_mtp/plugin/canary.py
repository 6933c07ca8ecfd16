"""Runtime accept-length canary (filled in by the canary change; inert until then)."""

from __future__ import annotations

from typing import Any


def register_canary() -> None:
    """Install the canary's hook; no-op placeholder."""


def canary_snapshot() -> dict[str, Any] | None:
    return None
