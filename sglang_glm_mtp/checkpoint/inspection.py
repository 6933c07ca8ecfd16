"""Inspect a checkpoint: its MTP/NextN draft layer (present, complete, in which precision) and its shards.

Reads config.json, the quant config, the index and safetensors headers; never tensor
data, never writes. The shards the draft layer lives in (and un-indexed ``.safetensors``
files, which SGLang would silently drop) are parsed entry by entry. Every other shard of
a local checkpoint gets the cheap integrity test (framing, entry count against the index,
data end against the file size: ``looks_intact``) and a full parse whenever that test is
not conclusive, so a truncated or corrupt shard anywhere makes the checkpoint ``invalid``.
Headers are read concurrently; the index is walked once, in C where possible.
"""

from __future__ import annotations

import gc
import json
import logging
from collections import Counter
from contextlib import contextmanager
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from operator import countOf
from typing import Any, Callable, Iterable, Iterator

from ..errors import CheckpointUnreadable
from ..text import listed, short
from .draft_names import NEVER_QUANTIZED, sglang_module
from .families import Config, ConfigError, LayerTensor, ModelFamily, family_for, supported_architectures
from .files import CONFIG_FILE, INDEX_FILE, QUANT_FILE
from .index_scan import QUANT_SUFFIXES, IndexScan
from .precision import (FLEXIBLE_SUFFIXES, OPTIONAL_SUFFIXES, QUANTIZED, Precision, layout_precision, module_layout,
                        module_precision, overall_precision, quantized_form)
from .quant_config import QuantConfigError, QuantDeclaration, read_quant_declaration
from .report import DAMAGE_CODES, InspectionReport, Problem, TensorLocation
from .safetensors_format import (PREFIX_BYTES, TAIL_BYTES, HeaderError, ShardHeader, TensorSpec, looks_intact,
                                 parse_header_bytes, parse_length_prefix, read_header_bytes)
from .source import CheckpointSource, hub_error, open_checkpoint

logger = logging.getLogger(__name__)

#: Concurrent header reads of a local checkpoint (I/O bound on a cold cache).
HEADER_READERS = 8

__all__ = ["inspect_checkpoint"]


def inspect_checkpoint(spec: str | CheckpointSource, *, endpoint: str | None = None,
                       all_headers: bool = False, integrity: bool = True) -> InspectionReport:
    """Inspect a local dir, a Hub id, or an already opened source.

    Raises only ``CheckpointUnreadable`` (one actionable line); every defect of the
    checkpoint itself is a problem in the report. ``all_headers`` parses every shard's
    header entry by entry instead of the cheap integrity test (about the cost of opening
    every shard with safetensors); ``integrity=False`` judges the draft layer alone (a
    latency-bound preflight): only the draft shards' headers, and of a local index only the
    draft layer's entries (``IndexScan.draft_only``) unless the layer is not ready, in which
    case the verdict comes from the whole index, as ``check`` gives it.
    """
    source = open_checkpoint(spec, endpoint=endpoint) if isinstance(spec, str) else spec
    with _cyclic_gc_paused():
        inspection = _Inspection(source, all_headers, integrity)
        report = inspection.run()
        if inspection.partial_index and not report.ok:
            report = _Inspection(source, all_headers, integrity, whole_index=True).run()  # judged on every entry
        return report


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while inspecting: it builds thousands of small objects and no cycles.

    Inside SGLang's main process (the preflight) the heap holds about a million objects, and
    one full collection triggered by these allocations took 0.5 s, longer than the whole
    inspection. Reference counting still frees everything; the previous state is restored.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class _Shard:
    """What reading one shard's header found: a parsed header, an integrity verdict, or an error."""

    name: str
    header: ShardHeader | None = None  # parsed entry by entry
    payload: int | None = None  # tensor bytes, when the shard is intact
    error: HeaderError | None = None
    unreadable: str | None = None  # could not be read at all: says nothing about the shard itself


