"""The package's one error hierarchy: every error raised on purpose is a ``GlmMtpError``.

The CLI turns one into a single line and its ``exit_code``, never a traceback. ``file`` and ``key``
say where the fault is (a file name such as ``config.json``, and the field or entry inside it) so
callers branch on fields instead of parsing messages. Errors SGLang's own code may catch by builtin
type keep that type as a second base (``ValueError`` for argument errors, ``RuntimeError`` for load
failures), so a plugin error is still what SGLang and its users expect.
"""

from __future__ import annotations


class GlmMtpError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = 2

    def __init__(self, message: str = "", *, file: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        #: the file the fault is in (a name relative to the checkpoint, e.g. ``config.json``), when known
        self.file = file
        #: the field, entry or tensor inside ``file``, when known
        self.key = key


class CheckpointUnreadable(GlmMtpError):
    """The input is not a checkpoint we can read: no such dir/repo, no config.json, broken JSON."""


class UsageError(GlmMtpError):
    """A flag combination or argument that cannot work."""


class GraftError(GlmMtpError):
    """Graft refused or failed; the target is left as it was."""

    exit_code = 1
