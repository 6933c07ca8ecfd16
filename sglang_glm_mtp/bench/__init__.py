"""``sglang-glm-mtp bench``: measure a running SGLang server with SGLang's own clients.

GSM8K accuracy comes from ``sglang.test.few_shot_gsm8k``, throughput from
``sglang.bench_serving`` (``sglang.benchmark.serving`` in 0.5.23), accept length from
``/server_info``. This package only sequences them, collects their numbers and writes
``summary.md`` / ``results.json`` / plots. Nothing here imports SGLang at import time.
"""

from __future__ import annotations

from .errors import BenchError, SGLangMissing, ServerUnreachable

__all__ = ["BenchError", "SGLangMissing", "ServerUnreachable"]
