"""Run SGLang's benchmark clients without letting them take over the terminal.

``few_shot_gsm8k`` and ``bench_serving`` print their results, draw tqdm bars, warn about
their own deprecation and write files into the current directory
(``tmp_output_gsm8k.txt``; ``bench_serving``'s default ``--output-file``). The harness
sends all of that to a log file per phase, next to the report, and keeps stdout for
``cli_bench``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Iterator

from .errors import SGLangMissing

logger = logging.getLogger(__name__)


def require_sglang() -> None:
    """Fail in one line, before any work, when SGLang is not importable here."""
    import importlib.util

    if importlib.util.find_spec("sglang") is None:
        raise SGLangMissing("SGLang is not installed in this Python; bench drives SGLang's own "
                            "clients: pip install '.[sglang]' in a checkout of sglang-glm-mtp")


def import_sglang(name: str) -> ModuleType:
    """Import an SGLang module, keeping its import-time prints and warnings off the terminal."""
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except ImportError as exc:
        raise SGLangMissing(f"cannot import {name} ({exc}); bench needs SGLang 0.5.23: "
                            "pip install '.[sglang]' in a checkout of sglang-glm-mtp") from None
    finally:
        if sink.getvalue().strip():
            logger.debug("import %s said: %s", name, sink.getvalue().strip())


@contextlib.contextmanager
def sglang_output(log_path: Path, *, cwd: Path | None = None) -> Iterator[None]:
    """Redirect stdout/stderr (prints, tqdm, warnings) to ``log_path`` (new); optionally chdir.

    Process-wide, like SGLang's clients themselves (module-level ``args``, global default
    backend): the harness runs one phase at a time.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    old_cwd = os.getcwd()
    with open(log_path, "w", encoding="utf-8") as sink, warnings.catch_warnings(), \
            contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        # Filters stay as they are: enabling DeprecationWarning here makes SWIG modules that
        # SGLang imports lazily (sentencepiece) print a stray "sys:1" warning at exit.
        if cwd is not None:
            os.chdir(cwd)
        try:
            yield
        finally:
            os.chdir(old_cwd)


def last_lines(log_path: Path, count: int = 1) -> str:
    """The last non-empty lines of a phase log, to quote in a one-line error."""
    try:
        lines = [ln.strip() for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return ""
    return " | ".join([ln for ln in lines if ln][-count:])
