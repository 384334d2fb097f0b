"""SQuAD v1.1/v2.0 metric for ``evaluate``: exact match and token F1 (percentages).

Inputs follow the usual SQuAD layout::

    predictions = [{"id": "q1", "prediction_text": "Denver Broncos"}, ...]
    references = [{"id": "q1", "answers": {"text": ["Denver Broncos"], "answer_start": [177]}}, ...]

An empty ``answers["text"]`` marks an unanswerable (v2.0) question; the result then also carries
``HasAns_*`` and ``NoAns_*`` breakdowns. Questions without a prediction score as if "" was
predicted.
The arithmetic lives in :func:`llmtune.metrics.core.squad_metrics`.
"""

import datasets
import evaluate

from llmtune.metrics.core import squad_metrics

_DESCRIPTION = "Exact match and token-overlap F1 as in the official SQuAD v1.1/v2.0 scripts."

_INPUTS = """
Args:
    predictions: list of {"id": str, "prediction_text": str}.
    references: list of {"id": str, "answers": {"text": list[str], "answer_start": list[int]}}.
Returns:
    exact_match and f1 (0-100) and total; with unanswerable questions also HasAns_exact, HasAns_f1,
    HasAns_total, NoAns_exact, NoAns_f1 and NoAns_total.
"""

_FEATURES = datasets.Features(
    {
        "predictions": {
            "id": datasets.Value("string"),
            "prediction_text": datasets.Value("string"),
        },
        "references": {
            "id": datasets.Value("string"),
            "answers": {
                "text": datasets.Sequence(datasets.Value("string")),
                "answer_start": datasets.Sequence(datasets.Value("int32")),
            },
        },
    }
)


class Squad(evaluate.Metric):
    """``evaluate`` wrapper around :func:`llmtune.metrics.core.squad_metrics`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=_FEATURES,
        )

    def _compute(self, predictions, references) -> dict:
        gold: dict[str, list[str]] = {}
        for ref in references:
            if ref["id"] in gold:
                # Silently keeping one copy would shrink `total` and hide a data bug.
                raise ValueError(f"duplicate reference id {ref['id']!r}")
            gold[ref["id"]] = list(ref["answers"]["text"])
        predicted = {pred["id"]: pred["prediction_text"] for pred in predictions}
        return squad_metrics(predicted, gold)
