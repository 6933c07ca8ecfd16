"""Inspect a checkpoint: its MTP/NextN draft layer (present, complete, in which precision) and its shards.

Reads config.json, the quant config, the index and safetensors headers; never tensor
data, never writes. ``inspect_checkpoint`` is the entry point; how much it reads is its
``Scope``. The work is in three modules, one job each: ``reading`` (index, headers, where
the draft tensors are), ``judging`` (the problems and the status they give) and ``remedy``
(what to do about them).
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from enum import Enum
from typing import Iterator

from ..errors import CheckpointUnreadable
from ..text import listed, short
from . import judging, remedy
from .families import Config, ConfigError, ModelFamily, family_for, supported_architectures
from .files import CONFIG_FILE, INDEX_FILE, QUANT_FILE
from .quant_config import QuantConfigError, read_quant_declaration
from .reading import Reader, chosen_prefix, unreadable
from .report import InspectionReport
from .source import CheckpointSource, open_checkpoint

__all__ = ["Scope", "inspect_checkpoint"]

#: Files any SGLang load format reads weights from; a checkpoint with none of them holds no weights at all.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


class Scope(Enum):
    """How much of the checkpoint an inspection reads.

    * ``CHECK`` (``sglang-glm-mtp check``): the draft layer's shards parsed entry by entry, every
      other local shard given the cheap integrity test (framing, data end against the file size;
      a full parse when that is not conclusive), the whole index;
    * ``PREFLIGHT`` (the plugin, latency-bound): the draft layer alone: only its shards' headers and,
      of a local index, only its entries (``IndexScan.draft_only``). A layer that is not ready is
      judged again on the whole index, so the verdict is ``check``'s;
    * ``INTEGRITY`` (``check --all-headers``): every shard's header parsed entry by entry, about
      the cost of opening every shard with safetensors.
    """

    CHECK = "check"
    PREFLIGHT = "preflight"
    INTEGRITY = "integrity"

    @property
    def tests_every_shard(self) -> bool:
        """Every local shard's header is read, not only the draft layer's."""
        return self is not Scope.PREFLIGHT

    @property
    def parses_every_header(self) -> bool:
        return self is Scope.INTEGRITY

    @property
    def peeks_early(self) -> bool:
        """Every shard's integrity peek starts with the inspection, overlapping the config and index reads."""
        return self is Scope.CHECK

    @property
    def draft_entries_alone(self) -> bool:
        """Of the index, the draft layer's entries are read alone (when the index allows it)."""
        return self is Scope.PREFLIGHT


def inspect_checkpoint(spec: str | CheckpointSource, scope: Scope = Scope.CHECK, *,
                       endpoint: str | None = None) -> InspectionReport:
    """Inspect a local dir, a Hub id, or an already opened source, reading as much as ``scope`` says.

    Raises only ``CheckpointUnreadable`` (one actionable line); every defect of the
    checkpoint itself is a problem in the report.
    """
    source = open_checkpoint(spec, endpoint=endpoint) if isinstance(spec, str) else spec
    with _cyclic_gc_paused():
        inspection = _Inspection(source, scope)
        report = inspection.run()
        if inspection.partial_index and not report.ok:
            report = _Inspection(source, scope, whole_index=True).run()  # judged on every entry
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


