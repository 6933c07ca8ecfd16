"""Inspect a checkpoint's MTP/NextN draft layer: present, complete, in which precision.

Reads config.json, the quant config, the index and *only* the headers of the shards
the index says hold the draft layer (plus un-indexed ``.safetensors`` files, which
SGLang would silently drop). Never reads tensor data, never writes.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..errors import CheckpointUnreadable
from .families import Config, LayerTensor, ModelFamily, family_for, supported_architectures
from .precision import OPTIONAL_SUFFIXES, Precision, module_precision, overall_precision, quantized_form
from .quant_config import QuantDeclaration, read_quant_declaration
from .report import InspectionReport, Problem, TensorLocation
from .safetensors_format import PREFIX_BYTES, HeaderError, ShardHeader, TensorSpec, read_header
from .source import CheckpointSource, open_checkpoint

logger = logging.getLogger(__name__)

INDEX_FILE = "model.safetensors.index.json"
QUANT_FILE = "hf_quant_config.json"
#: How many names a one-line problem message lists before "…".
NAMES_IN_MESSAGE = 5
#: Problems that mean "files are damaged", which outrank "layer missing" in the status.
DAMAGE_CODES = {"corrupt-header", "truncated-shard", "index-missing-shard"}


def inspect(spec: str | CheckpointSource, *, endpoint: str | None = None) -> InspectionReport:
    """Inspect a local dir, a Hub id, or an already opened source."""
    source = open_checkpoint(spec, endpoint=endpoint) if isinstance(spec, str) else spec
    return _Inspection(source).run()


@dataclass
class _Inspection:
    source: CheckpointSource
    problems: list[Problem] = field(default_factory=list)

    def problem(self, code: str, message: str, severity: str = "error", file: str | None = None) -> None:
        self.problems.append(Problem(code, message, severity, file))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ top level

    def run(self) -> InspectionReport:
        files = self.source.list_files()
        raw_config = self.source.read_json("config.json")
        if raw_config is None:
            raise CheckpointUnreadable(f"{self.source.display} has no config.json; is this a model checkpoint?")
        if not isinstance(raw_config, dict):
            raise CheckpointUnreadable(f"{self.source.display}/config.json is not a JSON object")
        cfg = Config(raw_config)
        family = family_for(cfg.architecture)
        if family is None:
            raise CheckpointUnreadable(
                f"{self.source.display}: architecture {cfg.architecture or '(none)'} is not supported "
                f"(supported: {', '.join(supported_architectures())})")
        try:
            return self._run(files, cfg, family)
        except (ValueError, KeyError, TypeError) as exc:  # a config.json missing/mistyping a needed field
            raise CheckpointUnreadable(f"{self.source.display}/config.json: {exc}") from None

    def _run(self, files: dict[str, int], cfg: Config, family: ModelFamily) -> InspectionReport:
        report = InspectionReport(checkpoint=self.source.display, status="ready", architecture=cfg.architecture,
                                  family=family.name, draft_layer=None, config=cfg.raw)
        hf_quant = self.source.read_json(QUANT_FILE)
        decl = read_quant_declaration(cfg.raw, hf_quant if isinstance(hf_quant, dict) else None)
        index = self._read_index(files)
        weight_map: dict[str, str] | None = index.get("weight_map") if index is not None else None

        report.target_precision = self._target_precision(decl, weight_map)
        report.quant_config = {"source": decl.source, "quant_algo": decl.quant_algo,
                               "exclude_key": decl.exclude_key}
        if family.nextn_layers(cfg) < 1:
            report.status = "not-applicable"
            return report

        layer = family.draft_layer(cfg)
        report.draft_layer = layer
        report.standalone_draft = family.is_standalone_draft(cfg)
        prefixes = family.draft_prefixes_for(cfg)
        located = self._locate_draft(files, weight_map, prefixes, family, index)
        prefix = _chosen_prefix(prefixes, located)  # the family's spelling this checkpoint uses
        located = {name: loc for name, loc in located.items() if name.startswith(prefix)}
        report.draft_prefix = prefix[:-1]
        report.quant_config["draft_excluded"] = decl.is_excluded(prefix[:-1]) if decl.quantizes else None

        report.locations = located
        report.draft_shards = sorted({loc.shard for loc in located.values()})
        report.draft_bytes = sum(loc.entry.nbytes for loc in located.values())
        if index is not None and weight_map is not None:
            self._check_total_size(files, index, weight_map)

        found = {name[len(prefix):]: loc.entry for name, loc in located.items()}
        expected = self._expected(family, cfg, report.standalone_draft)
        self._compare(report, prefix, expected, found)
        self._check_quant(report, decl, prefix, expected, found)

        report.problems = self.problems
        report.status = _status(self.problems)
        report.remedy = _remedy(report, family, self.source)
        return report

    # ------------------------------------------------------------------ index and shards

    def _read_index(self, files: dict[str, int]) -> dict[str, Any] | None:
        index = self.source.read_json(INDEX_FILE)
        if index is None:
            return None
        if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
            raise CheckpointUnreadable(f"{self.source.display}/{INDEX_FILE} has no weight_map object")
        if not all(isinstance(v, str) for v in index["weight_map"].values()):
            raise CheckpointUnreadable(f"{self.source.display}/{INDEX_FILE}: weight_map values must be file names")
        return index

    def _header(self, name: str, size: int) -> ShardHeader | None:
        try:
            with self.source.open(name) as stream:
                return read_header(stream, size)
        except HeaderError as exc:
            self.problem(exc.code, f"{name}: {exc}", file=name)
        except OSError as exc:
            self.problem("corrupt-header", f"{name}: cannot read ({exc})", file=name)
        return None

    def _locate_draft(self, files: dict[str, int], weight_map: dict[str, str] | None, prefix: tuple[str, ...],
                      family: ModelFamily, index: dict[str, Any] | None) -> dict[str, TensorLocation]:
        """Find every draft tensor SGLang would load, and every way the index misleads it."""
        on_disk = {name for name in files if name.endswith(".safetensors")}
        located: dict[str, TensorLocation] = {}
        if weight_map is None:
            loaded_shards = sorted(on_disk)  # no index: SGLang loads every .safetensors file
            unindexed: list[str] = []
        else:
            referenced = set(weight_map.values())
            missing_files = sorted(referenced - on_disk)
            if missing_files:
                self.problem("index-missing-shard",
                             f"{INDEX_FILE} names {len(missing_files)} shard file(s) that do not exist: "
                             f"{_names(missing_files)} (SGLang refuses to load this checkpoint)",
                             file=INDEX_FILE)
            draft_shards = {shard for name, shard in weight_map.items() if name.startswith(prefix)}
            loaded_shards = sorted(draft_shards & on_disk)
            unindexed = sorted(on_disk - referenced)

        for shard in loaded_shards:
            header = self._header(shard, files[shard])
            if header is None:
                continue
            if weight_map is not None:
                self._cross_check_index(shard, header, weight_map)
            for name, entry in header.tensors.items():
                if name.startswith(prefix):
                    located[name] = TensorLocation(shard, entry, header.data_start)

        for shard in unindexed:
            header = self._header(shard, files[shard])
            draft_names = [n for n in header.tensors if n.startswith(prefix)] if header else []
            if header is None:
                continue
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
                             f"{INDEX_FILE}, so SGLang silently ignores it (e.g. {_names(draft_names)})",
                             "error", shard)
            else:
                self.problem("unindexed-shard",
                             f"{shard} is not named in {INDEX_FILE}; SGLang will not load it", "warning", shard)
        return located

    def _cross_check_index(self, shard: str, header: ShardHeader, weight_map: dict[str, str]) -> None:
        claimed = [name for name, file in weight_map.items() if file == shard]
        absent = sorted(name for name in claimed if name not in header.tensors)
        if absent:
            self.problem("index-tensor-not-in-shard",
                         f"{INDEX_FILE} places {len(absent)} tensor(s) in {shard} that its header does not "
                         f"contain: {_names(absent)}", file=shard)
        extra = sorted(name for name in header.tensors if name not in weight_map)
        if extra:
            self.problem("tensor-not-in-index",
                         f"{shard} contains {len(extra)} tensor(s) missing from {INDEX_FILE}: {_names(extra)} "
                         "(SGLang still loads them, other tools may not)", "warning", shard)

    def _check_total_size(self, files: dict[str, int], index: dict[str, Any], weight_map: dict[str, str]) -> None:
        """total_size must equal the tensor payload bytes (HF's convention); needs 8 bytes per shard."""
        declared = (index.get("metadata") or {}).get("total_size")
        if declared is None or self.source.is_remote:
            return  # a remote check would cost one request per shard; headers of draft shards suffice
        actual = 0
        for shard in sorted(set(weight_map.values())):
            if shard not in files:
                return  # already reported as index-missing-shard
            try:
                with self.source.open(shard) as stream:
                    prefix = stream.read(PREFIX_BYTES)
            except OSError:
                return
            if len(prefix) < PREFIX_BYTES:
                return  # reported as truncated when it holds the draft; not this check's business
            (header_len,) = struct.unpack("<Q", prefix)
            actual += files[shard] - PREFIX_BYTES - header_len
        if not isinstance(declared, int) or declared != actual:
            self.problem("total-size-mismatch",
                         f"{INDEX_FILE} metadata.total_size is {declared!r} but the shards hold {actual:,} "
                         "bytes of tensor data", "warning", INDEX_FILE)

    # ------------------------------------------------------------------ completeness

    def _expected(self, family: ModelFamily, cfg: Config, standalone: bool) -> list[LayerTensor]:
        tensors = family.draft_tensors(cfg)
        if standalone:  # extracted drafts drop embed/head, as SGLang's export script does
            tensors = [t for t in tensors if t.name not in ("embed_tokens.weight", "shared_head.head.weight")]
        return tensors

    def _compare(self, report: InspectionReport, prefix: str, expected: list[LayerTensor],
                 found: dict[str, Any]) -> None:
        dtypes = {name: entry.dtype for name, entry in found.items()}
        per_module: dict[str, Precision] = {}
        for tensor in expected:
            if tensor.linear:
                precision = module_precision(tensor.module, dtypes)
                if precision is not None:
                    per_module[tensor.module] = precision
        layer_precision = overall_precision(per_module) if per_module else None
        report.draft_precision = layer_precision

        wanted: dict[str, TensorSpec] = {}
        optional: set[str] = set()
        fallback: Precision = layer_precision if layer_precision in ("nvfp4", "fp8") else "bf16"
        for tensor in expected:
            precision: Precision = per_module.get(tensor.module, "bf16") if tensor.linear else "bf16"
            if tensor.linear and tensor.module not in per_module and _quantized_group(tensor, per_module):
                precision = fallback  # missing expert of a quantized layer: expect its quantized form
            for spec in quantized_form(tensor, precision):
                wanted[spec.name] = spec
                if precision in OPTIONAL_SUFFIXES and spec.name.rsplit(".", 1)[-1] in OPTIONAL_SUFFIXES[precision]:
                    optional.add(spec.name)

        missing = sorted((n for n in wanted if n not in found and n not in optional), key=_natural)
        unexpected = sorted((n for n in found if n not in wanted), key=_natural)
        report.expected_tensors = len(wanted) - len(optional - found.keys())
        report.found_tensors = len(found)
        report.missing = [prefix + n for n in missing]
        report.unexpected = [prefix + n for n in unexpected]

        if not found:
            self.problem("draft-layer-missing",
                         f"config.json declares {report.config.get('num_nextn_predict_layers')} NextN layer(s) but "
                         f"the checkpoint holds no {prefix}* tensors that SGLang would load "
                         f"(0 of {report.expected_tensors}); SGLang 0.5.23 would serve drafts from "
                         "uninitialised memory without an error")
            return
        if missing:
            self.problem("draft-layer-incomplete",
                         f"{prefix}* has {len(found)} tensors; {len(missing)} of {report.expected_tensors} expected "
                         f"are missing: {_names(report.missing)}")
        if unexpected:
            self.problem("unexpected-tensor",
                         f"{len(unexpected)} {prefix}* tensor(s) that this architecture does not have: "
                         f"{_names(report.unexpected)}", "warning")

        bad_shapes, bad_dtypes = [], []
        for name, spec in wanted.items():
            entry = found.get(name)
            if entry is None:
                continue
            if tuple(entry.shape) != tuple(spec.shape):
                bad_shapes.append(f"{prefix}{name} {list(entry.shape)} (config says {list(spec.shape)})")
            if entry.dtype != spec.dtype and not (spec.dtype == "BF16" and entry.dtype in ("F16", "F32")
                                                   and not name.endswith("correction_bias")):
                bad_dtypes.append(f"{prefix}{name} {entry.dtype} (expected {spec.dtype})")
        if bad_shapes:
            self.problem("shape-mismatch", f"{len(bad_shapes)} tensor(s) disagree with config.json: "
                                           f"{_names(bad_shapes)}")
        if bad_dtypes:
            self.problem("dtype-mismatch", f"{len(bad_dtypes)} tensor(s) have an unexpected dtype: "
                                           f"{_names(bad_dtypes)}")

    # ------------------------------------------------------------------ quantization

    def _target_precision(self, decl: QuantDeclaration, weight_map: dict[str, str] | None) -> Precision:
        kinds: set[Precision] = set()
        if weight_map is not None:
            for name in weight_map:
                if name.endswith(".weight_scale_2"):
                    kinds.add("nvfp4")
                elif name.endswith(".weight_scale_inv"):
                    kinds.add("fp8")
        if not kinds and decl.quantizes:
            kinds.add(decl.precision)
        if len(kinds) > 1:
            return "mixed"
        return kinds.pop() if kinds else "bf16"

    def _check_quant(self, report: InspectionReport, decl: QuantDeclaration, prefix: str,
                     expected: list[LayerTensor], found: dict[str, Any]) -> None:
        precision = report.draft_precision
        if precision is None:
            return
        if precision in ("mixed", "unknown"):
            self.problem("draft-precision-unsupported",
                         f"the draft layer mixes storage formats ({precision}); neither SGLang 0.5.23 nor the "
                         "glm_mtp plugin can build one quant config for it. Graft a uniform layer with --force.")
        elif precision != "bf16" and decl.is_modelopt and decl.precision == "nvfp4":
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
        if not decl.quantizes:
            return
        modules = sorted({t.module for t in expected if t.linear and f"{t.module}.weight" in found})
        dtypes = {n: e.dtype for n, e in found.items()}
        wrong_bf16 = [m for m in modules if module_precision(m, dtypes) == "bf16"
                      and not decl.is_excluded(prefix + m)]
        wrong_quant = [m for m in modules if module_precision(m, dtypes) in ("nvfp4", "fp8")
                       and decl.is_excluded(prefix + m)]
        where = f"{decl.source} {decl.exclude_key or 'exclude list'}"
        severity = "warning" if decl.is_modelopt else "error"
        if wrong_bf16:
            self.problem("quant-config-mismatch",
                         f"{len(wrong_bf16)} draft module(s) are stored BF16 but {where} would quantize them "
                         f"({_names([prefix + m for m in wrong_bf16])}); add \"{prefix[:-1]}*\" to it",
                         severity, decl.source)
        if wrong_quant:
            self.problem("quant-config-mismatch",
                         f"{len(wrong_quant)} draft module(s) are stored quantized but {where} excludes them "
                         f"({_names([prefix + m for m in wrong_quant])})", severity, decl.source)


def _chosen_prefix(prefixes: tuple[str, ...], located: dict[str, TensorLocation]) -> str:
    """The accepted prefix most draft tensors use; the family's first when none is present."""
    counts = [sum(name.startswith(p) for name in located) for p in prefixes]
    return prefixes[counts.index(max(counts))] if any(counts) else prefixes[0]


def _quantized_group(tensor: LayerTensor, per_module: dict[str, Precision]) -> bool:
    """Is ``tensor`` an expert linear in a layer whose experts are stored quantized?"""
    return ".experts." in tensor.name and any(".experts." in m and p != "bf16" for m, p in per_module.items())


def _status(problems: list[Problem]) -> str:
    codes = {p.code for p in problems if p.severity == "error"}
    if codes & DAMAGE_CODES:
        return "invalid"  # the layer may well be there; the files around it are broken
    if "draft-layer-missing" in codes:
        return "missing"
    if "draft-layer-incomplete" in codes:
        return "incomplete"
    return "invalid" if codes else "ready"


def _remedy(report: InspectionReport, family: ModelFamily, source: CheckpointSource) -> str | None:
    if report.status in ("missing", "incomplete"):
        into = source.display
        graft = f"sglang-glm-mtp graft --from {family.source_hint} --into {into}"
        if report.status == "incomplete":
            graft += " --force"
        if source.is_remote:
            return (f"hf download {source.display} --local-dir ./{source.display.split('/')[-1]} && "
                    + graft.replace(f"--into {into}", f"--into ./{source.display.split('/')[-1]}"))
        return graft
    if report.status == "invalid":
        codes = {p.code for p in report.errors()}
        if codes & {"corrupt-header", "truncated-shard", "index-missing-shard"}:
            return "re-download the damaged or missing shard(s) named above, then run sglang-glm-mtp check again"
        if "unindexed-shard" in codes:
            return (f"add the shard to {INDEX_FILE}, or re-graft the layer: "
                    f"sglang-glm-mtp graft --from {family.source_hint} --into {source.display} --force")
        return f"re-graft the draft layer: sglang-glm-mtp graft --from {family.source_hint} --into {source.display} --force"
    return None


def _names(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(names[:NAMES_IN_MESSAGE])
    return shown + (f", … (+{len(names) - NAMES_IN_MESSAGE} more)" if len(names) > NAMES_IN_MESSAGE else "")


def _natural(name: str) -> tuple[Any, ...]:
    """Sort expert 2 before expert 10."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in name.split("."))
