"""Where a checkpoint's files come from: a local directory or a Hugging Face Hub repo.

Both kinds answer the same small set of questions (list files, sizes, small JSON files,
seekable binary streams), so inspection and graft never care which one they read. The
Hub side goes through huggingface_hub's ``HfFileSystem``, whose file objects issue
HTTP Range requests: reading a header or one tensor never downloads a whole shard.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Protocol
from urllib.parse import quote

from ..errors import CheckpointUnreadable
from .files import CONFIG_FILE, INDEX_FILE, SINGLE_FILE
from .jsonio import loads as json_loads
from .jsonio import loads_index

logger = logging.getLogger(__name__)

_HUB_REPO = r"[A-Za-z0-9][\w.\-]*/[\w.\-]+"
_HUB_ID = re.compile(rf"^(?P<repo>{_HUB_REPO})(?:@(?P<rev>[^\s]+))?$")


def is_hub_repo_id(name: str) -> bool:
    """``org/name`` as the Hub spells a repo id (no revision): the one rule for "is this a Hub id?"."""
    return re.fullmatch(_HUB_REPO, name) is not None


class CheckpointSource(Protocol):
    """Read-only access to one checkpoint's top-level files."""

    @property
    def display(self) -> str: ...

    @property
    def is_remote(self) -> bool: ...

    def list_files(self) -> dict[str, int]:
        """Top-level file name -> size in bytes."""

    def read_json(self, name: str) -> Any | None:
        """Parsed JSON of a small file, or None when it does not exist."""

    def open(self, name: str) -> BinaryIO:
        """A seekable binary stream; the caller closes it."""

    def local_path(self, name: str) -> Path | None:
        """The file on local disk, when there is one (enables copy_file_range)."""


@dataclass
class LocalCheckpoint:
    root: Path
    #: keeps the decoded index for a second reader of the same copy (the preflight's cache check, then its
    #: inspection); None: decode on every read, so no caller ever sees another caller's mutations
    index_memo: dict[str, Any] | None = None

    @property
    def display(self) -> str:
        return str(self.root)

    @property
    def is_remote(self) -> bool:
        return False

    def list_files(self) -> dict[str, int]:
        files: dict[str, int] = {}
        try:
            with os.scandir(self.root) as entries:
                for entry in entries:
                    try:
                        if entry.is_file():  # follows symlinks, as SGLang's glob does
                            files[entry.name] = entry.stat().st_size
                    except OSError as exc:  # e.g. a dangling symlink into a deleted cache blob
                        logger.warning("%s/%s is unreadable and left out: %s", self.root, entry.name, exc)
        except OSError as exc:
            raise CheckpointUnreadable(f"cannot list {self.root} ({exc.strerror or exc}); check its permissions")
        return files

    def read_json(self, name: str) -> Any | None:
        if self.index_memo is not None and name in self.index_memo:
            return self.index_memo[name]
        data = self.read_bytes(name)
        if data is None:
            return None
        try:
            doc = decode_json(name, data, self.list_files)
        except ValueError as exc:  # includes UnicodeDecodeError
            raise CheckpointUnreadable(f"{self.root / name} is not valid JSON ({_first_line(exc)}); "
                                       "re-download it or restore it from the original release") from None
        if self.index_memo is not None and name == INDEX_FILE:
            self.index_memo[name] = doc
        return doc

    def read_bytes(self, name: str) -> bytes | None:
        path = self.root / name
        if not path.is_file():
            return None
        try:
            return path.read_bytes()
        except OSError as exc:
            raise CheckpointUnreadable(f"cannot read {path} ({exc.strerror or exc})") from None

    def open(self, name: str) -> BinaryIO:
        return open(self.root / name, "rb")

    def local_path(self, name: str) -> Path | None:
        return self.root / name


