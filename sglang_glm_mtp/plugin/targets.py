"""Every SGLang name the plugin hooks or relies on, in one table: the only list to edit for a new SGLang.

Data plus stdlib-only probes (no imports from the plugin), so registration, strict mode,
the canary and the draft hooks all read it without importing each other. ``TARGETS`` is
the version-keyed table: per target, the behaviour it carries, the parameters the plugin
relies on, the first release that has it and what older releases have instead.
``python -m sglang_glm_mtp.plugin.targets --check`` reports it against the installed SGLang.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import inspect
import json
import logging
import pkgutil
import sys
from dataclasses import dataclass, field
from typing import Any

PLUGIN_ENTRY_POINT = "glm_mtp"
DISTRIBUTION = "sglang-glm-mtp"

#: The SGLang releases the test suite drives (tests/test_sglang_releases.py runs the SGLang tests on each).
TESTED_RELEASES: tuple[str, ...] = ("0.5.22", "0.5.23")
#: The same, as a specifier: an SGLang outside it gets one WARNING at plugin load.
TESTED_RANGE = ">=0.5.22,<0.5.24"

#: The resolution step the preflight wraps (``register_resolution_hook``).
RESOLUTION_STEP = "handle_speculative_decoding"
#: The plugin API that registers it (0.5.20+; 0.5.14-0.5.19 resolve inside ``ServerArgs``, with no hook).
RESOLUTION_HOOKS = "sglang.srt.arg_groups.resolution_hooks.register_resolution_hook"

ADD_CLI_ARGS = "sglang.srt.server_args.ServerArgs.add_cli_args"
#: AFTER: the class SGLang is about to build; draft hooks are installed from here (scheduler only).
MODEL_ARCHITECTURE = "sglang.srt.model_loader.utils.get_model_architecture"
INTERNAL_STATE = "sglang.srt.managers.scheduler.Scheduler.get_internal_state"
#: Main process: /server_info's top-level "glm_mtp" section (server_info.py).
SERVER_INFO_TARGET = "sglang.srt.utils.common.build_server_info"
#: Every scheduler rank, once per verify step (canary.py); the scheduler module imports it already.
CANARY_TARGET = ("sglang.srt.managers.scheduler_components.metrics_reporter."
                 "SchedulerMetricsReporter.update_spec_metrics")

EAGER_TARGETS: tuple[str, ...] = (ADD_CLI_ARGS, MODEL_ARCHITECTURE, INTERNAL_STATE, SERVER_INFO_TARGET,
                                  CANARY_TARGET)

_MODELS = "sglang.srt.models"
_DSV3 = f"{_MODELS}.deepseek_nextn.DeepseekV3ForCausalLMNextN"
_GLM5 = f"{_MODELS}.glm4_moe.GlmMoeDsaForCausalLMNextN"

#: A class SGLang builds as a draft from the target checkpoint: its name ends in one of these.
DRAFT_CLASS_SUFFIXES = ("NextN", "MTP")

#: Draft classes with a ``_resolve_nextn_quant_config`` seam (subclasses that call super() go through it:
#: GLM-5.3-Flash's ``Glm5NextForConditionalGenerationNextN``).
QUANT_RESOLVERS: tuple[str, ...] = (f"{_GLM5}._resolve_nextn_quant_config", f"{_DSV3}._resolve_nextn_quant_config")

#: Draft classes without that seam -> the NextN model constructor they hand the target's quant config to,
#: which nulls ``modelopt_fp4``. Hooked AROUND to pass the draft's own config to the model only (the
#: outer lm_head keeps the target's, as on the DeepSeek path).
QUANT_CONSTRUCTORS: dict[str, str] = {
    "Glm4MoeForCausalLMNextN": f"{_MODELS}.glm4_moe_nextn.Glm4MoeModelNextN.__init__",
    "Glm4MoeLiteForCausalLMNextN": f"{_MODELS}.glm4_moe_lite_nextn.Glm4MoeLiteModelNextN.__init__",
    "GlmOcrForConditionalGenerationNextN": f"{_MODELS}.glm_ocr_nextn.GlmOcrModelNextN.__init__",
}

#: The NextN model constructors that null a ``modelopt_fp4`` config; the NVFP4-draft shield hides the name
#: from exactly these frames (draft_precision.py).
NVFP4_OVERRIDERS: tuple[str, ...] = (f"{_MODELS}.deepseek_nextn.DeepseekModelNextN.__init__",
                                     *QUANT_CONSTRUCTORS.values())

#: ``load_weights`` of the GLM/DeepSeek draft classes: hooked when built (coverage.py); any other draft
#: class's ``load_weights`` is hooked the same way when SGLang resolves it (the backstop). Strict mode
#: checks these exist on the running SGLang.
COVERAGE_TARGETS: tuple[str, ...] = (
    f"{_GLM5}.load_weights",
    f"{_DSV3}.load_weights",
    f"{_MODELS}.glm4_moe_nextn.Glm4MoeForCausalLMNextN.load_weights",
    f"{_MODELS}.glm4_moe_lite_nextn.Glm4MoeLiteForCausalLMNextN.load_weights",
    f"{_MODELS}.glm5_next_nextn.Glm5NextForConditionalGenerationNextN.load_weights",
    f"{_MODELS}.glm_ocr_nextn.GlmOcrForConditionalGenerationNextN.load_weights",
)

#: Draft classes outside the family table whose complete checkpoint the backstop has been shown to pass on the real
#: SGLang (tests/test_families_draft.py). Any gap refuses them, as for the family table. For every other draft
#: class the backstop refuses only a draft that received nothing at all; a partial gap is an ERROR naming the
#: parameters, since an unverified class may fill a parameter some way the recorder does not see.
BACKSTOP_VERIFIED: tuple[str, ...] = ("Qwen3MoeForCausalLMMTP",)

#: Draft classes whose loader the upstream coverage fix (patches/0001, ``do_load_weights``) checks itself;
#: when SGLang has that fix the plugin stands down for these only and keeps the backstop for every other.
UPSTREAM_COVERED: tuple[str, ...] = ("DeepseekV3ForCausalLMNextN", "GlmMoeDsaForCausalLMNextN")

#: Resolves a layer's FP8 block size from its own quant method (0.5.23+); without it the DeepSeek NextN loader's
#: post_load_weights reads the outer (target) config's, and a block-FP8 draft under an NVFP4 target cannot load.
FP8_DRAFT_BLOCK_SIZE = f"{_MODELS}.deepseek_common.deepseek_weight_loader._resolve_layer_weight_block_size"

#: Installed lazily, when the draft is built; strict mode checks they exist.
LAZY_TARGETS: tuple[str, ...] = QUANT_RESOLVERS + tuple(QUANT_CONSTRUCTORS.values()) + COVERAGE_TARGETS
#: Not hooked, but relied on: strict mode checks they exist.
REQUIRED_ATTRIBUTES: tuple[str, ...] = NVFP4_OVERRIDERS


def load_weights_target(cls: type) -> str:
    """The hook target of a draft class's ``load_weights`` (its own, or the one it inherits)."""
    return f"{cls.__module__}.{cls.__qualname__}.load_weights"


