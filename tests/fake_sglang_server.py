"""A loopback fake of the SGLang 0.5.23 HTTP server, for ``sglang-glm-mtp bench`` tests.

It serves exactly what SGLang's own clients use, so ``sglang.test.few_shot_gsm8k`` and
``sglang.benchmark.serving`` run unmodified against it:

* ``GET /server_info`` and ``/get_server_info``: resolved server args (speculative
  ``EAGLE`` - what ``NEXTN`` resolves to - 3 steps, topk 1, 4 draft tokens, TP 8,
  modelopt_fp4, flashinfer_cutlass) and ``internal_states[0]["avg_spec_accept_length"]``,
  a lifetime ratio (tokens / verify steps) omitted until a verify step ran, as in SGLang;
* ``GET /model_info``, ``/get_model_info`` (RuntimeEndpoint), ``/v1/models`` (bench_serving's
  readiness probe and model name), ``/health``;
* ``POST|GET /flush_cache``: resets the accept-length counters, as SGLang's does on an idle
  server;
* ``POST /generate``: SGLang's native API. Non-streaming for GSM8K (``{"text",
  "meta_info"}``); streaming SSE for bench_serving (``data: {...}`` with cumulative
  ``text`` and ``completion_tokens``, one event per verify step, then ``data: [DONE]``).
  ``max_new_tokens = 0`` (prefix caching) generates nothing. The final event carries
  ``spec_accept_length``, ``spec_accept_rate``, ``spec_verify_ct`` like SGLang's.

Canned answers: a GSM8K prompt (``... Question: Q\\nAnswer:``) is answered with the
dataset's own worked solution for known questions, a wrong final number for indices in
``wrong`` and no number at all for indices in ``invalid``, so accuracy is exact. Other
prompts get ``max_new_tokens`` words of filler (``ignore_eos`` as bench_serving asks).
Each request takes ``verify_ct = ceil(tokens / accept_length)`` verify steps, so the
server's accept length is exactly ``accept_length`` whenever it divides the output.
Only the standard library is used (plus tokenizers/transformers for the tiny tokenizer).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit

WORDS = (
    "the a an and of to in is it that for on with as was at by be this from or are not have had "
    "one two three four five six seven eight nine ten apples eggs dollars hours miles each per total "
    "more less than half twice day week she he they we answer so then left sold bought"
).split()

MODEL_PATH = "/models/GLM-5.2-NVFP4"


def make_tiny_tokenizer(path: Path) -> Path:
    """A word-level fast tokenizer over WORDS, saved as tokenizer.json + tokenizer_config.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{word: i + 1 for i, word in enumerate(dict.fromkeys(WORDS))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(str(path))
    return path


def read_gsm8k(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def gsm8k_label(answer: str) -> int:
    return int(re.findall(r"\d+", answer.replace(",", ""))[-1])


class FakeSGLangServer:
    """``with FakeSGLangServer(...) as fake: fake.url`` -> ``http://127.0.0.1:PORT``."""

    def __init__(self, *, gsm8k_rows: Sequence[dict[str, str]] = (), wrong: Sequence[int] = (),
                 invalid: Sequence[int] = (), accept_length: float = 3.2, gsm8k_accept_length: float = 3.5,
                 num_steps: int = 3, num_draft_tokens: int = 4, step_delay: float = 0.002,
                 speculative: bool = True, version: str = "0.5.23") -> None:
        self.rows = list(gsm8k_rows)
        self.by_question = {row["question"]: i for i, row in enumerate(self.rows)}
        self.wrong, self.invalid = set(wrong), set(invalid)
        self.accept_length, self.gsm8k_accept_length = accept_length, gsm8k_accept_length
        self.num_steps, self.num_draft_tokens = num_steps, num_draft_tokens
        self.step_delay = step_delay
        self.speculative = speculative
        self.version = version
        self.lock = threading.Lock()
        self.total_tokens = 0
        self.total_verify = 0
        self.log: list[tuple[str, str]] = []  # (method, path) of every request
        self.prompts: list[str] = []  # text of every /generate with max_new_tokens > 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FakeSGLangServer":
        fake = self

        class Handler(_Handler):
            server_state = fake

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the default 5 makes 64 concurrent connects wait on SYN retries
            daemon_threads = True

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-sglang", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "FakeSGLangServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # ------------------------------------------------------------------ documents
    def server_info(self) -> dict[str, Any]:
        state: dict[str, Any] = {"last_gen_throughput": 1234.5, "memory_usage": {"weight": 61.2, "kvcache": 80.1}}
        if self.speculative:  # what this package's plugin adds (plugin/server_info.py)
            state["glm_mtp"] = {"moe_runner": {"backend": "flashinfer_cutlass", "rule": "blackwell-bf16-draft",
                                               "reason": "SM100, BF16 draft, quantized target"}}
        with self.lock:
            if self.speculative and self.total_verify > 0:
                state["avg_spec_accept_length"] = self.total_tokens / self.total_verify
        return {
            "model_path": MODEL_PATH, "tokenizer_path": MODEL_PATH, "served_model_name": MODEL_PATH,
            "tp_size": 8, "dp_size": 1, "quantization": "modelopt_fp4", "moe_runner_backend": "flashinfer_cutlass",
            "speculative_algorithm": "EAGLE" if self.speculative else None,
            "speculative_num_steps": self.num_steps if self.speculative else None,
            "speculative_eagle_topk": 1 if self.speculative else None,
            "speculative_num_draft_tokens": self.num_draft_tokens if self.speculative else None,
            "speculative_moe_runner_backend": "flashinfer_cutlass" if self.speculative else None,
            "context_length": 32768,
            "launch_command": f"python -m sglang.launch_server --model-path {MODEL_PATH} --tp 8",
            "internal_states": [state], "version": self.version, "frontend": "python",
        }

    def model_info(self) -> dict[str, Any]:
        return {"model_path": MODEL_PATH, "served_model_name": MODEL_PATH, "tokenizer_path": MODEL_PATH,
                "is_generation": True, "weight_version": "default", "model_type": "glm_moe_dsa",
                "architectures": ["GlmMoeDsaForCausalLM"]}

    def flush(self) -> None:
        with self.lock:
            self.total_tokens = self.total_verify = 0

    # ------------------------------------------------------------------ generation
    def completion(self, prompt: str, max_new_tokens: int) -> tuple[list[str], float]:
        """Words to generate and the accept length they are drafted with."""
        if max_new_tokens <= 0:
            return [], self.accept_length
        self.prompts.append(prompt)
        if "Question:" in prompt and prompt.rstrip().endswith("Answer:"):
            question = prompt.rsplit("Question: ", 1)[-1].rsplit("\nAnswer:", 1)[0]
            index = self.by_question.get(question)
            if index is None:
                text = "I do not know this one."
            elif index in self.invalid:
                text = "Let me think about it step by step, it is hard to say."
            else:
                text = self.rows[index]["answer"]
                if index in self.wrong:
                    label = gsm8k_label(text)
                    text = text[: text.rfind(str(label))] + str(label + 1)
            return text.split(" ")[:max_new_tokens], self.gsm8k_accept_length
        return [WORDS[i % len(WORDS)] for i in range(max_new_tokens)], self.accept_length

    def spec_meta(self, tokens: int, accept_length: float) -> dict[str, Any]:
        if not self.speculative or tokens == 0:
            return {}
        verify = max(1, math.ceil(tokens / accept_length))
        correct = tokens - verify
        proposed = verify * (self.num_draft_tokens - 1)
        with self.lock:
            self.total_tokens += tokens
            self.total_verify += verify
        return {"spec_accept_length": tokens / verify, "spec_accept_rate": correct / proposed,
                "spec_num_correct_drafts": correct, "spec_num_proposed_drafts": proposed, "spec_verify_ct": verify}

    def steps(self, tokens: int, accept_length: float) -> list[int]:
        """Tokens emitted per verify step (what one streamed event carries)."""
        if tokens == 0:
            return []
        verify = max(1, math.ceil(tokens / accept_length)) if self.speculative else tokens
        return [tokens // verify + (1 if i < tokens % verify else 0) for i in range(verify)]


class _Handler(BaseHTTPRequestHandler):
    server_state: FakeSGLangServer
    protocol_version = "HTTP/1.0"  # streamed bodies end when the connection closes

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _json(self, doc: Any, status: int = 200) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self, method: str) -> None:
        fake = self.server_state
        path = urlsplit(self.path).path
        fake.log.append((method, path))
        if method == "GET" and path in ("/server_info", "/get_server_info"):
            return self._json(fake.server_info())
        if method == "GET" and path in ("/model_info", "/get_model_info"):
            return self._json(fake.model_info())
        if method == "GET" and path == "/v1/models":
            return self._json({"object": "list", "data": [
                {"id": MODEL_PATH, "object": "model", "owned_by": "sglang", "root": MODEL_PATH,
                 "max_model_len": 32768}]})
        if method == "GET" and path == "/health":
            return self._json({})
        if path == "/flush_cache":
            fake.flush()
            body = b"Cache flushed.\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return None
        if method == "POST" and path == "/generate":
            length = int(self.headers.get("Content-Length") or 0)
            return self._generate(json.loads(self.rfile.read(length) or b"{}"))
        return self._json({"error": {"message": f"fake SGLang: no route {method} {path}"}}, 404)

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def _generate(self, req: dict[str, Any]) -> None:
        params = req.get("sampling_params") or {}
        max_new = int(params.get("max_new_tokens", 128))
        texts = req.get("text")
        if isinstance(texts, list):  # batch: non-streaming only
            return self._json([self._one(t, max_new)[0] for t in texts])
        if req.get("stream"):
            return self._stream(texts or "", max_new, req.get("input_ids"))
        return self._json(self._one(texts or "", max_new)[0])

    def _one(self, prompt: str, max_new: int) -> tuple[dict[str, Any], float]:
        fake = self.server_state
        words, accept = fake.completion(prompt, max_new)
        time.sleep(fake.step_delay * len(fake.steps(len(words), accept)))
        meta = {"id": uuid.uuid4().hex, "finish_reason": {"type": "length", "length": len(words)},
                "prompt_tokens": len(prompt.split()), "completion_tokens": len(words), "cached_tokens": 0,
                "e2e_latency": 0.01, **fake.spec_meta(len(words), accept)}
        return {"text": " ".join(words), "meta_info": meta}, accept

    def _stream(self, prompt: str, max_new: int, input_ids: Any) -> None:
        fake = self.server_state
        words, accept = fake.completion(prompt, max_new)
        prompt_tokens = len(input_ids) if isinstance(input_ids, list) else len(prompt.split())
        rid = uuid.uuid4().hex
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        done = 0
        steps = fake.steps(len(words), accept)
        for i, step in enumerate(steps):
            time.sleep(fake.step_delay)
            done += step
            meta: dict[str, Any] = {"id": rid, "finish_reason": None, "prompt_tokens": prompt_tokens,
                                    "completion_tokens": done, "cached_tokens": 0}
            if i == len(steps) - 1:
                meta["finish_reason"] = {"type": "length", "length": done}
                meta.update(fake.spec_meta(len(words), accept))
            event = {"text": " ".join(words[:done]), "meta_info": meta}
            self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
