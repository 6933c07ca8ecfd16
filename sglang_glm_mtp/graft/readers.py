"""Where the bytes come from: a local file by offset, or a Hub file by HTTP Range requests.

Hub source: HTTP Range requests through huggingface_hub's session and headers, one
streamed request per run of adjacent tensors, read into the caller's reusable buffer. A
dropped connection resumes from the last byte received, with exponential backoff,
``RETRIES`` attempts per request.

``SGLANG_GLM_MTP_RETRY_DELAY=<seconds>`` sets the first backoff delay (default 1 s;
tests use a few milliseconds).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Protocol

from ..checkpoint.source import HubCheckpoint
from ..errors import GraftError
from .records import GraftPlan

logger = logging.getLogger(__name__)

#: Attempts per remote range request before giving up.
RETRIES = 5
MAX_DELAY = 30.0
RETRY_DELAY_ENV = "SGLANG_GLM_MTP_RETRY_DELAY"


def retry_base_delay() -> float:
    try:
        return max(0.0, float(os.environ.get(RETRY_DELAY_ENV, "1")))
    except ValueError:
        return 1.0


class RangeReader(Protocol):
    """A source file read by absolute byte offset."""

    display: str

    def read_into(self, offset: int, buf: memoryview, until: int | None = None) -> None:
        """Fill ``buf`` exactly with the bytes at ``offset`` or raise GraftError; ``until`` hints the run's end."""

    def fileno(self) -> int | None:
        """A local file descriptor (enables copy_file_range), or None."""

    def close(self) -> None: ...


class LocalReader:
    def __init__(self, path: Path, display: str | None = None) -> None:
        self.path = path
        self.display = display or str(path)
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise GraftError(f"cannot open source shard {self.display}: {exc.strerror}") from None
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)

    def read_into(self, offset: int, buf: memoryview, until: int | None = None) -> None:
        got = 0
        while got < len(buf):
            n = os.preadv(self._fd, [buf[got:]], offset + got)
            if n == 0:
                raise truncated(self.display, offset + got)
            got += n

    def fileno(self) -> int | None:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def truncated(display: str, at: int) -> GraftError:
    return GraftError(f"source shard {display} ends at byte {at:,}, inside the draft-layer data: the file is "
                      "truncated; re-download it, then re-run the same command")


class HubReader:
    """Range reads of one Hub file through huggingface_hub's HTTP session.

    One streamed ``Range`` request serves a whole run of adjacent tensors (``until``),
    so grafting GLM-5.2's 791 tensors costs a handful of requests, not 791. The body is
    streamed into the caller's buffer (``HfFileSystemFile`` would hold each range as one
    ``bytes`` object). A dropped connection or a 5xx/429 answer is retried with
    exponential backoff from the last byte received.
    """

    def __init__(self, fs: Any, path: str, display: str, *, attempts: int = RETRIES,
                 base_delay: float | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        from huggingface_hub.utils import build_hf_headers, get_session

        self.display = display
        self._session = get_session()
        try:
            self._url = fs.url(path)
        except Exception as exc:  # resolution errors: repo/revision/file gone since the plan
            raise GraftError(f"cannot resolve {display} on the Hub ({type(exc).__name__}: {exc})") from None
        self._headers = build_hf_headers(token=getattr(fs, "token", None))
        self._attempts = max(1, attempts)
        self._delay = retry_base_delay() if base_delay is None else base_delay
        self._sleep = sleep
        self._stream: Any = None  # (context manager, chunk iterator)
        self._pos = -1  # file offset of the next byte the open stream yields
        self._end = -1  # exclusive end of the open stream's range
        self._pending = b""
        self.requests = 0
        self.retries = 0

    def fileno(self) -> int | None:
        return None

    def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream[0].__exit__(None, None, None)
        self._stream, self._pending, self._pos = None, b"", -1

    def _open(self, start: int, end: int) -> None:
        from huggingface_hub import constants
        from huggingface_hub.utils import hf_raise_for_status

        self.close()
        self.requests += 1
        manager = self._session.stream("GET", self._url, headers={**self._headers, "Range": f"bytes={start}-{end - 1}"},
                                       timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT)
        response = manager.__enter__()
        try:
            if response.status_code >= 400:
                response.read()
                hf_raise_for_status(response)
            if response.status_code != 206:
                raise GraftError(f"{self.display}: the server ignored the Range request (HTTP "
                                 f"{response.status_code}); refusing to download the whole shard")
        except BaseException:
            with contextlib.suppress(Exception):
                manager.__exit__(None, None, None)
            raise
        self._stream = (manager, response.iter_bytes())
        self._pos, self._end = start, end

    def read_into(self, offset: int, buf: memoryview, until: int | None = None) -> None:
        """Fill ``buf`` from ``offset``; ``until`` (exclusive) lets one request serve the following reads too."""
        import httpx
        from huggingface_hub.errors import HfHubHTTPError

        end = max(until or 0, offset + len(buf))
        got, failures = 0, 0
        while got < len(buf):
            pos = offset + got
            try:
                if self._stream is None or self._pos != pos or self._end < offset + len(buf):
                    self._open(pos, end)
                if not self._pending:
                    self._pending = next(self._stream[1], b"")
                    if not self._pending:
                        raise httpx.RemoteProtocolError("response ended early")
                take = min(len(self._pending), len(buf) - got)
                buf[got:got + take] = self._pending[:take]
                self._pending = self._pending[take:]
                got += take
                self._pos += take
            except GraftError:
                self.close()
                raise
            except HfHubHTTPError as exc:
                self.close()
                status = exc.response.status_code if exc.response is not None else None
                if status not in (408, 429, 500, 502, 503, 504):
                    raise GraftError(f"reading {self.display} failed at byte {pos:,}: HTTP {status} "
                                     f"({str(exc).splitlines()[0]})") from None
                failures = self._failed(failures, pos, f"HTTP {status}")
            except (httpx.TransportError, httpx.StreamError, OSError) as exc:
                self.close()
                failures = self._failed(failures, pos, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    def _failed(self, failures: int, at: int, why: str) -> int:
        failures += 1
        if failures >= self._attempts:
            raise GraftError(f"reading {self.display} failed at byte {at:,} after {failures} attempts ({why}); "
                             "the bytes copied so far are kept: re-run the same command to resume")
        delay = min(MAX_DELAY, self._delay * 2 ** (failures - 1))
        self.retries += 1
        logger.warning("reading %s at byte %s failed (%s); retry %d/%d in %.2fs", self.display, f"{at:,}", why,
                       failures, self._attempts - 1, delay)
        self._sleep(delay)
        return failures


def open_readers(plan: GraftPlan) -> dict[str, RangeReader]:
    """One reader per file the plan reads, keyed ``origin:shard`` as in ``Piece.reader``."""
    readers: dict[str, RangeReader] = {}
    source = plan.source_obj
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
                readers[key] = HubReader(source.fs, source._path(t.shard), f"{source.display}/{t.shard}")
            else:
                raise GraftError(f"cannot read {t.shard} from {source.display}")
    return readers