def is_draft_class(name: str) -> bool:
    return name.endswith(DRAFT_CLASS_SUFFIXES)


# ----------------------------------------------------------------------------- the version-keyed table

#: Behaviour -> what it is, as the WARNING, server info and docs/supported-versions.md name it.
BEHAVIOURS: dict[str, str] = {
    "preflight": "startup preflight (refuses a checkpoint without the draft layer)",
    "runner": "draft MoE runner choice",
    "coverage": "post-load coverage check of the draft's parameters",
    "draft_precision": "draft built in its stored precision",
    "canary": "runtime accept-length canary",
    "server_info": "glm_mtp sections of /server_info",
    "strict": "strict mode (--enable-plugin glm_mtp)",
}


@dataclass(frozen=True)
class Target:
    """One SGLang name the plugin hooks (``hook``: at plugin load, ``lazy``: when the draft is built),
    registers with (``api``) or calls (``relied``)."""

    name: str
    kind: str
    behaviours: tuple[str, ...]
    #: Parameter names the plugin's hook or call relies on, in order (None: not a callable, or not checked).
    params: tuple[str, ...] | None = None
    #: First release that has it under ``name`` (None: every plugin-capable release, 0.5.14+).
    since: str | None = None
    #: What releases before ``since`` have instead: (specifier, other dotted name or None, what is lost there).
    before: tuple[tuple[str, str | None, str], ...] = ()
    #: What the plugin loses when the target is missing (the WARNING's wording).
    loses: str = ""


