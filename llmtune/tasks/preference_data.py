"""Preference pairs: the row layouts ``finetune --task dpo`` reads, their checks, and their token ids.

Three layouts, the first two as TRL names them (https://huggingface.co/docs/trl/dataset_formats):

=================  ====================================================  ===================================
layout             columns                                               rendered as
=================  ====================================================  ===================================
standard           ``prompt`` (optional), ``chosen``, ``rejected``:       prompt + response + eos, as written
                   strings
conversational     ``chosen``/``rejected``: message lists, ``prompt``:    the tokenizer's chat template
                   the shared messages (optional: without it, the
                   messages both lists start with are the prompt)
sharegpt           ``conversations``: [{from, value}], ``chosen``/        as conversational (human/gpt ->
(``--format``)     ``rejected``: one {from, value} turn (or a list)       user/assistant)
=================  ====================================================  ===================================

Standard and conversational rows are told apart row by row (a string or a list). Each pair becomes
``prompt_ids`` (the tokenizer's own leading special tokens, e.g. Llama's BOS, then the prompt tokenized
on its own, exactly as SFT does) and ``chosen_ids``/``rejected_ids`` (each response, ending with eos),
which is what TRL's ``DataCollatorForPreference`` batches.

Over-long pairs (``fit_pair``): the prompt is cut first, keeping its end (the turn being answered)
and its leading special tokens, down to ``max_prompt_length`` or as far as the longer response needs
but never below half of ``max_length``; then the responses are cut on the right. A pair whose cut
responses are the same tokens carries no preference and is dropped. Both are counted.

Every check raises ``DataError`` naming the row: a missing or empty response, chosen == rejected,
turns that do not alternate, an unknown sharegpt speaker, conversations without a chat template.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from llmtune.errors import ConfigError, DataError
from llmtune.tasks.chat_formats import _preview, check_messages, render_chat, sharegpt_messages

PAIRS = "pairs"  # standard or conversational rows (decided per row)
SHAREGPT = "sharegpt"


@dataclass
class Pair:
    """One preference pair: strings (standard) or message lists (conversational)."""

    prompt: Any
    chosen: Any
    rejected: Any
    conversational: bool


def pair_format(columns: Sequence[str], requested: Optional[str], where: str) -> str:
    """``sharegpt`` (asked for, or a ``conversations`` column) or ``pairs``.

    Raises:
        ConfigError: ``--format`` names an SFT layout.
        DataError: ``--format sharegpt`` without a ``conversations`` column.
    """
    if requested not in (None, SHAREGPT):
        raise ConfigError(f"--format {requested} is an SFT layout; --task dpo reads prompt/chosen/rejected rows "
                          "(strings or message lists) or --format sharegpt")
    if requested == SHAREGPT and "conversations" not in columns:
        raise DataError(f"--format sharegpt needs a 'conversations' column but {where} has: {', '.join(columns)}; "
                        "map one with --columns SOURCE=conversations")
    return SHAREGPT if "conversations" in columns else PAIRS


def _blank(value: Any) -> bool:
    return not isinstance(value, str) or not value.strip()


def _messages(value: Any, row_no: int, name: str) -> list[dict[str, Any]]:
    """A response or prompt as a message list (a bare string response is one assistant message)."""
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, Sequence) or not all(isinstance(m, Mapping) for m in value):
        raise DataError(f"row {row_no}: '{name}' must be a string or a list of {{role, content}} messages, "
                        f"got {_preview(value)}")
    return [dict(m) for m in value]


def pair_of(row: Mapping[str, Any], fmt: str, row_no: int) -> Pair:
    """The checked pair of one row.

    Raises:
        DataError: Naming the row: no chosen/rejected, an empty response, the same response twice,
            or a bad conversation.
    """
    for name in ("chosen", "rejected"):
        if row.get(name) is None:
            raise DataError(f"row {row_no} has no '{name}' response (each row needs a chosen and a rejected one): "
                            f"{_preview(dict(row))}")
    if fmt == SHAREGPT:
        prompt = sharegpt_messages(row["conversations"], row_no)
        chosen, rejected = (sharegpt_messages(row[n], row_no) for n in ("chosen", "rejected"))
        return _conversation_pair(prompt, chosen, rejected, row_no)
    chosen, rejected, prompt = row["chosen"], row["rejected"], row.get("prompt")
    if isinstance(chosen, str) and isinstance(rejected, str) and not isinstance(prompt, (list, tuple)):
        for name, text in (("chosen", chosen), ("rejected", rejected)):
            if _blank(text):
                raise DataError(f"row {row_no}: the {name} response is empty: {_preview(dict(row))}; drop the row")
        if chosen.strip() == rejected.strip():
            raise DataError(f"row {row_no}: chosen and rejected are the same response, so there is no preference to "
                            f"learn: {_preview(chosen)}; drop the row")
        return Pair(prompt if isinstance(prompt, str) else "", chosen, rejected, conversational=False)
    chosen, rejected = _messages(chosen, row_no, "chosen"), _messages(rejected, row_no, "rejected")
    if prompt is None:  # the messages both responses start with are the shared prompt
        shared = 0
        while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
            shared += 1
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
    return _conversation_pair(_messages(prompt, row_no, "prompt"), chosen, rejected, row_no)


def _conversation_pair(prompt: list[dict[str, Any]], chosen: list[dict[str, Any]], rejected: list[dict[str, Any]],
                       row_no: int) -> Pair:
    if chosen == rejected:
        raise DataError(f"row {row_no}: chosen and rejected are the same response, so there is no preference to "
                        f"learn: {_preview(chosen)}; drop the row")
    for name, reply in (("chosen", chosen), ("rejected", rejected)):
        if not reply or all(_blank(m.get("content", m.get("value"))) for m in reply):
            raise DataError(f"row {row_no}: the {name} response is empty: {_preview(reply)}; drop the row")
    # Known roles, user/assistant alternating, ending on a non-empty assistant reply (chat_formats' rules).
    check_messages(prompt + chosen, row_no)
    check_messages(prompt + rejected, row_no)
    return Pair(prompt, chosen, rejected, conversational=True)


def render_pair(pair: Pair, tokenizer: Any, row_no: int) -> tuple[str, str, str]:
    """Prompt, chosen and rejected text: as written, or the chat template's rendering split at the prompt.

    Raises:
        DataError: A conversation and a tokenizer without a chat template, or a template that renders
            the prompt differently once a response follows.
    """
    if not pair.conversational:
        return pair.prompt, pair.chosen, pair.rejected
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(f"row {row_no} is a conversation but the tokenizer has no chat template, so the pairs cannot "
                        "be rendered as the model will be prompted; start from a model fine-tuned on chat data "
                        "(`llmtune finetune -t generation` saves its template) or pass one with --set model.tokenizer=DIR")
    prompt_messages = check_messages(pair.prompt + pair.chosen, row_no)[: len(pair.prompt)]
    prompt = render_chat(prompt_messages, tokenizer, row_no, add_generation_prompt=True)
    replies = []
    for reply in (pair.chosen, pair.rejected):
        full = render_chat(check_messages(pair.prompt + reply, row_no), tokenizer, row_no, add_generation_prompt=False)
        if not full.startswith(prompt) or len(full) == len(prompt):
            raise DataError(f"row {row_no}: the chat template renders the prompt differently once a response follows, "
                            "so prompt and response cannot be told apart; use a template that only appends turns")
        text, eos = full[len(prompt):], tokenizer.eos_token or ""
        replies.append(text[: text.rfind(eos) + len(eos)] if eos and eos in text else text)
    return prompt, replies[0], replies[1]


def _keep_end(ids: list[int], n: int, keep: int) -> list[int]:
    """``ids`` cut to ``n`` tokens: the first ``keep`` (special tokens) and the last ``n - keep``."""
    if len(ids) <= n:
        return ids
    tail = max(0, n - keep)
    return ids[:keep] + (ids[len(ids) - tail:] if tail else [])


def fit_pair(prompt: list[int], chosen: list[int], rejected: list[int], max_length: int,
             max_prompt_length: Optional[int], keep: int) -> tuple[Optional[tuple[list[int], list[int], list[int]]], bool]:
    """Cut a pair to ``max_length`` tokens per sequence: the prompt first, then the responses.

    Args:
        prompt: Prompt ids (the first ``keep`` are special tokens that stay).
        chosen: Chosen response ids.
        rejected: Rejected response ids.
        max_length: Longest prompt + response.
        max_prompt_length: Cut every longer prompt to this (None: only as a too-long pair needs).
        keep: Leading prompt tokens never cut.

    Returns:
        ``((prompt, chosen, rejected) or None when the cut responses are the same, truncated)``.
    """
    original = (len(prompt), len(chosen), len(rejected))
    if max_prompt_length is not None:
        prompt = _keep_end(prompt, max_prompt_length, keep)
    longest = max(len(chosen), len(rejected))
    if len(prompt) + longest > max_length:
        floor = min(len(prompt), max_prompt_length or max_length // 2)
        prompt = _keep_end(prompt, max(max_length - longest, floor), keep)
    room = max(0, max_length - len(prompt))
    chosen, rejected = chosen[:room], rejected[:room]
    truncated = (len(prompt), len(chosen), len(rejected)) != original
    if chosen == rejected:
        return None, truncated
    return (prompt, chosen, rejected), truncated


def featurize_pairs(batch: dict[str, list[Any]], indices: list[int], tokenizer: Any, fmt: str, max_length: int,
                    max_prompt_length: Optional[int], prefix: list[int]) -> dict[str, list[Any]]:
    """Token ids of a batch of rows (``Dataset.map(batched=True, with_indices=True)``).

    Returns:
        ``prompt_ids``, ``chosen_ids``, ``rejected_ids``, ``length`` (tokens the pair feeds the model:
        the prompt twice and both responses), ``truncated`` and ``dropped`` per row.
    """
    rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
    texts = [render_pair(pair_of(row, fmt, i + 1), tokenizer, i + 1) for row, i in zip(rows, indices)]
    ids = [tokenizer([t[k] for t in texts], add_special_tokens=False)["input_ids"] if texts else [] for k in range(3)]
    eos = tokenizer.eos_token_id
    out: dict[str, list[Any]] = {k: [] for k in ("prompt_ids", "chosen_ids", "rejected_ids", "length", "truncated",
                                                 "dropped")}
    for p, c, r in zip(*ids):
        c, r = (list(x) + ([eos] if not x or x[-1] != eos else []) for x in (c, r))
        fitted, truncated = fit_pair(prefix + list(p), c, r, max_length, max_prompt_length, len(prefix))
        p, c, r = fitted or ([], [], [])
        for key, value in zip(out, (p, c, r, 2 * len(p) + len(c) + len(r), truncated, fitted is None)):
            out[key].append(value)
    return out