class HubCheckpoint:
    """A Hub repo read through ``HfFileSystem`` (range reads, no whole-shard downloads)."""

    def __init__(self, repo_id: str, revision: str | None = None, *, endpoint: str | None = None,
                 token: str | bool | None = None, tried_locally: bool = False) -> None:
        from huggingface_hub import HfFileSystem

        self.repo_id = repo_id
        self.revision = revision
        #: the name was first looked for as a local directory (``open_checkpoint``): errors say it is not one
        self.tried_locally = tried_locally
        self.fs = HfFileSystem(endpoint=endpoint, token=token)
        rev = f"@{quote(revision, safe='')}" if revision else ""
        self._root = f"{repo_id}{rev}"
        self._listing: dict[str, int] | None = None

    @property
    def display(self) -> str:
        return f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id

    @property
    def is_remote(self) -> bool:
        return True

    def _path(self, name: str) -> str:
        return f"{self._root}/{name}"

    def list_files(self) -> dict[str, int]:
        if self._listing is None:
            try:
                entries = self.fs.ls(self._root, detail=True, refresh=True)
            except Exception as exc:  # huggingface_hub raises many error types; all mean "unreadable"
                raise CheckpointUnreadable(hub_error(self.display, exc, tried_locally=self.tried_locally)) from None
            self._listing = {e["name"].rsplit("/", 1)[-1]: int(e.get("size") or 0)
                             for e in entries if e.get("type") == "file"}
        return self._listing

    def read_json(self, name: str) -> Any | None:
        raw = self.read_bytes(name)
        if raw is None:
            return None
        try:
            return decode_json(name, raw, self.list_files)
        except ValueError as exc:
            raise CheckpointUnreadable(f"{self.display}/{name} is not valid JSON ({_first_line(exc)}); "
                                       "the repo itself is broken, tell its owner") from None

    def read_bytes(self, name: str) -> bytes | None:
        if name not in self.list_files():
            return None
        try:
            return self.fs.cat_file(self._path(name))
        except Exception as exc:
            raise CheckpointUnreadable(hub_error(f"{self.display}/{name}", exc)) from None

    def open(self, name: str) -> BinaryIO:
        # A small read-ahead block keeps a header read to a few KB past the header itself.
        return self.fs.open(self._path(name), "rb", block_size=64 << 10)  # type: ignore[return-value]

    def local_path(self, name: str) -> Path | None:
        return None


def decode_json(name: str, data: bytes, list_files: Callable[[], dict[str, int]]) -> Any:
    """One checkpoint JSON file; the index through the decoder that knows its shard names (jsonio)."""
    if name == INDEX_FILE:
        return loads_index(data, (f for f in list_files() if f.endswith(".safetensors")))
    return json_loads(data)


def read_text(source: CheckpointSource, name: str, limit: int = 1 << 20) -> str | None:
    """A small text file (e.g. README.md) from any source, or None when absent, too big or unreadable."""
    size = source.list_files().get(name)
    if size is None or size > limit:
        return None
    reader = getattr(source, "read_bytes", None)
    path = source.local_path(name)
    try:
        data = reader(name) if reader is not None else (path.read_bytes() if path is not None else None)
    except (OSError, CheckpointUnreadable) as exc:
        logger.info("cannot read %s/%s: %s", source.display, name, exc)
        return None
    return data.decode("utf-8", errors="replace") if data is not None else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def hub_error(what: str, exc: BaseException, *, tried_locally: bool = False) -> str:
    """One line for a failed Hub read, chosen by the type of what huggingface_hub raised.

    ``HfFileSystem`` raises ``FileNotFoundError`` *from* ``RepositoryNotFoundError`` (``GatedRepoError``
    too) or ``RevisionNotFoundError``; ``OfflineModeIsEnabled`` (a ``ConnectionError``) under
    ``HF_HUB_OFFLINE``; httpx's transport errors when the endpoint cannot be reached. ``tried_locally``:
    ``what`` was first looked for as a local directory and is not one, so the line says that too.
    """
    from huggingface_hub.errors import OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError

    causes = _causes(exc)
    cause = exc.__cause__ or exc
    kind = type(cause).__name__
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else kind
    if any(isinstance(c, RepositoryNotFoundError) for c in causes):
        return f"no such Hub repo or local directory: {what}"
    if any(isinstance(c, RevisionNotFoundError) for c in causes):
        return f"no such revision on the Hub: {what}"
    if not tried_locally:
        return f"cannot read {what} from the Hub ({kind}: {first_line})"
    if any(isinstance(c, OfflineModeIsEnabled) for c in causes):
        return (f"no local directory {what}, and offline mode is on ({HF_OFFLINE_ENV} is set), so the Hub was not "
                "asked for a repo of that name")
    if any(isinstance(c, _unreachable()) for c in causes):
        return (f"no local directory {what}, and the Hub cannot be reached to look for a repo of that name "
                f"({kind}: {first_line})")
    return f"no local directory {what}, and cannot read it from the Hub ({kind}: {first_line})"


