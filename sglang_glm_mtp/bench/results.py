"""What one benchmark run was asked to do and what it measured: plain data, read by the runner and the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..plugin.settings import CanarySettings
from .gsm8k import Gsm8kResult
from .server_client import ServerInfo
from .sweep import SweepPoint, SweepSettings

#: Below this the draft is almost never accepted: typically a draft layer that loaded nothing.
#: The plugin's runtime canary judges with the same threshold; it lives there.
DEFAULT_MIN_ACCEPT_LENGTH = CanarySettings.min_accept_length


@dataclass(frozen=True)
class BenchConfig:
    base_url: str
    out_dir: Path
    concurrencies: tuple[int, ...] = (1, 4, 16, 64)
    #: Prompts per level; None: ``max(16, 4 * concurrency)``.
    num_prompts: int | None = None
    sweep: SweepSettings = field(default_factory=SweepSettings)
    tokenizer: str | None = None
    gsm8k: bool = True
    gsm8k_questions: int = 200
    gsm8k_shots: int = 5
    gsm8k_data: str | None = None
    gsm8k_max_new_tokens: int = 512
    min_accept_length: float = DEFAULT_MIN_ACCEPT_LENGTH
    timeout: float = 10.0

    def prompts_for(self, concurrency: int) -> int:
        return self.num_prompts if self.num_prompts else max(16, 4 * concurrency)

    def to_json(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url, "out_dir": str(self.out_dir), "concurrencies": list(self.concurrencies),
            "num_prompts": {str(c): self.prompts_for(c) for c in self.concurrencies},
            "sweep": asdict(self.sweep), "tokenizer": self.tokenizer, "gsm8k": self.gsm8k,
            "gsm8k_questions": self.gsm8k_questions, "gsm8k_shots": self.gsm8k_shots,
            "gsm8k_data": self.gsm8k_data, "gsm8k_max_new_tokens": self.gsm8k_max_new_tokens,
            "min_accept_length": self.min_accept_length,
        }


@dataclass
class LevelResult:
    concurrency: int
    sweep: SweepPoint
    gsm8k: Gsm8kResult | None = None

    def to_json(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "sweep": self.sweep.to_json(),
                "gsm8k": self.gsm8k.to_json() if self.gsm8k else None}


@dataclass
class BenchReport:
    config: BenchConfig
    server: ServerInfo
    tokenizer: str
    started_at: str
    finished_at: str = ""
    client_sglang_version: str | None = None
    gsm8k_data: str | None = None
    gsm8k_rows: int | None = None
    levels: list[LevelResult] = field(default_factory=list)
    #: Findings that make the exit code 1 (collapsed accept length, failed requests).
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": 1, "tool": "sglang-glm-mtp bench",
            "started_at": self.started_at, "finished_at": self.finished_at,
            "client_sglang_version": self.client_sglang_version,
            "config": self.config.to_json(), "server": self.server.to_json(), "tokenizer": self.tokenizer,
            "gsm8k_data": self.gsm8k_data, "gsm8k_rows": self.gsm8k_rows,
            "levels": [level.to_json() for level in self.levels],
            "problems": self.problems, "notes": self.notes, "files": self.files,
            "exit_code": self.exit_code,
        }
