"""A loopback fake of the Hugging Face Hub HTTP API, for offline tests.

``FakeHub`` serves local directories as Hub *model* repos on ``127.0.0.1`` so that
huggingface_hub's real client code (``HfFileSystem``, ``HfApi``, ``hf_hub_download``,
``get_safetensors_metadata``) runs unmodified against it. Only the endpoints those
code paths use are implemented (checked against huggingface_hub 1.33):

* ``GET  /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}`` -> ``model_info``
  / ``repo_info`` (``id``, ``sha``, ``siblings``; sizes and LFS info with ``?blobs=true``).
* ``GET  /api/models/{repo}/tree/{rev}[/{path}]`` -> ``list_repo_tree`` (``?recursive``,
  ``?expand``); a missing path or a file path is ``404 EntryNotFound`` as on the Hub.
* ``POST /api/models/{repo}/paths-info/{rev}`` -> ``get_paths_info`` (form or JSON body).
* ``GET  /api/models/{repo}/refs`` -> ``list_repo_refs``.
* ``GET|HEAD /{repo}/resolve/{rev}/{file}`` -> downloads and metadata, with single
  ``Range`` requests (``206`` + ``Content-Range``, ``416`` when unsatisfiable) and the
  ``X-Repo-Commit`` / ``ETag`` / ``X-Linked-Etag`` / ``X-Linked-Size`` headers
  ``get_hf_file_metadata`` needs. Files never advertise Xet, so huggingface_hub always
  uses plain HTTP. By default files are served directly; ``redirect_to_cdn()`` makes
  ``/resolve/`` of LFS files answer ``302`` to a signed URL on a second server (the
  "CDN", another loopback host, ``127.0.0.2``), as the real Hub does; its signed URLs
  can be made to expire after a number of requests (``403``, as an expired S3 URL).

``pace(bytes_per_s)`` limits every response body (hence every connection) to that rate,
as a CDN caps each connection. ``fail_with_status(..., retry_after=N)`` answers with a
``Retry-After`` header (the 429 mode).

Errors carry the ``X-Error-Code`` header (``RepoNotFound``, ``RevisionNotFound``,
``EntryNotFound``) that ``hf_raise_for_status`` maps to ``RepositoryNotFoundError``,
``RevisionNotFoundError`` and ``RemoteEntryNotFoundError``; it must be a header, not
only the body, because HEAD responses have no body.

Every revision of a repo serves the same directory, read live on each request. Tests
can inject faults (truncated bodies, error statuses) and read per-file counters of
requests and body bytes. Only the standard library is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Iterable, Iterator, Mapping
from urllib.parse import parse_qs, quote, unquote, urlsplit

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_LFS_SUFFIXES", "FakeHub", "RequestRecord"]

#: Suffixes served as Git LFS files (``lfs`` in tree entries, ``X-Linked-*`` headers), as on the Hub.
DEFAULT_LFS_SUFFIXES: tuple[str, ...] = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx",
    ".npy", ".npz", ".pkl", ".model", ".tar", ".zip", ".gz",
)

_CHUNK = 64 * 1024
_FAKE_DATE = "2024-01-01T00:00:00.000Z"
_SKIPPED_DIRS = frozenset({".git"})


@dataclass
class RequestRecord:
    """One HTTP request as the fake Hub saw it (``FakeHub.requests`` hands out copies).

    ``filename``/``revision`` are set for ``/resolve/`` requests only. ``body_bytes`` is
    the number of body bytes handed to the socket (for ``/resolve/`` GETs).
    """

    method: str
    path: str
    query: str
    repo_id: str | None = None
    filename: str | None = None
    revision: str | None = None
    range: str | None = None
    status: int | None = None
    body_bytes: int = 0
    dropped: bool = False
    host: str = "hub"  # or "cdn": the server of redirect targets
    authorization: bool = False  # the request carried an Authorization header
    at: float = 0.0  # time.monotonic() at arrival


@dataclass
class _DropFault:
    """Send ``after`` body bytes of a ``/resolve/`` GET, then drop the connection."""

    after: int
    remaining: int
    reset: bool


@dataclass
class _StatusFault:
    """Answer ``status`` (before any byte of the file) for matching requests."""

    status: int
    remaining: int
    methods: frozenset[str]
    retry_after: str | None = None


@dataclass
class _Signed:
    """One signed CDN URL: which file it serves and how many more requests it accepts (None: any)."""

    repo_id: str
    filename: str
    uses_left: int | None


@dataclass(frozen=True)
class _Entry:
    path: str  # posix path inside the repo
    abspath: str
    size: int
    mtime_ns: int


@dataclass
class _Repo:
    repo_id: str
    root: Path
    refs: dict[str, str]  # revision name -> 40-hex commit sha

    def resolve(self, revision: str) -> str | None:
        """The commit sha a revision name (or a full sha of this repo) points to."""
        if revision in self.refs:
            return self.refs[revision]
        if revision in self.refs.values():
            return revision
        return None


class _HttpError(Exception):
    """An error answer: status, Hub error code (``X-Error-Code``) and message."""

    def __init__(self, status: int, code: str | None, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def _default_sha(repo_id: str) -> str:
    return hashlib.sha1(f"fake-hub:{repo_id}".encode()).hexdigest()


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in {"1", "true", "yes"}


def _parse_range(header: str, size: int) -> tuple[int, int] | None | str:
    """``(start, end_inclusive)``, ``None`` to ignore the header (serve 200), or ``"416"``.

    Only a single ``bytes=`` range is honoured; malformed or multi-range headers are
    ignored, which RFC 9110 allows.
    """
    header = header.strip()
    if not header.lower().startswith("bytes=") or "," in header:
        return None
    spec = header[6:].strip()
    first, sep, last = spec.partition("-")
    if not sep:
        return None
    try:
        if first == "":  # suffix range: the last N bytes
            n = int(last)
            if n <= 0 or size == 0:
                return "416"
            return max(0, size - n), size - 1
        start = int(first)
        end = int(last) if last != "" else size - 1
    except ValueError:
        return None
    if start < 0 or (last != "" and end < start):
        return None  # syntactically invalid: ignored
    if start >= size:
        return "416"
    return start, min(end, size - 1)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], hub: FakeHub, *, cdn: bool = False):
        super().__init__(address, _Handler)
        self.hub = hub
        self.cdn = cdn


class _Handler(BaseHTTPRequestHandler):
    """Routes one request; keeps connections alive like the Hub (HTTP/1.1)."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"
    timeout = 60  # idle keep-alive connections eventually free their thread
    server: _Server

    # -- plumbing -----------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.server.hub._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.hub._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("%s - " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        hub = self.server.hub
        split = urlsplit(self.path)
        rec = RequestRecord(method=self.command, path=unquote(split.path), query=split.query,
                            range=self.headers.get("Range"), host="cdn" if self.server.cdn else "hub",
                            authorization=self.headers.get("Authorization") is not None, at=time.monotonic())
        hub._record(rec)
        body = b""
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            body = self.rfile.read(length)
        self._headers_sent = False
        try:
            self._route(rec, split.path, parse_qs(split.query), body)
        except _HttpError as err:
            self._send_error(rec, err)
        except (BrokenPipeError, ConnectionResetError) as exc:
            logger.debug("client went away during %s %s: %s", self.command, self.path, exc)
            self.close_connection = True
        except Exception:  # a bug in the fake must surface as a 500, not a hang
            logger.exception("fake hub failed on %s %s", self.command, self.path)
            if not self._headers_sent:
                self._send_error(rec, _HttpError(500, None, "Internal error in FakeHub"))
            else:
                self.close_connection = True

    def _start(self, rec: RequestRecord, status: int, headers: Mapping[str, str]) -> None:
        rec.status = status
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self._headers_sent = True

    def _send_bytes(self, rec: RequestRecord, status: int, payload: bytes, headers: Mapping[str, str]) -> None:
        self._start(rec, status, {**headers, "Content-Length": str(len(payload))})
        if self.command != "HEAD" and payload:
            self.wfile.write(payload)

    def _send_json(self, rec: RequestRecord, data: Any, headers: Mapping[str, str] | None = None) -> None:
        payload = json.dumps(data).encode()
        self._send_bytes(rec, 200, payload, {"Content-Type": "application/json; charset=utf-8", **(headers or {})})

    def _send_error(self, rec: RequestRecord, err: _HttpError) -> None:
        headers = {"Content-Type": "application/json; charset=utf-8", "X-Error-Message": err.message, **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        self._send_bytes(rec, err.status, json.dumps({"error": err.message}).encode(), headers)

    # -- routing ------------------------------------------------------------------

    def _route(self, rec: RequestRecord, raw_path: str, query: dict[str, list[str]], body: bytes) -> None:
        hub = self.server.hub
        segs = raw_path.strip("/").split("/")
        if self.server.cdn:
            self._route_cdn(rec, segs)
            return
        if len(segs) >= 2 and segs[0] == "api" and segs[1] in {"datasets", "spaces"}:
            raise _HttpError(404, "RepoNotFound", "Repository not found")
        if len(segs) >= 4 and segs[0] == "api" and segs[1] == "models":
            repo_id = f"{unquote(segs[2])}/{unquote(segs[3])}"
            rec.repo_id = repo_id
            self._route_api(rec, hub._repo(repo_id), segs[4:], query, body)
            return
        if len(segs) >= 3 and segs[2] == "resolve" and segs[0] not in {"datasets", "spaces", "api"}:
            repo_id = f"{unquote(segs[0])}/{unquote(segs[1])}"
            rec.repo_id = repo_id
            repo = hub._repo(repo_id)
            sha, rev, filename = hub._split_revision(repo, segs[3:])
            rec.revision, rec.filename = rev, filename
            self._serve_file(rec, repo, sha, filename)
            return
        if len(segs) >= 4 and segs[0] in {"datasets", "spaces"} and segs[3] == "resolve":
            raise _HttpError(404, "RepoNotFound", "Repository not found")
        raise _HttpError(404, None, f"Not found: {raw_path}")

    def _route_api(self, rec: RequestRecord, repo: _Repo, rest: list[str], query: dict[str, list[str]],
                   body: bytes) -> None:
        hub = self.server.hub
        hub._check_status_fault(repo.repo_id, None, self.command)
        if self.command in {"GET", "HEAD"} and (not rest or rest[0] == "revision"):
            rev = unquote("/".join(rest[1:])) if rest else "main"
            sha = repo.resolve(rev)
            if sha is None:
                raise _HttpError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            blobs = _truthy((query.get("blobs") or [None])[0])
            self._send_json(rec, hub._model_info(repo, sha, blobs=blobs))
            return
        if self.command in {"GET", "HEAD"} and rest[0] == "tree" and len(rest) >= 2:
            sha, _rev, path = hub._split_revision(repo, rest[1:])
            recursive = _truthy((query.get("recursive") or [None])[0])
            expand = _truthy((query.get("expand") or [None])[0])
            self._send_json(rec, hub._tree(repo, sha, path, recursive=recursive, expand=expand))
            return
        if self.command == "POST" and rest[0] == "paths-info" and len(rest) >= 2:
            sha, _rev, _ = hub._split_revision(repo, rest[1:], path_allowed=False)
            paths, expand = _parse_paths_info_body(body, self.headers.get("Content-Type") or "")
            self._send_json(rec, hub._paths_info(repo, sha, paths, expand=expand))
            return
        if self.command in {"GET", "HEAD"} and rest == ["refs"]:
            branches = [{"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha}
                        for name, sha in sorted(repo.refs.items())]
            self._send_json(rec, {"branches": branches, "converts": [], "tags": [], "pullRequests": []})
            return
        raise _HttpError(404, None, f"Not found: {self.path}")

    def _route_cdn(self, rec: RequestRecord, segs: list[str]) -> None:
        """``/<token>/<file name>`` on the CDN server: the signed URL the Hub redirected to."""
        hub = self.server.hub
        if self.command not in {"GET", "HEAD"} or len(segs) < 2:
            raise _HttpError(404, None, f"Not found: {self.path}")
        signed = hub._use_signed(unquote(segs[0]))
        if signed is None:  # what S3/CloudFront answer to an expired or unknown signature
            raise _HttpError(403, None, "AccessDenied: Request has expired")
        rec.repo_id, rec.filename = signed.repo_id, signed.filename
        repo = hub._repo(signed.repo_id)
        self._serve_file(rec, repo, repo.resolve("main") or "", signed.filename, direct=True)

    # -- file serving ---------------------------------------------------------------

    def _serve_file(self, rec: RequestRecord, repo: _Repo, sha: str, filename: str, *, direct: bool = False) -> None:
        hub = self.server.hub
        entry = hub._file_entry(repo, filename)
        if entry is None:
            raise _HttpError(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": sha})
        git_oid, sha256 = hub._hashes(entry)
        lfs = hub._is_lfs(entry)
        if not direct and lfs and hub._cdn is not None:  # the Hub: a redirect to a signed CDN URL
            location = hub._sign(repo.repo_id, filename)
            self._send_bytes(rec, 302, b"", {"Location": location, "X-Repo-Commit": sha, "ETag": f'"{sha256}"',
                                             "X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(entry.size)})
            return
        hub._check_status_fault(repo.repo_id, filename, self.command)
        headers = {
            "Content-Type": "application/octet-stream" if lfs else "text/plain; charset=utf-8",
            "Accept-Ranges": "bytes",
            "ETag": f'"{sha256 if lfs else git_oid}"',
            "X-Repo-Commit": sha,
        }
        if lfs:
            headers["X-Linked-Etag"] = f'"{sha256}"'
            headers["X-Linked-Size"] = str(entry.size)
        start, end, status = 0, entry.size - 1, 200
        range_header = self.headers.get("Range")
        if range_header:
            parsed = _parse_range(range_header, entry.size)
            if parsed == "416":
                self._send_bytes(rec, 416, b"", {**headers, "Content-Range": f"bytes */{entry.size}"})
                return
            if isinstance(parsed, tuple):
                start, end = parsed
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        length = end - start + 1
        self._start(rec, status, {**headers, "Content-Length": str(length)})
        if self.command == "HEAD" or length <= 0:
            return
        drop = hub._take_drop_fault(repo.repo_id, filename, length)
        limit = length if drop is None else drop.after
        with hub._body_in_flight():
            self._send_body(rec, entry, start, limit)
        if drop is not None:
            rec.dropped = True
            self.close_connection = True
            if drop.reset:  # RST instead of FIN: the client sees a reset, not a short body
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            logger.debug("dropped %s %s after %d of %d body bytes", self.command, self.path, limit, length)


    def _send_body(self, rec: RequestRecord, entry: _Entry, start: int, limit: int) -> None:
        hub = self.server.hub
        rate = hub._pace
        began = time.monotonic()
        with open(entry.abspath, "rb") as f:
            f.seek(start)
            left = limit
            while left > 0:
                chunk = f.read(min(_CHUNK, left))
                if not chunk:
                    break
                if rate:  # this connection's cap: a chunk leaves only once rate * elapsed covers it
                    ahead = began + (limit - left + len(chunk)) / rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
                hub._count_bytes(rec, len(chunk))  # counted first: a test may assert as soon as it has the bytes
                self.wfile.write(chunk)
                left -= len(chunk)


def _parse_paths_info_body(body: bytes, content_type: str) -> tuple[list[str], bool]:
    """``paths``/``expand`` from the form-encoded body huggingface_hub posts (JSON accepted too)."""
    if "json" in content_type:
        data = json.loads(body or b"{}")
        paths = data.get("paths") or []
        return ([paths] if isinstance(paths, str) else list(paths)), bool(data.get("expand"))
    form = parse_qs(body.decode(), keep_blank_values=True)
    return form.get("paths", []), _truthy((form.get("expand") or [None])[0])


class FakeHub:
    """Serve local directories as Hub model repos on ``127.0.0.1:<free port>``.

    ``repos`` maps ``"org/name"`` to a directory; ``revisions`` maps a repo id to
    ``{revision name: 40-hex commit sha}`` (``main`` gets a stable fake sha when
    absent). All revisions of a repo serve the same directory; the commit sha itself
    is accepted as a revision too. Use as a context manager, or ``start()``/``stop()``.
    """

    def __init__(
        self,
        repos: Mapping[str, str | os.PathLike[str]],
        revisions: Mapping[str, Mapping[str, str]] | None = None,
        *,
        lfs_suffixes: Iterable[str] = DEFAULT_LFS_SUFFIXES,
        lfs_min_size: int = 10 * 1024 * 1024,
        host: str = "127.0.0.1",
    ) -> None:
        self._lock = threading.Lock()
        self._repos: dict[str, _Repo] = {}
        self._lfs_suffixes = tuple(s.lower() for s in lfs_suffixes)
        self._lfs_min_size = lfs_min_size
        self._host = host
        self._hash_cache: dict[tuple[str, int, int], tuple[str, str]] = {}
        self._drop_faults: dict[tuple[str, str], list[_DropFault]] = {}
        self._status_faults: dict[tuple[str, str | None], list[_StatusFault]] = {}
        self._records: list[RequestRecord] = []
        self._bytes: Counter[tuple[str, str]] = Counter()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._cdn: _Server | None = None
        self._cdn_thread: threading.Thread | None = None
        self._cdn_host = "127.0.0.2"
        self._signed: dict[str, _Signed] = {}
        self._signed_uses: int | None = None
        self._pace = 0.0
        self._bodies = threading.Condition()
        self._in_body = 0
        self.max_concurrent_bodies = 0
        self._rendezvous: tuple[int, float] | None = None
        for repo_id, path in repos.items():
            self.add_repo(repo_id, path, (revisions or {}).get(repo_id))

    # -- lifecycle ----------------------------------------------------------------

    def add_repo(self, repo_id: str, path: str | os.PathLike[str], revisions: Mapping[str, str] | None = None) -> None:
        """Serve ``path`` as ``repo_id`` (may be called while running)."""
        if repo_id.count("/") != 1:
            raise ValueError(f"repo id must be 'org/name', got {repo_id!r}")
        root = Path(path)
        if not root.is_dir():
            raise ValueError(f"{root} is not a directory")
        refs = dict(revisions or {})
        refs.setdefault("main", _default_sha(repo_id))
        for name, sha in refs.items():
            if len(sha) != 40 or any(c not in "0123456789abcdef" for c in sha):
                raise ValueError(f"revision {name!r} of {repo_id} must map to a 40-hex lowercase sha, got {sha!r}")
        with self._lock:
            self._repos[repo_id] = _Repo(repo_id, root, refs)

    def start(self) -> FakeHub:
        """Bind a free port and serve from a daemon thread."""
        if self._server is not None:
            return self
        self._server = _Server((self._host, 0), self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"FakeHub:{self._server.server_address[1]}", daemon=True)
        self._thread.start()
        logger.debug("FakeHub serving %s at %s", sorted(self._repos), self.endpoint)
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection (idle keep-alives included)."""
        server, self._server = self._server, None
        if server is None:
            return
        cdn, self._cdn = self._cdn, None
        if cdn is not None:
            cdn.shutdown()
            cdn.server_close()
            if self._cdn_thread is not None:
                self._cdn_thread.join(timeout=5)
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash), to pass as ``endpoint=`` or ``HF_ENDPOINT``."""
        if self._server is None:
            raise RuntimeError("FakeHub is not running")
        return _base_url(self._server)

    def commit_sha(self, repo_id: str, revision: str = "main") -> str:
        """The commit sha a revision of a served repo resolves to."""
        sha = self._repo(repo_id).resolve(revision)
        if sha is None:
            raise KeyError(f"{repo_id} has no revision {revision!r}")
        return sha

    def file_url(self, repo_id: str, filename: str, revision: str = "main") -> str:
        """The ``/resolve/`` URL huggingface_hub would build for this file."""
        return f"{self.endpoint}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(filename)}"

    # -- CDN redirects and pacing ----------------------------------------------------

    def redirect_to_cdn(self, *, uses: int | None = None, host: str = "127.0.0.2") -> str:
        """From now on ``/resolve/`` of LFS files answers ``302`` to a signed URL on a second server.

        The second server listens on another loopback host (``host``, so huggingface_hub
        treats it as off-Hub and drops the ``authorization`` header) and serves the same
        bytes with the same Range semantics, faults and pacing. With ``uses`` every signed URL
        accepts that many requests, then answers ``403`` (an expired signature); a new
        ``/resolve/`` hands out a fresh one. Returns the CDN's base URL.
        """
        if self._server is None:
            raise RuntimeError("start the FakeHub first")
        with self._lock:
            self._signed_uses = uses
        if self._cdn is None:
            self._cdn_host = host
            self._cdn = _Server((host, 0), self, cdn=True)
            self._cdn_thread = threading.Thread(target=self._cdn.serve_forever, kwargs={"poll_interval": 0.05},
                                                name=f"FakeHub-CDN:{self._cdn.server_address[1]}", daemon=True)
            self._cdn_thread.start()
        return self.cdn_endpoint

    @property
    def cdn_endpoint(self) -> str:
        if self._cdn is None:
            raise RuntimeError("redirect_to_cdn() was not called")
        return _base_url(self._cdn)

    def expire_signed_urls(self) -> None:
        """Every signed URL handed out so far answers ``403`` from now on."""
        with self._lock:
            self._signed.clear()

    def rendezvous(self, bodies: int, timeout: float = 30.0) -> None:
        """Hold every response body until ``bodies`` bodies are in flight at once (or ``timeout`` passes).

        Proves concurrency without timing: a client that sends its ranges one at a time never
        gets there (each body waits out the timeout alone), and ``max_concurrent_bodies`` says so.
        """
        with self._bodies:
            self._rendezvous = (bodies, timeout)
            self.max_concurrent_bodies = 0

    @contextlib.contextmanager
    def _body_in_flight(self) -> Iterator[None]:
        with self._bodies:
            self._in_body += 1
            self.max_concurrent_bodies = max(self.max_concurrent_bodies, self._in_body)
            self._bodies.notify_all()
            if self._rendezvous is not None:
                bodies, timeout = self._rendezvous
                self._bodies.wait_for(lambda: self.max_concurrent_bodies >= bodies, timeout)
        try:
            yield
        finally:
            with self._bodies:
                self._in_body -= 1

    def pace(self, bytes_per_s: float | None) -> None:
        """Send every response body at most at ``bytes_per_s`` (per response, hence per connection); None: unpaced."""
        with self._lock:
            self._pace = float(bytes_per_s or 0.0)

    # -- fault injection ----------------------------------------------------------

    def fail_after_bytes(self, repo_id: str, filename: str, after: int, times: int = 1, *,
                         reset: bool = False) -> None:
        """Truncate the next ``times`` GET bodies of ``filename`` after ``after`` bytes.

        The headers still announce the full length (``Content-Length`` of the range), then
        the server closes the socket, which httpx reports as ``RemoteProtocolError``
        (``reset=True`` sends a TCP RST instead: ``ReadError``). Bodies of at most
        ``after`` bytes cannot be truncated; they are served whole and do not use up a
        failure. Faults stack: each queued one is used up before the next.
        """
        if after < 0 or times < 1:
            raise ValueError("after must be >= 0 and times >= 1")
        with self._lock:
            self._drop_faults.setdefault((repo_id, filename), []).append(_DropFault(after, times, reset))

    def fail_with_status(self, repo_id: str, filename: str | None = None, *, status: int = 503, times: int = 1,
                         methods: Iterable[str] = ("GET", "HEAD"), retry_after: float | str | None = None) -> None:
        """Answer ``status`` to the next ``times`` matching requests.

        With ``filename`` it hits the requests that would serve that file's bytes (after
        the existence check): ``/resolve/``, or the CDN's signed URL when redirecting;
        without, the repo's ``/api/`` requests (info, tree, paths-info). ``retry_after``
        adds a ``Retry-After`` header (seconds, or an HTTP date as a string).
        huggingface_hub retries 429/5xx with backoff in most code paths.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._status_faults.setdefault((repo_id, filename), []).append(
                _StatusFault(status, times, frozenset(m.upper() for m in methods),
                             None if retry_after is None else str(retry_after)))

    def clear_faults(self) -> None:
        """Forget every pending fault."""
        with self._lock:
            self._drop_faults.clear()
            self._status_faults.clear()

    def pending_faults(self, repo_id: str, filename: str | None = None) -> int:
        """How many injected failures are still to be served for this file (or repo API)."""
        with self._lock:
            drops = sum(f.remaining for f in self._drop_faults.get((repo_id, filename or ""), []))
            statuses = sum(f.remaining for f in self._status_faults.get((repo_id, filename), []))
        return drops + statuses

    # -- counters -------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Copies of every request record so far, in arrival order."""
        with self._lock:
            return [replace(r) for r in self._records]

    def request_count(self, repo_id: str | None = None, filename: str | None = None, *,
                      method: str | None = None, status: int | None = None) -> int:
        """Requests matching all given criteria (``filename`` only matches ``/resolve/`` requests)."""
        with self._lock:
            return sum(
                1 for r in self._records
                if (repo_id is None or r.repo_id == repo_id)
                and (filename is None or r.filename == filename)
                and (method is None or r.method == method.upper())
                and (status is None or r.status == status)
            )

    def requests_per_path(self) -> dict[str, int]:
        """URL path (percent-decoded, no query) -> number of requests."""
        with self._lock:
            return dict(Counter(r.path for r in self._records))

    def bytes_served(self, repo_id: str, filename: str) -> int:
        """Total file body bytes sent for ``filename`` over all GETs and revisions."""
        with self._lock:
            return self._bytes[(repo_id, filename)]

    def reset_stats(self) -> None:
        """Zero the request log and byte counters (faults are kept)."""
        with self._lock:
            self._records.clear()
            self._bytes.clear()

    # -- internals used by the handler -----------------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _record(self, rec: RequestRecord) -> None:
        with self._lock:
            self._records.append(rec)

    def _count_bytes(self, rec: RequestRecord, n: int) -> None:
        with self._lock:
            rec.body_bytes += n
            if rec.repo_id is not None and rec.filename is not None:
                self._bytes[(rec.repo_id, rec.filename)] += n

    def _take_drop_fault(self, repo_id: str, filename: str, body_length: int) -> _DropFault | None:
        with self._lock:
            queue = self._drop_faults.get((repo_id, filename))
            if not queue or body_length <= queue[0].after:
                return None
            fault = queue[0]
            fault.remaining -= 1
            if fault.remaining == 0:
                queue.pop(0)
            return fault

    def _check_status_fault(self, repo_id: str, filename: str | None, method: str) -> None:
        with self._lock:
            queue = self._status_faults.get((repo_id, filename))
            if not queue or method not in queue[0].methods:
                return
            fault = queue[0]
            fault.remaining -= 1
            if fault.remaining == 0:
                queue.pop(0)
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
        raise _HttpError(fault.status, None, f"Injected failure ({fault.status})", headers)

    def _sign(self, repo_id: str, filename: str) -> str:
        token = os.urandom(12).hex()
        with self._lock:
            self._signed[token] = _Signed(repo_id, filename, self._signed_uses)
        return f"{self.cdn_endpoint}/{token}/{quote(filename)}"

    def _use_signed(self, token: str) -> _Signed | None:
        with self._lock:
            signed = self._signed.get(token)
            if signed is None:
                return None
            if signed.uses_left is not None:
                if signed.uses_left <= 0:
                    return None
                signed.uses_left -= 1
            return signed

    def _repo(self, repo_id: str) -> _Repo:
        with self._lock:
            repo = self._repos.get(repo_id)
        if repo is None:
            raise _HttpError(404, "RepoNotFound", "Repository not found")
        return repo

    @staticmethod
    def _split_revision(repo: _Repo, raw_segments: list[str], *, path_allowed: bool = True) -> tuple[str, str, str]:
        """``(sha, revision, path)`` from raw URL segments ``<rev...>/<path...>``.

        huggingface_hub quotes the revision with ``safe=""`` (one segment), but a
        revision like ``refs/pr/1`` may also arrive unquoted, so the shortest prefix
        naming a known revision wins.
        """
        if not raw_segments or raw_segments[0] == "":
            raise _HttpError(404, "RevisionNotFound", "Invalid rev id: ''")
        for k in range(1, len(raw_segments) + 1):
            rev = unquote("/".join(raw_segments[:k]))
            sha = repo.resolve(rev)
            if sha is not None:
                path = unquote("/".join(raw_segments[k:])).strip("/")
                if path and not path_allowed:
                    break
                return sha, rev, path
        raise _HttpError(404, "RevisionNotFound", f"Invalid rev id: {unquote(raw_segments[0])}")

    def _is_lfs(self, entry: _Entry) -> bool:
        return entry.path.lower().endswith(self._lfs_suffixes) or entry.size >= self._lfs_min_size

    def _hashes(self, entry: _Entry) -> tuple[str, str]:
        """``(git blob sha1, sha256)`` of a file, cached by path/size/mtime."""
        key = (entry.abspath, entry.size, entry.mtime_ns)
        with self._lock:
            cached = self._hash_cache.get(key)
        if cached is not None:
            return cached
        blob = hashlib.sha1(f"blob {entry.size}\0".encode())
        sha256 = hashlib.sha256()
        with open(entry.abspath, "rb") as f:
            while chunk := f.read(1 << 20):
                blob.update(chunk)
                sha256.update(chunk)
        result = (blob.hexdigest(), sha256.hexdigest())
        with self._lock:
            self._hash_cache[key] = result
        return result

    @staticmethod
    def _safe_parts(path: str) -> list[str] | None:
        parts = [p for p in path.split("/") if p != ""]
        if any(p in {".", ".."} or p in _SKIPPED_DIRS or "\\" in p or "\0" in p for p in parts):
            return None
        return parts

    def _file_entry(self, repo: _Repo, filename: str) -> _Entry | None:
        parts = self._safe_parts(filename)
        if not parts:
            return None
        abspath = os.path.join(repo.root, *parts)
        try:
            st = os.stat(abspath)  # follows symlinks, e.g. into an HF cache's blobs/
        except OSError:
            return None
        if not os.path.isfile(abspath):
            return None
        return _Entry("/".join(parts), abspath, st.st_size, st.st_mtime_ns)

    def _scan(self, repo: _Repo, subdir: str = "") -> tuple[list[str], list[_Entry]]:
        """All directories and files under ``subdir`` (recursive, sorted, ``.git`` skipped)."""
        base = os.path.join(repo.root, *subdir.split("/")) if subdir else str(repo.root)
        dirs: list[str] = []
        files: list[_Entry] = []
        for current, dirnames, filenames in os.walk(base, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS)
            rel_dir = os.path.relpath(current, repo.root).replace(os.sep, "/")
            rel_dir = "" if rel_dir == "." else rel_dir
            for d in dirnames:
                dirs.append(f"{rel_dir}/{d}" if rel_dir else d)
            for name in sorted(filenames):
                entry = self._file_entry(repo, f"{rel_dir}/{name}" if rel_dir else name)
                if entry is not None:
                    files.append(entry)
        return dirs, files

    def _file_json(self, repo: _Repo, sha: str, entry: _Entry, *, expand: bool) -> dict[str, Any]:
        git_oid, sha256 = self._hashes(entry)
        out: dict[str, Any] = {"type": "file", "oid": git_oid, "size": entry.size, "path": entry.path}
        if self._is_lfs(entry):
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {entry.size}\n"
            out["oid"] = hashlib.sha1(f"blob {len(pointer)}\0{pointer}".encode()).hexdigest()
            out["lfs"] = {"oid": sha256, "size": entry.size, "pointerSize": len(pointer)}
        if expand:
            out["lastCommit"] = {"id": sha, "title": "Fake commit", "date": _FAKE_DATE}
        return out

    @staticmethod
    def _dir_json(sha: str, path: str, *, expand: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "directory", "oid": hashlib.sha1(f"tree:{sha}:{path}".encode()).hexdigest(),
                               "size": 0, "path": path}
        if expand:
            out["lastCommit"] = {"id": sha, "title": "Fake commit", "date": _FAKE_DATE}
        return out

    def _tree(self, repo: _Repo, sha: str, path: str, *, recursive: bool, expand: bool) -> list[dict[str, Any]]:
        parts = self._safe_parts(path)
        if parts is None or (parts and not os.path.isdir(os.path.join(repo.root, *parts))):
            raise _HttpError(404, "EntryNotFound", f"{path} does not exist on \"{sha}\"")
        path = "/".join(parts)
        dirs, files = self._scan(repo, path)
        depth = path.count("/") + 1 if path else 0
        if not recursive:  # immediate children only
            dirs = [d for d in dirs if d.count("/") == depth]
            files = [f for f in files if f.path.count("/") == depth]
        # Like the Hub: directories first, then files.
        return ([self._dir_json(sha, d, expand=expand) for d in dirs]
                + [self._file_json(repo, sha, f, expand=expand) for f in files])

    def _paths_info(self, repo: _Repo, sha: str, paths: list[str], *, expand: bool) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for path in paths:
            parts = self._safe_parts(path)
            if not parts:
                continue
            entry = self._file_entry(repo, path)
            if entry is not None:
                out.append(self._file_json(repo, sha, entry, expand=expand))
            elif os.path.isdir(os.path.join(repo.root, *parts)):
                out.append(self._dir_json(sha, "/".join(parts), expand=expand))
        return out  # unknown paths are silently skipped, as on the Hub

    def _model_info(self, repo: _Repo, sha: str, *, blobs: bool) -> dict[str, Any]:
        _, files = self._scan(repo)
        siblings: list[dict[str, Any]] = []
        for entry in files:
            sibling: dict[str, Any] = {"rfilename": entry.path}
            if blobs:
                info = self._file_json(repo, sha, entry, expand=False)
                sibling["size"] = entry.size
                sibling["blobId"] = info["oid"]
                if "lfs" in info:
                    sibling["lfs"] = {"size": entry.size, "sha256": info["lfs"]["oid"],
                                      "pointerSize": info["lfs"]["pointerSize"]}
            siblings.append(sibling)
        return {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": sha,
            "lastModified": _FAKE_DATE,
            "createdAt": _FAKE_DATE,
            "private": False,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }


def _base_url(server: Any) -> str:
    """``http://HOST:PORT`` of a listening server, no trailing slash."""
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"
