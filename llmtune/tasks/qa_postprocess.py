"""Turn extractive-QA start/end logits back into answer texts, and score them.

Pure numpy. For each example, every window proposes its best span among the ``n_best`` highest
start logits x ``n_best`` highest end logits (both ends inside the context, end >= start, at most
``max_answer_length`` tokens), scored start + end logit; the example's answer is the best proposal of
all its windows, cut from the context by character offsets. For SQuAD v2 the "no answer" score is
the CLS start + end logit, taken from the window where it is lowest (the window most sure an answer
is there); the answer is "" when ``null_score - best_span_score > null_score_threshold``, so a
higher threshold answers more often (the Hugging Face ``null_score_diff_threshold`` convention).

Logits rows may be longer than their window: the Trainer pads each batch to its longest window
(the model scores the padding too) and pads batches to a common width with -100 when it concatenates
them. Each row is therefore cut to its window's length before it is read.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Optional

import numpy as np

from llmtune.metrics.core import squad_metrics

# Where "no answer" points in every window, in training labels and null scores alike: [CLS] for
# BERT-style tokenizers, the first token otherwise (either way a token no real answer starts on).
CLS_INDEX = 0


def _window_best(
    start: np.ndarray, end: np.ndarray, in_context: np.ndarray, n_best: int, max_answer_length: int
) -> Optional[tuple[float, int, int]]:
    """Best valid ``(score, start_token, end_token)`` in one window, or None when no span is valid."""
    k = min(n_best, start.size)
    # A stable sort keeps ties in token order, so equal logits pick the earliest token.
    top_start = np.argsort(-start, kind="stable")[:k][:, None]
    top_end = np.argsort(-end, kind="stable")[:k][None, :]
    length = top_end - top_start + 1
    valid = in_context[top_start] & in_context[top_end] & (length >= 1) & (length <= max_answer_length)
    if not valid.any():
        return None
    scores = np.where(valid, start[top_start] + end[top_end], -np.inf)
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return float(scores[i, j]), int(top_start[i, 0]), int(top_end[0, j])


def _window_rows(start_row: Any, end_row: Any, offsets: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start/end logits cut to the window's length, and which of its tokens are context."""
    n = min(len(offsets), len(start_row), len(end_row))
    in_context = np.fromiter((o is not None and len(o) == 2 for o in offsets[:n]), dtype=bool, count=n)
    return np.asarray(start_row[:n], dtype=np.float64), np.asarray(end_row[:n], dtype=np.float64), in_context


def postprocess_predictions(
    examples: Any,
    features: Any,
    start_logits: Any,
    end_logits: Any,
    n_best: int = 20,
    max_answer_length: int = 30,
    allow_no_answer: bool = False,
    null_score_threshold: float = 0.0,
) -> dict[str, str]:
    """Answer text per example from the start/end logits of its windows.

    Args:
        examples: ``id`` and ``context`` columns (a ``datasets.Dataset`` or a dict of lists).
        features: ``example_id`` and ``offset_mapping`` columns, one row per window, in logits order;
            offsets are None for tokens outside the context (``prepare_eval_features``).
        start_logits: ``(windows, length)`` array-like; rows may be padded past the window length.
        end_logits: Same shape as ``start_logits``.
        n_best: How many top start and end positions to combine per window.
        max_answer_length: Longest answer in tokens.
        allow_no_answer: Predict "" when the null score wins (SQuAD v2).
        null_score_threshold: Margin the null score must beat the best span by.

    Returns:
        Example id -> answer text ("" for no answer, or when no valid span exists).

    Raises:
        ValueError: The logits do not have one row per feature.
    """
    feature_ids = [str(i) for i in features["example_id"]]
    offsets = list(features["offset_mapping"])
    if len(start_logits) != len(feature_ids) or len(end_logits) != len(feature_ids):
        raise ValueError(
            f"got {len(start_logits)}/{len(end_logits)} rows of start/end logits for {len(feature_ids)} windows; "
            "predict on exactly the eval features passed here, in the same order"
        )
    windows: dict[str, list[int]] = defaultdict(list)
    for index, example_id in enumerate(feature_ids):
        windows[example_id].append(index)
    predictions: dict[str, str] = {}
    for example_id, context in zip(examples["id"], examples["context"]):
        key = str(example_id)
        best: Optional[tuple[float, int, int, int]] = None  # score, window, start token, end token
        null_score = np.inf
        for w in windows.get(key, []):
            start, end, in_context = _window_rows(start_logits[w], end_logits[w], offsets[w])
            if start.size:
                null_score = min(null_score, float(start[CLS_INDEX] + end[CLS_INDEX]))
            found = _window_best(start, end, in_context, n_best, max_answer_length)
            if found is not None and (best is None or found[0] > best[0]):
                best = (found[0], w, found[1], found[2])
        if best is None or (allow_no_answer and null_score - best[0] > null_score_threshold):
            predictions[key] = ""
            continue
        _, w, first, last = best
        predictions[key] = (context or "")[offsets[w][first][0] : offsets[w][last][1]]
    return predictions


def compute_metrics_fn(
    eval_examples: Any,
    eval_features: Any,
    n_best: int = 20,
    max_answer_length: int = 30,
    allow_no_answer: bool = False,
    null_score_threshold: float = 0.0,
    on_predictions: Optional[Callable[[dict[str, str]], None]] = None,
) -> Callable[[Any], dict[str, float]]:
    """A Trainer ``compute_metrics`` that post-processes logits and scores them SQuAD-style.

    Args:
        eval_examples: The evaluation rows (``id``, ``context``, ``answers``).
        eval_features: Their windows (``prepare_eval_features``), in the order the Trainer predicts.
        n_best: See ``postprocess_predictions``.
        max_answer_length: See ``postprocess_predictions``.
        allow_no_answer: See ``postprocess_predictions``.
        null_score_threshold: See ``postprocess_predictions``.
        on_predictions: Called with each round's id -> text predictions (to write predictions.json).

    Returns:
        A function of an ``EvalPrediction`` whose ``predictions`` are ``(start_logits, end_logits)``;
        it returns ``exact_match``, ``f1`` and ``total`` (plus ``HasAns_*``/``NoAns_*`` when some
        questions are unanswerable).
    """
    references = {
        str(i): list((a or {}).get("text") or []) for i, a in zip(eval_examples["id"], eval_examples["answers"])
    }

    def compute(eval_pred: Any) -> dict[str, float]:
        outputs = eval_pred.predictions if hasattr(eval_pred, "predictions") else eval_pred
        # Models may return more outputs (hidden states); start and end logits always come first.
        predictions = postprocess_predictions(
            eval_examples, eval_features, outputs[0], outputs[1], n_best, max_answer_length,
            allow_no_answer, null_score_threshold,
        )
        if on_predictions is not None:
            on_predictions(predictions)
        return squad_metrics(predictions, references)

    return compute
