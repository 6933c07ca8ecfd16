"""Graft an MTP/NextN draft layer from one checkpoint (local or Hub) into another, safely.

``plan_graft`` reads only config files, the index and safetensors headers, checks that
SOURCE and TARGET are the same model, and returns a ``GraftPlan``: which byte ranges to
read, which files to write, which config keys to edit. ``execute`` carries it out:

1. every new shard is written under a hidden temporary name (``.<final>.partial``) in
   the destination folder, with a small journal (``.<final>.journal``) of the tensors
   already copied and verified (checksum of the source bytes, taken while copying and
   compared with the written file);
2. the result is checked (``inspect_checkpoint``) through a staged view *before* anything visible
   changes; it must say ready;
3. commit: shards renamed to their final names, then the quant config(s), then
   config.json, then the index, each by one atomic rename. The index is the commit
   point: until it is replaced, TARGET loads exactly as before (new shards are not in the
   index, so no loader reads them); after it, the new layer is live;
4. clean-up: displaced files moved aside, journals removed.

A run killed at any moment leaves TARGET loadable as before; re-running the same command
reuses every verified tensor and finishes the job. ``extract`` (``plan_extract``) reuses
the same pieces for standalone draft checkpoints.

One module per stage:

* ``checks``: refusals (source can supply the layer, target may be touched, same model);
* ``plan``: ``plan_graft``; ``shards``, ``configs``, ``space``: its parts;
* ``readers``: local files and Hub Range reads; ``copying``: verified byte-range copies;
* ``write``: one new shard with its journal; ``verify``: staged and final checks;
* ``commit``: the atomic commit and clean-up; ``run``: ``execute``;
* ``extract``: ``plan_extract``, a standalone draft checkpoint from the same pieces;
* ``records``: the plan/report dataclasses and shared names; ``sizes``: size parsing/printing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .extract import plan_extract
    from .plan import plan_graft
    from .records import DEFAULT_MAX_SHARD_SIZE, GraftPlan, GraftReport
    from .run import execute
    from .sizes import human_bytes, parse_size

#: public name -> module that defines it; loaded on first use, so that importing the CLI
#: (or ``graft.sizes`` alone) does not import the whole package.
_EXPORTS = {"DEFAULT_MAX_SHARD_SIZE": "records", "GraftPlan": "records", "GraftReport": "records",
            "plan_graft": "plan", "plan_extract": "extract", "execute": "run", "human_bytes": "sizes",
            "parse_size": "sizes"}

__all__ = ["DEFAULT_MAX_SHARD_SIZE", "GraftPlan", "GraftReport", "execute", "human_bytes", "parse_size", "plan_extract",
           "plan_graft"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
