"""Errors of ``bench``: each becomes one line on stderr and exit code 2 in the CLI."""

from __future__ import annotations

from ..errors import GlmMtpError


class BenchError(GlmMtpError):
    """The benchmark cannot run or cannot finish (bad input, server errors, SGLang refused)."""


class ServerUnreachable(BenchError):
    """Nothing answers at ``--base-url``, or what answers is not an SGLang server."""


class SGLangMissing(BenchError):
    """The harness drives SGLang's own benchmark clients, so SGLang must be importable here."""
