"""Judging what inspection read: every problem (code, message, severity, file) and the status they give.

Four verdicts, in the order their problems are reported: the files (index against disk and
headers, damaged shards, un-indexed shards, ``total_size``), the layer's completeness (every
tensor config.json implies, in the precision found, with its shape and dtype), and its
quantization (does the declaration build the layer in the precision it is stored in, in stock
SGLang and elsewhere). ``status`` turns the problems into the report's status.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from operator import countOf
from typing import Any, Iterable

from ..text import listed, short
from .draft_names import NEVER_QUANTIZED, sglang_module
from .families import Config, LayerTensor, ModelFamily
from .files import INDEX_FILE
from .index_scan import QUANT_SUFFIXES, IndexScan
from .precision import (FLEXIBLE_SUFFIXES, OPTIONAL_SUFFIXES, QUANTIZED, Precision, layout_precision, module_layout,
                        module_precision, overall_precision, quantized_form)
from .quant_config import QuantDeclaration
from .reading import DraftFiles, Shard
from .report import DAMAGE_CODES, InspectionReport, Problem, Status
from .safetensors_format import ShardHeader, TensorSpec


class Problems(list[Problem]):
    """The problems found so far, in report order."""

    def add(self, code: str, message: str, severity: str = "error", file: str | None = None) -> None:
        self.append(Problem(code, message, severity, file))  # type: ignore[arg-type]


def status(problems: list[Problem]) -> Status:
    codes = {p.code for p in problems if p.severity == "error"}
    if codes & DAMAGE_CODES:
        return "invalid"  # the layer may well be there; the files around it are broken
    if "draft-layer-missing" in codes:
        return "missing"
    if "draft-layer-incomplete" in codes:
        return "incomplete"
    return "invalid" if codes else "ready"


def target_precision(decl: QuantDeclaration, scan: IndexScan | None) -> Precision:
    """The declaration's dialect fields for compressed-tensors and Quark (their tensor names carry no ModelOpt or
    block-FP8 suffix); ModelOpt and FP8 targets by the scale suffixes the index holds, else the declaration."""
    if decl.dialect in ("compressed-tensors", "quark", "unknown"):
        return decl.precision
    kinds: set[Precision] = set()
    if scan is not None:
        kinds |= {QUANT_SUFFIXES[s] for s in scan.quant_suffixes}
    if not kinds and decl.quantizes:
        kinds.add(decl.precision)
    if len(kinds) > 1:
        return "mixed"
    return kinds.pop() if kinds else "bf16"


def expected_tensors(family: ModelFamily, cfg: Config, standalone: bool) -> Iterable[LayerTensor]:
    """The draft tensors config.json implies (built after the cheap verdicts: unreadable, not applicable)."""
    skip = ("embed_tokens.weight", "shared_head.head.weight") if standalone else ()  # as SGLang's export drops
    return (t for t in family.draft_tensors(cfg) if t.name not in skip)


# ----------------------------------------------------------------------------- the files


def judge_files(problems: Problems, draft: DraftFiles, scan: IndexScan | None, index: dict[str, Any] | None,
                prefixes: tuple[str, ...], *, local: bool) -> None:
    """Every way the index or a shard misleads SGLang about the draft layer (or, locally, breaks a load)."""
    if draft.missing_files:
        problems.add("index-missing-shard",
                     f"{INDEX_FILE} names {len(draft.missing_files)} shard file(s) that do not exist: "
                     f"{listed(draft.missing_files)} (SGLang refuses to load this checkpoint)", file=INDEX_FILE)
    for shard in draft.damaged():
        _judge_damage(problems, shard, scan)
    if scan is not None:
        for name in [*draft.loaded, *sorted(draft.others & draft.full)]:  # --all-headers: every shard checked
            header = draft.shards[name].header
            if header is not None:
                cross_check_index(problems, name, header, scan, prefixes)
    for name in draft.unindexed:
        header = draft.shards[name].header
        if header is not None:
            _judge_unindexed(problems, name, [n for n in header.tensors if n.startswith(prefixes)], draft)
    if scan is not None and scan.complete and index is not None and local:
        _judge_total_size(problems, index, scan, draft.shards, draft.on_disk)


def _judge_damage(problems: Problems, shard: Shard, scan: IndexScan | None) -> None:
    """A damaged shard, and what it costs the draft layer: tensors the index places there cannot be read."""
    assert shard.error is not None
    message = f"{shard.name}: {shard.error}"
    held = countOf((scan.weight_map[name] for name in scan.draft_names), shard.name) if scan is not None else 0
    if held:
        message += (f"; {INDEX_FILE} places {held} of the draft layer's tensors in it, which cannot be read "
                    "until the shard is re-downloaded")
    problems.add(shard.error.code, message, file=shard.error.file)


def cross_check_index(problems: Problems, shard: str, header: ShardHeader, scan: IndexScan,
                      prefixes: tuple[str, ...]) -> None:
    """Index and header agree on what ``shard`` holds (on the draft layer's tensors, for a partial scan)."""
    weight_map = scan.weight_map
    here = countOf(map(weight_map.get, header.tensors), shard)  # C loops: ~5,000 names per draft shard
    if here != scan.count_in(shard):  # the index places more tensors here than the header holds
        absent = sorted(name for name in scan.names_in(shard) if name not in header.tensors)
        problems.add("index-tensor-not-in-shard",
                     f"{INDEX_FILE} places {len(absent)} tensor(s) in {shard} that its header does not "
                     f"contain: {listed(absent)}", file=shard)
    names = header.tensors if scan.complete else [n for n in header.tensors if n.startswith(prefixes)]
    extra = sorted(set(names).difference(weight_map))  # walks the header's names, not the index's
    if extra:
        problems.add("tensor-not-in-index",
                     f"{shard} contains {len(extra)} tensor(s) missing from {INDEX_FILE}: {listed(extra)} "
                     "(SGLang still loads them, other tools may not)", "warning", shard)


def _judge_unindexed(problems: Problems, shard: str, draft_names: list[str], draft: DraftFiles) -> None:
    if draft_names and shard == draft.appended:
        problems.add("unindexed-shard",
                     f"{shard} holds {len(draft_names)} draft tensors but is not in {INDEX_FILE}; "
                     "SGLang 0.5.23 appends it for this architecture, other loaders may not", "warning", shard)
    elif draft_names:
        problems.add("unindexed-shard",
                     f"{shard} holds {len(draft_names)} draft-layer tensors but is not named in "
                     f"{INDEX_FILE}, so SGLang silently ignores it (e.g. {listed(draft_names)})", "error", shard)
    else:
        problems.add("unindexed-shard", f"{shard} is not named in {INDEX_FILE}; SGLang will not load it",
                     "warning", shard)


def _judge_total_size(problems: Problems, index: dict[str, Any], scan: IndexScan, shards: dict[str, Shard],
                      on_disk: set[str]) -> None:
    """metadata.total_size should equal the tensor payload bytes (HF's convention)."""
    metadata = index.get("metadata")
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        problems.add("total-size-mismatch",
                     f"{INDEX_FILE} metadata is a JSON {type(metadata).__name__}, not an object; SGLang "
                     "ignores it, other tools may not (rewrite it as {\"total_size\": <bytes>})", "warning", INDEX_FILE)
        return
    declared = metadata.get("total_size")
    referenced = scan.referenced
    if declared is None or not referenced <= on_disk:
        return  # a missing shard is already an error of its own
    payloads = [shards[name].payload for name in referenced if name in shards]
    if len(payloads) != len(referenced) or None in payloads:
        return  # a damaged shard is already reported by name; its size proves nothing more
    actual = sum(p for p in payloads if p is not None)
    if isinstance(declared, bool) or not isinstance(declared, int) or declared != actual:
        problems.add("total-size-mismatch",
                     f"{INDEX_FILE} metadata.total_size is {short(declared)} but the shards, all intact, "
                     f"hold {actual:,} bytes of tensor data: the index was not updated when shards were "
                     "added or replaced. SGLang ignores total_size; to silence this, set it to "
                     f"{actual}", "warning", INDEX_FILE)


# ----------------------------------------------------------------------------- completeness


@dataclass
class _Wanted:
    """The tensors a complete layer has in the precision found: by name, with the optional and flexible ones."""

    specs: dict[str, TensorSpec] = field(default_factory=dict)
    optional: set[str] = field(default_factory=set)
    flexible: set[str] = field(default_factory=set)  # scales whose shape and dtype depend on an unstated strategy


def judge_layer(problems: Problems, report: InspectionReport, prefix: str, expected: list[LayerTensor],
                found: dict[str, Any], damaged: set[str]) -> None:
    """Is every tensor config.json implies there, in its shape and dtype? Fills the report's counts and lists.

    ``damaged``: names (without ``prefix``) the index places in a damaged shard; they cannot be read, so
    they count as missing for SGLang but the verdict is the damage, already reported, not "missing".
    """
    wanted = _wanted(report, expected, found)
    missing = sorted((n for n in wanted.specs if n not in found and n not in wanted.optional), key=_natural)
    unexpected = sorted((n for n in found if n not in wanted.specs), key=_natural)
    report.expected_tensors = len(wanted.specs) - len(wanted.optional - found.keys())
    report.found_tensors = len(found)
    report.missing = [prefix + n for n in missing]
    report.damaged = [prefix + n for n in missing if n in damaged]
    report.unexpected = [prefix + n for n in unexpected]
    absent = [n for n in missing if n not in damaged]

    if not found and not report.damaged:
        problems.add("draft-layer-missing",
                     f"config.json declares {report.nextn_layers} NextN layer(s) but "
                     f"the checkpoint holds no {prefix}* tensors that SGLang would load "
                     f"(0 of {report.expected_tensors}); SGLang 0.5.23 would serve drafts from "
                     "uninitialised memory without an error")
        return
    if absent:
        unreadable = f" ({len(report.damaged)} more are in a damaged shard)" if report.damaged else ""
        problems.add("draft-layer-incomplete",
                     f"{prefix}* has {len(found)} tensors; {len(absent)} of {report.expected_tensors} expected "
                     f"are missing: {listed(prefix + n for n in absent)}{unreadable}")
    if unexpected:
        problems.add("unexpected-tensor",
                     f"{len(unexpected)} {prefix}* tensor(s) that this architecture does not have: "
                     f"{listed(report.unexpected)}", "warning")
    _judge_shapes(problems, prefix, wanted, found)


def _wanted(report: InspectionReport, expected: list[LayerTensor], found: dict[str, Any]) -> _Wanted:
    """Each module in the layout it is stored in (a missing expert of a quantized layer: its peers' layout)."""
    dtypes = {name: entry.dtype for name, entry in found.items()}
    per_module: dict[str, Precision] = {}
    layouts: dict[str, str] = {}
    for tensor in expected:
        if tensor.linear:
            layout = module_layout(tensor.module, dtypes)
            if layout is not None:
                layouts[tensor.module] = layout
                per_module[tensor.module] = layout_precision(layout)
    layer_precision = overall_precision(per_module) if per_module else None
    report.draft_precision = layer_precision

    wanted = _Wanted()
    fallback: Precision = layer_precision if layer_precision in QUANTIZED else "bf16"
    fallback_layout = _most_common(l for m, l in layouts.items() if ".experts." in m and l != "bf16")
    for tensor in expected:
        precision: Precision = per_module.get(tensor.module, "bf16") if tensor.linear else "bf16"
        layout = layouts.get(tensor.module)
        if tensor.linear and tensor.module not in per_module and _quantized_group(tensor, per_module):
            precision, layout = fallback, fallback_layout  # missing expert of a quantized layer
        for spec in quantized_form(tensor, precision, layout=layout):
            wanted.specs[spec.name] = spec
            suffix = spec.name.rsplit(".", 1)[-1]
            if layout is not None and suffix in OPTIONAL_SUFFIXES.get(layout, ()):
                wanted.optional.add(spec.name)
            if layout is not None and suffix in FLEXIBLE_SUFFIXES.get(layout, ()):
                wanted.flexible.add(spec.name)
    return wanted


def _judge_shapes(problems: Problems, prefix: str, wanted: _Wanted, found: dict[str, Any]) -> None:
    bad_shapes, bad_dtypes = [], []
    for name, spec in wanted.specs.items():
        entry = found.get(name)
        if entry is None or name in wanted.flexible:
            continue
        if tuple(entry.shape) != tuple(spec.shape):
            bad_shapes.append(f"{prefix}{name} {list(entry.shape)} (config says {list(spec.shape)})")
        if entry.dtype != spec.dtype and not (spec.dtype == "BF16" and entry.dtype in ("F16", "F32")
                                               and not name.endswith("correction_bias")):
            bad_dtypes.append(f"{prefix}{name} {entry.dtype} (expected {spec.dtype})")
    if bad_shapes:
        problems.add("shape-mismatch", f"{len(bad_shapes)} tensor(s) disagree with config.json: {listed(bad_shapes)}")
    if bad_dtypes:
        problems.add("dtype-mismatch", f"{len(bad_dtypes)} tensor(s) have an unexpected dtype: {listed(bad_dtypes)}")


def _most_common(values: Iterable[str]) -> str | None:
    """The most frequent layout among a layer's quantized experts (a missing expert is expected in it)."""
    counts = Counter(values)
    return counts.most_common(1)[0][0] if counts else None


def _quantized_group(tensor: LayerTensor, per_module: dict[str, Precision]) -> bool:
    """Is ``tensor`` an expert linear in a layer whose experts are stored quantized?"""
    return ".experts." in tensor.name and any(".experts." in m and p != "bf16" for m, p in per_module.items())


def _natural(name: str) -> tuple[Any, ...]:
    """Sort expert 2 before expert 10."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in name.split("."))


# ----------------------------------------------------------------------------- quantization


@dataclass
class _QuantView:
    """One declaration against one stored layer: what each module is stored as, and what the declaration excludes."""

    decl: QuantDeclaration
    prefix: str
    family: ModelFamily
    #: linear module -> stored precision (modules SGLang never quantizes left out)
    stored: dict[str, Precision]
    #: the declaration excludes the whole draft layer (~800 modules in a GLM-5.2 draft: skip matching each)
    everything: bool
    #: Quark's name remap of the layer prefix, for families whose draft class remaps it
    quark_remap: str | None

    def excluded(self, module: str) -> bool:
        return self.everything or self.decl.is_excluded(self.prefix + module)

    def stock_builds_quantized(self, module: str) -> bool:
        return self.decl.stock_builds_quantized(module, self.family.quant_name_map, self.quark_remap)

    @property
    def where(self) -> str:
        return f"{self.decl.source} {self.decl.exclude_key or 'exclude list'}"


def judge_quant(problems: Problems, report: InspectionReport, decl: QuantDeclaration, prefix: str,
                expected: Iterable[LayerTensor], found: dict[str, Any], family: ModelFamily) -> None:
    """Does the declaration build the draft layer in the precision it is stored in?"""
    precision = report.draft_precision
    if precision is None:
        return
    _judge_draft_precision(problems, report, decl, precision)
    if decl.dialect == "unknown":
        problems.add("quant-config-mismatch",
                     f"{decl.source} quant_method {decl.method!r} is not a dialect this package reads (modelopt, "
                     "fp8, compressed-tensors, quark); whether SGLang builds the draft layer quantized is not "
                     "checked: the glm_mtp plugin's post-load check judges the loaded layer", "warning",
                     decl.source)
        return
    if not decl.quantizes:
        return
    dtypes = {n: e.dtype for n, e in found.items()}
    stored = {t.module: module_precision(t.module, dtypes) for t in expected if t.linear}
    stored = {m: p for m, p in stored.items() if p is not None and m not in NEVER_QUANTIZED}
    if decl.dialect == "quark" and dtypes.get("eh_proj.weight") in ("BF16", "F16", "F32"):
        stored["eh_proj"] = "bf16"  # Quark alone builds eh_proj as a quantized linear
    view = _QuantView(decl, prefix, family, stored, decl.excludes_all_under(prefix),
                      prefix[:-1] if family.quark_remaps_layer else None)
    if precision == "bf16":
        _judge_bf16_draft(problems, report, view, sorted(stored))
    else:
        _judge_quantized_draft(problems, report, view)


def _judge_draft_precision(problems: Problems, report: InspectionReport, decl: QuantDeclaration,
                           precision: Precision) -> None:
    """A layer no engine can build (mixed formats), or one only the glm_mtp plugin builds (under NVFP4)."""
    if precision in ("mixed", "unknown"):
        problems.add("draft-precision-unsupported",
                     f"the draft layer mixes storage formats ({precision}); neither SGLang 0.5.23 nor the "
                     "glm_mtp plugin can build one quant config for it. Graft a uniform layer with --force.")
    elif precision != "bf16" and decl.is_modelopt and decl.precision == "nvfp4":
        report.quant_config["stock_sglang_builds_as_stored"] = False
        if precision == "nvfp4":
            problems.add("draft-precision-unsupported",
                         "the draft layer is stored NVFP4; stock SGLang 0.5.23 forces the NextN draft "
                         "unquantized under modelopt_fp4 and fails on its U8 weights. The glm_mtp plugin "
                         "builds it with modelopt_fp4 and makes it work.", "warning")
        else:
            problems.add("draft-precision-unsupported",
                         f"the draft layer is stored {precision.upper()} under an NVFP4 target; stock SGLang "
                         "0.5.23 builds it unquantized and fails to load it. The glm_mtp plugin builds it with "
                         "the FP8 config and makes it work.", "warning")


def _judge_quantized_draft(problems: Problems, report: InspectionReport, view: _QuantView) -> None:
    """A quantized layer: each module excluded exactly when stored BF16, by checkpoint and by SGLang's names."""
    decl, prefix = view.decl, view.prefix
    wrong_bf16 = [m for m, p in view.stored.items() if p == "bf16" and m != "eh_proj" and not view.excluded(m)]
    wrong_quant = [m for m, p in view.stored.items() if p in QUANTIZED and view.excluded(m)]
    severity = "warning" if decl.is_modelopt else "error"
    if wrong_bf16:
        problems.add("quant-config-mismatch",
                     f"{len(wrong_bf16)} draft module(s) are stored BF16 but {view.where} would quantize them "
                     f"({listed([prefix + m for m in sorted(wrong_bf16)])}); add them to it", severity, decl.source)
    if wrong_quant:
        problems.add("quant-config-mismatch",
                     f"{len(wrong_quant)} draft module(s) are stored quantized but {view.where} excludes them "
                     f"({listed([prefix + m for m in sorted(wrong_quant)])})", severity, decl.source)
    if wrong_bf16 or wrong_quant or decl.dialect == "modelopt":
        return
    stock = list(dict.fromkeys(sglang_module(m) for m, p in view.stored.items()
                               if (p == "bf16") == view.stock_builds_quantized(m)))
    report.quant_config["stock_sglang_builds_as_stored"] = not stock
    if stock:
        problems.add("quant-config-mismatch",
                     f"{view.where} names the draft layer's modules by their checkpoint names, which never reach "
                     f"the draft SGLang builds (model.decoder.*): stock SGLang 0.5.23 would build "
                     f"{len(stock)} module(s) in another precision than stored ({listed(stock)}) and fail to "
                     "load them. The glm_mtp plugin translates the exclusions to the draft's names, so SGLang "
                     "with the plugin serves it as is.", "warning", decl.source)


def _judge_bf16_draft(problems: Problems, report: InspectionReport, view: _QuantView, modules: list[str]) -> None:
    """A BF16 layer under a quantized target: does its declaration keep it BF16, in SGLang and elsewhere?

    Two readers: stock SGLang, which asks by the draft's own names after the draft class's
    name map (``QuantDeclaration.stock_builds_quantized``), and every other consumer
    (transformers, vLLM), which asks by the checkpoint's names. The glm_mtp plugin builds a
    BF16 layer unquantized whatever the declaration says, so either gap is a warning that
    names the exact entries to add.
    """
    decl, prefix = view.decl, view.prefix
    stock = [m for m in modules if view.stock_builds_quantized(m)]
    declared = [m for m in modules if m != "eh_proj" and not view.excluded(m)]
    report.quant_config["stock_sglang_builds_as_stored"] = not stock
    if not stock and not declared:
        return
    entries = [e for e in decl.bf16_draft_entries(prefix[:-1], view.family.quant_name_map) if e not in decl.exclude]
    key = decl.exclude_key or "exclude list"
    report.quant_config["entries_to_add"] = entries
    gaps = []
    if stock:
        built = list(dict.fromkeys(sglang_module(m) for m in stock))
        gaps.append(f"stock SGLang 0.5.23 would build {len(built)} of its modules quantized "
                    f"({listed(built)}) and fail to load it or serve unloaded weights")
    if declared:
        gaps.append(f"{decl.source} {key} does not exclude {len(declared)} of them by checkpoint name "
                    f"({listed([prefix + m for m in declared])}), which transformers and vLLM read")
    problems.add("quant-config-mismatch",
                 f"the draft layer is stored BF16 under a {decl.dialect} {decl.precision.upper()} target, but "
                 f"{'; and '.join(gaps)}. The glm_mtp plugin builds it unquantized, so SGLang with the plugin "
                 f"serves it as is; for stock SGLang and other engines add {' and '.join(entries)} to "
                 f"{decl.source} {key} (as JSON: {json.dumps(entries)}; sglang-glm-mtp graft --force writes "
                 "them)", "warning", decl.source)
