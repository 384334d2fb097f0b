"""Markdown for ``report.md``: metric tables, per-class scores, confusion matrices and examples.

Pure string building (no heavy imports), shared by ``llmtune eval`` (an evaluation's report) and
``llmtune report`` (a training run's report), so both read the same way. ``ordered_scalars`` also
orders the terminal tables (``llmtune.reports.terminal``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional

# The headline metrics first, in this order; other numbers follow alphabetically, timings last.
_FIRST = ("accuracy", "f1_macro", "f1_micro", "f1_weighted", "precision_macro", "recall_macro", "exact_match",
          "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "loss", "perplexity", "bits_per_char",
          "bits_per_byte", "bits_per_token", "rougeL", "rouge1", "rouge2", "bleu", "generated_exact_match")
_FACTS = ("task", "model", "data", "rows")  # what was evaluated, shown before any number
_LAST = ("runtime", "samples_per_second", "steps_per_second", "wall_seconds", "preparation_time")
_CELL_CHARS = 120


def _rank(key: str) -> tuple[int, int, str]:
    if key in _FACTS:
        return -1, _FACTS.index(key), key
    bare = key.removeprefix("eval_").removeprefix("train_")
    if bare in _FIRST and key.startswith("eval_"):
        return 0, _FIRST.index(bare), key
    if bare.endswith(_LAST) or key.endswith(_LAST):
        return 2, 0, key
    return 1, 0, key


def ordered_scalars(metrics: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The number, string and bool entries of ``metrics`` (lists and tables left out), headline ones first."""
    scalars = [(k, v) for k, v in metrics.items() if v is None or isinstance(v, (int, float, str, bool))]
    return sorted(scalars, key=lambda item: _rank(item[0]))


def fmt(value: Any) -> str:
    """A number as a reader wants it: 4 significant digits, thousands separated; None as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.0f}" if abs(value) >= 1e5 else f"{value:.4g}"
    return str(value)


def cell(value: Any, limit: int = _CELL_CHARS) -> str:
    """Text safe inside a table cell: one line, pipes escaped, cut at ``limit`` characters."""
    text = value if isinstance(value, str) else fmt(value) if not isinstance(value, (list, dict)) else str(value)
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Optional[Sequence[bool]] = None) -> str:
    """A GitHub-flavoured markdown table; ``numeric`` columns are right-aligned."""
    numeric = numeric or [False] * len(header)
    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def metrics_table(metrics: Mapping[str, Any]) -> str:
    """Every scalar metric, headline ones first."""
    return table(("metric", "value"), ordered_scalars(metrics), (False, True))


def per_class_table(per_class: Sequence[Mapping[str, Any]]) -> str:
    """One row per class: precision, recall, F1 and support."""
    rows = [(r["label"], r["precision"], r["recall"], r["f1"], r["support"]) for r in per_class]
    return table(("class", "precision", "recall", "F1", "support"), rows, (False, True, True, True, True))


def confusion_table(matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> str:
    """The confusion matrix as a table: rows are gold labels, columns predictions."""
    rows = [(f"**{label}**", *counts) for label, counts in zip(labels, matrix)]
    return table(("gold \\ predicted", *labels), rows, (False, *[True] * len(labels)))


def examples_table(records: Sequence[Mapping[str, Any]], limit: int = 10) -> str:
    """The first ``limit`` prediction records as input / reference / prediction rows."""
    rows = [(r.get("input"), r.get("reference"), r.get("prediction")) for r in records[:limit]]
    return table(("input", "reference", "prediction"), rows)


def bullets(lines: Sequence[str]) -> str:
    """A markdown bullet list."""
    return "\n".join(f"- {line}" for line in lines)


def metric_sections(metrics: Mapping[str, Any], plots: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """Sections for a metrics dict: the metrics, per-class scores and confusion matrix when present, plots.

    Args:
        metrics: ``metrics.json`` / ``eval_metrics.json`` contents.
        plots: ``(caption, relative path)`` of images to show under the tables.
    """
    sections = [("Metrics", metrics_table(metrics))]
    if metrics.get("per_class"):
        sections.append(("Per class", per_class_table(metrics["per_class"])))
    if metrics.get("confusion_matrix") and metrics.get("labels"):
        sections.append(("Confusion matrix (rows: gold, columns: predicted)",
                         confusion_table(metrics["confusion_matrix"], metrics["labels"])))
    if plots:
        sections.append(("Plots", "\n\n".join(f"![{caption}]({path})" for caption, path in plots)))
    return sections


def render(title: str, facts: Sequence[tuple[str, Any]], sections: Sequence[tuple[str, str]]) -> str:
    """The whole document: a title, a key/value table of facts, then ``## heading`` sections."""
    parts = [f"# {title}", table(("", ""), facts)]
    parts += [f"## {heading}\n\n{body}" for heading, body in sections if body]
    return "\n\n".join(parts) + "\n"
