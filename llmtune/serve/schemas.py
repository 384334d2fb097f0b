"""OpenAI request bodies for ``/v1/completions`` and ``/v1/chat/completions``, and OpenAI-style errors.

Requests are validated here so every bad one becomes a 4xx JSON error of OpenAI's shape
(``{"error": {"message", "type", "param", "code"}}``) naming the field, and the server keeps serving.
Parameters OpenAI defines but this server does not implement (``logprobs``, ``tools`` ...) are
refused with a 400 naming them, rather than silently ignored; unknown fields are refused too.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# Fields OpenAI defines that this server does not implement, with the value that means "not used".
UNSUPPORTED: dict[str, Any] = {
    "logprobs": (None, False), "top_logprobs": (None, 0), "echo": (None, False), "best_of": (None, 1),
    "suffix": (None, ""), "logit_bias": (None, {}), "tools": (None, []), "tool_choice": (None, "none"),
    "functions": (None, []), "function_call": (None, "none"), "response_format": (None, {"type": "text"}),
    "parallel_tool_calls": (None,), "modalities": (None, ["text"]), "audio": (None,), "prediction": (None,),
}
# Fields clients send that change nothing here (accepted and ignored).
IGNORED = ("user", "metadata", "store", "service_tier", "reasoning_effort")
MAX_STOPS = 4


class ApiError(Exception):
    """An error answered as OpenAI's JSON error body with an HTTP status."""

    def __init__(self, status: int, message: str, param: Optional[str] = None,
                 type_: str = "invalid_request_error", code: Optional[str] = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.code = status, message, param, type_, code

    def body(self) -> dict[str, Any]:
        """The JSON body: ``{"error": {"message", "type", "param", "code"}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class StreamOptions(BaseModel):
    """``stream_options``: ``include_usage`` adds a last chunk holding the token counts."""

    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class _Common(BaseModel):
    """Sampling fields both endpoints share (OpenAI's names, ranges and defaults)."""

    model_config = ConfigDict(extra="allow")
    model: Optional[str] = Field(None, description="The served model's id (see /v1/models); optional here.")
    max_tokens: Optional[int] = Field(None, ge=1, description="New tokens at most (default: serve.default_max_tokens).")
    temperature: float = Field(1.0, ge=0, le=2, description="0 = greedy; higher = more random.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    n: int = Field(1, ge=1, le=128, description="Completions per prompt.")
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    stop: Optional[Union[str, list[str]]] = Field(None, description="Up to 4 strings that end a completion.")
    seed: Optional[int] = Field(None, description="Seed: the same request gives the same sample.")
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: Optional[Union[str, list[str]]]) -> Optional[Union[str, list[str]]]:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings, got {len(stops)}")
        if any(s == "" for s in stops):
            raise ValueError("stop strings must not be empty")
        return value

    def stops(self) -> list[str]:
        """``stop`` as a list."""
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def new_tokens(self) -> Optional[int]:
        """The requested completion length (``max_tokens``), or None for the server's default."""
        return self.max_tokens


class CompletionRequest(_Common):
    """``POST /v1/completions``: ``prompt`` is text, a list of texts, token ids or a list of those."""

    prompt: Union[str, list[str], list[int], list[list[int]]]

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("the prompt list is empty")
        if isinstance(value, list) and any(isinstance(p, list) and not p for p in value):
            raise ValueError("a token-id prompt is empty")
        return value

    def prompts(self) -> list[Union[str, list[int]]]:
        """Each prompt: a text or a list of token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [list(p)]
        return list(p)


class TextPart(BaseModel):
    """One part of a message's content list; only text parts are supported."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    """A chat turn. ``developer`` is OpenAI's newer name for ``system`` and is rendered as one."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart]]
    name: Optional[str] = None

    def as_template_message(self) -> dict[str, str]:
        """``{"role", "content"}`` for ``apply_chat_template`` (parts joined, developer -> system)."""
        content = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class ChatRequest(_Common):
    """``POST /v1/chat/completions``."""

    messages: list[Message] = Field(..., min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1, description="OpenAI's newer name for max_tokens.")

    def new_tokens(self) -> Optional[int]:
        """``max_completion_tokens`` (OpenAI's newer name) wins over ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens


def read_json(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object.

    Raises:
        ApiError: 400 for a body that is not JSON or not an object.
    """
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc}); send a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, not {type(body).__name__}")
    return body


def parse_request(model: type[_Common], body: dict[str, Any]) -> Any:
    """Validate ``body`` as ``model``; the first problem becomes a 400 naming its parameter.

    Raises:
        ApiError: An unknown or unsupported parameter, a missing field, or a value out of range.
    """
    body = {k: v for k, v in body.items() if v is not None}  # OpenAI reads an explicit null as "the default"
    for name, value in body.items():
        if name in UNSUPPORTED and value not in UNSUPPORTED[name]:
            raise ApiError(400, f"'{name}' is not supported by this server; remove it from the request", param=name,
                           code="unsupported_parameter")
    known = set(model.model_fields) | set(UNSUPPORTED) | set(IGNORED)
    unknown = sorted(set(body) - known)
    if unknown:
        raise ApiError(400, f"unrecognized request argument supplied: {unknown[0]}", param=unknown[0],
                       code="unknown_parameter")
    try:
        return model.model_validate({k: v for k, v in body.items() if k in model.model_fields})
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-", "list[", "str", "int")))
        message = err["msg"]
        if err["type"] == "missing":
            message = f"'{param}' is required"
        elif err["type"] == "literal_error" and param.endswith("role"):
            message = f"{param}: role must be one of system, developer, user, assistant (got {err.get('input')!r:.40})"
        else:
            message = f"{param}: {message} (got {err.get('input')!r:.60})"
        raise ApiError(400, message, param=param) from None
