"""The per-tensor checksum of graft's copy verification: xxh3-64 when ``xxhash`` is installed, else CRC32.

It guards against I/O faults (short or misplaced writes, a connection that hands back
wrong bytes, a file changed underneath us), not against an adversary: the source itself
is trusted. xxh3 hashes about 8 GB/s on one core here, zlib's CRC32 about 2 GB/s; both
are run twice per byte (source and written bytes), so the faster one keeps verification
well below the cost of the copy. ``xxhash`` is optional (``pip install xxhash``; SGLang
already depends on it); the journal records which checksum it holds, so a resumed run
never compares values of two different functions.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, Protocol


class Hasher(Protocol):
    def update(self, data: Any) -> None: ...

    def intdigest(self) -> int: ...


class _Crc32:
    """zlib.crc32 behind the hashlib-like interface xxhash has."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: Any) -> None:
        self.value = zlib.crc32(data, self.value)

    def intdigest(self) -> int:
        return self.value


def _pick() -> tuple[str, Callable[[], Hasher]]:
    try:
        import xxhash
    except ImportError:
        return "crc32", _Crc32
    return "xxh3_64", xxhash.xxh3_64


#: The checksum in use (recorded in journals and reports) and its constructor.
NAME, new_hasher = _pick()
