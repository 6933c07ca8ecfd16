"""Where the bytes come from: a local file by offset, or a Hub file by HTTP Range requests.

Hub source: HTTP Range requests through huggingface_hub's session and headers, one
streamed request per run of adjacent bytes, read into the caller's reusable buffer.
Concurrent streams each read through their own ``HubReader`` (own connection) and share
the file's resolved CDN location (``HubFile``) and one ``HubGate`` per run (429/503
pauses, counters). A dropped connection resumes from the last byte received, with
exponential backoff, ``RETRIES`` attempts per request; a 429/503 pauses every stream
(``Retry-After``); a 403 from a signed redirect target resolves the file again.

``SGLANG_GLM_MTP_RETRY_DELAY=<seconds>`` sets the first backoff delay (default 1 s;
tests use a few milliseconds).
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Protocol
from urllib.parse import urljoin, urlsplit

from ..errors import GraftError
from .source import CheckpointSource, HubCheckpoint

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


class HubGate:
    """What the concurrent streams of one run share: a pause after 429/503, and counters.

    A 429 or 503 is the server (or CDN) asking the client as a whole to slow down, so one
    stream's answer holds back every stream: none opens its next request before the pause
    ends (``Retry-After`` when the answer carries one, else the stream's own backoff).
    Bytes already flowing on open connections keep flowing. huggingface_hub's own backoff
    (``http_backoff``) is per call and cannot be shared between threads, hence this.
    """

    def __init__(self, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._until = 0.0
        self._sleep = sleep
        self._clock = clock
        self.requests = 0
        self.retries = 0
        self.throttled = 0
        self.resolutions = 0
        self.waited_s = 0.0

    def wait(self) -> None:
        """Block until no pause is in force."""
        while True:
            with self._lock:
                left = self._until - self._clock()
            if left <= 0:
                return
            self._sleep(left)
            with self._lock:
                self.waited_s += left

    def hold(self, seconds: float) -> None:
        """No stream opens a request during the next ``seconds``."""
        with self._lock:
            self._until = max(self._until, self._clock() + seconds)
            self.throttled += 1

    def count(self, *, requests: int = 0, retries: int = 0, resolutions: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.retries += retries
            self.resolutions += resolutions

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": self.requests, "retries": self.retries, "throttled": self.throttled,
                    "resolutions": self.resolutions, "throttle_wait_s": round(self.waited_s, 3)}


class HubFile:
    """One Hub file as the streams reading it share it: its URL, headers and resolved location.

    The ``/resolve/`` URL of a large file answers with a redirect to a signed CDN URL.
    It is resolved once (``get_hf_file_metadata``, huggingface_hub's own HEAD, which
    stops at the first off-Hub redirect), and every stream sends its Range requests to
    that location directly, without the ``authorization`` header when it is another host,
    as ``hf_hub_download`` does. A signed URL expires: a 403 from the location is answered
    by resolving again, once for all streams (``forget``).
    """

    def __init__(self, url: str, token: Any, display: str) -> None:
        from huggingface_hub.utils import build_hf_headers

        self.url = url
        self.display = display
        self.token = token
        self.headers = build_hf_headers(token=token)
        self._lock = threading.Lock()
        self._location: tuple[str, dict[str, str]] | None = None

    def location(self, gate: HubGate) -> tuple[str, dict[str, str]]:
        """The URL to send Range requests to, with its headers (resolved on first use and after ``forget``)."""
        with self._lock:
            if self._location is not None:
                return self._location
            from huggingface_hub import constants, get_hf_file_metadata

            gate.count(resolutions=1)
            meta = get_hf_file_metadata(self.url, token=self.token, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT)
            target = urljoin(self.url, meta.location) if meta.location else self.url
            headers = dict(self.headers)
            if not _same_or_hub_host(self.url, target):  # a signed CDN URL: the token must not leave the Hub
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if target != self.url:
                logger.info("%s resolves to %s", self.display, urlsplit(target).netloc)
            self._location = (target, headers)
            return self._location

    def forget(self, stale: str) -> None:
        """``stale`` failed (an expired signed URL): the next request resolves the file again."""
        with self._lock:
            if self._location is not None and self._location[0] == stale:
                self._location = None


def _same_or_hub_host(url: str, target: str) -> bool:
    try:  # huggingface_hub's own rule (same host, or a Hub host reached through a mirror), private in 1.x
        from huggingface_hub.utils._http import _is_same_or_hub_host

        return bool(_is_same_or_hub_host(url, target))
    except ImportError:
        return urlsplit(url).netloc == urlsplit(target).netloc


def retry_after(headers: Any) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delay-seconds or an HTTP date), or None.

    Hand-written: huggingface_hub's parser is private and ignores the HTTP-date form.
    """
    value = (headers or {}).get("Retry-After")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))  # RFC 9110 says whole seconds; a fraction is taken as meant
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


#: HTTP statuses retried with backoff; 429/503 also pause every stream (``HubGate``).
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
THROTTLE_STATUSES = frozenset({429, 503})
#: Longest ``Retry-After`` honoured; a server asking for more is waited for this long.
MAX_RETRY_AFTER = 300.0


