"""Is SOURCE the release TARGET was quantized from? Compare what both store unquantized.

A ModelOpt NVFP4 (or FP8) export keeps embeddings, lm_head, the norms, the router gates
and their ``e_score_correction_bias`` in their original dtype, byte-identical to the
release it was made from. Shapes match across GLM-5, 5.1 and 5.2, so only these bytes
tell a GLM-5.1 NVFP4 checkpoint from a GLM-5.2 one: a draft layer grafted from the
wrong release drafts tokens of another model and the accept length collapses.

Cost is bounded and independent of checkpoint size: a fixed list of tensors (the three
globals, and four per layer for ``LAYERS_SAMPLED`` layers spread over the depth), each
compared over at most ``WINDOW_BYTES`` taken from its middle, read by offset (HTTP Range
requests on the Hub), plus the headers of the shards that hold them. A tensor counts
only when both sides store it with the same unquantized dtype and shape; when none
does, the verdict is ``not-comparable`` (a warning, never a refusal).
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..errors import CheckpointUnreadable, GraftError
from ..text import listed
from .families import Config, family_for, written_prefix
from .files import CONFIG_FILE, INDEX_FILE
from .range_reads import RangeReader, reader_for
from .safetensors_format import PREFIX_BYTES, HeaderError, ShardHeader, parse_length_prefix, read_header
from .source import CheckpointSource

logger = logging.getLogger(__name__)

#: Tensors outside the layers that quantized exports keep unquantized.
GLOBAL_TENSORS = ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight")
#: Per sampled layer (relative to the layer prefix).
LAYER_TENSORS = ("input_layernorm.weight", "post_attention_layernorm.weight", "mlp.gate.weight",
                 "mlp.gate.e_score_correction_bias")
#: Layers sampled: first, middle and last MoE layer (or any layers, for dense models).
LAYERS_SAMPLED = 3
#: At most this many bytes of each tensor, from its middle.
WINDOW_BYTES = 256 << 10
#: Dtypes a quantizer leaves as they are; anything else (U8, F8) is a quantized form.
UNQUANTIZED_DTYPES = ("BF16", "F16", "F32")
#: The opt-out for a deliberate cross-release graft.
OPT_OUT_FLAG = "--allow-other-release"

Verdict = Literal["same-release", "other-release", "not-comparable"]


@dataclass(frozen=True)
class ComparedTensor:
    """One tensor compared: the byte window [start, end) of its data and both digests."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    window: tuple[int, int]
    target_sha256: str
    source_sha256: str

    @property
    def same(self) -> bool:
        return self.target_sha256 == self.source_sha256


@dataclass
class LineageReport:
    target: str
    source: str
    verdict: Verdict
    compared: list[ComparedTensor] = field(default_factory=list)
    #: tensor -> why it was not compared (absent on one side, quantized, shape differs, unreadable)
    skipped: dict[str, str] = field(default_factory=dict)
    #: bytes read per side: index, shard headers and data windows
    bytes_read: dict[str, int] = field(default_factory=lambda: {"target": 0, "source": 0})
    #: the same, split by what was read: {"target": {"index": n, "headers": n, "data": n}, "source": ...}
    bytes_detail: dict[str, dict[str, int]] = field(default_factory=lambda: {
        side: {"index": 0, "headers": 0, "data": 0} for side in ("target", "source")})

    @property
    def differing(self) -> list[str]:
        return [c.name for c in self.compared if not c.same]

    @property
    def compared_bytes(self) -> int:
        return sum(c.window[1] - c.window[0] for c in self.compared)

    def summary(self) -> str:
        """One line: the verdict and what it rests on."""
        what = (f"tensors both store unquantized, compared byte for byte ({self.compared_bytes:,} bytes each side; "
                f"{sum(self.bytes_read.values()):,} bytes read in all)")
        if self.verdict == "same-release":
            return f"same release: {len(self.compared)} of {len(self.compared)} {what} are identical"
        if self.verdict == "other-release":
            return f"other release: {len(self.differing)} of {len(self.compared)} {what} differ"
        return (f"not comparable: no tensor is stored unquantized with the same dtype and shape on both sides "
                f"({len(self.skipped)} looked at); the release cannot be confirmed")

    def refusal(self) -> str:
        """The error graft stops with: which tensors differ, what was compared, the opt-out."""
        shown = listed(self.differing)
        return (f"SOURCE {self.source} is not the release TARGET {self.target} was quantized from: "
                f"{len(self.differing)} of {len(self.compared)} tensors that both store unquantized (embeddings, "
                f"lm_head, norms, router gates; up to {WINDOW_BYTES >> 10} KiB each) differ: {shown}. A draft layer "
                "from another release drafts another model's tokens. Graft from the BF16 release TARGET was made "
                f"from, or pass {OPT_OUT_FLAG} to graft across releases deliberately")

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["compared"] = [{**asdict(c), "shape": list(c.shape), "window": list(c.window), "same": c.same}
                           for c in self.compared]
        doc["differing"] = self.differing
        doc["compared_bytes_each_side"] = self.compared_bytes
        return doc


