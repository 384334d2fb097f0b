"""BLEU metric for ``evaluate``: corpus BLEU with brevity penalty (Papineni et al. 2002).

``predictions`` are strings; ``references`` are strings or lists of strings. Keyword arguments of
``compute``: ``max_order`` (default 4) and ``smooth`` (default False). The result has the keys of the
hub's ``bleu``. The arithmetic lives in :func:`llmtune.metrics.overlap.bleu`.
"""

import evaluate

from llmtune.metrics.overlap import bleu, text_features

_DESCRIPTION = "Corpus BLEU: geometric mean of clipped n-gram precisions times a brevity penalty."

_INPUTS = """
Args:
    predictions: list of generated texts.
    references: list of reference texts, or of lists of reference texts.
    max_order: longest n-gram counted (default 4).
    smooth: add-one smoothing of the precisions (default False).
Returns:
    bleu (0-1), precisions, brevity_penalty, length_ratio, translation_length, reference_length.
"""

_FEATURES = text_features()


class Bleu(evaluate.Metric):
    """``evaluate`` wrapper around :func:`llmtune.metrics.overlap.bleu`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_INPUTS, features=_FEATURES
        )

    def _compute(self, predictions, references, max_order=4, smooth=False) -> dict:
        return bleu(predictions, references, max_order=max_order, smooth=smooth)