_SELF_CONFIG_QUANT = ("self", "config", "quant_config")
_NEXTN_MODEL_INIT = ("self", "config", "quant_config", "prefix")

TARGETS: tuple[Target, ...] = (
    Target(RESOLUTION_HOOKS, "api", ("preflight", "runner", "strict"), ("name",), since="0.5.20",
           before=(("<0.5.20", None, "resolution runs inside ServerArgs (no arg_groups/resolution_hooks.py): no "
                                     "plugin step, so no preflight, no runner choice and no strict-mode check"),),
           loses="the plugin's resolution step: no preflight, no draft MoE runner choice, no strict-mode check"),
    Target(ADD_CLI_ARGS, "hook", ("strict",), ("parser",),
           loses="the --enable-plugin flag (SGLANG_ENABLE_PLUGIN=glm_mtp still turns strict mode on)"),
    Target(MODEL_ARCHITECTURE, "hook", ("coverage", "draft_precision"), ("model_config",),
           loses="the draft hooks (installed when SGLang resolves the draft class): no coverage check, "
                 "no draft precision"),
    Target(INTERNAL_STATE, "hook", ("server_info",), ("self", "recv_req"),
           loses="the per-scheduler section internal_states[i].glm_mtp of /server_info (coverage, canary)"),
    Target(SERVER_INFO_TARGET, "hook", ("server_info",), ("server_args", "scheduler_info"), since="0.5.22",
           before=(("<0.5.22", None, "/server_info is built inline in http_server.server_info, a FastAPI route bound "
                                     "at import, so there is nothing to hook: only the per-scheduler section "
                                     "internal_states[i].glm_mtp is shown"),),
           loses="the top-level glm_mtp section of /server_info (the per-scheduler sections stay)"),
    Target(CANARY_TARGET, "hook", ("canary",), ("self", "bs", "num_correct_drafts", "num_accept_tokens"),
           loses="the runtime accept-length canary"),
    *(Target(t, "lazy", ("draft_precision",), _SELF_CONFIG_QUANT, loses="the draft's stored precision")
      for t in QUANT_RESOLVERS),
    *(Target(t, "lazy", ("draft_precision",), _NEXTN_MODEL_INIT, loses="the draft's stored precision")
      for t in QUANT_CONSTRUCTORS.values()),
    *(Target(t, "relied", ("draft_precision",), _NEXTN_MODEL_INIT, loses="the NVFP4 draft shield")
      for t in NVFP4_OVERRIDERS if t not in QUANT_CONSTRUCTORS.values()),
    *(Target(t, "lazy", ("coverage",), ("self", "weights"), loses="the coverage check of this draft class")
      for t in COVERAGE_TARGETS),
    Target(FP8_DRAFT_BLOCK_SIZE, "relied", ("draft_precision",), ("layer", "quant_config"), since="0.5.23",
           before=(("<0.5.23", None, "post_load_weights takes the block size from the outer (target) quant config, "
                                     "so a block-FP8 draft layer under a non-FP8 target fails at load "
                                     "(AttributeError: weight_scale); the plugin refuses it with a clear error"),),
           loses="block-FP8 draft layers under a non-FP8 target (BF16 and NVFP4 draft layers are unaffected)"),
    # Called, not hooked: a rename breaks the behaviour named, so --check lists them too.
    Target("sglang.srt.plugins.hook_registry.HookRegistry.register", "relied", tuple(BEHAVIOURS),
           ("target", "hook", "hook_type")),
    Target("sglang.srt.plugins.hook_registry.HookRegistry.apply_hooks", "relied", ("coverage", "draft_precision")),
    Target("sglang.srt.plugins.hook_registry.HookSource", "relied", ("coverage", "draft_precision")),
    Target("sglang.srt.arg_groups.model_override_base.resolving_view", "relied", ("preflight", "runner")),
    Target("sglang.srt.arg_groups.model_override_base.model_config_of", "relied", ("preflight", "runner")),
    Target("sglang.srt.arg_groups.overrides.declare_resolution", "relied", ("runner",)),
    Target("sglang.srt.arg_groups.overrides.resolved_view", "relied", ("draft_precision",)),
    Target("sglang.srt.runtime_context.get_context", "relied", ("server_info", "draft_precision")),
    Target("sglang.srt.runtime_context.get_platform", "relied", ("runner",)),
    Target("sglang.srt.runtime_context.get_spec", "relied", ("draft_precision",)),
    Target("sglang.srt.runtime_context.get_model", "relied", ("draft_precision",)),
    Target("sglang.srt.layers.quantization.fp8.Fp8Config", "relied", ("draft_precision",)),
    Target("sglang.srt.model_loader.weight_utils.default_weight_loader", "relied", ("coverage",), ("param",)),
)

