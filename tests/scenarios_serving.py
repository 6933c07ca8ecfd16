"""Serving-time scenarios against the real SGLang 0.5.23: server info and the accept-length canary.

Run as ``python tests/scenarios_serving.py <family> '<json params>'`` in a fresh process
(plugins load once per process, hooks cannot be removed). Prints one ``RESULT:`` line.

Real: plugin discovery through the entry point (``load_plugins``), resolution as
launch_server does it, ``build_server_info`` (through the ``sglang.srt.utils`` binding
the HTTP server imports), the pickled record a scheduler receives and its ``publish``,
``SchedulerMetricsReporter.update_spec_metrics`` called the way
``process_batch_result_decode`` calls it, ``Scheduler.get_internal_state`` with SGLang's
own ``SchedulerInternalStateController``. Faked, because they need a GPU or a running
scheduler: the GPU generation (as in scenarios_resolution.py), the reporter built with
``object.__new__`` (its ``__post_init__`` needs a live Scheduler) and the scheduler
attributes the controller reads (memory figures, worker handles).
"""

from __future__ import annotations

import logging
import os
import pickle
import types
from typing import Any

from scenarios_resolution import resolve

CANARY_LOGGER = "sglang_glm_mtp.plugin.canary"


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelname, record.getMessage()))

    def take(self) -> list[tuple[str, str]]:
        out, self.records = self.records, []
        return [r for r in out if r[0] in ("ERROR", "WARNING")]


def _resolve_dotted(target: str) -> Any:
    """``pkg.module.Class.attr`` -> the object SGLang's code would call."""
    import importlib

    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(target)


def _start() -> _Capture:
    from sglang.srt.plugins import load_plugins

    load_plugins()
    capture = _Capture()
    logger = logging.getLogger(CANARY_LOGGER)
    logger.addHandler(capture)
    logger.setLevel(logging.DEBUG)
    return capture


def _as_scheduler(server_args: Any) -> None:
    """What a spawned scheduler has: the pickled record, published under the scheduler role."""
    from sglang.srt.runtime_context import SpawnRanks, publish

    publish(pickle.loads(pickle.dumps(server_args)), role="scheduler", ranks=SpawnRanks(world_rank=0, gpu_id=0))


def _reporter() -> Any:
    """The real reporter class; ``__post_init__`` needs a live Scheduler, so only its counters are set."""
    from sglang.srt.managers.scheduler_components.metrics_reporter import SchedulerMetricsReporter

    reporter = object.__new__(SchedulerMetricsReporter)
    reporter.spec_num_accept_tokens = reporter.spec_num_correct_drafts = reporter.spec_num_forward_ct = 0
    reporter.spec_num_block_accept_tokens = reporter.spec_num_cap_tokens = 0
    reporter.spec_total_num_accept_tokens = reporter.spec_total_num_forward_ct = 0
    reporter.is_stats_logging_rank = True
    reporter.last_gen_throughput = 0.0
    return reporter


def _verify_steps(reporter: Any, steps: int, bs: int, accept_length: float) -> None:
    """As batch_result_processor.process_batch_result_decode calls it (num_non_draft_tokens_per_req = 1)."""
    num_accept_tokens = round(bs * accept_length)
    for _ in range(steps):
        reporter.update_spec_metrics(bs, num_accept_tokens - bs, num_accept_tokens=num_accept_tokens,
                                     num_block_accept_tokens=0, num_cap_tokens=0)


def _internal_state(reporter: Any) -> dict[str, Any]:
    """The real ``Scheduler.get_internal_state`` and controller on a scheduler with just the attributes they read."""
    import msgspec
    from sglang.srt.managers.io_struct import GetInternalStateReq
    from sglang.srt.managers.scheduler import Scheduler
    from sglang.srt.managers.scheduler_components.internal_state import SchedulerInternalStateController
    from sglang.srt.runtime_context import get_spec
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    ns = types.SimpleNamespace
    scheduler = ns(
        metrics_reporter=reporter, startup_time=1.0, max_running_requests=48, draft_worker=None, rust_server=None,
        tp_worker=ns(model_runner=ns(weight_load_mem_usage=1.0), graph_memory_usage=None),
        token_to_kv_pool_allocator=ns(get_kvcache=lambda: ns(mem_usage=2.0)), startup_available_gpu_memory_gb=80.0,
        max_total_num_tokens=1000, swa_tokens_per_layer=None,
        spec_algorithm=SpeculativeAlgorithm.from_string(get_spec().speculative_algorithm))
    scheduler.internal_state = SchedulerInternalStateController(scheduler, record_step_time=False)
    reply = Scheduler.get_internal_state(scheduler, GetInternalStateReq())
    msgspec.msgpack.encode(reply)  # what send_control_output does with it: must be msgpack-safe
    state = reply.internal_state
    return {"glm_mtp": state.get("glm_mtp"), "avg_spec_accept_length": state.get("avg_spec_accept_length"),
            "has_resolved_fields": "speculative_algorithm" in state, "keys": sorted(state)}


def _http_server_info_keys() -> list[str]:
    """Keys the /server_info route adds around ``build_server_info`` (read from the route's own source)."""
    import inspect
    import re

    import sglang.srt.entrypoints.http_server as http_server

    source = inspect.getsource(http_server.server_info)
    return sorted(set(re.findall(r'^\s*"(\w+)":', source, flags=re.M)))