class HubReader:
    """Range reads of one Hub file on one connection (one stream) of huggingface_hub's session.

    One streamed ``Range`` request serves a whole run of adjacent bytes (``until``), so
    grafting GLM-5.2's 791 tensors costs a handful of requests per stream, not 791. The
    body is streamed into the caller's buffer (``HfFileSystemFile`` would hold each range
    as one ``bytes`` object). A dropped connection or a 5xx/429 answer is retried with
    exponential backoff from the last byte received. Concurrent streams each take their
    own reader (``for_stream``): an HTTP response is read by one thread; the session's
    connection pool gives each stream its own connection.
    """

    def __init__(self, fs: Any, path: str, display: str, *, attempts: int = RETRIES,
                 base_delay: float | None = None, sleep: Callable[[float], None] = time.sleep,
                 gate: HubGate | None = None, file: HubFile | None = None) -> None:
        from huggingface_hub.utils import get_session

        self.display = display
        self._session = get_session()
        if file is None:
            try:
                url = fs.url(path)
            except Exception as exc:  # resolution errors: repo/revision/file gone since the plan
                raise GraftError(f"cannot resolve {display} on the Hub ({type(exc).__name__}: {exc})") from None
            file = HubFile(url, getattr(fs, "token", None), display)
        self.file = file
        self.gate = gate if gate is not None else HubGate(sleep=sleep)
        self._attempts = max(1, attempts)
        self._delay = retry_base_delay() if base_delay is None else base_delay
        self._sleep = sleep
        self._stream: Any = None  # (context manager, chunk iterator)
        self._pos = -1  # file offset of the next byte the open stream yields
        self._end = -1  # exclusive end of the open stream's range
        self._pending: memoryview = memoryview(b"")
        self._location: str | None = None  # where the open (or last) request went
        self.requests = 0
        self.retries = 0

    def for_stream(self) -> HubReader:
        """Another reader of the same file for another concurrent stream (shared resolution and gate)."""
        return HubReader(None, "", self.display, attempts=self._attempts, base_delay=self._delay, sleep=self._sleep,
                         gate=self.gate, file=self.file)

    def fileno(self) -> int | None:
        return None

    def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream[0].__exit__(None, None, None)
        self._stream, self._pending, self._pos = None, memoryview(b""), -1

    def _open(self, start: int, end: int) -> None:
        from huggingface_hub import constants
        from huggingface_hub.utils import hf_raise_for_status

        self.close()
        self.gate.wait()
        url, headers = self.file.location(self.gate)
        self._location = url
        self.requests += 1
        self.gate.count(requests=1)
        manager = self._session.stream("GET", url, headers={**headers, "Range": f"bytes={start}-{end - 1}"},
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
                    self._pending = memoryview(next(self._stream[1], b""))
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
                response = exc.response
                status = response.status_code if response is not None else None
                if status == 403 and self._location is not None and self._location != self.file.url:
                    # a signed CDN URL that expired: resolve the file again (once for every stream)
                    failures = self._failed(failures, pos, "HTTP 403 from the redirect target", delay=0.0)
                    self.file.forget(self._location)
                    continue
                if status not in RETRY_STATUSES:
                    raise GraftError(f"reading {self.display} failed at byte {pos:,}: HTTP {status} "
                                     f"({str(exc).splitlines()[0]})") from None
                wait = None
                if status in THROTTLE_STATUSES:
                    asked = retry_after(response.headers if response is not None else None)
                    wait = max(self._backoff(failures + 1), min(MAX_RETRY_AFTER, asked or 0.0))
                    self.gate.hold(wait)  # every stream waits, this one included (in _open)
                failures = self._failed(failures, pos, f"HTTP {status}", delay=0.0 if wait is not None else None)
            except (httpx.TransportError, httpx.StreamError, OSError) as exc:
                self.close()
                failures = self._failed(failures, pos, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    def _backoff(self, failures: int) -> float:
        return min(MAX_DELAY, self._delay * 2 ** (failures - 1))

    def _failed(self, failures: int, at: int, why: str, delay: float | None = None) -> int:
        failures += 1
        if failures >= self._attempts:
            raise GraftError(f"reading {self.display} failed at byte {at:,} after {failures} attempts ({why}); "
                             "the bytes copied so far are kept: re-run the same command to resume")
        delay = self._backoff(failures) if delay is None else delay
        self.retries += 1
        self.gate.count(retries=1)
        logger.warning("reading %s at byte %s failed (%s); retry %d/%d in %.2fs", self.display, f"{at:,}", why,
                       failures, self._attempts - 1, delay)
        if delay:
            self._sleep(delay)
        return failures


def reader_for(source: CheckpointSource, name: str, *, gate: HubGate | None = None) -> RangeReader | None:
    """A Range reader of ``name`` in ``source``: the file itself when it is on disk (a local checkpoint, a
    cached snapshot), else HTTP Range reads of the Hub file; None when the source offers neither."""
    local = source.local_path(name)
    if local is not None:
        return LocalReader(local)
    if isinstance(source, HubCheckpoint):
        return HubReader(source.fs, source._path(name), f"{source.display}/{name}", gate=gate)
    return None
