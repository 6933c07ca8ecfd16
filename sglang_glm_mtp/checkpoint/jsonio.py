"""JSON decoding for checkpoint files: the fastest decoder installed, always the stdlib's result.

Two paths, both optional (the ``fast`` extra) with the stdlib as the fallback:

* ``loads``: orjson when installed (about twice as fast as ``json``). The stdlib is retried
  on an orjson failure, so the few inputs only the stdlib accepts (``NaN``, ``1e400``)
  are judged exactly as before; integers beyond 64 bits: see below.
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

Integers: orjson and msgspec both decode one beyond 64 bits as a float where the stdlib
keeps the int (``-9223372036854775809`` -> ``-9.223372036854776e+18``). ``loads`` leaves a
document with a run of 19 or more digits (int64's width; found by one ``translate`` and
one substring search, ~15% of an orjson decode) to the stdlib. The only place an integer
can survive the typed index decode is ``metadata`` (``weight_map`` values must be shard
names), so msgspec keeps it as raw JSON text that ``loads`` decodes: every integer, of any
size, is the stdlib's.
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


#: Maps every digit to "1" and every other byte to "0": a long run of "1" is a long run of digits.
_DIGITS = bytes(0x31 if 0x30 <= b <= 0x39 else 0x30 for b in range(256))
#: As many digits as int64's largest value has: a shorter integer fits 64 bits, a longer one may not.
_LONG_DIGIT_RUN = b"1" * 19


def _may_hold_big_int(data: bytes | str) -> bool:
    """Could ``data`` hold an integer beyond 64 bits (which the fast decoders turn into a float)? Conservative:
    any run of 19 digits (in a string or a float too) says yes, and the stdlib then decodes it exactly."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    return _LONG_DIGIT_RUN in raw.translate(_DIGITS)


def loads(data: bytes | str) -> Any:
    """Decode one JSON document; raises ``ValueError`` (incl. ``UnicodeDecodeError``) when malformed."""
    if _orjson is not None and not _may_hold_big_int(data):
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
            metadata = _metadata(doc.metadata)
            if metadata is not None:
                out["metadata"] = metadata
            return out
    return loads(data)


def _metadata(raw: Any) -> Any:
    """``metadata`` decoded by ``loads`` from msgspec's raw text (None when absent): integers as the stdlib gives
    them. Raises ``ValueError`` as ``loads`` does (msgspec has already checked the syntax)."""
    return None if raw is None else loads(bytes(raw))


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
        metadata = _metadata(doc.metadata)
    except (_msgspec.DecodeError, _msgspec.ValidationError, RecursionError, ValueError):
        return None
    return bytes(doc.weight_map), metadata


@lru_cache(maxsize=1)
def _raw_index_decoder() -> Any:
    assert _msgspec is not None
    index = _msgspec.defstruct("RawIndex", [("weight_map", _msgspec.Raw), ("metadata", _msgspec.Raw, None)])
    return _msgspec.json.Decoder(index)


@lru_cache(maxsize=8)
def _index_decoder(shard_files: tuple[str, ...]) -> Any:
    assert _msgspec is not None
    shard = Literal[shard_files]  # type: ignore[valid-type]
    index = _msgspec.defstruct("Index", [("weight_map", dict[str, shard]), ("metadata", _msgspec.Raw, None)])
    return _msgspec.json.Decoder(index)


def backend() -> str:
    """The decoders in use, e.g. "msgspec (index) + orjson" (benchmarks record it)."""
    index = "msgspec (index) + " if _msgspec is not None else ""
    return index + ("orjson" if _orjson is not None else "json")
