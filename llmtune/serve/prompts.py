"""From a validated request to token ids and a per-choice token budget, with OpenAI-style 400s.

Chats are rendered by ``chat_template.render_chat``, the renderer ``llmtune generate --chat`` uses: the
tokenizer's own chat template, or llmtune's builtin one installed by ``chat_template.prepare_chat`` when
it has none (then the role markers also end a reply, in case the model never learned to emit eos).
"""

from __future__ import annotations

from typing import Any, Optional, Union

from llmtune.chat_template import prepare_chat, render_chat
from llmtune.modeling import context_length
from llmtune.serve.schemas import ApiError


class PromptBuilder:
    """Encodes prompts for one model and checks them against its context."""

    def __init__(self, model: Any, tokenizer: Any, default_max_tokens: int) -> None:
        self.tokenizer, self.default_max_tokens = tokenizer, default_max_tokens
        self.context: Optional[int] = context_length(model.config, tokenizer)
        self.vocab_size = len(tokenizer)
        self.chat_stops: list[str] = prepare_chat(tokenizer)

    def completion_ids(self, prompt: Union[str, list[int]], param: str = "prompt") -> list[int]:
        """Token ids of a completion prompt: text is tokenized as ``llmtune generate`` does, ids are checked."""
        if isinstance(prompt, str):
            ids = self.tokenizer(prompt)["input_ids"]
        else:
            bad = next((t for t in prompt if not 0 <= t < self.vocab_size), None)
            if bad is not None:
                raise ApiError(400, f"token id {bad} is outside the vocabulary (0..{self.vocab_size - 1})", param=param)
            ids = list(prompt)
        if not ids:
            raise ApiError(400, "the prompt is empty; send some text", param=param)
        return ids

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The conversation rendered with the chat template (generation prompt added), as token ids."""
        try:
            return render_chat(self.tokenizer, messages)
        except Exception as exc:  # noqa: BLE001 - templates raise their own errors (e.g. "roles must alternate")
            raise ApiError(400, f"the model's chat template rejected the messages: {exc}", param="messages") from None

    def budget(self, prompt_len: int, requested: Optional[int], prompt_param: str = "prompt") -> int:
        """New tokens this prompt may generate: ``requested``, or the default capped by the room left.

        Raises:
            ApiError: The prompt fills the context, or ``requested`` does not fit beside it.
        """
        if self.context is None:
            return requested or self.default_max_tokens
        room = self.context - prompt_len
        if room < 1:
            raise ApiError(400, f"the prompt is {prompt_len} tokens, but this model's context is {self.context} "
                                f"tokens; shorten it to at most {self.context - 1} tokens",
                           param=prompt_param, code="context_length_exceeded")
        if requested is not None and requested > room:
            raise ApiError(400, f"this model's maximum context length is {self.context} tokens, but you requested "
                                f"{prompt_len + requested} tokens ({prompt_len} in the prompt, {requested} for the "
                                f"completion); lower max_tokens to at most {room}",
                           param="max_tokens", code="context_length_exceeded")
        return requested or min(self.default_max_tokens, room)
