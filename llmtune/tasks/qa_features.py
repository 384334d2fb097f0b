"""QA rows -> model features: answers checked against their contexts, contexts cut into overlapping windows.

A context longer than the model's window is cut into overlapping windows (``doc_stride`` tokens of
overlap) so every answer lies whole inside at least one of them. Training labels are the token
indices of the answer's first and last token in each window; a window that does not hold the whole
answer (and every window of an unanswerable question) points both labels at the CLS token, which is
how the model learns to say "not here". Evaluation windows keep their example id and the character
offsets of their context tokens, so ``qa_postprocess`` can turn start/end logits back into text.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any, Optional

from llmtune.errors import ConfigError, DataError
from llmtune.tasks.qa_postprocess import CLS_INDEX

LABEL_COLUMNS = ("start_positions", "end_positions")

Span = tuple[int, int]  # [start, end) character offsets of an answer in its context


def answer_status(context: str, answers: Any) -> tuple[str, Optional[Span]]:
    """Classify one row's answer and locate it in the context.

    The first answer with non-blank text is the training target. Whitespace around its text is
    trimmed from the span so the labels start and end on real tokens.

    Args:
        context: The passage.
        answers: ``{"text": [...], "answer_start": [...]}``, or None for no answer.

    Returns:
        ``("ok", (start, end))``, ``("no_answer", None)`` or ``("misaligned", None)`` (the text is
        not at ``answer_start``, the offset is out of range, or the two lists disagree in length).

    Raises:
        DataError: ``answers`` is not a SQuAD answers dict.
    """
    if answers is None:
        return "no_answer", None
    if not isinstance(answers, Mapping) or "text" not in answers or "answer_start" not in answers:
        raise DataError(
            f"the answers column must hold {{'text': [...], 'answer_start': [...]}} (SQuAD layout), got "
            f"{str(answers)[:80]!r}; map flat columns with answers_from_flat or fix the data"
        )
    texts, starts = list(answers["text"] or []), list(answers["answer_start"] or [])
    first = next((i for i, text in enumerate(texts) if text and text.strip()), None)
    if first is None:
        return "no_answer", None
    if len(texts) != len(starts):
        return "misaligned", None
    text, start = texts[first], starts[first]
    if not isinstance(start, numbers.Integral) or start < 0 or context[start : start + len(text)] != text:
        return "misaligned", None
    lead = len(text) - len(text.lstrip())
    trail = len(text) - len(text.rstrip())
    return "ok", (start + lead, start + len(text) - trail)


def validate_examples(dataset: Any, allow_no_answer: bool = False) -> tuple[Any, dict[str, int]]:
    """Drop training rows whose answer is not where it claims to be.

    A misaligned answer would be trained as a label on the wrong tokens, so such rows are dropped
    and counted rather than kept. Evaluation rows need no check: only their answer texts are scored.

    Args:
        dataset: A ``datasets.Dataset`` with ``context`` and ``answers`` columns.
        allow_no_answer: Keep unanswerable rows (SQuAD v2) instead of refusing them.

    Returns:
        The kept rows (the same object when nothing is dropped) and counts
        ``{"misaligned": n, "no_answer": n, "kept": n}``.

    Raises:
        DataError: Unanswerable rows without ``allow_no_answer``, or no usable row at all.
    """
    kept: list[int] = []
    counts = {"misaligned": 0, "no_answer": 0, "kept": 0}
    for index, (context, answers) in enumerate(zip(dataset["context"], dataset["answers"])):
        status, _ = answer_status(context or "", answers)
        if status != "ok":
            counts[status] += 1
        if status == "ok" or (status == "no_answer" and allow_no_answer):
            kept.append(index)
    counts["kept"] = len(kept)
    if counts["no_answer"] and not allow_no_answer:
        raise DataError(
            f"{counts['no_answer']} training rows have no answer (SQuAD v2 style); pass --allow-no-answer "
            "to train unanswerable questions, or drop them"
        )
    if not kept:
        raise DataError(
            f"none of the {len(dataset)} training rows is usable: {counts['misaligned']} have an answer that is "
            "not found in the context at answer_start (or answer_start is out of range); answer_start must be "
            "the 0-based character offset of answers.text in context"
        )
    return (dataset if len(kept) == len(dataset) else dataset.select(kept)), counts


def ensure_example_ids(dataset: Any) -> Any:
    """Give every row a unique string ``id`` (post-processing groups windows by it).

    Raises:
        DataError: The ``id`` column repeats a value.
    """
    if "id" not in dataset.column_names:
        return dataset.add_column("id", [str(i) for i in range(len(dataset))])
    seen: set[str] = set()
    for value in dataset["id"]:
        key = str(value)
        if key in seen:
            raise DataError(
                f"id '{key}' occurs twice in the evaluation data; QA ids must be unique (drop the id column "
                "to number the rows instead)"
            )
        seen.add(key)
    return dataset


def answers_from_flat(batch: dict[str, list[Any]], text_col: str, start_col: str) -> dict[str, list[Any]]:
    """Build a SQuAD ``answers`` column from flat answer-text / answer-start columns.

    Use with ``Dataset.map(batched=True)``. A row's text and start may be scalars or lists; a
    missing/empty text gives an unanswerable row.
    """

    def as_list(value: Any) -> list[Any]:
        if value is None or value == "":
            return []
        return list(value) if isinstance(value, (list, tuple)) else [value]

    answers = [
        {"text": [str(t) for t in as_list(text)], "answer_start": [int(s) for s in as_list(start)]}
        for text, start in zip(batch[text_col], batch[start_col])
    ]
    return {"answers": answers}


def _question_first(tokenizer: Any) -> bool:
    """Models padded on the right read question then context; left-padded ones (XLNet) the reverse."""
    return getattr(tokenizer, "padding_side", "right") == "right"


def _fit_questions(questions: list[str], tokenizer: Any, max_length: int, doc_stride: int) -> list[str]:
    """Cut questions so each window keeps more than ``doc_stride`` context tokens.

    The fast tokenizer panics (a Rust ``PanicException``, which ``except Exception`` does not catch)
    when the room left for the context is not larger than the stride: one very long question in a
    big dataset would end the run.

    Raises:
        ConfigError: ``max_length`` cannot hold the special tokens, one question token and the stride.
    """
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=True) - doc_stride - 1
    if budget < 1:
        raise ConfigError(
            f"train.max_length {max_length} leaves no room for a question and a context window with doc_stride "
            f"{doc_stride}; raise max_length or lower doc_stride (e.g. max_length 384, doc_stride 128)"
        )
    # Leading spaces (common in SQuAD questions) would only waste tokens.
    questions = [(q or "").lstrip() for q in questions]
    # Tokenizing every question twice would cost time; a question gets at most about one token per
    # UTF-8 byte (sentencepiece adds one word-start piece), so twice that is a safe bound for which
    # ones can possibly be too long.
    suspects = [i for i, q in enumerate(questions) if 2 * len(q.encode("utf-8")) + 2 > budget]
    if suspects:
        enc = tokenizer([questions[i] for i in suspects], add_special_tokens=False, return_offsets_mapping=True)
        for i, offs in zip(suspects, enc["offset_mapping"]):
            if len(offs) > budget:
                questions[i] = questions[i][: offs[budget - 1][1]]
    return questions


def _tokenize_windows(batch: dict[str, list[Any]], tokenizer: Any, max_length: int, doc_stride: int) -> Any:
    """Tokenize question/context pairs into overlapping windows (unpadded, with offsets)."""
    if doc_stride >= max_length:
        raise ConfigError(f"doc_stride {doc_stride} must be smaller than max_length {max_length}")
    questions = _fit_questions(batch["question"], tokenizer, max_length, doc_stride)
    contexts = [c or "" for c in batch["context"]]
    first = _question_first(tokenizer)
    return tokenizer(
        questions if first else contexts,
        contexts if first else questions,
        truncation="only_second" if first else "only_first",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
    )


def _window_labels(
    offsets: list[Span], seq_ids: list[Optional[int]], context_id: int, span: Optional[Span], cls: int
) -> Span:
    """Token indices of the answer's first and last token in one window, or ``(cls, cls)``."""
    ctx = [i for i, sid in enumerate(seq_ids) if sid == context_id]
    if span is None or not ctx:
        return cls, cls
    first, last = ctx[0], ctx[-1]
    start_char, end_char = span
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return cls, cls  # the answer is cut by this window's edges: not learnable here
    start = max(i for i in ctx if offsets[i][0] <= start_char)
    end = min(i for i in ctx if offsets[i][1] >= end_char)
    return (start, end) if start <= end else (cls, cls)


