"""The readers of one graft run: one Range reader per file its plan reads (``checkpoint.range_reads``)."""

from __future__ import annotations

from ..checkpoint.range_reads import HubGate, LocalReader, RangeReader, reader_for
from ..errors import GraftError
from .records import GraftPlan


def open_readers(plan: GraftPlan) -> dict[str, RangeReader]:
    """One reader per file the plan reads, keyed ``origin:shard`` as in ``Piece.reader``."""
    readers: dict[str, RangeReader] = {}
    source = plan.source_obj
    gate = HubGate()  # one per run: a 429 on one file slows the reads of every file
    for shard in plan.shards:
        for t in shard.tensors:
            key = f"{t.origin}:{t.shard}"
            if key in readers:
                continue
            if t.origin == "target":
                assert plan.target_dir is not None
                readers[key] = LocalReader(plan.target_dir / t.shard)
                continue
            assert source is not None
            reader = reader_for(source, t.shard, gate=gate)
            if reader is None:
                raise GraftError(f"cannot read {t.shard} from {source.display}")
            readers[key] = reader
    return readers
