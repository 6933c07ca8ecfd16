"""Reading checkpoints: sources, the safetensors container, model families, inspection."""

from .inspection import Scope, inspect_checkpoint
from .report import InspectionReport, Problem

__all__ = ["inspect_checkpoint", "InspectionReport", "Problem", "Scope"]
