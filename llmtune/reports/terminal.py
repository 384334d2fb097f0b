"""Rich tables in the terminal for ``llmtune eval`` and ``llmtune report``: metrics, per class, confusion."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from llmtune.reports.report_md import fmt, ordered_scalars

_MAX_CONFUSION = 12  # wider matrices do not fit a terminal: report.md and the PNG have them
_HIDDEN = ("labels",)


def print_metrics(title: str, metrics: Mapping[str, Any], files: Sequence[tuple[str, Path]] = (),
                  console: Optional[Any] = None) -> None:
    """Print the metrics table, then per-class scores and the confusion matrix when present, then the files.

    Args:
        title: Table title.
        metrics: ``eval_metrics.json`` / ``metrics.json`` contents.
        files: ``(what, path)`` rows listed under the metrics.
        console: A ``rich.console.Console`` (default: stdout).
    """
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    main = Table(title=title, show_header=False)
    for key, value in ordered_scalars(metrics):
        if key not in _HIDDEN:
            main.add_row(key, fmt(value))
    for what, path in files:
        main.add_row(what, str(path))
    console.print(main)
    if metrics.get("per_class"):
        console.print(_per_class(metrics["per_class"], Table))
    matrix, labels = metrics.get("confusion_matrix"), metrics.get("labels")
    if matrix and labels and len(labels) <= _MAX_CONFUSION:
        console.print(_confusion(matrix, labels, Table))


def _per_class(rows: Sequence[Mapping[str, Any]], table_cls: Any) -> Any:
    table = table_cls(title="per class")
    for name in ("class", "precision", "recall", "F1", "support"):
        table.add_column(name, justify="left" if name == "class" else "right")
    for r in rows:
        table.add_row(str(r["label"]), fmt(r["precision"]), fmt(r["recall"]), fmt(r["f1"]), fmt(r["support"]))
    return table


def _confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], table_cls: Any) -> Any:
    table = table_cls(title="confusion matrix (rows: gold, columns: predicted)")
    table.add_column("gold \\ predicted")
    for label in labels:
        table.add_column(str(label), justify="right")
    for label, counts in zip(labels, matrix):
        table.add_row(str(label), *(str(c) for c in counts))
    return table
