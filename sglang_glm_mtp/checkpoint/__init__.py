"""Reading checkpoints: sources, the safetensors container, model families, inspection."""

from .inspection import inspect_checkpoint
from .report import InspectionReport, Problem

#: Former name, kept so callers on other branches keep working; prefer ``inspect_checkpoint``.
inspect = inspect_checkpoint

__all__ = ["inspect_checkpoint", "InspectionReport", "Problem"]
