"""Generation data layouts: which columns hold what, and how a row becomes prompt and response text.

Four layouts (``data.format``, ``--format``), detected from the columns in this order when not given:

============================  =========================================  ====================================
format                        columns                                    rendered as
============================  =========================================  ====================================
``chat``                      ``messages``: [{role, content}, ...]       the tokenizer's chat template
``sharegpt``                  ``conversations``: [{from, value}, ...]    as ``chat`` (human/gpt -> user/assistant)
``alpaca``                    ``instruction``, optional ``input``,       ``ALPACA_PROMPT`` + output
                              ``output``
``prompt_completion``         ``prompt``, ``completion``                 prompt + completion, as written
``text``                      ``text``                                   packed blocks (continued pre-training)
============================  =========================================  ====================================

Map other column names onto these with ``--columns SOURCE=NAME`` (e.g. ``--columns question=prompt``)
or ``--text-column``.

A row is rendered into *segments*: ``(text, trained)`` pairs in order. Trained segments are the
responses (the completion, the alpaca output, every assistant turn); the task tokenizes each segment
on its own, labels the trained ones and ends each of them with the eos token, so the model learns
to stop.

Chat rows are rendered with ``tokenizer.apply_chat_template``; a tokenizer without a template gets
llmtune's ``BUILTIN_CHAT_TEMPLATE`` (``llmtune.chat_template``), saved with the fine-tuned model so
``llmtune generate --chat`` renders conversations the same way. Assistant turn ``i`` is found by
rendering the conversation up to it twice: without the reply but with the generation prompt (what
the model sees at inference), and with the reply; the difference is the trained text. Template
text after the last eos of a reply (the newline of the builtin template, Qwen's ``\\n`` after
``<|im_end|>``) is not trained.

Every check raises ``DataError`` naming the row: unknown roles, turns that do not alternate, empty
responses, a template that fails or renders earlier turns differently once a reply is added.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from llmtune.errors import DataError

FORMAT_COLUMNS: dict[str, tuple[str, ...]] = {
    "chat": ("messages",),
    "sharegpt": ("conversations",),
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}
"""Required columns of each format, in detection order (``input`` is optional for alpaca)."""

ROLES = ("system", "user", "assistant")

ALPACA_PROMPT = "### Instruction:\n{instruction}\n\n### Response:\n"
ALPACA_PROMPT_WITH_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
"""The Alpaca prompt without its one-sentence preamble (tokens a small model would spend on nothing).
Prompt a model fine-tuned on alpaca data the same way: ``alpaca_prompt("Add 2 and 3.")``."""

Segment = tuple[str, bool]  # (text, trained)
_PREVIEW = 160


def _accepted() -> str:
    return "; ".join(f"{name} ({', '.join(cols)}{', [input]' if name == 'alpaca' else ''})"
                     for name, cols in FORMAT_COLUMNS.items())


def detect_format(columns: Sequence[str], requested: Optional[str], where: str) -> str:
    """The format of data with ``columns``: ``requested`` (checked) or the first whose columns all exist.

    Raises:
        DataError: The requested format's columns are missing, or no format matches; the message
            lists the columns and the accepted formats.
    """
    present = list(columns)
    if requested is not None:
        missing = [c for c in FORMAT_COLUMNS[requested] if c not in present]
        if missing:
            raise DataError(
                f"--format {requested} needs column(s) {', '.join(missing)} but {where} has: {', '.join(present)}; "
                f"map a column onto it with --columns SOURCE={missing[0]}"
            )
        return requested
    for name, needed in FORMAT_COLUMNS.items():
        if all(c in present for c in needed):
            return name
    raise DataError(
        f"cannot tell the format of {where} from its columns ({', '.join(present) or 'none'}); accepted formats: "
        f"{_accepted()}. Rename columns with --columns SOURCE=NAME and/or pass --format"
    )


def alpaca_prompt(instruction: str, input: Optional[str] = None) -> str:  # noqa: A002 - the column's name
    """The prompt an alpaca row is trained with (and a fine-tuned model should be prompted with)."""
    if input and input.strip():
        return ALPACA_PROMPT_WITH_INPUT.format(instruction=instruction.strip(), input=input.strip())
    return ALPACA_PROMPT.format(instruction=instruction.strip())


def _preview(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 3] + "..."


def _blank(value: Any) -> bool:
    return not isinstance(value, str) or not value.strip()


def render_row(fmt: str, row: Mapping[str, Any], tokenizer: Any, row_no: int) -> list[Segment]:
    """Prompt and response segments of one row of an SFT format (not ``text``).

    Args:
        fmt: ``prompt_completion``, ``alpaca`` or ``chat``.
        row: The row's columns.
        tokenizer: Renders chat rows (``apply_chat_template``).
        row_no: 1-based row number, for messages.

    Raises:
        DataError: An empty response or instruction, or a bad conversation (see ``chat_segments``).
    """
    if fmt == "chat":
        return chat_segments(row["messages"], tokenizer, row_no)
    if fmt == "sharegpt":
        return chat_segments(sharegpt_messages(row["conversations"], row_no), tokenizer, row_no)
    if fmt == "alpaca":
        if _blank(row.get("instruction")):
            raise DataError(f"row {row_no} has an empty instruction: {_preview(dict(row))}; drop it or fill it in")
        response, name = row.get("output"), "output"
        prompt = alpaca_prompt(row["instruction"], row.get("input"))
    else:
        response, name = row.get("completion"), "completion"
        prompt = row.get("prompt") if isinstance(row.get("prompt"), str) else ""
    if _blank(response):
        raise DataError(f"row {row_no} has an empty {name} (nothing to learn to answer): {_preview(dict(row))}; "
                        "drop such rows or fill them in")
    return [(prompt, False), (response, True)]


def prompt_text(fmt: str, row: Mapping[str, Any], tokenizer: Any, row_no: int = 0) -> str:
    """What a fine-tuned model is given to answer ``row`` (its last response left out)."""
    if fmt in ("chat", "sharegpt"):
        messages = row["messages"] if fmt == "chat" else sharegpt_messages(row["conversations"], row_no)
        messages = check_messages(messages, row_no)
        return render_chat(messages[:-1], tokenizer, row_no, add_generation_prompt=True)
    return render_row(fmt, row, tokenizer, row_no)[0][0]


SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
"""ShareGPT speaker names (``from``) -> chat roles."""


def sharegpt_messages(turns: Any, row_no: int) -> list[dict[str, str]]:
    """ShareGPT turns (``[{from, value}, ...]``, or one such dict) as ``{role, content}`` messages.

    Raises:
        DataError: Naming the row and the turn whose speaker is unknown or that is not a {from, value} object.
    """
    turns = [turns] if isinstance(turns, Mapping) else turns
    if not isinstance(turns, Sequence) or isinstance(turns, str):
        raise DataError(f"row {row_no}: sharegpt turns must be a list of {{from, value}} objects, got {_preview(turns)}")
    out = []
    for i, turn in enumerate(turns, start=1):
        speaker = turn.get("from") if isinstance(turn, Mapping) else None
        if speaker not in SHAREGPT_ROLES:
            raise DataError(f"row {row_no}: sharegpt turn {i} is from {speaker!r}; 'from' must be one of "
                            f"{', '.join(SHAREGPT_ROLES)} (map others with a script first)")
        value = turn.get("value")
        out.append({"role": SHAREGPT_ROLES[speaker], "content": value if isinstance(value, str) else ""})
    return out


def check_messages(messages: Any, row_no: int) -> list[dict[str, str]]:
    """Validate a conversation: known roles, system first only, user/assistant alternating, ending on a reply.

    Returns:
        The messages as plain ``{"role", "content"}`` dicts.

    Raises:
        DataError: Naming the row and the offending message.
    """
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise DataError(f"row {row_no}: 'messages' must be a non-empty list of {{role, content}} objects, "
                        f"got {_preview(messages)}")
    out = []
    for i, message in enumerate(messages, start=1):
        role = message.get("role") if isinstance(message, Mapping) else None
        if role not in ROLES:
            raise DataError(f"row {row_no}: message {i} has role {role!r}; roles must be one of {', '.join(ROLES)} "
                            "(rename others, e.g. human -> user, gpt -> assistant)")
        content = message.get("content")
        out.append({"role": role, "content": content if isinstance(content, str) else ""})
    _check_turns(out, row_no)
    return out


def _check_turns(messages: list[dict[str, str]], row_no: int) -> None:
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    for i, message in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            where = i + 1 + (len(messages) - len(turns))
            raise DataError(f"row {row_no}: message {where} is '{message['role']}' where '{expected}' was expected; "
                            "turns must alternate user/assistant after an optional first system message")
        if expected == "assistant" and _blank(message["content"]):
            raise DataError(f"row {row_no}: assistant message {i + 1 + len(messages) - len(turns)} is empty "
                            "(nothing to learn to answer); drop the row or fill in the reply")
    if not turns or turns[-1]["role"] != "assistant":
        raise DataError(f"row {row_no}: the conversation must end with an assistant reply to train on "
                        f"(last message is '{messages[-1]['role']}')")


def render_chat(messages: list[dict[str, str]], tokenizer: Any, row_no: int, *, add_generation_prompt: bool) -> str:
    """``tokenizer.apply_chat_template`` as text, its failures turned into a DataError showing the row."""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as exc:  # noqa: BLE001 - jinja raises anything (TemplateError, TypeError, raise_exception)
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"the tokenizer's chat template failed on row {row_no} ({reason}): {_preview(messages)}; "
                        "fix the row or pass a tokenizer whose template accepts it (--set model.tokenizer=...)") from exc


def chat_segments(messages: Any, tokenizer: Any, row_no: int) -> list[Segment]:
    """Segments of a conversation: template text untrained, each assistant reply (up to its eos) trained.

    Raises:
        DataError: A bad conversation (``check_messages``), a failing template, or one that renders
            a reply's history differently from the prompt the reply answers.
    """
    messages = check_messages(messages, row_no)
    eos = tokenizer.eos_token or ""
    segments: list[Segment] = []
    done = ""  # text covered by the segments so far
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render_chat(messages[:i], tokenizer, row_no, add_generation_prompt=True)
        full = render_chat(messages[: i + 1], tokenizer, row_no, add_generation_prompt=False)
        if not prompt.startswith(done) or not full.startswith(prompt) or len(full) == len(prompt):
            raise DataError(f"row {row_no}: the chat template renders the conversation differently once reply {i + 1} "
                            "is added, so prompt and reply cannot be told apart; use a template that only appends "
                            f"each turn: {_preview(messages)}")
        reply = full[len(prompt):]
        end = reply.rfind(eos) + len(eos) if eos and eos in reply else len(reply)
        segments += [(prompt[len(done):], False), (reply[:end], True)]
        done = prompt + reply[:end]
    return segments
