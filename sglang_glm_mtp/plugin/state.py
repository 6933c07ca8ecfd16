"""The plugin's record on SGLang's ServerArgs: what the resolution step found and decided.

Written by the resolution step in the main process (``set_plugin_state``), read through
``plugin_state`` / ``published_state`` by the scheduler (draft precision, canary, server
info) and by the demo. It reaches the schedulers inside the pickled ServerArgs: SGLang's
``ServerArgs.__reduce__`` carries every underscore attribute of the record along with its
fields, so the record holds plain fields only (strings, ints, lists and two frozen
dataclasses of the same), which pickle and cross JSON (the demo's child) as they are.

Server info shows ``server_info()``: the same keys and values the record always published
(``architecture``, ``preflight``, ``moe_runner``, each only once decided). The draft source and
the preflight's ``draft_prefix`` are kept for the plugin's own messages and stay off it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from ..checkpoint.families import family_for
from .preflight import PreflightResult

#: The attribute on ServerArgs (underscore: SGLang's pickling keeps it, and the record's write seal allows it).
STATE_ATTR = "_glm_mtp_state"
#: PreflightResult fields that server info does not show (its schema predates them; docs/plugin.md).
UNPUBLISHED_PREFLIGHT_FIELDS = ("draft_prefix",)


@dataclass(frozen=True)
class RunnerChoice:
    """The draft MoE runner as resolved: the backend in effect, the rule-table row, why."""

    backend: str | None
    rule: str | None
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "rule": self.rule, "reason": self.reason}


@dataclass(frozen=True)
class PluginState:
    """What the resolution step found (draft source, architecture, preflight) and decided (draft MoE runner)."""

    #: config.json's first architecture ("" when malformed); None: the step did not run (no NEXTN draft)
    architecture: str | None = None
    #: what the draft loads from: ``--speculative-draft-model-path``, else the target (GLM-5.3-Flash, GLM-OCR)
    draft_path: str | None = None
    draft_revision: str | None = None
    preflight: PreflightResult | None = None
    moe_runner: RunnerChoice | None = None

    def draft_layer_name(self) -> str:
        """The draft layer as its checkpoint spells it (``model.language_model.layers.16`` for GLM-OCR)."""
        preflight = self.preflight
        if preflight is not None and preflight.draft_prefix:
            return preflight.draft_prefix
        family = family_for(self.architecture or "")
        if preflight is not None and preflight.draft_layer is not None:
            if family is not None:  # the family's first spelling (what graft writes)
                return family.prefixes_for_layer(preflight.draft_layer)[0][:-1]
            return f"layer {preflight.draft_layer}"
        return "the draft layer"

    def to_dict(self) -> dict[str, Any]:
        """Every field, for a JSON crossing (the demo's child); ``from_dict`` reads it back."""
        return {"architecture": self.architecture, "draft_path": self.draft_path,
                "draft_revision": self.draft_revision,
                "preflight": None if self.preflight is None else self.preflight.to_dict(),
                "moe_runner": None if self.moe_runner is None else self.moe_runner.to_dict()}

    @classmethod
    def from_dict(cls, doc: dict[str, Any] | None) -> "PluginState":
        doc = doc or {}
        preflight, runner = doc.get("preflight"), doc.get("moe_runner")
        return cls(architecture=doc.get("architecture"), draft_path=doc.get("draft_path"),
                   draft_revision=doc.get("draft_revision"),
                   preflight=None if preflight is None else PreflightResult(**preflight),
                   moe_runner=None if runner is None else RunnerChoice(**runner))

    def server_info(self) -> dict[str, Any]:
        """The ``glm_mtp`` server-info keys this record contributes (msgpack-safe builtins, a fresh copy)."""
        section: dict[str, Any] = {}
        if self.architecture is not None:
            section["architecture"] = self.architecture
        if self.preflight is not None:
            preflight = self.preflight.to_dict()
            for name in UNPUBLISHED_PREFLIGHT_FIELDS:
                preflight.pop(name, None)
            section["preflight"] = preflight
        if self.moe_runner is not None:
            section["moe_runner"] = self.moe_runner.to_dict()
        return section


def plugin_state(server_args: Any) -> PluginState:
    """The record on ``server_args``; an empty one when the resolution step wrote none."""
    state = getattr(server_args, STATE_ATTR, None)
    return state if isinstance(state, PluginState) else PluginState()


def set_plugin_state(server_args: Any, state: PluginState) -> None:
    """Write the record (the resolution step, main process; SGLang's write seal lets underscore attributes by)."""
    setattr(server_args, STATE_ATTR, state)


def published_server_args() -> Any | None:
    """This process's published ServerArgs (a scheduler's), or None. Never imports SGLang: a process that
    published one has imported ``runtime_context`` already."""
    runtime = sys.modules.get("sglang.srt.runtime_context")
    if runtime is None:
        return None
    try:
        return runtime.get_context().server_args
    except ValueError:  # "Global server args is not set yet!": nothing published (a bare build, a unit test)
        return None


def published_state() -> PluginState | None:
    """The record on this process's published ServerArgs; None when nothing is published."""
    server_args = published_server_args()
    return None if server_args is None else plugin_state(server_args)
