"""The SGLang plugin ``glm_mtp`` (entry point group ``sglang.srt.plugins``).

One folder holds every line that touches SGLang, so supporting a new SGLang version
means editing this folder (``targets.py`` lists every hook target). Behaviour,
one module each: ``preflight`` (refuse a missing draft at startup), ``coverage``
(verify the draft's parameters after load), ``draft_precision`` (build the draft as
stored), ``resolution`` (+ ``runner_rules``: pick the draft MoE runner), ``cli_flag``
and ``strict`` (``--enable-plugin``), ``server_info``, ``canary``, ``upstream``
(stand down where SGLang has the fix). ``state`` is the record they share on SGLang's
ServerArgs. The demo (``sglang_glm_mtp/demo/``) is the only other door to SGLang.
"""

from __future__ import annotations


def register() -> None:
    """Entry point called by SGLang's ``load_plugins()`` in every process; idempotent."""
    from .registration import register as _register

    _register()