class _Inspection:
    """One pass over one checkpoint: read (``reading``), judge (``judging``), advise (``remedy``)."""

    def __init__(self, source: CheckpointSource, scope: Scope = Scope.CHECK, *, whole_index: bool = False) -> None:
        self.source = source
        self.scope = scope
        self.reader = Reader(source, scope, whole_index=whole_index)
        self.problems = judging.Problems()

    @property
    def partial_index(self) -> bool:
        """The index was read for the draft layer's entries alone (``IndexScan.draft_only``)."""
        return self.reader.partial_index

    def run(self) -> InspectionReport:
        files = self.source.list_files()
        with self.reader.reading(files):
            return self._judge(files)

    def _judge(self, files: dict[str, int]) -> InspectionReport:
        cfg = self._config()
        try:
            family = family_for(cfg.architecture)
            if family is None:
                raise CheckpointUnreadable(
                    f"{self.source.display}: architecture {cfg.architecture} is not supported "
                    f"(supported: {', '.join(supported_architectures())})")
            return self._run(files, cfg, family)
        except ConfigError as exc:
            raise self._malformed(exc, "restore config.json from the original release") from None
        except QuantConfigError as exc:
            raise self._malformed(exc, "fix the entry or restore the file from the release") from None

    def _config(self) -> Config:
        raw_config = self.source.read_json(CONFIG_FILE)
        if raw_config is None:
            raise CheckpointUnreadable(f"{self.source.display} has no config.json; is this a model checkpoint?")
        if not isinstance(raw_config, dict):
            raise unreadable(self.source, CONFIG_FILE, f"is a JSON {type(raw_config).__name__}, not an object",
                             "restore it from the original release")
        archs = raw_config.get("architectures")
        if not (isinstance(archs, list) and archs and all(isinstance(a, str) for a in archs)):
            raise unreadable(self.source, CONFIG_FILE, f"'architectures' must be a list of class names such as "
                                                       f"[\"GlmMoeDsaForCausalLM\"], got {short(archs)}",
                             "restore config.json from the original release")
        try:
            return Config(raw_config)
        except ConfigError as exc:
            raise self._malformed(exc, "restore config.json from the original release") from None

    def _malformed(self, exc: ConfigError | QuantConfigError, todo: str) -> CheckpointUnreadable:
        """The error names the file the fault is in (``exc.file``), then the fault."""
        file = exc.file or CONFIG_FILE
        return unreadable(self.source, file, str(exc).removeprefix(f"{file} "), todo)

    def _run(self, files: dict[str, int], cfg: Config, family: ModelFamily) -> InspectionReport:
        report = InspectionReport(checkpoint=self.source.display, status="ready", architecture=cfg.architecture,
                                  family=family.name, draft_layer=None, config=cfg.raw)
        hf_quant = self.source.read_json(QUANT_FILE) if QUANT_FILE in files else None
        decl = read_quant_declaration(cfg.raw, hf_quant)
        layer = family.draft_layer(cfg) if family.nextn_layers(cfg) >= 1 else None
        prefixes = family.draft_prefixes_for(cfg) if layer is not None else ()
        index, scan = self.reader.scan_index(files, prefixes)
        report.target_precision = judging.target_precision(decl, scan)
        report.quant_config = {"source": decl.source, "quant_algo": decl.quant_algo,
                               "exclude_key": decl.exclude_key, "dialect": decl.dialect,
                               "stock_sglang_builds_as_stored": None, "entries_to_add": []}
        if layer is None:
            report.status = "not-applicable"
            return report
        if not any(name.endswith(WEIGHT_SUFFIXES) or name.endswith(".index.json") for name in files):
            return _no_weights(report, family, cfg, prefixes)
        self._refuse_other_formats(files)

        report.draft_layer = layer
        report.nextn_layers = family.nextn_layers(cfg)
        report.standalone_draft = family.is_standalone_draft(cfg)
        draft = self.reader.locate_draft(files, scan, prefixes, family)
        judging.judge_files(self.problems, draft, scan, index, prefixes, local=not self.source.is_remote)
        prefix = chosen_prefix(prefixes, draft.located)  # the family's spelling this checkpoint uses
        located = {name: loc for name, loc in draft.located.items() if name.startswith(prefix)}
        report.draft_prefix = prefix[:-1]
        report.quant_config["draft_excluded"] = decl.is_excluded(prefix[:-1]) if decl.quantizes else None
        report.locations = located
        report.draft_shards = sorted({loc.shard for loc in located.values()})
        report.draft_bytes = sum(loc.entry.nbytes for loc in located.values())

        found = {name[len(prefix):]: loc.entry for name, loc in located.items()}
        damaged = {name[len(prefix):] for name in draft.in_damaged_shards(scan) if name.startswith(prefix)}
        expected = list(judging.expected_tensors(family, cfg, report.standalone_draft))  # built once, only now
        judging.judge_layer(self.problems, report, prefix, expected, found, damaged)
        judging.judge_quant(self.problems, report, decl, prefix, expected, found, family)

        report.problems = list(self.problems)
        report.status = judging.status(self.problems)
        remedy.apply(report, remedy.remedy_for(report, family, self.source, cfg.raw, hf_quant))
        return report

    def _refuse_other_formats(self, files: dict[str, int]) -> None:
        """Weights in .bin/.pt/.gguf only: check reads safetensors headers, so it cannot judge the layer."""
        if any(name.endswith(".safetensors") or name == INDEX_FILE for name in files):
            return
        others = sorted(name for name in files if name.endswith(WEIGHT_SUFFIXES))
        raise CheckpointUnreadable(
            f"{self.source.display} holds its weights in {listed(others)}, not safetensors; check reads safetensors headers only, so it "
            "cannot judge the draft layer (SGLang's post-load check of the glm_mtp plugin still does)")


def _no_weights(report: InspectionReport, family: ModelFamily, cfg: Config,
                prefixes: tuple[str, ...]) -> InspectionReport:
    """config.json (and maybe tokenizer files) but no weight file and no index: nothing to judge, and no
    missing draft layer either. SGLang's loader refuses the folder itself ("Cannot find any model weights")."""
    report.status = "no-weights"
    report.draft_layer = family.draft_layer(cfg)
    report.nextn_layers = family.nextn_layers(cfg)
    report.draft_prefix = prefixes[0][:-1] if prefixes else None
    remedy.apply(report, remedy.Remedy.sentence(remedy.NO_WEIGHTS))
    return report