def _add_labels(enc: Any, batch: dict[str, list[Any]], tokenizer: Any) -> dict[str, list[Any]]:
    """Start/end label per window from the answer of the row the window came from."""
    context_id = 1 if _question_first(tokenizer) else 0
    spans = [answer_status(c or "", a)[1] for c, a in zip(batch["context"], batch["answers"])]
    starts, ends = [], []
    for i, row in enumerate(enc["overflow_to_sample_mapping"]):
        start, end = _window_labels(enc["offset_mapping"][i], enc.sequence_ids(i), context_id, spans[row], CLS_INDEX)
        starts.append(start)
        ends.append(end)
    return {"start_positions": starts, "end_positions": ends}


def _model_inputs(enc: Any) -> dict[str, list[Any]]:
    return {k: v for k, v in enc.items() if k not in ("offset_mapping", "overflow_to_sample_mapping")}


def prepare_train_features(
    batch: dict[str, list[Any]], tokenizer: Any, max_length: int, doc_stride: int
) -> dict[str, list[Any]]:
    """Training windows with ``start_positions``/``end_positions`` (for ``Dataset.map(batched=True)``).

    Args:
        batch: Columns ``question``, ``context``, ``answers``.
        tokenizer: A fast tokenizer (``check_tokenizer``).
        max_length: Tokens per window, question and special tokens included.
        doc_stride: Tokens shared by consecutive windows of one context.

    Returns:
        Model inputs (``input_ids``, ``attention_mask``, ...), labels and ``length``, one row per window.
    """
    enc = _tokenize_windows(batch, tokenizer, max_length, doc_stride)
    lengths = {"length": [len(ids) for ids in enc["input_ids"]]}  # for length-bucketed batches
    return {**_model_inputs(enc), **_add_labels(enc, batch, tokenizer), **lengths}