BY_NAME: dict[str, Target] = {t.name: t for t in TARGETS}


def target(name: str) -> Target:
    """The table entry of ``name`` (a draft class's own ``load_weights`` outside the table: coverage, lazy)."""
    return BY_NAME.get(name) or Target(name, "lazy", ("coverage",), ("self", "weights"),
                                       loses="the coverage check of this draft class")


# ----------------------------------------------------------------------------- probes (stdlib only)


def sglang_version() -> str | None:
    """The installed SGLang's version (the first distribution on sys.path), None without one."""
    try:
        return importlib.metadata.version("sglang")
    except importlib.metadata.PackageNotFoundError:
        return None


def in_tested_range(version: str | None) -> bool:
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        return version is not None and Version(version) in SpecifierSet(TESTED_RANGE)
    except InvalidVersion:
        return False


def expected_on(entry: Target, version: str | None) -> tuple[str | None, str]:
    """The name ``entry`` has on ``version`` per the table, and a note (why it is absent or renamed)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        parsed = Version(version) if version else None
    except InvalidVersion:
        parsed = None
    if parsed is not None:
        for spec, other, note in entry.before:
            if parsed in SpecifierSet(spec):
                return other, note
    return entry.name, ""


def resolve(name: str) -> tuple[Any, str | None]:
    """(object, None) when ``name`` exists on the running SGLang, else (None, why). Imports the owner module."""
    owner, _, attribute = name.rpartition(".")
    try:
        parent = pkgutil.resolve_name(owner)
    except (ImportError, AttributeError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # an owner module that fails at import time: missing for the plugin too
        logging.getLogger(__name__).debug("glm_mtp: importing %s failed here", owner, exc_info=True)
        return None, f"{type(exc).__name__} while importing {owner}: {exc}"
    if not hasattr(parent, attribute):
        return None, f"{owner} has no attribute {attribute}"
    return getattr(parent, attribute), None


def exists(name: str) -> bool:
    return resolve(name)[1] is None


def parameters(obj: Any) -> tuple[str, ...] | None:
    try:
        return tuple(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return None


def signature_change(entry: Target, obj: Any) -> str | None:
    """How ``obj``'s parameters differ from what the plugin relies on (a prefix match), or None."""
    if entry.params is None:
        return None
    found = parameters(obj)
    if found is None:
        return None
    wanted = list(entry.params)
    if list(found[:len(wanted)]) == wanted:
        return None
    return f"expected ({', '.join(wanted)}, ...), found ({', '.join(found)})"