def _spec_meta_keys() -> list[str]:
    """The meta_info keys SGLang's own tokenizer manager adds for one finished speculative request."""
    from sglang.srt.managers.tokenizer_manager import TokenizerManager

    meta: dict[str, Any] = {}
    recv = types.SimpleNamespace(spec_verify_ct=[5], spec_num_correct_drafts=[10], completion_tokens=[15],
                                 spec_num_cap_tokens=None, spec_num_block_accept_tokens=None,
                                 spec_correct_drafts_histogram=None, spec_cap_lens_histogram=None)
    TokenizerManager._calculate_spec_decoding_metrics(object.__new__(TokenizerManager), meta, recv, 0)
    return sorted(meta)


def family_serving(params: dict[str, Any]) -> dict[str, Any]:
    """Main-process server info, then the canary through a scheduler's view of the same launch."""
    capture = _start()
    import sglang.srt.utils as sglang_utils
    from sglang.srt.plugins.hook_registry import HookRegistry
    from sglang.srt.utils import common

    from sglang_glm_mtp.plugin import canary
    from sglang_glm_mtp.plugin.settings import CanarySettings

    from sglang_glm_mtp.plugin.registration import CANARY_TARGET, SERVER_INFO_TARGET

    out: dict[str, Any] = {"patched": sorted(HookRegistry._patched),
                           "canary_settings": canary.canary_snapshot(),
                           "hooked": {t: hasattr(_resolve_dotted(t), "__wrapped__")
                                      for t in (SERVER_INFO_TARGET, CANARY_TARGET)}}
    server_args = resolve(["--model-path", params["ready"], "--device", "cuda", "--speculative-algorithm", "NEXTN",
                           "--quantization", "modelopt_fp4"], "sm100")
    # /server_info: http_server does `from sglang.srt.utils import build_server_info` (bound to the wrapper)
    info = sglang_utils.build_server_info(server_args, {"max_total_num_tokens": 1000})
    import sglang.srt.entrypoints.http_server as http_server

    out["real_keys"] = {"build_server_info": sorted(info), "http_route": _http_server_info_keys()}
    out["server_info"] = {"glm_mtp": info.get("glm_mtp"), "has_fields": "speculative_algorithm" in info,
                          "http_server_bound": http_server.build_server_info is common.build_server_info,
                          "wrapped": hasattr(common.build_server_info, "__wrapped__")}

    _as_scheduler(server_args)
    reporter = _reporter()
    phases: list[dict[str, Any]] = []
    for name, steps, bs, accept in params["phases"]:
        _verify_steps(reporter, steps, bs, accept)
        phases.append({"name": name, "logs": capture.take(), "snapshot": canary.canary_snapshot()})
    out["phases"] = phases
    out["sglang_counters"] = {"accept_tokens": reporter.spec_num_accept_tokens,
                              "forward_ct": reporter.spec_num_forward_ct}
    reporter.spec_total_num_accept_tokens, reporter.spec_total_num_forward_ct = 300, 100  # a folded log interval
    out["internal_state"] = _internal_state(reporter)
    out["real_keys"]["spec_meta_info"] = _spec_meta_keys()

    # A launch that skipped the preflight on a missing draft: the canary is the last line of defence.
    os.environ["SGLANG_GLM_MTP_SKIP_PREFLIGHT"] = "1"
    skipped = resolve(["--model-path", params["missing"], "--device", "cuda", "--speculative-algorithm", "NEXTN",
                       "--quantization", "modelopt_fp4"], "sm100")
    out["skipped_server_info"] = sglang_utils.build_server_info(skipped, {}).get("glm_mtp")
    _as_scheduler(skipped)
    canary.configure_canary(CanarySettings())  # the defaults: 1.2 after 200 verify steps
    capture.take()
    reporter = _reporter()
    _verify_steps(reporter, 199, 16, 1.0)
    out["skipped_before_warmup"] = {"logs": capture.take(), "snapshot": canary.canary_snapshot()}
    _verify_steps(reporter, 1, 16, 1.0)
    out["skipped_after_warmup"] = {"logs": capture.take(), "snapshot": canary.canary_snapshot()}
    return out


def family_canary_off(params: dict[str, Any]) -> dict[str, Any]:
    """SGLANG_GLM_MTP_CANARY=0: the hook stays installed (strict mode sees it) and does nothing."""
    capture = _start()
    from sglang.srt.plugins.hook_registry import HookRegistry

    from sglang_glm_mtp.plugin import canary

    server_args = resolve(["--model-path", params["ready"], "--device", "cuda", "--speculative-algorithm", "NEXTN",
                           "--quantization", "modelopt_fp4", "--enable-plugin", "glm_mtp"], "sm100")
    _as_scheduler(server_args)
    reporter = _reporter()
    _verify_steps(reporter, 500, 8, 1.0)
    return {"patched": sorted(HookRegistry._patched), "logs": capture.take(), "snapshot": canary.canary_snapshot(),
            "sglang_counters": {"accept_tokens": reporter.spec_num_accept_tokens,
                                "forward_ct": reporter.spec_num_forward_ct},
            "internal_state": _internal_state(reporter)}


FAMILIES = {"serving": family_serving, "canary_off": family_canary_off}

if __name__ == "__main__":
    from sglang_mode import scenario_main

    scenario_main(FAMILIES)
