"""OpenAI response bodies: whole JSON answers and server-sent-event chunk streams.

``collect`` waits for every choice of a job and returns the texts; ``sse_stream`` yields the SSE
events of a streamed answer (OpenAI's chunk objects, then ``data: [DONE]``). Both cancel the job when
their client goes away, which frees its batch slots at the next step.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Optional

from llmtune.serve.scheduler import Delta, Done, Failed, Job
from llmtune.serve.schemas import ApiError


@dataclass
class Answer:
    """What a job produced, per choice, plus the token counts."""

    texts: list[str]
    finish_reasons: list[Optional[str]]
    prompt_tokens: int
    completion_tokens: list[int] = field(default_factory=list)

    def usage(self) -> dict[str, int]:
        """OpenAI's ``usage`` object."""
        done = sum(self.completion_tokens)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": done, "total_tokens": self.prompt_tokens + done}


@dataclass
class Stream:
    """Identity of one response: chat or text completion, its id, time and model."""

    chat: bool
    model: str
    id: str = ""
    created: int = 0

    def __post_init__(self) -> None:
        self.id = self.id or f"{'chatcmpl' if self.chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = self.created or int(time.time())

    def body(self, answer: Answer) -> dict[str, Any]:
        """The whole (non-streamed) response."""
        if self.chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None,
                        "finish_reason": reason} for i, (text, reason) in enumerate(zip(answer.texts, answer.finish_reasons))]
        else:
            choices = [{"index": i, "text": text, "logprobs": None, "finish_reason": reason}
                       for i, (text, reason) in enumerate(zip(answer.texts, answer.finish_reasons))]
        return {**self._head(False), "choices": choices, "usage": answer.usage()}

    def chunk(self, index: int, text: Optional[str] = None, finish_reason: Optional[str] = None,
              role: bool = False) -> dict[str, Any]:
        """One streamed chunk for choice ``index``: new text, a finish reason, or (chat) the role."""
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text is not None:
                delta["content"] = text
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        return {**self._head(True), "choices": [choice]}

    def usage_chunk(self, answer: Answer) -> dict[str, Any]:
        """The last chunk with ``stream_options.include_usage``: no choices, the token counts."""
        return {**self._head(True), "choices": [], "usage": answer.usage()}

    def _head(self, streamed: bool) -> dict[str, Any]:
        kind = ("chat.completion.chunk" if streamed else "chat.completion") if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "system_fingerprint": None}


def _take(answer: Answer, event: Any) -> None:
    if isinstance(event, Delta):
        answer.texts[event.index] += event.text
    elif isinstance(event, Done):
        answer.finish_reasons[event.index] = event.finish_reason
        answer.completion_tokens[event.index] = event.completion_tokens


def new_answer(job: Job, prompt_tokens: int) -> Answer:
    """An empty answer with a slot per choice."""
    n = len(job.choices)
    return Answer([""] * n, [None] * n, prompt_tokens, [0] * n)


async def collect(job: Job, answer: Answer, disconnected: Callable[[], Any], cancel: Callable[[], None]) -> Answer:
    """Wait for every choice of ``job``; cancel it if the client disconnects meanwhile.

    Raises:
        ApiError: 500 when generation failed, 499 when the client went away.
    """
    remaining = len(job.choices)
    while remaining:
        try:
            event = await asyncio.wait_for(job.events.get(), timeout=1.0)
        except asyncio.TimeoutError:
            if await disconnected():
                cancel()
                raise ApiError(499, "the client closed the connection") from None
            continue
        if isinstance(event, Failed):
            raise ApiError(500, event.message, type_="server_error")
        _take(answer, event)
        remaining -= isinstance(event, Done)
    return answer


def sse(data: Any) -> bytes:
    """One SSE event (``data: ...`` and a blank line) through FastAPI's SSE encoder."""
    from fastapi.sse import format_sse_event

    return format_sse_event(data_str=data if isinstance(data, str) else json.dumps(data, ensure_ascii=False))


async def sse_stream(job: Job, answer: Answer, stream: Stream, include_usage: bool,
                     finished: Callable[[Answer], None], cancel: Callable[[], None]) -> AsyncIterator[bytes]:
    """Yield the SSE events of ``job``: chunks as text arrives, a finish chunk per choice, ``[DONE]``.

    A client that goes away cancels the job (Starlette cancels this generator on disconnect).
    """
    remaining, complete = len(job.choices), False
    try:
        if stream.chat:
            for i in range(remaining):
                yield sse(stream.chunk(i, role=True))
        while remaining:
            event = await job.events.get()
            if isinstance(event, Failed):
                yield sse(ApiError(500, event.message, type_="server_error").body())
                break
            _take(answer, event)
            if isinstance(event, Delta):
                yield sse(stream.chunk(event.index, text=event.text))
            else:
                remaining -= 1
                yield sse(stream.chunk(event.index, finish_reason=event.finish_reason))
        if include_usage and not remaining:
            yield sse(stream.usage_chunk(answer))
        yield sse("[DONE]")
        complete = not remaining
    finally:
        if not complete:
            cancel()
        finished(answer)
