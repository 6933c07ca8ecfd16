"""Read a running SGLang server: what it serves, how it drafts, and its accept length.

SGLang keeps ``avg_spec_accept_length`` as a lifetime ratio (accepted tokens / verify
steps, bonus token included) per scheduler, reported in ``/server_info`` under
``internal_states[rank]``; ``/flush_cache`` on an idle server resets it. So the harness
flushes before each measured phase and reads the ratio after it: the number then covers
exactly that phase. Only the standard library is used here, so an unreachable server is
reported before SGLang (10+ s to import) is loaded.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from .errors import BenchError, ServerUnreachable

logger = logging.getLogger(__name__)

#: SGLang 0.5.23 serves both; ``/get_server_info`` is the deprecated spelling users know.
SERVER_INFO_PATHS = ("/server_info", "/get_server_info")
MODEL_INFO_PATHS = ("/model_info", "/get_model_info")


def normalize_base_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash, or a BenchError."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BenchError(f"--base-url must look like http://HOST:PORT, got {url!r}")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _request(url: str, *, method: str = "GET", timeout: float) -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read() or b""


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return str(reason).strip() or type(exc).__name__


def fetch_server_info(base_url: str, *, timeout: float = 10.0) -> dict[str, Any]:
    """``GET /server_info`` (falling back to ``/get_server_info``); unreachable -> ServerUnreachable."""
    statuses = []
    for path in SERVER_INFO_PATHS:
        try:
            status, body = _request(base_url + path, timeout=timeout)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ServerUnreachable(f"cannot reach an SGLang server at {base_url}: {_reason(exc)}") from None
        if status == 200:
            try:
                doc = json.loads(body)
            except ValueError:
                raise ServerUnreachable(f"{base_url}{path} did not return JSON: not an SGLang server?") from None
            if isinstance(doc, dict):
                return doc
        statuses.append(f"GET {path} -> HTTP {status}")
    raise ServerUnreachable(f"{base_url} does not look like an SGLang server ({'; '.join(statuses)})")


def fetch_model_info(base_url: str, *, timeout: float = 10.0) -> dict[str, Any]:
    """``/model_info`` (or the deprecated ``/get_model_info``): model and tokenizer paths."""
    for path in MODEL_INFO_PATHS:
        try:
            status, body = _request(base_url + path, timeout=timeout)
            if status == 200:
                doc = json.loads(body)
                if isinstance(doc, dict):
                    return doc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            logger.info("GET %s%s failed: %s", base_url, path, _reason(exc))
    return {}


def flush_cache(base_url: str, *, timeout: float = 60.0) -> bool:
    """Reset the server's radix cache and, with it, its lifetime accept-length counters.

    SGLang only flushes an idle server (it waits up to ``timeout`` seconds for one); a busy
    server answers 400 and the next accept length then also covers earlier traffic.
    """
    try:
        status, body = _request(f"{base_url}/flush_cache?timeout={timeout:g}", method="POST",
                                timeout=timeout + 10)
    except (urllib.error.URLError, OSError) as exc:
        logger.warning("POST /flush_cache failed (%s): accept length may include earlier traffic", _reason(exc))
        return False
    if status != 200:
        logger.warning("POST /flush_cache -> HTTP %s (%s): accept length may include earlier traffic",
                       status, body[:200].decode("utf-8", "replace").strip())
        return False
    return True


def scheduler_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """The part of server info that has ``internal_states`` (a PD router nests it under ``decode``)."""
    decode = doc.get("decode")
    if isinstance(decode, list) and decode and isinstance(decode[0], dict):
        return decode[0]
    return doc


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class ServerInfo:
    """What the server says it is: enough to label a report and derive accept rate."""

    base_url: str
    version: str | None = None
    model_path: str | None = None
    served_model_name: str | None = None
    tokenizer_path: str | None = None
    speculative_algorithm: str | None = None
    num_steps: int | None = None
    eagle_topk: int | None = None
    num_draft_tokens: int | None = None
    tp_size: int | None = None
    dp_size: int | None = None
    quantization: str | None = None
    moe_runner_backend: str | None = None
    draft_moe_runner_backend: str | None = None
    context_length: int | None = None
    #: ``internal_states[0]["glm_mtp"]`` when this package's plugin runs in the server.
    plugin: dict[str, Any] | None = None

    @property
    def speculative(self) -> bool:
        return bool(self.speculative_algorithm) and self.speculative_algorithm.upper() != "NONE"

    @property
    def draft_steps(self) -> int | None:
        """Tokens drafted per verify step: ``speculative_num_steps`` (or draft tokens - 1)."""
        if self.num_steps:
            return self.num_steps
        return self.num_draft_tokens - 1 if self.num_draft_tokens and self.num_draft_tokens > 1 else None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_server_info(doc: dict[str, Any], base_url: str, model_info: dict[str, Any] | None = None) -> ServerInfo:
    """Pick the fields the report needs; unknown or missing fields stay None."""
    sched = scheduler_doc(doc)
    model_info = model_info or {}
    states = sched.get("internal_states") or []
    first = states[0] if states and isinstance(states[0], dict) else {}
    plugin = first.get("glm_mtp")
    return ServerInfo(
        base_url=base_url,
        version=_str(doc.get("version")) or _str(sched.get("version")),
        model_path=_str(model_info.get("model_path")) or _str(sched.get("model_path")),
        served_model_name=_str(model_info.get("served_model_name")) or _str(sched.get("served_model_name")),
        tokenizer_path=_str(model_info.get("tokenizer_path")) or _str(sched.get("tokenizer_path")),
        speculative_algorithm=_str(sched.get("speculative_algorithm")),
        num_steps=_int(sched.get("speculative_num_steps")),
        eagle_topk=_int(sched.get("speculative_eagle_topk")),
        num_draft_tokens=_int(sched.get("speculative_num_draft_tokens")),
        tp_size=_int(sched.get("tp_size")),
        dp_size=_int(sched.get("dp_size")),
        quantization=_str(sched.get("quantization")),
        moe_runner_backend=_str(sched.get("moe_runner_backend")),
        draft_moe_runner_backend=_str(sched.get("speculative_moe_runner_backend")),
        context_length=_int(sched.get("context_length")),
        plugin=plugin if isinstance(plugin, dict) else None,
    )


def rank_accept_lengths(doc: dict[str, Any]) -> list[float]:
    """``avg_spec_accept_length`` of every scheduler (DP rank) that has one.

    SGLang omits the key until a rank has run a verify step (and on non-speculative servers).
    """
    values = []
    for state in scheduler_doc(doc).get("internal_states") or []:
        value = state.get("avg_spec_accept_length") if isinstance(state, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            values.append(float(value))
    return values


def derive_accept_rate(accept_length: float | None, num_steps: int | None) -> float | None:
    """Fraction of drafted tokens the target accepted: ``(accept_length - 1) / num_steps``.

    Accept length counts the bonus token every verify step yields, so ``accept_length - 1``
    is the drafted tokens accepted per step, out of ``num_steps`` drafted. For chain
    drafting (``topk = 1``, what NEXTN uses; ``num_draft_tokens = num_steps + 1``) this is
    SGLang's own per-request ``spec_accept_rate`` (correct drafts / (verify steps x
    (num_draft_tokens - 1))).
    """
    if accept_length is None or not num_steps or num_steps <= 0:
        return None
    return max(0.0, (accept_length - 1.0) / num_steps)


@dataclass
class AcceptStats:
    """Accept length of one measured phase, from the server and, where present, per request."""

    #: Mean over DP ranks of ``avg_spec_accept_length`` after the phase (None: not speculative).
    server_avg: float | None = None
    per_rank: list[float] = field(default_factory=list)
    #: Mean of the per-request ``meta_info.spec_accept_length`` values.
    per_request_mean: float | None = None
    #: Per-request values weighted by output tokens (total tokens / total verify steps):
    #: the same ratio as the server's, for these requests only.
    per_request_weighted: float | None = None
    per_request_count: int = 0
    accept_rate: float | None = None

    @property
    def value(self) -> float | None:
        """The accept length to show: the server's if it reported one, else the requests'."""
        return self.server_avg if self.server_avg is not None else self.per_request_weighted

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "value": self.value}


def accept_stats(doc: dict[str, Any] | None, server: ServerInfo,
                 per_request: Sequence[tuple[int, float]] = ()) -> AcceptStats:
    """Combine server counters and per-request ``(output_tokens, spec_accept_length)`` pairs."""
    ranks = rank_accept_lengths(doc) if doc else []
    stats = AcceptStats(server_avg=sum(ranks) / len(ranks) if ranks else None, per_rank=ranks)
    pairs = [(n, a) for n, a in per_request if n > 0 and a and a > 0]
    if pairs:
        stats.per_request_count = len(pairs)
        stats.per_request_mean = sum(a for _, a in pairs) / len(pairs)
        stats.per_request_weighted = sum(n for n, _ in pairs) / sum(n / a for n, a in pairs)
    stats.accept_rate = derive_accept_rate(stats.value, server.draft_steps)
    return stats