def prepare_eval_features(
    batch: dict[str, list[Any]], tokenizer: Any, max_length: int, doc_stride: int
) -> dict[str, list[Any]]:
    """Evaluation windows that remember their example and their context's character offsets.

    Each window gets ``example_id`` and an ``offset_mapping`` where non-context tokens (question,
    special tokens) are None, so post-processing cannot pick an answer outside the context. When the
    batch has ``answers`` the windows also get labels, which lets the Trainer report an eval loss
    and call ``compute_metrics`` (it only does so when labels exist).

    Args:
        batch: Columns ``id``, ``question``, ``context`` and optionally ``answers``.
        tokenizer: A fast tokenizer.
        max_length: Tokens per window.
        doc_stride: Tokens shared by consecutive windows.

    Returns:
        Model inputs plus ``example_id``, ``offset_mapping`` (and labels), one row per window.
    """
    enc = _tokenize_windows(batch, tokenizer, max_length, doc_stride)
    context_id = 1 if _question_first(tokenizer) else 0
    rows = enc["overflow_to_sample_mapping"]
    offsets = [
        [off if sid == context_id else None for off, sid in zip(enc["offset_mapping"][i], enc.sequence_ids(i))]
        for i in range(len(rows))
    ]
    features = {**_model_inputs(enc), "example_id": [str(batch["id"][r]) for r in rows], "offset_mapping": offsets}
    if "answers" in batch:
        features.update(_add_labels(enc, batch, tokenizer))
    return features
