"""Offline metric arithmetic: classification, SQuAD-style QA and language modelling.

Pure numpy / standard library on purpose: the ``evaluate`` wrappers next to this module and the
training engine both call these functions, and neither should pay for importing ``evaluate`` or
``torch`` just to count. Every function returns plain Python ``float``/``int``/``list``/``dict``
values so results can be written to JSON unchanged.
"""

from __future__ import annotations

import collections
import math
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------------


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Element-wise ``num / den`` with 0.0 where ``den == 0`` (sklearn's ``zero_division=0``)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _as_int_array(values: Any, what: str) -> np.ndarray:
    """Converts labels to an int64 array, rejecting non-integral or negative values."""
    try:
        arr = np.asarray(values)
    except ValueError as exc:  # ragged nested lists
        raise ValueError(
            f"{what} must be a flat list of labels or a rectangular 0/1 matrix"
        ) from exc
    if arr.size and not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.mod(arr, 1) == 0):
            raise ValueError(f"{what} must be integer class ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        # -100 style "ignore" labels must be filtered by the caller; counting them would be wrong.
        raise ValueError(
            f"{what} contain negative label ids; drop ignored positions before scoring"
        )
    return arr


def _prf_from_counts(
    tp: np.ndarray, pred_pos: np.ndarray, support: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-label precision, recall and F1 from true positives, predicted positives and support."""
    precision = _safe_div(tp, pred_pos)
    recall = _safe_div(tp, support)
    # 2tp / (2tp + fp + fn) equals 2PR/(P+R) whenever that is defined, and is 0 when tp == 0.
    f1 = _safe_div(2 * tp, pred_pos + support)
    return {"precision": precision, "recall": recall, "f1": f1}


def _averages(
    tp: np.ndarray, pred_pos: np.ndarray, support: np.ndarray, averaged: np.ndarray
) -> dict[str, float]:
    """Macro, micro and weighted P/R/F1 over the labels selected by the mask ``averaged``."""
    per = _prf_from_counts(tp, pred_pos, support)
    micro = _prf_from_counts(tp[averaged].sum(), pred_pos[averaged].sum(), support[averaged].sum())
    weights = support[averaged].astype(np.float64)
    out: dict[str, float] = {}
    for key, values in per.items():
        selected = values[averaged]
        out[f"{key}_macro"] = float(selected.mean()) if selected.size else 0.0
        out[f"{key}_micro"] = float(micro[key])
        out[f"{key}_weighted"] = float(_safe_div((selected * weights).sum(), weights.sum()))
    return out


def _per_class(
    tp: np.ndarray, pred_pos: np.ndarray, support: np.ndarray, names: list[str]
) -> list[dict[str, Any]]:
    """One JSON-ready row per label."""
    per = _prf_from_counts(tp, pred_pos, support)
    return [
        {
            "label": names[i],
            "precision": float(per["precision"][i]),
            "recall": float(per["recall"][i]),
            "f1": float(per["f1"][i]),
            "support": int(support[i]),
        }
        for i in range(len(names))
    ]


def _label_names(num_labels: int, label_names: Sequence[str] | None) -> list[str]:
    """Display names for label ids: the given names, else the ids as strings."""
    if label_names is None:
        return [str(i) for i in range(num_labels)]
    if len(label_names) != num_labels:
        raise ValueError(
            f"label_names has {len(label_names)} entries but there are {num_labels} labels"
        )
    return [str(name) for name in label_names]


def _resolve_num_labels(
    observed: int, num_labels: int | None, label_names: Sequence[str] | None
) -> int:
    """Number of labels: explicit, else ``len(label_names)``, else ``observed``; never fewer."""
    if num_labels is None and label_names is not None:
        num_labels = len(label_names)
    if num_labels is None:
        return observed
    if num_labels < observed:
        raise ValueError(
            f"only {num_labels} labels are declared but label id {observed - 1} occurs in the data"
        )
    return num_labels


def _single_label_metrics(
    preds: np.ndarray, refs: np.ndarray, num_labels: int | None, label_names: Sequence[str] | None
) -> dict[str, Any]:
    """Metrics for one class id per example."""
    observed = int(max(preds.max(), refs.max())) + 1
    k = _resolve_num_labels(observed, num_labels, label_names)
    names = _label_names(k, label_names)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (refs, preds), 1)
    tp = np.diag(confusion)
    pred_pos = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    # Like sklearn's default (labels=None): average over labels seen in references or predictions,
    # so a declared-but-absent class does not drag the macro scores down with a meaningless 0.
    averaged = (pred_pos + support) > 0
    result: dict[str, Any] = {"accuracy": float(tp.sum() / preds.size)}
    result.update(_averages(tp, pred_pos, support, averaged))
    result["per_class"] = _per_class(tp, pred_pos, support, names)
    result["confusion_matrix"] = confusion.tolist()
    return result


def _multi_label_metrics(
    preds: np.ndarray, refs: np.ndarray, num_labels: int | None, label_names: Sequence[str] | None
) -> dict[str, Any]:
    """Metrics for 0/1 indicator matrices of shape (examples, labels)."""
    if preds.max(initial=0) > 1 or refs.max(initial=0) > 1:
        raise ValueError("multi-label predictions and references must be 0/1 indicator matrices")
    k = preds.shape[1]
    declared = num_labels
    if declared is None:
        declared = len(label_names) if label_names is not None else k
    if declared != k:
        raise ValueError(
            f"{declared} labels are declared but the indicator matrices have {k} columns"
        )
    names = _label_names(k, label_names)
    tp = (preds & refs).sum(axis=0)
    pred_pos = preds.sum(axis=0)
    support = refs.sum(axis=0)
    # sklearn averages over every indicator column in the multi-label case; so do we.
    averaged = np.ones(k, dtype=bool)
    result: dict[str, Any] = {"accuracy": float(np.all(preds == refs, axis=1).mean())}
    result.update(_averages(tp, pred_pos, support, averaged))
    result["per_class"] = _per_class(tp, pred_pos, support, names)
    return result


def classification_metrics(
    predictions: Any,
    references: Any,
    num_labels: int | None = None,
    label_names: list[str] | None = None,
) -> dict[str, Any]:
    """Accuracy, precision, recall, F1, per-class rows and (single-label) confusion matrix.

    Single-label inputs are 1-D sequences of class ids. Multi-label inputs are 2-D 0/1 indicator
    matrices of shape ``(examples, labels)``; then ``accuracy`` is subset accuracy and there is no
    ``confusion_matrix`` key. Divisions by zero give 0.0, as sklearn's ``zero_division=0``. Macro
    and weighted averages follow sklearn's default label set: single-label averages over labels
    that occur in the references or predictions; multi-label averages over every column.

    Args:
        predictions: Predicted class ids, or a 0/1 indicator matrix.
        references: Gold class ids, or a 0/1 indicator matrix of the same shape.
        num_labels: Total number of classes; inferred from the data (or ``label_names``) if omitted.
        label_names: Display names for the classes, indexed by class id.

    Returns:
        A JSON-serialisable dict with ``accuracy``,
        ``{precision,recall,f1}_{macro,micro,weighted}``, ``per_class`` (dicts with ``label``,
        ``precision``, ``recall``, ``f1``, ``support``) and, for single-label input,
        ``confusion_matrix`` (rows are gold labels, columns predictions).

    Raises:
        ValueError: On empty input, mismatched shapes, negative or non-integer ids, non-0/1
            multi-label values, or a ``num_labels``/``label_names`` inconsistent with the data.
    """
    preds = _as_int_array(predictions, "predictions")
    refs = _as_int_array(references, "references")
    if preds.shape != refs.shape:
        raise ValueError(
            f"predictions have shape {preds.shape} but references have shape {refs.shape}"
        )
    if preds.size == 0:
        raise ValueError("cannot compute classification metrics on zero examples")
    if preds.ndim == 1:
        return _single_label_metrics(preds, refs, num_labels, label_names)
    if preds.ndim == 2:
        return _multi_label_metrics(preds, refs, num_labels, label_names)
    raise ValueError(
        f"predictions must be 1-D class ids or a 2-D indicator matrix, got {preds.ndim}-D"
    )


# --------------------------------------------------------------------------------------------------
# SQuAD v1.1 / v2.0
# --------------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Normalises an answer the way the official SQuAD v1.1/v2.0 evaluation scripts do.

    Lower-cases, drops ASCII punctuation, replaces the articles "a", "an", "the" with spaces, and
    collapses runs of whitespace to single spaces (stripping the ends). The order matters and
    matches the official script, e.g. punctuation is removed before articles are matched.

    Args:
        s: Raw answer text.

    Returns:
        The normalised text.
    """
    text = s.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _tokens(s: str) -> list[str]:
    """Whitespace tokens of the normalised text (empty for empty input)."""
    return normalize_answer(s).split() if s else []


def exact_match_score(prediction: str, ground_truth: str) -> float:
    """1.0 if both strings are equal after :func:`normalize_answer`, else 0.0.

    Args:
        prediction: Predicted answer text.
        ground_truth: One gold answer text.

    Returns:
        1.0 or 0.0.
    """
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token-overlap F1 between normalised answers, as in the official SQuAD v2.0 script.

    If either side normalises to no tokens (a no-answer), the score is 1.0 when both do and 0.0
    otherwise.

    Args:
        prediction: Predicted answer text.
        ground_truth: One gold answer text.

    Returns:
        F1 in [0, 1].
    """
    pred_tokens = _tokens(prediction)
    gold_tokens = _tokens(ground_truth)
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    overlap = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _gold_answers(answers: Sequence[str]) -> list[str]:
    """Gold answers worth scoring; ``[""]`` for an unanswerable question (official v2 rule)."""
    gold = [a for a in answers if normalize_answer(a)]
    return gold or [""]


def _percent_means(exact: list[float], f1: list[float], prefix: str) -> dict[str, Any]:
    """``{prefix}exact``/``{prefix}f1`` in percent and ``{prefix}total``; 0.0 for an empty group."""
    total = len(exact)
    return {
        f"{prefix}exact": 100.0 * sum(exact) / total if total else 0.0,
        f"{prefix}f1": 100.0 * sum(f1) / total if total else 0.0,
        f"{prefix}total": total,
    }


def squad_metrics(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """Exact match and F1 over a SQuAD-style dataset (v1.1, or v2.0 with unanswerable questions).

    Each question scores the best EM and the best F1 over its gold answers. A question whose answer
    list holds no non-blank text is unanswerable: its only gold answer is "" and a prediction scores
    only if it also normalises to "". A question with no prediction scores as if "" was predicted.
    Predictions for ids absent from ``references`` are ignored.

    Args:
        predictions: Question id -> predicted answer text.
        references: Question id -> gold answer texts (empty for unanswerable questions).

    Returns:
        ``exact_match`` and ``f1`` as percentages (0-100) and ``total``. If any question is
        unanswerable, also ``HasAns_exact``, ``HasAns_f1``, ``HasAns_total``, ``NoAns_exact``,
        ``NoAns_f1`` and ``NoAns_total`` (exact/f1 are 0.0 for a group with no questions).

    Raises:
        ValueError: If ``references`` is empty.
    """
    if not references:
        raise ValueError("cannot compute SQuAD metrics on zero questions")
    groups: dict[bool, tuple[list[float], list[float]]] = {True: ([], []), False: ([], [])}
    for qid, answers in references.items():
        prediction = predictions.get(qid) or ""
        gold = _gold_answers(answers)
        has_answer = any(a.strip() for a in answers)
        exact_scores, f1_scores = groups[has_answer]
        exact_scores.append(max(exact_match_score(prediction, g) for g in gold))
        f1_scores.append(max(f1_score(prediction, g) for g in gold))
    all_exact = groups[True][0] + groups[False][0]
    all_f1 = groups[True][1] + groups[False][1]
    overall = _percent_means(all_exact, all_f1, "")
    result: dict[str, Any] = {
        "exact_match": overall["exact"],
        "f1": overall["f1"],
        "total": overall["total"],
    }
    if groups[False][0]:
        result.update(_percent_means(*groups[True], "HasAns_"))
        result.update(_percent_means(*groups[False], "NoAns_"))
    return result


# --------------------------------------------------------------------------------------------------
# Language modelling
# --------------------------------------------------------------------------------------------------


def _check_count(value: int | None, name: str) -> None:
    """Rejects negative counts (zero or None just means "not reported")."""
    if value is not None and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def lm_metrics(
    total_nll: float, num_tokens: int, num_chars: int | None = None, num_bytes: int | None = None
) -> dict[str, float]:
    """Loss, perplexity and bits per token/character/byte from a summed negative log-likelihood.

    Bits per character/byte normalise the same total NLL by text length rather than token count,
    which makes models with different tokenizers comparable.

    Args:
        total_nll: Sum of the per-token negative log-likelihoods, in nats.
        num_tokens: Number of scored tokens.
        num_chars: Number of characters in the scored text, if known.
        num_bytes: Number of UTF-8 bytes in the scored text, if known.

    Returns:
        ``loss`` (mean NLL per token, nats), ``perplexity`` (``exp(loss)``, ``inf`` on overflow) and
        ``bits_per_token``; ``bits_per_char`` / ``bits_per_byte`` only when that count is given
        and > 0.

    Raises:
        ValueError: If ``num_tokens <= 0``, a count is negative, or ``total_nll`` is negative
            or NaN.
    """
    if num_tokens <= 0:
        raise ValueError(f"num_tokens must be > 0, got {num_tokens}")
    _check_count(num_chars, "num_chars")
    _check_count(num_bytes, "num_bytes")
    total_nll = float(total_nll)
    if math.isnan(total_nll) or total_nll < 0:
        raise ValueError(f"total_nll must be a non-negative number of nats, got {total_nll}")
    loss = total_nll / num_tokens
    try:
        perplexity = math.exp(loss)
    except OverflowError:  # a diverged model: report inf rather than crash the evaluation
        perplexity = float("inf")
    result = {"loss": loss, "perplexity": perplexity, "bits_per_token": loss / math.log(2)}
    if num_chars:
        result["bits_per_char"] = total_nll / (math.log(2) * num_chars)
    if num_bytes:
        result["bits_per_byte"] = total_nll / (math.log(2) * num_bytes)
    return result
