"""Which copy of the draft checkpoint the plugin may judge, for a local path or a Hub id.

The contract (never a false refusal):

* a local directory is what SGLang loads: judge it;
* a Hub id is judged from a Hugging Face cache snapshot only when that snapshot provably
  holds the checkpoint: ``config.json``, the index, and every shard the index names (or
  a single ``model.safetensors``). On a first launch SGLang has fetched ``config.json``
  (and maybe the index) but no shards yet, and huggingface_hub returns such a partial
  snapshot without complaint: judging it would refuse a checkpoint that is complete on
  the Hub;
* otherwise, online, the Hub itself is read (headers by HTTP Range, never a whole shard);
  offline, nothing is judged: one warning, and the post-load coverage check decides;
* a refusal found in a complete cache is confirmed on the Hub when online, because the
  cached snapshot may be an older revision than the one SGLang is about to download
  (e.g. a checkpoint repaired and pushed since).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint.source import (HF_OFFLINE_ENV, CheckpointSource, HubCheckpoint, LocalCheckpoint,
                                 cache_holds_checkpoint, is_hub_repo_id, resolve_cached_hub_snapshot)
from ..text import truthy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DraftSource:
    """A readable copy of the draft checkpoint, or the reason there is none."""

    source: CheckpointSource | None
    #: where the source came from: "local", "cache", "hub"; or "none"
    kind: str
    #: for logs and warnings: why this copy, or why none
    why: str
    #: for a cached snapshot read while online: the Hub copy that confirms a refusal
    hub: HubCheckpoint | None = None


def hub_offline() -> bool:
    """SGLang and huggingface_hub both honour HF_HUB_OFFLINE; read it live (tests and launchers set it late)."""
    return truthy(os.environ.get(HF_OFFLINE_ENV))



def open_draft_source(path: str, revision: str | None) -> DraftSource:
    """The copy of ``path`` (a local dir or a Hub id) whose verdict is what SGLang will load."""
    if os.path.isdir(path):
        return DraftSource(LocalCheckpoint(Path(path).resolve()), "local", "local directory")
    if not is_hub_repo_id(path):
        return DraftSource(None, "none", "not a local directory and not a Hub id")
    offline = hub_offline()
    snapshot = resolve_cached_hub_snapshot(path, revision)
    if snapshot is not None:
        cache = LocalCheckpoint(snapshot, index_memo={})  # the index is decoded once, for both questions
        complete, why = cache_holds_checkpoint(cache)
        if complete:
            hub = None if offline else HubCheckpoint(path, revision)
            return DraftSource(cache, "cache", f"Hub cache {snapshot} ({why})", hub)
        cache_note = f"the Hub cache holds part of it ({why})"
    else:
        cache_note = "it is not in the Hub cache"
    if offline:
        return DraftSource(None, "none", f"{cache_note} and HF_HUB_OFFLINE is set")
    return DraftSource(HubCheckpoint(path, revision), "hub", f"the Hub (headers only; {cache_note})")
