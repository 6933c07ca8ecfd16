"""JSON decoding for checkpoint files: the fastest decoder installed, always the stdlib's result.

Two paths, both optional (the ``fast`` extra) with the stdlib as the fallback:

* ``loads``: orjson when installed (about twice as fast as ``json``). The stdlib is retried
  on an orjson failure, so the few inputs only the stdlib accepts (``NaN``, integers
  beyond 64 bits) are judged exactly as before.
* ``loads_index`` (and ``index_parts``, for a caller that needs only part of it):
  ``model.safetensors.index.json`` is the one big file (22 MB and 232k
  entries for GLM-5.2), and most of decoding it is allocating 232k value strings that all
  name one of a few dozen shards. msgspec decodes it against a schema whose weight_map
  values are a ``Literal`` of the shard files on disk, so each value is one shared string
  (msgspec ships no generic way to intern values; this is the supported one). The typed
  decode accepts only what the generic decode returns unchanged (a valid, UTF-8 object
  whose ``weight_map`` maps names to files that exist); anything else (a file not on disk,
  a non-string value, a BOM, ``NaN``) fails it and falls back to ``loads``, so every
  verdict, error message included, is the one the plain decode gives.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Iterable, Literal

try:
    import orjson as _orjson
except ImportError:  # optional: pip install '.[fast]' in a checkout
    _orjson = None

try:
    import msgspec as _msgspec
except ImportError:  # optional as well (SGLang itself depends on it)
    _msgspec = None


def loads(data: bytes | str) -> Any:
    """Decode one JSON document; raises ``ValueError`` (incl. ``UnicodeDecodeError``) when malformed."""
    if _orjson is not None:
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError:
            pass  # judged by the stdlib below, which names the position
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def loads_index(data: bytes, shard_files: Iterable[str]) -> Any:
    """Decode a safetensors index whose shards are ``shard_files``; the same value ``loads`` returns.

    The result keeps only the keys inspection and graft read (``weight_map``, and ``metadata``
    when it is not null) when the fast path is taken; everything else comes from ``loads``.
    """
    names = tuple(sorted(set(shard_files)))
    if _msgspec is not None and names:
        try:
            doc = _index_decoder(names).decode(data)
        except (_msgspec.DecodeError, _msgspec.ValidationError, RecursionError):
            pass  # not the plain shape, or malformed (or nested too deeply): the generic decoder returns or names it
        else:
            out: dict[str, Any] = {"weight_map": doc.weight_map}
            if doc.metadata is not None:
                out["metadata"] = doc.metadata
            return out
    return loads(data)


def index_parts(data: bytes) -> tuple[bytes, Any] | None:
    """(``weight_map``'s JSON text, the decoded ``metadata``) of an index, without building its map.

    msgspec parses the whole document (a malformed one is rejected) but skips the weight
    map. None without msgspec, or when the document is malformed or no object with a
    ``weight_map``: the generic decoder then says why.
    """
    if _msgspec is None:
        return None
    try:
        doc = _raw_index_decoder().decode(data)
    except (_msgspec.DecodeError, _msgspec.ValidationError, RecursionError):
        return None
    return bytes(doc.weight_map), doc.metadata


@lru_cache(maxsize=1)
def _raw_index_decoder() -> Any:
    assert _msgspec is not None
    index = _msgspec.defstruct("RawIndex", [("weight_map", _msgspec.Raw), ("metadata", Any, None)])
    return _msgspec.json.Decoder(index)


@lru_cache(maxsize=8)
def _index_decoder(shard_files: tuple[str, ...]) -> Any:
    assert _msgspec is not None
    shard = Literal[shard_files]  # type: ignore[valid-type]
    index = _msgspec.defstruct("Index", [("weight_map", dict[str, shard]), ("metadata", Any, None)])
    return _msgspec.json.Decoder(index)


def backend() -> str:
    """The decoders in use, e.g. "msgspec (index) + orjson" (benchmarks record it)."""
    index = "msgspec (index) + " if _msgspec is not None else ""
    return index + ("orjson" if _orjson is not None else "json")
