"""Language-modelling metric for ``evaluate``: loss, perplexity, bits per token/char/byte.

Inputs, one row per evaluated sequence (or per batch, whichever is convenient; rows are summed):

* ``predictions``: the summed negative log-likelihood of the row's scored tokens, in nats (float).
* ``references``: the number of scored tokens in that row (int).

Keyword arguments of ``compute``: ``num_chars`` and ``num_bytes``, the total number of characters
and UTF-8 bytes of the scored text; give them to also get ``bits_per_char`` and ``bits_per_byte``.

Example::

    metric.compute(predictions=[12.5, 7.0], references=[10, 6], num_chars=64)

The arithmetic lives in :func:`llmtune.metrics.core.lm_metrics`.
"""

import math

import datasets
import evaluate

from llmtune.metrics.core import lm_metrics

_DESCRIPTION = "Mean token loss (nats), perplexity and bits per token, character and byte."

_INPUTS = """
Args:
    predictions: per-row summed negative log-likelihood, in nats.
    references: per-row number of scored tokens.
    num_chars: total characters of the scored text (optional).
    num_bytes: total UTF-8 bytes of the scored text (optional).
Returns:
    loss, perplexity, bits_per_token, and bits_per_char / bits_per_byte when the counts are given.
"""

_FEATURES = datasets.Features(
    {"predictions": datasets.Value("float64"), "references": datasets.Value("int64")}
)


class Lm(evaluate.Metric):
    """``evaluate`` wrapper around :func:`llmtune.metrics.core.lm_metrics`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=_FEATURES,
        )

    def _compute(self, predictions, references, num_chars=None, num_bytes=None) -> dict:
        # fsum keeps the total exact-ish when many small per-row sums are added.
        total_nll = math.fsum(float(nll) for nll in predictions)
        num_tokens = int(sum(int(count) for count in references))
        return lm_metrics(total_nll, num_tokens, num_chars=num_chars, num_bytes=num_bytes)
