"""Reading checkpoints: sources, the safetensors container, model families, inspection."""

from .inspect import inspect
from .report import InspectionReport, Problem

__all__ = ["inspect", "InspectionReport", "Problem"]