@dataclass
class _Inspection:
    source: CheckpointSource
    all_headers: bool = False
    integrity: bool = True
    problems: list[Problem] = field(default_factory=list)
    #: decode the whole index even when judging the draft layer alone
    whole_index: bool = False
    #: header peeks started first: their cold-cache I/O overlaps reading the config files; done before the decode
    peeks: dict[str, Future[tuple[int, bytes, bytes]]] = field(default_factory=dict)
    pool: ThreadPoolExecutor | None = None
    #: the index was read for the draft layer's entries alone (IndexScan.draft_only)
    partial_index: bool = False

    def problem(self, code: str, message: str, severity: str = "error", file: str | None = None) -> None:
        self.problems.append(Problem(code, message, severity, file))  # type: ignore[arg-type]

    def unreadable(self, file: str, message: str, todo: str) -> CheckpointUnreadable:
        return CheckpointUnreadable(f"{self.source.display}/{file}: {message}; {todo}")

    # ------------------------------------------------------------------ top level

    def run(self) -> InspectionReport:
        files = self.source.list_files()
        if self.source.is_remote:  # HfFileSystem reads stay sequential
            return self._judge(files)
        with ThreadPoolExecutor(max_workers=HEADER_READERS) as pool:
            self.pool = pool
            if self.integrity and not self.all_headers:
                self.peeks = {name: pool.submit(self._peek, name, size) for name, size in sorted(files.items())
                              if name.endswith(".safetensors")}
            try:
                return self._judge(files)
            finally:
                for peek in self.peeks.values():
                    peek.cancel()

    def _judge(self, files: dict[str, int]) -> InspectionReport:
        raw_config = self.source.read_json(CONFIG_FILE)
        if raw_config is None:
            raise CheckpointUnreadable(f"{self.source.display} has no config.json; is this a model checkpoint?")
        if not isinstance(raw_config, dict):
            raise self.unreadable(CONFIG_FILE, f"is a JSON {type(raw_config).__name__}, not an object",
                                  "restore it from the original release")
        archs = raw_config.get("architectures")
        if not (isinstance(archs, list) and archs and all(isinstance(a, str) for a in archs)):
            raise self.unreadable(CONFIG_FILE, f"'architectures' must be a list of class names such as "
                                               f"[\"GlmMoeDsaForCausalLM\"], got {short(archs)}",
                                  "restore config.json from the original release")
        try:
            cfg = Config(raw_config)
            family = family_for(cfg.architecture)
            if family is None:
                raise CheckpointUnreadable(
                    f"{self.source.display}: architecture {cfg.architecture} is not supported "
                    f"(supported: {', '.join(supported_architectures())})")
            return self._run(files, cfg, family)
        except ConfigError as exc:
            raise self.unreadable(CONFIG_FILE, str(exc).removeprefix("config.json "),
                                  "restore config.json from the original release") from None
        except QuantConfigError as exc:
            file = QUANT_FILE if str(exc).startswith(QUANT_FILE) else CONFIG_FILE
            raise self.unreadable(file, str(exc).removeprefix(f"{file} "),
                                  "fix the entry or restore the file from the release") from None

    def _run(self, files: dict[str, int], cfg: Config, family: ModelFamily) -> InspectionReport:
        report = InspectionReport(checkpoint=self.source.display, status="ready", architecture=cfg.architecture,
                                  family=family.name, draft_layer=None, config=cfg.raw)
        hf_quant = self.source.read_json(QUANT_FILE) if QUANT_FILE in files else None
        decl = read_quant_declaration(cfg.raw, hf_quant)
        applicable = family.nextn_layers(cfg) >= 1
        layer = family.draft_layer(cfg) if applicable else None
        prefixes = family.draft_prefixes_for(cfg) if layer is not None else ()
        index, scan = self._scan_index(files, prefixes)

        report.target_precision = _target_precision(decl, scan)
        report.quant_config = {"source": decl.source, "quant_algo": decl.quant_algo,
                               "exclude_key": decl.exclude_key, "dialect": decl.dialect,
                               "stock_sglang_builds_as_stored": None, "entries_to_add": []}
        if layer is None:
            report.status = "not-applicable"
            return report
        if not _has_weight_files(files):
            return _no_weights(report, family, cfg, prefixes)
        if not any(name.endswith(".safetensors") or name == INDEX_FILE for name in files):
            others = sorted(name for name in files if name.endswith(WEIGHT_SUFFIXES))
            raise CheckpointUnreadable(
                f"{self.source.display} holds its weights in {listed(others)}"
                f"{' …' if len(others) > 3 else ''}, not safetensors; check reads safetensors headers only, so it "
                "cannot judge the draft layer (SGLang's post-load check of the glm_mtp plugin still does)")

        report.draft_layer = layer
        report.nextn_layers = family.nextn_layers(cfg)
        report.standalone_draft = family.is_standalone_draft(cfg)
        located = self._locate_draft(files, scan, prefixes, family, index)
        prefix = _chosen_prefix(prefixes, located)  # the family's spelling this checkpoint uses
        located = {name: loc for name, loc in located.items() if name.startswith(prefix)}
        report.draft_prefix = prefix[:-1]
        report.quant_config["draft_excluded"] = decl.is_excluded(prefix[:-1]) if decl.quantizes else None
        report.locations = located
        report.draft_shards = sorted({loc.shard for loc in located.values()})
        report.draft_bytes = sum(loc.entry.nbytes for loc in located.values())

        found = {name[len(prefix):]: loc.entry for name, loc in located.items()}
        expected = list(_expected(family, cfg, report.standalone_draft))  # built once, only now
        self._compare(report, prefix, expected, found)
        self._check_quant(report, decl, prefix, expected, found, family)

        report.problems = self.problems
        report.status = _status(self.problems)
        report.remedy = _remedy(report, family, self.source, cfg.raw, hf_quant)
        return report

    # ------------------------------------------------------------------ index and shards

    def _scan_index(self, files: dict[str, int], prefixes: tuple[str, ...]
                    ) -> tuple[dict[str, Any] | None, IndexScan | None]:
        """The index document (its metadata at least) and what the verdict needs from its entries."""
        draft_alone = not (self.integrity or self.all_headers or self.whole_index or self.source.is_remote)
        memo = getattr(self.source, "index_memo", None) or {}
        read_bytes = getattr(self.source, "read_bytes", None)
        if draft_alone and INDEX_FILE in files and INDEX_FILE not in memo and read_bytes is not None:
            raw = read_bytes(INDEX_FILE)
            scan = IndexScan.draft_only(raw, prefixes) if raw is not None else None
            if scan is not None:
                self.partial_index = True
                return {"metadata": scan.metadata}, scan
        index = self._read_index()
        scan = IndexScan.of(index["weight_map"], prefixes) if index is not None else None
        if index is not None and scan is None:
            raise self.unreadable(INDEX_FILE, "weight_map values must be shard file names",
                                  "restore it from the release, or delete it to let SGLang load every "
                                  ".safetensors file")
        return index, scan

    def _read_index(self) -> dict[str, Any] | None:
        # The header peeks started with the inspection; let them finish first: threads waking for the GIL slow
        # the decode below (which holds it throughout) by more than the peeks take on their own.
        wait(self.peeks.values())
        index = self.source.read_json(INDEX_FILE)
        if index is None:
            return None
        todo = "restore it from the release, or delete it to let SGLang load every .safetensors file"
        if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
            raise self.unreadable(INDEX_FILE, "has no weight_map object", todo)
        return index

    def _peek(self, name: str, size: int) -> tuple[int, bytes, bytes]:
        """What ``looks_intact`` needs: the header length, its first bytes and its last ``TAIL_BYTES``."""
        with self.source.open(name) as stream:
            header_len = parse_length_prefix(stream.read(PREFIX_BYTES), size)
            head = stream.read(2)
            stream.seek(PREFIX_BYTES + max(0, header_len - TAIL_BYTES))
            return header_len, head, stream.read(TAIL_BYTES)

    def _read_shards(self, files: dict[str, int], full: set[str], quick: set[str],
                     scan: IndexScan | None) -> dict[str, _Shard]:
        """Read the headers of ``full`` (parsed entry by entry) and ``quick`` (integrity test) shards."""
        def read(name: str) -> _Shard:
            shard = _Shard(name)
            size = files[name]
            try:
                if name not in full:
                    peek = self.peeks.get(name)
                    header_len, head, tail = peek.result() if peek is not None else self._peek(name, size)
                    if looks_intact(head, tail, header_len, size):
                        shard.payload = size - PREFIX_BYTES - header_len
                        return shard
                with self.source.open(name) as stream:
                    header_len, raw = read_header_bytes(stream, size)
                shard.header = parse_header_bytes(header_len, raw, size)
                shard.payload = shard.header.payload_bytes
            except HeaderError as exc:
                shard.error = exc
            except PermissionError as exc:
                shard.unreadable = f"cannot read {self.source.display}/{name} ({exc.strerror}); check its permissions"
            except Exception as exc:  # noqa: BLE001 - a Hub read fails in many ways; none is a verdict
                if not self.source.is_remote and isinstance(exc, OSError):
                    shard.error = HeaderError("corrupt-header", f"cannot read ({exc.strerror or exc})")  # e.g. EIO
                elif self.source.is_remote:
                    shard.unreadable = hub_error(f"{self.source.display}/{name}", exc) + "; try again"
                else:
                    raise
            return shard

        names = sorted(full | quick)
        if self.pool is None or len(names) < 2:
            shards = [read(name) for name in names]
        else:
            shards = list(self.pool.map(read, names))
        for shard in shards:
            if shard.unreadable is not None:
                raise CheckpointUnreadable(shard.unreadable)
        for shard in shards:
            if shard.error is not None:
                self.problem(shard.error.code, f"{shard.name}: {shard.error}", file=shard.name)
        return {shard.name: shard for shard in shards}

    def _locate_draft(self, files: dict[str, int], scan: IndexScan | None, prefix: tuple[str, ...],
                      family: ModelFamily, index: dict[str, Any] | None) -> dict[str, TensorLocation]:
        """Find every draft tensor SGLang would load, and every way the index or a shard misleads it."""
        on_disk = {name for name in files if name.endswith(".safetensors")}
        located: dict[str, TensorLocation] = {}
        if scan is None:
            loaded = sorted(on_disk)  # no index: SGLang loads every .safetensors file
            unindexed: list[str] = []
            others: set[str] = set()
        else:
            referenced = scan.referenced
            missing_files = sorted(referenced - on_disk)
            if missing_files:
                self.problem("index-missing-shard",
                             f"{INDEX_FILE} names {len(missing_files)} shard file(s) that do not exist: "
                             f"{listed(missing_files)} (SGLang refuses to load this checkpoint)",
                             file=INDEX_FILE)
            loaded = sorted({scan.weight_map[name] for name in scan.draft_names} & on_disk)
            unindexed = sorted(on_disk - referenced) if scan.complete else []  # a partial scan names draft shards
            # every other shard of a local checkpoint gets the integrity test (a Hub file is what was uploaded)
            others = (referenced & on_disk) - set(loaded) if self.integrity and not self.source.is_remote else set()
        full = set(loaded) | set(unindexed) | (others if self.all_headers else set())
        shards = self._read_shards(files, full, others - full, scan)

        for name in loaded:
            header = shards[name].header
            if header is None:
                continue
            if scan is not None:
                self._cross_check_index(name, header, scan, prefix)
            for tensor, entry in header.tensors.items():
                if tensor.startswith(prefix):
                    located[tensor] = TensorLocation(name, entry, header.data_start)
        for name in sorted(others & full):  # --all-headers: names checked against the index too
            header = shards[name].header
            if header is not None and scan is not None:
                self._cross_check_index(name, header, scan, prefix)

        for shard in unindexed:
            header = shards[shard].header
            if header is None:
                continue
            draft_names = [n for n in header.tensors if n.startswith(prefix)]
            if family.loads_unindexed_mtp_file and shard == "mtp.safetensors" and draft_names:
                for name in draft_names:
                    located.setdefault(name, TensorLocation(shard, header.tensors[name], header.data_start))
                self.problem("unindexed-shard",
                             f"{shard} holds {len(draft_names)} draft tensors but is not in {INDEX_FILE}; "
                             "SGLang 0.5.23 appends it for this architecture, other loaders may not",
                             "warning", shard)
            elif draft_names:
                self.problem("unindexed-shard",
                             f"{shard} holds {len(draft_names)} draft-layer tensors but is not named in "
                             f"{INDEX_FILE}, so SGLang silently ignores it (e.g. {listed(draft_names)})",
                             "error", shard)
            else:
                self.problem("unindexed-shard",
                             f"{shard} is not named in {INDEX_FILE}; SGLang will not load it", "warning", shard)

        if scan is not None and scan.complete and index is not None and not self.source.is_remote:
            self._check_total_size(index, scan, shards, on_disk)
        return located

    def _cross_check_index(self, shard: str, header: ShardHeader, scan: IndexScan, prefix: tuple[str, ...]) -> None:
        """Index and header agree on what ``shard`` holds (on the draft layer's tensors, for a partial scan)."""
        weight_map = scan.weight_map
        here = countOf(map(weight_map.get, header.tensors), shard)  # C loops: ~5,000 names per draft shard
        if here != scan.count_in(shard):  # the index places more tensors here than the header holds
            absent = sorted(name for name in scan.names_in(shard) if name not in header.tensors)
            self.problem("index-tensor-not-in-shard",
                         f"{INDEX_FILE} places {len(absent)} tensor(s) in {shard} that its header does not "
                         f"contain: {listed(absent)}", file=shard)
        names = header.tensors if scan.complete else [n for n in header.tensors if n.startswith(prefix)]
        extra = sorted(set(names).difference(weight_map))  # walks the header's names, not the index's
        if extra:
            self.problem("tensor-not-in-index",
                         f"{shard} contains {len(extra)} tensor(s) missing from {INDEX_FILE}: {listed(extra)} "
                         "(SGLang still loads them, other tools may not)", "warning", shard)

    def _check_total_size(self, index: dict[str, Any], scan: IndexScan, shards: dict[str, _Shard],
                          on_disk: set[str]) -> None:
        """metadata.total_size should equal the tensor payload bytes (HF's convention)."""
        metadata = index.get("metadata")
        if metadata is None:
            return
        if not isinstance(metadata, dict):
            self.problem("total-size-mismatch",
                         f"{INDEX_FILE} metadata is a JSON {type(metadata).__name__}, not an object; SGLang "
                         "ignores it, other tools may not (rewrite it as {\"total_size\": <bytes>})",
                         "warning", INDEX_FILE)
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
            self.problem("total-size-mismatch",
                         f"{INDEX_FILE} metadata.total_size is {short(declared)} but the shards, all intact, "
                         f"hold {actual:,} bytes of tensor data: the index was not updated when shards were "
                         "added or replaced. SGLang ignores total_size; to silence this, set it to "
                         f"{actual}", "warning", INDEX_FILE)

    # ------------------------------------------------------------------ completeness

    def _compare(self, report: InspectionReport, prefix: str, expected: list[LayerTensor],
                 found: dict[str, Any]) -> None:
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

        wanted: dict[str, TensorSpec] = {}
        optional: set[str] = set()
        flexible: set[str] = set()  # scales whose shape and dtype depend on an unstated strategy
        fallback: Precision = layer_precision if layer_precision in QUANTIZED else "bf16"
        fallback_layout = _most_common(l for m, l in layouts.items() if ".experts." in m and l != "bf16")
        for tensor in expected:
            precision: Precision = per_module.get(tensor.module, "bf16") if tensor.linear else "bf16"
            layout = layouts.get(tensor.module)
            if tensor.linear and tensor.module not in per_module and _quantized_group(tensor, per_module):
                precision, layout = fallback, fallback_layout  # missing expert of a quantized layer
            for spec in quantized_form(tensor, precision, layout=layout):
                wanted[spec.name] = spec
                suffix = spec.name.rsplit(".", 1)[-1]
                if layout is not None and suffix in OPTIONAL_SUFFIXES.get(layout, ()):
                    optional.add(spec.name)
                if layout is not None and suffix in FLEXIBLE_SUFFIXES.get(layout, ()):
                    flexible.add(spec.name)

        missing = sorted((n for n in wanted if n not in found and n not in optional), key=_natural)
        unexpected = sorted((n for n in found if n not in wanted), key=_natural)
        report.expected_tensors = len(wanted) - len(optional - found.keys())
        report.found_tensors = len(found)
        report.missing = [prefix + n for n in missing]
        report.unexpected = [prefix + n for n in unexpected]

        if not found:
            self.problem("draft-layer-missing",
                         f"config.json declares {report.nextn_layers} NextN layer(s) but "
                         f"the checkpoint holds no {prefix}* tensors that SGLang would load "
                         f"(0 of {report.expected_tensors}); SGLang 0.5.23 would serve drafts from "
                         "uninitialised memory without an error")
            return
        if missing:
            self.problem("draft-layer-incomplete",
                         f"{prefix}* has {len(found)} tensors; {len(missing)} of {report.expected_tensors} expected "
                         f"are missing: {listed(report.missing)}")
        if unexpected:
            self.problem("unexpected-tensor",
                         f"{len(unexpected)} {prefix}* tensor(s) that this architecture does not have: "
                         f"{listed(report.unexpected)}", "warning")

        bad_shapes, bad_dtypes = [], []
        for name, spec in wanted.items():
            entry = found.get(name)
            if entry is None or name in flexible:
                continue
            if tuple(entry.shape) != tuple(spec.shape):
                bad_shapes.append(f"{prefix}{name} {list(entry.shape)} (config says {list(spec.shape)})")
            if entry.dtype != spec.dtype and not (spec.dtype == "BF16" and entry.dtype in ("F16", "F32")
                                                   and not name.endswith("correction_bias")):
                bad_dtypes.append(f"{prefix}{name} {entry.dtype} (expected {spec.dtype})")
        if bad_shapes:
            self.problem("shape-mismatch", f"{len(bad_shapes)} tensor(s) disagree with config.json: "
                                           f"{listed(bad_shapes)}")
        if bad_dtypes:
            self.problem("dtype-mismatch", f"{len(bad_dtypes)} tensor(s) have an unexpected dtype: "
                                           f"{listed(bad_dtypes)}")

    # ------------------------------------------------------------------ quantization

    def _check_quant(self, report: InspectionReport, decl: QuantDeclaration, prefix: str,
                     expected: Iterable[LayerTensor], found: dict[str, Any], family: ModelFamily) -> None:
        precision = report.draft_precision
        if precision is None:
            return
        if precision in ("mixed", "unknown"):
            self.problem("draft-precision-unsupported",
                         f"the draft layer mixes storage formats ({precision}); neither SGLang 0.5.23 nor the "
                         "glm_mtp plugin can build one quant config for it. Graft a uniform layer with --force.")
        elif precision != "bf16" and decl.is_modelopt and decl.precision == "nvfp4":
            report.quant_config["stock_sglang_builds_as_stored"] = False
            if precision == "nvfp4":
                self.problem("draft-precision-unsupported",
                             "the draft layer is stored NVFP4; stock SGLang 0.5.23 forces the NextN draft "
                             "unquantized under modelopt_fp4 and fails on its U8 weights. The glm_mtp plugin "
                             "builds it with modelopt_fp4 and makes it work.", "warning")
            else:
                self.problem("draft-precision-unsupported",
                             f"the draft layer is stored {precision.upper()} under an NVFP4 target; stock SGLang "
                             "0.5.23 builds it unquantized and fails to load it. The glm_mtp plugin builds it with "
                             "the FP8 config and makes it work.", "warning")
        if decl.dialect == "unknown":
            self.problem("quant-config-mismatch",
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
        everything = decl.excludes_all_under(prefix)  # ~800 modules in a GLM-5.2 draft: skip matching each
        quark_remap = prefix[:-1] if family.quark_remaps_layer else None

        def excluded(module: str) -> bool:
            return everything or decl.is_excluded(prefix + module)

        if precision == "bf16":
            self._check_bf16_draft(report, decl, prefix, sorted(stored), family, excluded, quark_remap)
            return
        wrong_bf16 = [m for m, p in stored.items() if p == "bf16" and m != "eh_proj" and not excluded(m)]
        wrong_quant = [m for m, p in stored.items() if p in QUANTIZED and excluded(m)]
        where = f"{decl.source} {decl.exclude_key or 'exclude list'}"
        severity = "warning" if decl.is_modelopt else "error"
        if wrong_bf16:
            self.problem("quant-config-mismatch",
                         f"{len(wrong_bf16)} draft module(s) are stored BF16 but {where} would quantize them "
                         f"({listed([prefix + m for m in sorted(wrong_bf16)])}); add them to it",
                         severity, decl.source)
        if wrong_quant:
            self.problem("quant-config-mismatch",
                         f"{len(wrong_quant)} draft module(s) are stored quantized but {where} excludes them "
                         f"({listed([prefix + m for m in sorted(wrong_quant)])})", severity, decl.source)
        if wrong_bf16 or wrong_quant or decl.dialect == "modelopt":
            return
        stock = list(dict.fromkeys(sglang_module(m) for m, p in stored.items() if (p == "bf16") == decl.
                                   stock_builds_quantized(m, family.quant_name_map, quark_remap)))
        report.quant_config["stock_sglang_builds_as_stored"] = not stock
        if stock:
            self.problem("quant-config-mismatch",
                         f"{where} names the draft layer's modules by their checkpoint names, which never reach "
                         f"the draft SGLang builds (model.decoder.*): stock SGLang 0.5.23 would build "
                         f"{len(stock)} module(s) in another precision than stored ({listed(stock)}) and fail to "
                         "load them. The glm_mtp plugin translates the exclusions to the draft's names, so SGLang "
                         "with the plugin serves it as is.", "warning", decl.source)

    def _check_bf16_draft(self, report: InspectionReport, decl: QuantDeclaration, prefix: str, modules: list[str],
                          family: ModelFamily, excluded: Callable[[str], bool], quark_remap: str | None) -> None:
        """A BF16 layer under a quantized target: does its declaration keep it BF16, in SGLang and elsewhere?

        Two readers: stock SGLang, which asks by the draft's own names after the draft class's
        name map (``QuantDeclaration.stock_builds_quantized``), and every other consumer
        (transformers, vLLM), which asks by the checkpoint's names. The glm_mtp plugin builds a
        BF16 layer unquantized whatever the declaration says, so either gap is a warning that
        names the exact entries to add.
        """
        stock = [m for m in modules if decl.stock_builds_quantized(m, family.quant_name_map, quark_remap)]
        declared = [m for m in modules if m != "eh_proj" and not excluded(m)]
        report.quant_config["stock_sglang_builds_as_stored"] = not stock
        if not stock and not declared:
            return
        entries = [e for e in decl.bf16_draft_entries(prefix[:-1], family.quant_name_map) if e not in decl.exclude]
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
        self.problem("quant-config-mismatch",
                     f"the draft layer is stored BF16 under a {decl.dialect} {decl.precision.upper()} target, but "
                     f"{'; and '.join(gaps)}. The glm_mtp plugin builds it unquantized, so SGLang with the plugin "
                     f"serves it as is; for stock SGLang and other engines add {' and '.join(entries)} to "
                     f"{decl.source} {key} (as JSON: {_json_list(entries)}; sglang-glm-mtp graft --force writes "
                     "them)", "warning", decl.source)


def _expected(family: ModelFamily, cfg: Config, standalone: bool) -> Iterable[LayerTensor]:
    """The draft tensors config.json implies (built after the cheap verdicts: unreadable, not applicable)."""
    skip = ("embed_tokens.weight", "shared_head.head.weight") if standalone else ()  # as SGLang's export drops
    return (t for t in family.draft_tensors(cfg) if t.name not in skip)


def _target_precision(decl: QuantDeclaration, scan: IndexScan | None) -> Precision:
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


def _chosen_prefix(prefixes: tuple[str, ...], located: dict[str, TensorLocation]) -> str:
    """The accepted prefix most draft tensors use; the family's first when none is present."""
    counts = [sum(name.startswith(p) for name in located) for p in prefixes]
    return prefixes[counts.index(max(counts))] if any(counts) else prefixes[0]


def _most_common(values: Iterable[str]) -> str | None:
    """The most frequent layout among a layer's quantized experts (a missing expert is expected in it)."""
    counts = Counter(values)
    return counts.most_common(1)[0][0] if counts else None


def _quantized_group(tensor: LayerTensor, per_module: dict[str, Precision]) -> bool:
    """Is ``tensor`` an expert linear in a layer whose experts are stored quantized?"""
    return ".experts." in tensor.name and any(".experts." in m and p != "bf16" for m, p in per_module.items())


#: Files any SGLang load format reads weights from; a checkpoint with none of them holds no weights at all.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def _has_weight_files(files: dict[str, int]) -> bool:
    return any(name.endswith(WEIGHT_SUFFIXES) or name.endswith(".index.json") for name in files)


def _no_weights(report: InspectionReport, family: ModelFamily, cfg: Config,
                prefixes: tuple[str, ...]) -> InspectionReport:
    """config.json (and maybe tokenizer files) but no weight file and no index: nothing to judge, and no
    missing draft layer either. SGLang's loader refuses the folder itself ("Cannot find any model weights")."""
    report.status = "no-weights"
    report.draft_layer = family.draft_layer(cfg)
    report.nextn_layers = family.nextn_layers(cfg)
    report.draft_prefix = prefixes[0][:-1] if prefixes else None
    report.remedy = ("the folder holds no weight files (*.safetensors, model.safetensors.index.json): download "
                     "the complete checkpoint into it, or point at the folder that has them, then run check again")
    return report


def _status(problems: list[Problem]) -> str:
    codes = {p.code for p in problems if p.severity == "error"}
    if codes & DAMAGE_CODES:
        return "invalid"  # the layer may well be there; the files around it are broken
    if "draft-layer-missing" in codes:
        return "missing"
    if "draft-layer-incomplete" in codes:
        return "incomplete"
    return "invalid" if codes else "ready"


def _remedy(report: InspectionReport, family: ModelFamily, source: CheckpointSource, config: dict[str, Any],
            quant: Any) -> str | None:
    if report.status == "ready" or report.status == "not-applicable":
        return None
    codes = {p.code for p in report.errors()}
    if report.status == "invalid" and codes & DAMAGE_CODES:
        return "re-download the damaged or missing shard(s) named above, then run sglang-glm-mtp check again"
    from .provenance import base_model  # only a failed check pays for the model-card parser

    named = base_model(source, config, quant)
    into = source.display
    local = f"./{source.display.split('/')[-1]}" if source.is_remote else into
    force = "" if report.status == "missing" else " --force"
    if named is not None:
        graft = f"sglang-glm-mtp graft --from {named.repo_id} --into {local}{force}"
        why = f" ({named.repo_id} is the release {named.where} names)"
    else:
        graft = f"sglang-glm-mtp graft --from <BF16 release> --into {local}{force}"
        known = f"; {family.name} releases: {', '.join(family.releases)}" if family.releases else ""
        why = (f" with <BF16 release> the exact unquantized release this checkpoint was quantized from (its files do "
               f"not say which{known}); a draft layer from another release loads and drafts the wrong tokens")
    if source.is_remote:
        graft = f"hf download {source.display} --local-dir {local} && {graft}"
    if report.status == "invalid" and "unindexed-shard" in codes:
        return f"add the shard to {INDEX_FILE}, or re-graft the layer: {graft}{why}"
    if report.status == "invalid":
        return f"re-graft the draft layer: {graft}{why}"
    return graft + why


def _json_list(entries: list[str]) -> str:
    """Entries as they are written into the JSON file (copy-pasteable, backslashes doubled)."""
    return json.dumps(entries)



def _natural(name: str) -> tuple[Any, ...]:
    """Sort expert 2 before expert 10."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in name.split("."))
