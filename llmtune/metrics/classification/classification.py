"""Classification metric for ``evaluate``: accuracy, P/R/F1 (macro/micro/weighted), per-class rows.

Single-label input: ``predictions`` and ``references`` are class ids (one int per example).
Multi-label input: each example is a 0/1 indicator list with one entry per label; then ``accuracy``
is subset accuracy and no confusion matrix is returned.

Keyword arguments of ``compute``: ``num_labels`` (int) and ``label_names`` (list of str). The
arithmetic lives in :func:`llmtune.metrics.core.classification_metrics`.
"""

import datasets
import evaluate

from llmtune.metrics.core import classification_metrics

_DESCRIPTION = (
    "Accuracy, precision, recall and F1 (macro, micro, weighted), per-class scores and the "
    "confusion matrix."
)

_INPUTS = """
Args:
    predictions: predicted class ids (single-label) or 0/1 indicator lists (multi-label).
    references: gold class ids or 0/1 indicator lists, matching ``predictions``.
    num_labels: total number of classes (optional; inferred from the data otherwise).
    label_names: class names indexed by id (optional).
Returns:
    accuracy, precision_/recall_/f1_ macro, micro and weighted, per_class, and (single-label)
    confusion_matrix with gold labels as rows and predictions as columns.
"""

_SINGLE_LABEL = datasets.Features(
    {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
)
_MULTI_LABEL = datasets.Features(
    {
        "predictions": datasets.Sequence(datasets.Value("int64")),
        "references": datasets.Sequence(datasets.Value("int64")),
    }
)


class Classification(evaluate.Metric):
    """``evaluate`` wrapper around :func:`llmtune.metrics.core.classification_metrics`."""

    def _info(self) -> evaluate.MetricInfo:
        # evaluate picks whichever feature set matches the first example.
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=[_SINGLE_LABEL, _MULTI_LABEL],
        )

    def _compute(self, predictions, references, num_labels=None, label_names=None) -> dict:
        return classification_metrics(
            predictions, references, num_labels=num_labels, label_names=label_names
        )
