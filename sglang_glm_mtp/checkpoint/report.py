"""The inspection report: the stable ``check --json`` document (schema in docs/check-json.md)."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from .precision import Precision
from .safetensors_format import TensorEntry

Status = Literal["ready", "not-applicable", "missing", "incomplete", "invalid", "no-weights"]
Severity = Literal["error", "warning"]

SCHEMA_VERSION = 1

#: Every problem code ``check`` can report, in the order docs/check.md explains them.
PROBLEM_CODES = (
    "draft-layer-missing",
    "draft-layer-incomplete",
    "shape-mismatch",
    "dtype-mismatch",
    "index-missing-shard",
    "index-tensor-not-in-shard",
    "tensor-not-in-index",
    "unindexed-shard",
    "total-size-mismatch",
    "corrupt-header",
    "truncated-shard",
    "quant-config-mismatch",
    "draft-precision-unsupported",
    "unexpected-tensor",
)

#: Problems that mean "files are damaged": they outrank "layer missing" in the status, and
#: their remedy is a re-download, not a graft.
DAMAGE_CODES = frozenset({"corrupt-header", "truncated-shard", "index-missing-shard"})


@dataclass(frozen=True)
class Problem:
    code: str
    message: str
    severity: Severity = "error"
    file: str | None = None


@dataclass(frozen=True)
class TensorLocation:
    """Where one draft tensor's bytes live: used by graft, never serialised."""

    shard: str
    entry: TensorEntry
    data_start: int  # file offset of the shard's data buffer

    @property
    def file_offset(self) -> int:
        return self.data_start + self.entry.begin


@dataclass
class InspectionReport:
    checkpoint: str
    status: Status
    architecture: str
    family: str | None
    draft_layer: int | None
    #: where the draft layer's tensors live, e.g. ``model.layers.78`` (families.py decides; no trailing dot)
    draft_prefix: str | None = None
    #: NextN layers SGLang builds for this config (GLM-5.3-Flash: forced to 1, read under text_config)
    nextn_layers: int = 0
    expected_tensors: int = 0
    found_tensors: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    draft_precision: Precision | None = None
    target_precision: Precision | None = None
    draft_bytes: int = 0
    draft_shards: list[str] = field(default_factory=list)
    quant_config: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    remedy: str | None = None
    standalone_draft: bool = False
    #: draft tensor name -> location; graft reads this, JSON does not carry it
    locations: dict[str, TensorLocation] = field(default_factory=dict, repr=False)
    #: config.json as read, for compatibility checks (not serialised)
    config: dict[str, Any] = field(default_factory=dict, repr=False)
    #: the ``missing`` tensors the index places in a damaged shard: there, but unreadable (not serialised)
    damaged: list[str] = field(default_factory=list, repr=False)
    #: ``remedy`` for a terminal: each command on a line of its own, the reason on another (not serialised)
    remedy_lines: list[str] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return self.status in ("ready", "not-applicable")

    @property
    def exit_code(self) -> int:
        if self.status == "no-weights":
            return 2  # nothing to judge: like unreadable input, not a verdict on the draft layer
        return 0 if self.ok else 1

    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def to_json(self) -> dict[str, Any]:
        # Field by field, not ``asdict(self)``: that deep-copies ``locations`` (one entry per draft tensor, 791 for
        # GLM-5.2) only to drop it, and cost more than the rest of a ``check --json`` run after the index.
        doc: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        for item in fields(self):
            if item.name in _NOT_SERIALISED:
                continue
            value = getattr(self, item.name)
            if item.name == "problems":
                value = [asdict(problem) for problem in value]
            elif isinstance(value, (list, dict)):
                value = copy.deepcopy(value)  # as asdict returns them: the caller may edit the document
            doc[item.name] = value
        return doc


#: ``InspectionReport`` fields that stay in the process (graft reads them); docs/check-json.md lists the rest.
_NOT_SERIALISED = frozenset({"locations", "config", "damaged", "remedy_lines"})

