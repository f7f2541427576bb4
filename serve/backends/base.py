"""The interface every backend implements: a prompt row in, tokens (or a token stream) out.

The gateway has already built the row ([P + L, H] prompt embeddings in the wire dtype), so a
backend only runs the LM with the LoRA: `VLLMServerBackend` (a stock vLLM OpenAI server) or
`HFBackend` (transformers + peft in this process, which also scores option likelihoods).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import AsyncIterator

import torch


@dataclass
class SamplingSpec:
    """What to generate. `logprob_token_ids`: report those tokens' log-probabilities (full-vocabulary
    log-softmax) at the first generated position, e.g. the option letters."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logprob_token_ids: list[int] | None = None
    ignore_eos: bool = False  # benchmarks: every request generates exactly max_tokens


@dataclass
class Generation:
    token_ids: list[int]
    text: str
    finish_reason: str               # "stop" or "length"
    prompt_tokens: int
    first_logprobs: dict[int, float] | None = None
    payload_bytes: int = 0           # serialized prompt embeddings sent (vLLM backend)
    encode_s: float = 0.0            # time to serialize them


@dataclass
class Delta:
    """One streamed piece: new text and its token ids; `finish_reason` on the last piece."""

    text: str
    token_ids: list[int]
    finish_reason: str | None = None


class BackendError(RuntimeError):
    """The backend failed or refused; `status` is what the gateway answers (400 for a refusal of
    the request itself, 502/503 for the backend's own trouble)."""

    def __init__(self, message: str, status: int = 502):
        super().__init__(message)
        self.status = status


class Backend(abc.ABC):
    name: str = "?"
    supports_option_scoring: bool = False

    @abc.abstractmethod
    async def generate(self, row: torch.Tensor, spec: SamplingSpec, request_id: str) -> Generation: ...

    @abc.abstractmethod
    def stream(self, row: torch.Tensor, spec: SamplingSpec, request_id: str) -> AsyncIterator[Delta]: ...

    @abc.abstractmethod
    async def health(self) -> bool: ...

    def info(self) -> dict:
        return {"backend": self.name}

    async def option_scores(self, question: str, options: list[str], codes: list[str]) -> list[float]:
        raise BackendError(f"option-likelihood scoring is not available with the {self.name} backend "
                           "(vLLM rejects prompt log-probabilities with prompt embeddings): use the hf backend "
                           "or scoring='letter'", status=400)

    async def close(self) -> None:
        return None