#: huggingface_hub's switch for "never ask the Hub" (its own constant, HF_HUB_OFFLINE).
HF_OFFLINE_ENV = "HF_HUB_OFFLINE"


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what raised it, following ``raise ... from`` (HfFileSystem wraps Hub errors this way)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__
    return chain


def _unreachable() -> tuple[type[BaseException], ...]:
    """The errors that mean "the endpoint did not answer": httpx's (huggingface_hub 1.x) and the builtins."""
    import httpx

    return (httpx.NetworkError, httpx.TimeoutException, httpx.ProxyError, ConnectionError, TimeoutError)


def open_checkpoint(spec: str, *, endpoint: str | None = None) -> CheckpointSource:
    """A local directory if ``spec`` names one, otherwise a Hub id ``org/name[@revision]``."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return LocalCheckpoint(path.resolve())
    if path.exists():
        raise CheckpointUnreadable(f"{spec} is a file; expected a checkpoint directory or a Hub id org/name")
    match = _HUB_ID.match(spec)
    if match is None or spec.startswith((".", "/", "~")):
        raise CheckpointUnreadable(f"no such directory: {spec}")
    return HubCheckpoint(match["repo"], match["rev"], endpoint=endpoint, tried_locally=True)


def resolve_cached_hub_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The local cache folder of a Hub repo, without any network access (for the plugin preflight)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except Exception as exc:  # not cached, or cache damaged: the caller decides what that means
        logger.debug("no cached snapshot for %s@%s: %s", repo_id, revision, exc)
        return None


def cache_holds_checkpoint(cache: LocalCheckpoint) -> tuple[bool, str]:
    """(complete, why): does this snapshot folder hold config.json and every weight file the index names?

    Reads only the index (small JSON); a malformed index is "not provably complete", not an error.
    With an ``index_memo`` on ``cache``, the decoded index stays there for the inspection that follows.
    """
    folder = cache.root
    if not (folder / CONFIG_FILE).is_file():
        return False, "no config.json in the cache"
    if (folder / INDEX_FILE).is_file():
        try:
            weight_map = cache.read_json(INDEX_FILE).get("weight_map")
            shards = {str(v) for v in weight_map.values()}
        except (CheckpointUnreadable, AttributeError, TypeError) as exc:  # unreadable, not JSON, or not a mapping of
            # names to shards: the full inspection reports it, the cache proves nothing
            return False, f"the cached {INDEX_FILE} is unreadable ({type(exc).__name__})"
        absent = sorted(s for s in shards if not (folder / s).is_file())
        if absent:
            return False, f"{len(absent)} of {len(shards)} shards not downloaded yet"
        return True, f"all {len(shards)} shards cached"
    if (folder / SINGLE_FILE).is_file():
        return True, f"{SINGLE_FILE} cached"
    return False, "no index and no weights in the cache"
