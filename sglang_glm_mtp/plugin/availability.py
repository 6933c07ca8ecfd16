"""Which behaviours this SGLang can carry: hook targets are checked before they are registered.

A target missing on the running SGLang is never handed to SGLang's hook registry (which would
log an ERROR with a traceback in every process); the behaviour it carries is recorded here
instead, with one WARNING per process that uses it (the main process for targets every
process checks at plugin load; spawned children log those at DEBUG). Server info shows the
record (``unavailable``); strict mode refuses the launch naming the targets.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from typing import Any

from ..errors import GlmMtpError
from . import targets

logger = logging.getLogger(__name__)


class UnsupportedOnThisSGLang(GlmMtpError, RuntimeError):
    """The checkpoint needs a behaviour this SGLang release cannot carry (docs/supported-versions.md)."""

_lock = threading.Lock()
#: behaviour -> {"targets": [...], "lost": [...], "why": [...]}
_unavailable: dict[str, dict[str, list[str]]] = {}
_warned_version = False


def is_main_process() -> bool:
    """SGLang spawns its schedulers, detokenizer and DP controller with multiprocessing: they have a parent."""
    return multiprocessing.parent_process() is None


def version_warning() -> str | None:
    """One WARNING per launch (main process) for an SGLang outside the tested range; returns its text."""
    global _warned_version
    version = targets.sglang_version()
    if targets.in_tested_range(version):
        return None
    message = (f"glm_mtp: SGLang {version} is outside the tested range {targets.TESTED_RANGE} "
               f"(tested: {', '.join(targets.TESTED_RELEASES)}); every behaviour whose hook targets exist is kept, "
               "the others are listed in the next warnings and in /server_info (docs/supported-versions.md)")
    with _lock:
        first, _warned_version = not _warned_version, True
    if first:
        logger.log(logging.WARNING if is_main_process() else logging.DEBUG, "%s", message)
    return message


def hook_name(name: str, *, every_process: bool = False) -> str | None:
    """The name to hook for ``name`` on the running SGLang: itself, or the other name the target table gives for
    this release (``Target.before``); None when neither exists (recorded and warned as in ``present``)."""
    if targets.resolve(name)[1] is None:
        return name
    other, _ = targets.expected_on(targets.target(name), targets.sglang_version())
    if other not in (None, name) and targets.resolve(other)[1] is None:
        logger.debug("glm_mtp: SGLang %s has %s as %s (target table)", targets.sglang_version(), name, other)
        return other
    return name if present(name, every_process=every_process) else None


def present(name: str, *, every_process: bool = False) -> bool:
    """Does ``name`` exist on the running SGLang? If not, record what is lost and warn once.

    ``every_process``: the check runs at plugin load in every SGLang process, so only the
    main process warns; a lazy target (checked in the scheduler building the draft) warns there.
    """
    obj, why = targets.resolve(name)
    if why is None:
        return True
    mark_unavailable(name, why, warn=not every_process or is_main_process())
    return False


def mark_unavailable(name: str, why: str, *, warn: bool = True) -> None:
    entry = targets.target(name)
    with _lock:
        new = False
        for behaviour in entry.behaviours:
            record = _unavailable.setdefault(behaviour, {"targets": [], "lost": [], "why": []})
            if name not in record["targets"]:
                new = True
                record["targets"].append(name)
                record["why"].append(why)
                if entry.loses and entry.loses not in record["lost"]:
                    record["lost"].append(entry.loses)
    if not new:
        return
    _, note = targets.expected_on(entry, targets.sglang_version())
    level = logging.WARNING if warn else logging.DEBUG
    logger.log(level, "glm_mtp: SGLang %s has no %s (%s); not hooked, so this behaviour is unavailable: %s%s "
               "(docs/supported-versions.md)", targets.sglang_version(), name, why,
               entry.loses or ", ".join(targets.BEHAVIOURS[b] for b in entry.behaviours),
               f". {note}" if note else "")


def unavailable() -> dict[str, dict[str, list[str]]]:
    """behaviour -> targets missing and what is lost; msgpack-safe builtins (server info carries it over ZMQ)."""
    with _lock:
        return {b: {k: list(v) for k, v in record.items()} for b, record in _unavailable.items()}


def missing_targets() -> list[str]:
    with _lock:
        return list(dict.fromkeys(t for record in _unavailable.values() for t in record["targets"]))


def summary() -> dict[str, Any]:
    """What server info shows: nothing when every behaviour is available on a tested SGLang."""
    out: dict[str, Any] = {}
    version = targets.sglang_version()
    if not targets.in_tested_range(version):
        out["sglang_untested"] = {"version": version, "tested_range": targets.TESTED_RANGE}
    lost = unavailable()
    if lost:
        out["unavailable"] = lost
    return out


def _reset_for_tests() -> None:
    global _warned_version
    with _lock:
        _unavailable.clear()
        _warned_version = False


def require(name: str, what: str) -> None:
    """Raise ``UnsupportedOnThisSGLang`` naming the release and the table's reason when ``name`` is absent."""
    if present(name):
        return
    entry = targets.target(name)
    _, note = targets.expected_on(entry, targets.sglang_version())
    raise UnsupportedOnThisSGLang(
        f"glm_mtp: {what} needs SGLang {entry.since or 'with ' + name}+ (running {targets.sglang_version()}): "
        f"{note or entry.loses}. Upgrade SGLang, or store the draft layer in BF16 (sglang-glm-mtp graft)")
