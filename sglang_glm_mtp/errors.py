"""Errors the CLI turns into one clear line and an exit code, never a traceback."""

from __future__ import annotations


class GlmMtpError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = 2


class CheckpointUnreadable(GlmMtpError):
    """The input is not a checkpoint we can read: no such dir/repo, no config.json, broken JSON."""


class UsageError(GlmMtpError):
    """A flag combination or argument that cannot work."""


class GraftError(GlmMtpError):
    """Graft refused or failed; the target is left as it was."""

    exit_code = 1
