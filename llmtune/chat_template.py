"""The chat template llmtune uses when a tokenizer has none of its own.

Models pre-trained with ``llmtune pretrain`` (and many base models) ship a tokenizer without a chat
template, so ``tokenizer.apply_chat_template`` would fail. ``ensure_chat_template`` installs
``BUILTIN_CHAT_TEMPLATE`` on such tokenizers; chat fine-tuning saves it with the tokenizer
(``tokenizer.save_pretrained``) so ``llmtune generate --chat`` later renders conversations exactly the
way the model was trained on them.

The format, for messages ``system: "Be brief."``, ``user: "Hi"``, ``assistant: "Hello"``, ``user: "Bye"``
with ``add_generation_prompt=True`` (``<eos>`` is the tokenizer's eos token)::

    <|system|>
    Be brief.
    <|user|>
    Hi
    <|assistant|>
    Hello<eos>
    <|user|>
    Bye
    <|assistant|>

Each turn is a role marker line, the content, then a newline. Assistant turns end with eos so a model
learns to stop; their content and eos sit inside ``{% generation %}`` so
``apply_chat_template(..., return_dict=True, return_assistant_tokens_mask=True)`` marks exactly the
tokens to train on. The markers are plain text, not added tokens: the vocabulary (and the embedding
matrix) stays as it is.
"""

from __future__ import annotations

from typing import Any, Sequence

ROLE_MARKERS: dict[str, str] = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
"""The marker line that opens each role's turn in ``BUILTIN_CHAT_TEMPLATE``."""

BUILTIN_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|' + message['role'] + '|>\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{%- generation %}{{- message['content'] + (eos_token or '') }}{%- endgeneration %}"
    "{%- else %}{{- message['content'] }}{%- endif %}"
    "{{- '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>\\n' }}{%- endif %}"
)
"""Jinja chat template (see the module docstring for the rendered format)."""


def ensure_chat_template(tokenizer: Any) -> bool:
    """Give ``tokenizer`` the builtin chat template when it has none.

    Args:
        tokenizer: A transformers tokenizer (modified in place).

    Returns:
        True when the builtin template was installed, False when the tokenizer already had one.
    """
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = BUILTIN_CHAT_TEMPLATE
    return True


def uses_builtin_template(tokenizer: Any) -> bool:
    """True when ``tokenizer`` renders chats with ``BUILTIN_CHAT_TEMPLATE``."""
    return getattr(tokenizer, "chat_template", None) == BUILTIN_CHAT_TEMPLATE


def prepare_chat(tokenizer: Any) -> list[str]:
    """Make ``tokenizer`` ready to render chats; returns the stop strings a reply then needs.

    A tokenizer without a chat template gets the builtin one (logged); its role markers are returned
    so they also end a reply, in case the model never learned to end its turn with eos. A tokenizer
    with its own template (a chat-tuned model's, or the builtin one saved by chat fine-tuning) needs none.

    Args:
        tokenizer: A transformers tokenizer (modified in place when it has no template).

    Returns:
        The role markers when the builtin template was installed now, else an empty list.
    """
    if not ensure_chat_template(tokenizer):
        return []
    from llmtune.dist import log

    log("the tokenizer has no chat template: using llmtune's builtin <|user|>/<|assistant|> one")
    return list(ROLE_MARKERS.values())


def render_chat(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    """The token ids of ``messages`` rendered with the chat template, ending with the assistant's turn opener.

    The template writes any special tokens (bos, eos) itself, so the text is tokenized without adding
    more. A tokenizer without a template gets the builtin one (``prepare_chat`` also logs that).

    Args:
        tokenizer: A transformers tokenizer.
        messages: ``{"role": ..., "content": ...}`` dicts, oldest first.

    Returns:
        The prompt's token ids.

    Raises:
        Exception: Whatever the template raises for messages it rejects (e.g. roles that do not alternate).
    """
    ensure_chat_template(tokenizer)
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]