class _Side:
    """One checkpoint's weight map and the headers read so far, counting bytes."""

    def __init__(self, source: CheckpointSource, role: str, report: LineageReport) -> None:
        self.source = source
        self.role = role
        self.report = report
        self.files = source.list_files()
        self.headers: dict[str, ShardHeader | str] = {}
        self.readers: dict[str, RangeReader] = {}
        index = self._read_index()
        self.weight_map: dict[str, str] = index if index is not None else self._map_from_headers()

    def _count(self, nbytes: int, kind: str) -> None:
        self.report.bytes_read[self.role] += nbytes
        self.report.bytes_detail[self.role][kind] += nbytes

    def _read_index(self) -> dict[str, str] | None:
        if INDEX_FILE not in self.files:
            return None
        doc = self.source.read_json(INDEX_FILE)
        self._count(self.files[INDEX_FILE], "index")
        weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
        return weight_map if isinstance(weight_map, dict) else None

    def _map_from_headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in sorted(n for n in self.files if n.endswith(".safetensors")):
            header = self.header(name)
            if isinstance(header, ShardHeader):
                out.update({tensor: name for tensor in header.tensors})
        return out

    def _read(self, shard: str, offset: int, nbytes: int, kind: str) -> bytes:
        """Exactly ``nbytes`` at ``offset``: one exact HTTP Range request on the Hub, a pread locally."""
        reader = self.readers.get(shard)
        if reader is None:
            reader = reader_for(self.source, shard)
            if reader is None:
                raise CheckpointUnreadable(f"cannot read {shard} from {self.source.display}")
            self.readers[shard] = reader
        buf = bytearray(nbytes)
        reader.read_into(offset, memoryview(buf))
        self._count(nbytes, kind)
        return bytes(buf)

    def header(self, shard: str) -> ShardHeader | str:
        """The parsed header, or why it cannot be read (a damaged shard is check's business, not ours)."""
        if shard not in self.headers:
            size = self.files.get(shard)
            if size is None:
                self.headers[shard] = f"{shard} is named by the index but missing"
                return self.headers[shard]
            try:
                prefix = self._read(shard, 0, min(PREFIX_BYTES, size), "headers")
                length = parse_length_prefix(prefix, size)
                body = self._read(shard, PREFIX_BYTES, min(length, size - PREFIX_BYTES), "headers")
                self.headers[shard] = read_header(io.BytesIO(prefix + body), size)
            except (HeaderError, GraftError) as exc:
                self.headers[shard] = f"{shard} has an unreadable header ({exc})"
        return self.headers[shard]

    def window(self, shard: str, offset: int, nbytes: int) -> str:
        """sha256 of ``nbytes`` at absolute file ``offset``."""
        try:
            return hashlib.sha256(self._read(shard, offset, nbytes, "data")).hexdigest()
        except GraftError as exc:  # a truncated shard: nothing to compare, and no match
            return f"unreadable ({exc})"

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()