@dataclass
class TargetReport:
    name: str
    kind: str
    behaviours: tuple[str, ...]
    status: str  # ok | changed | missing | missing-expected
    detail: str = ""
    signature: tuple[str, ...] | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def check(version: str | None = None) -> list[TargetReport]:
    """Every target of the table against the running SGLang: exists, signature, and what the table expects."""
    version = version if version is not None else sglang_version()
    reports: list[TargetReport] = []
    for entry in TARGETS:
        expected_name, note = expected_on(entry, version)
        obj, why = resolve(entry.name)
        if why is not None:
            status = "missing-expected" if expected_name != entry.name else "missing"
            if expected_name not in (None, entry.name) and exists(expected_name):
                note = f"{note} (found as {expected_name})"
            reports.append(TargetReport(entry.name, entry.kind, entry.behaviours, status, why, None, note))
            continue
        change = signature_change(entry, obj)
        if entry.name == RESOLUTION_HOOKS and change is None:
            module = sys.modules.get(entry.name.rpartition(".")[0])
            steps = getattr(module, "_OVERRIDABLE_HOOKS", None)
            if steps is not None and RESOLUTION_STEP not in steps:
                change = f"no overridable resolution step {RESOLUTION_STEP!r}"
        reports.append(TargetReport(entry.name, entry.kind, entry.behaviours, "changed" if change else "ok",
                                    change or "", parameters(obj), note))
    return reports


def main(argv: list[str] | None = None) -> int:
    """``python -m sglang_glm_mtp.plugin.targets --check [--json]``: exit 0 when every target is as expected
    for this release (absent where the table says so), 1 when one is missing or changed, 2 without SGLang."""
    parser = argparse.ArgumentParser(prog="python -m sglang_glm_mtp.plugin.targets",
                                     description="Report the SGLang names the glm_mtp plugin relies on.")
    parser.add_argument("--check", action="store_true", required=True,
                        help="resolve every target on the installed SGLang and compare its signature")
    parser.add_argument("--json", action="store_true", help="one JSON document instead of the table")
    args = parser.parse_args(argv)
    version = sglang_version()
    if version is None:
        print("SGLang is not installed (pip install sglang); nothing to check", file=sys.stderr)
        return 2
    reports = check(version)
    tested = in_tested_range(version)
    unexpected = [r for r in reports if r.status in ("missing", "changed")]
    lost = sorted({b for r in reports if r.status != "ok" for b in r.behaviours})
    if args.json:
        print(json.dumps({"sglang": version, "tested_range": TESTED_RANGE, "tested": tested,
                          "targets": [{"name": r.name, "kind": r.kind, "behaviours": list(r.behaviours),
                                       "status": r.status, "detail": r.detail, "note": r.note,
                                       "signature": list(r.signature) if r.signature is not None else None}
                                      for r in reports],
                          "behaviours_affected": lost}, indent=2))
    else:
        print(f"SGLang {version} ({'tested' if tested else 'outside the tested range'} {TESTED_RANGE})")
        width = max(len(r.name) for r in reports)
        for r in reports:
            line = f"{r.status:16} {r.kind:6} {r.name:{width}}  [{', '.join(r.behaviours)}]"
            if r.detail:
                line += f"  {r.detail}"
            if r.note:
                line += f"  -- {r.note}"
            print(line)
        counts = {s: sum(r.status == s for r in reports) for s in ("ok", "changed", "missing", "missing-expected")}
        print(", ".join(f"{n} {s}" for s, n in counts.items()))
        if lost:
            print("behaviours affected: " + "; ".join(f"{b} ({BEHAVIOURS[b]})" for b in lost))
    return 1 if unexpected else 0


if __name__ == "__main__":
    raise SystemExit(main())
