"""Text-overlap metrics for generated text: exact match, ROUGE-1/2/L and corpus BLEU.

Pure standard library, like :mod:`llmtune.metrics.core` (only ``text_features`` imports ``datasets``,
when called), so ``llmtune eval`` scores generations without importing ``evaluate``; the ``rouge``
and ``bleu`` ``evaluate`` modules next to this file delegate here. The definitions follow the
packages the hub metrics wrap, so numbers compare:

* ROUGE (``rouge_score``, no stemming): text lower-cased, every run of characters other than
  ``a-z0-9`` is a separator; ROUGE-N is the F1 of clipped n-gram overlap, ROUGE-L the F1 of the
  longest common subsequence. Each prediction takes its best reference; scores are averaged over
  predictions (``evaluate``'s aggregator reports a bootstrap estimate of the same mean).
* BLEU (Papineni et al. 2002, as ``evaluate``'s ``bleu``): corpus-level, clipped n-gram precisions
  up to ``max_order`` summed over the corpus, geometric mean, brevity penalty against the shortest
  reference of each prediction. Tokens are words and single punctuation marks, case kept (close to
  sacrebleu's ``13a`` tokenizer for plain text).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, Union

References = Sequence[Union[str, Sequence[str]]]

_ROUGE_SPLIT = re.compile(r"[^a-z0-9]+")
_BLEU_TOKENS = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def _reference_lists(predictions: Sequence[str], references: References) -> list[list[str]]:
    """Each reference entry as a non-empty list of strings, one entry per prediction."""
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("cannot score zero predictions")
    out = [[r] if isinstance(r, str) else list(r) for r in references]
    if any(not refs for refs in out):
        raise ValueError("every prediction needs at least one reference")
    return out


def text_features() -> list[Any]:
    """``evaluate`` feature sets for these metrics: a text per prediction, one reference text or several."""
    import datasets

    text = datasets.Value("string")
    return [datasets.Features({"predictions": text, "references": text}),
            datasets.Features({"predictions": text, "references": datasets.Sequence(text)})]


def exact_match(predictions: Sequence[str], references: References) -> float:
    """Share of predictions equal to one of their references, ignoring surrounding and repeated whitespace."""

    def norm(text: str) -> str:
        return " ".join(text.split())

    refs = _reference_lists(predictions, references)
    hits = sum(any(norm(p) == norm(r) for r in rs) for p, rs in zip(predictions, refs))
    return hits / len(predictions)


# --------------------------------------------------------------------------------------------------
# ROUGE
# --------------------------------------------------------------------------------------------------


def rouge_tokens(text: str) -> list[str]:
    """``rouge_score``'s default tokens: lower-case ``a-z0-9`` runs."""
    return [t for t in _ROUGE_SPLIT.split(text.lower()) if t]


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _f1(overlap: int, predicted: int, reference: int) -> float:
    if overlap == 0:
        return 0.0
    precision, recall = overlap / predicted, overlap / reference
    return 2 * precision * recall / (precision + recall)


def rouge_n(prediction: Sequence[str], reference: Sequence[str], n: int) -> float:
    """F1 of clipped n-gram overlap between two token lists."""
    pred, ref = _ngrams(prediction, n), _ngrams(reference, n)
    return _f1(sum((pred & ref).values()), sum(pred.values()), sum(ref.values()))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, O(len(a) * len(b)))."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: Sequence[str], reference: Sequence[str]) -> float:
    """F1 of the longest common subsequence of two token lists."""
    return _f1(lcs_length(prediction, reference), len(prediction), len(reference))


def rouge_scores(predictions: Sequence[str], references: References) -> dict[str, float]:
    """Mean ``rouge1``, ``rouge2`` and ``rougeL`` F1 over predictions (each against its best reference).

    Args:
        predictions: Generated texts.
        references: One reference text, or a list of them, per prediction.

    Returns:
        ``{"rouge1": ..., "rouge2": ..., "rougeL": ...}``, each in [0, 1].

    Raises:
        ValueError: No predictions, a count mismatch, or a prediction without references.
    """
    refs = _reference_lists(predictions, references)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for prediction, options in zip(predictions, refs):
        pred = rouge_tokens(prediction)
        golds = [rouge_tokens(r) for r in options]
        totals["rouge1"] += max(rouge_n(pred, g, 1) for g in golds)
        totals["rouge2"] += max(rouge_n(pred, g, 2) for g in golds)
        totals["rougeL"] += max(rouge_l(pred, g) for g in golds)
    return {key: value / len(predictions) for key, value in totals.items()}


# --------------------------------------------------------------------------------------------------
# BLEU
# --------------------------------------------------------------------------------------------------


def bleu_tokens(text: str) -> list[str]:
    """Words and single punctuation marks, case kept."""
    return _BLEU_TOKENS.findall(text)


def bleu(predictions: Sequence[str], references: References, max_order: int = 4,
         smooth: bool = False) -> dict[str, Any]:
    """Corpus BLEU with the brevity penalty.

    Args:
        predictions: Generated texts.
        references: One reference text, or a list of them, per prediction.
        max_order: Longest n-gram counted.
        smooth: Add one to every precision's numerator and denominator (Lin and Och 2004), so a
            corpus without any 4-gram match does not score 0.

    Returns:
        ``bleu`` (0-1), ``precisions`` (one per order), ``brevity_penalty``, ``length_ratio``,
        ``translation_length`` and ``reference_length`` (tokens), the keys ``evaluate``'s bleu returns.

    Raises:
        ValueError: No predictions, a count mismatch, or a prediction without references.
    """
    refs = _reference_lists(predictions, references)
    matches, possible = [0] * max_order, [0] * max_order
    pred_length = ref_length = 0
    for prediction, options in zip(predictions, refs):
        pred = bleu_tokens(prediction)
        golds = [bleu_tokens(r) for r in options]
        pred_length += len(pred)
        ref_length += min(len(g) for g in golds)
        for n in range(1, max_order + 1):
            allowed: Counter = Counter()
            for gold in golds:
                allowed |= _ngrams(gold, n)  # an n-gram counts as often as in the reference using it most
            matches[n - 1] += sum((_ngrams(pred, n) & allowed).values())
            possible[n - 1] += max(0, len(pred) - n + 1)
    if smooth:
        precisions = [(m + 1) / (p + 1) for m, p in zip(matches, possible)]
    else:
        precisions = [m / p if p else 0.0 for m, p in zip(matches, possible)]
    geo_mean = math.exp(sum(math.log(p) for p in precisions) / max_order) if min(precisions) > 0 else 0.0
    ratio = pred_length / ref_length if ref_length else 0.0
    penalty = 1.0 if ratio > 1.0 else (math.exp(1 - 1 / ratio) if ratio > 0 else 0.0)
    return {"bleu": geo_mean * penalty, "precisions": precisions, "brevity_penalty": penalty,
            "length_ratio": ratio, "translation_length": pred_length, "reference_length": ref_length}