def sample_names(config: dict[str, Any], names: set[str]) -> list[str]:
    """The deterministic, bounded list of tensors to compare, among ``names`` (present on both sides)."""
    cfg = Config(config)
    family = family_for(cfg.architecture)
    layers = cfg.int("num_hidden_layers", 0)
    moe = [i for i in range(layers) if written_prefix(family, i) + "mlp.gate.weight" in names]
    pool = moe or list(range(layers))
    picked = sorted({pool[0], pool[len(pool) // 2], pool[-1]}) if pool else []
    picked = picked[:LAYERS_SAMPLED]
    wanted = list(GLOBAL_TENSORS) + [written_prefix(family, i) + t for i in picked for t in LAYER_TENSORS]
    return [n for n in wanted if n in names]


def _window(nbytes: int, item: int) -> tuple[int, int]:
    """At most WINDOW_BYTES from the middle of the data, on element boundaries."""
    if nbytes <= WINDOW_BYTES:
        return 0, nbytes
    start = (nbytes - WINDOW_BYTES) // 2
    start -= start % item
    return start, start + WINDOW_BYTES


def compare_lineage(target: CheckpointSource, source: CheckpointSource) -> LineageReport:
    """Compare the tensors TARGET and SOURCE both store unquantized; bounded bytes, read by offset."""
    report = LineageReport(target=target.display, source=source.display, verdict="not-comparable")
    config = target.read_json(CONFIG_FILE)
    if not isinstance(config, dict):
        report.skipped[CONFIG_FILE] = "TARGET has no readable config.json"
        return report
    tside, sside = _Side(target, "target", report), _Side(source, "source", report)
    try:
        _compare(config, tside, sside, report)
    finally:
        tside.close()
        sside.close()
    if report.compared:
        report.verdict = "other-release" if report.differing else "same-release"
    logger.info("lineage %s <- %s: %s", report.target, report.source, report.summary())
    return report


def _compare(config: dict[str, Any], tside: _Side, sside: _Side, report: LineageReport) -> None:
    for name in GLOBAL_TENSORS:
        if name not in tside.weight_map or name not in sside.weight_map:
            report.skipped[name] = f"not in {'TARGET' if name not in tside.weight_map else 'SOURCE'}"
    for name in sample_names(config, set(tside.weight_map) & set(sside.weight_map)):
        outcome = _compare_one(name, tside, sside)
        if isinstance(outcome, str):
            report.skipped[name] = outcome
        else:
            report.compared.append(outcome)


def _compare_one(name: str, tside: _Side, sside: _Side) -> ComparedTensor | str:
    """Both sides' digests of one tensor's window, or why it cannot be compared."""
    t_header, s_header = tside.header(tside.weight_map[name]), sside.header(sside.weight_map[name])
    if isinstance(t_header, str):
        return t_header
    if isinstance(s_header, str):
        return s_header
    te, se = t_header.tensors.get(name), s_header.tensors.get(name)
    if te is None or se is None:
        return f"the index names it but the {'TARGET' if te is None else 'SOURCE'} shard lacks it"
    if te.dtype not in UNQUANTIZED_DTYPES:
        return f"TARGET stores it quantized ({te.dtype})"
    if (te.dtype, tuple(te.shape)) != (se.dtype, tuple(se.shape)):
        return f"stored differently: TARGET {te.dtype} {list(te.shape)}, SOURCE {se.dtype} {list(se.shape)}"
    start, end = _window(te.nbytes, max(1, te.nbytes // max(1, _elements(te.shape))))
    t_digest = tside.window(tside.weight_map[name], t_header.data_start + te.begin + start, end - start)
    s_digest = sside.window(sside.weight_map[name], s_header.data_start + se.begin + start, end - start)
    return ComparedTensor(name, te.dtype, tuple(te.shape), (start, end), t_digest, s_digest)


def _elements(shape: Any) -> int:
    count = 1
    for dim in shape:
        count *= int(dim)
    return count
