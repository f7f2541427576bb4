"""Request bodies of the gateway: types only (pydantic, strict: no "1" -> 1 coercion). Limits
(lengths, counts, caps) are checked by `serve.service.QAService` from its config, so one set of
numbers governs every endpoint. No field accepts embeddings or anything but JSON scalars/lists."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    question: str
    options: list[str] | None = None
    codes: list[str] | None = None
    scoring: Literal["letter", "option"] = "letter"
    max_tokens: int | None = None
    model: str | None = None


class OpenAIParams(BaseModel):
    # unknown OpenAI parameters are ignored, the ones that would change the answer are refused
    model_config = ConfigDict(extra="ignore", strict=True)
    model: str | None = None
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: int | bool | None = None
    codes: list[str] | None = None
    ignore_eos: bool = False


class CompletionRequest(OpenAIParams):
    prompt: str
    echo: bool = False


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(OpenAIParams):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
