"""The readers of one graft run: one Range reader per file its plan reads (``checkpoint.range_reads``)."""

from __future__ import annotations

from ..checkpoint.range_reads import HubGate, HubReader, LocalReader, RangeReader
from ..checkpoint.source import HubCheckpoint
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
            local = source.local_path(t.shard)
            if local is not None:
                readers[key] = LocalReader(local)
            elif isinstance(source, HubCheckpoint):
                readers[key] = HubReader(source.fs, source._path(t.shard), f"{source.display}/{t.shard}", gate=gate)
            else:
                raise GraftError(f"cannot read {t.shard} from {source.display}")
    return readers
