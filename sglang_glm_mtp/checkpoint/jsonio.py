"""JSON decoding for checkpoint files: orjson when installed (the ``fast`` extra), else the stdlib.

A GLM-5.2 index is ~22 MB; orjson decodes it about twice as fast as ``json``. Both
raise ``ValueError`` subclasses on malformed input; the stdlib is retried on an orjson
failure so that the few inputs only the stdlib accepts (``NaN``, integers beyond 64
bits) are judged exactly as before.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson as _orjson
except ImportError:  # optional: pip install '.[fast]' in a checkout
    _orjson = None


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


def backend() -> str:
    return "orjson" if _orjson is not None else "json"
