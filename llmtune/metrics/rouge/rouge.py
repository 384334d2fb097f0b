"""ROUGE metric for ``evaluate``: mean ROUGE-1, ROUGE-2 and ROUGE-L F1 of generated texts.

``predictions`` are strings; ``references`` are strings or lists of strings (each prediction is
scored against its best reference). Tokens are lower-cased ``a-z0-9`` runs, as ``rouge_score``
without stemming. The arithmetic lives in :func:`llmtune.metrics.overlap.rouge_scores`.
"""

import evaluate

from llmtune.metrics.overlap import rouge_scores, text_features

_DESCRIPTION = "ROUGE-1/2 (n-gram overlap F1) and ROUGE-L (longest common subsequence F1), averaged."

_INPUTS = """
Args:
    predictions: list of generated texts.
    references: list of reference texts, or of lists of reference texts.
Returns:
    rouge1, rouge2 and rougeL, each a mean F1 in [0, 1].
"""

_FEATURES = text_features()


class Rouge(evaluate.Metric):
    """``evaluate`` wrapper around :func:`llmtune.metrics.overlap.rouge_scores`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_INPUTS, features=_FEATURES
        )

    def _compute(self, predictions, references) -> dict:
        return rouge_scores(predictions, references)
