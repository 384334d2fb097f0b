"""PNG plots for run reports: training curves, confusion matrix and per-class F1 bars.

matplotlib is imported inside the functions, with the non-interactive Agg backend, so importing this
module costs nothing and plotting works on machines without a display (servers, CI, containers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

# Beyond this many classes cell counts and tick labels overlap; the image stays useful as a heat map.
_MAX_ANNOTATED = 20
_MAX_TICK_LABELS = 60


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)  # never open a window, whatever backend the user configured
    import matplotlib.pyplot as plt

    return plt


def _short(name: str, width: int = 18) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def confusion_matrix_png(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path) -> Path:
    """Draw a confusion matrix (rows: gold labels, columns: predictions) as a PNG.

    Cells are coloured by the share of their row (recall per class), so a rare class is as readable
    as a frequent one; each cell also shows its raw count when there are few enough classes.

    Args:
        matrix: Square counts, ``matrix[gold][predicted]``.
        labels: Class names in id order.
        path: File to write (parent folders are created).

    Returns:
        The path written.
    """
    import numpy as np

    counts = np.asarray(matrix, dtype=np.int64)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
    k = len(labels)
    plt = _pyplot()
    size = min(4 + 0.45 * k, 20)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of gold row")
    if k <= _MAX_TICK_LABELS:
        names = [_short(str(name)) for name in labels]
        ax.set_xticks(range(k), names, rotation=45, ha="right")
        ax.set_yticks(range(k), names)
    if k <= _MAX_ANNOTATED:
        for gold in range(k):
            for pred in range(k):
                colour = "white" if share[gold, pred] > 0.6 else "black"
                ax.text(pred, gold, str(counts[gold, pred]), ha="center", va="center", color=colour, fontsize=9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(f"confusion matrix ({int(counts.sum())} examples)")
    return _save(fig, plt, path)


def per_class_f1_png(per_class: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Draw one horizontal bar per class with its F1, annotated with the class support.

    Args:
        per_class: Rows with ``label``, ``f1`` and ``support`` (``classification_metrics``'s ``per_class``).
        path: File to write (parent folders are created).

    Returns:
        The path written.
    """
    names = [_short(str(row["label"]), 30) for row in per_class]
    f1 = [float(row["f1"]) for row in per_class]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, min(2 + 0.35 * len(names), 30)))
    positions = list(range(len(names)))
    ax.barh(positions, f1, color="tab:blue")
    ax.set_yticks(positions, names)
    ax.invert_yaxis()  # class 0 on top, as in the confusion matrix
    ax.set_xlim(0, 1.12)  # room for the annotations right of a perfect bar
    for y, (score, row) in enumerate(zip(f1, per_class)):
        ax.text(score + 0.01, y, f"{score:.2f} (n={int(row['support'])})", va="center", fontsize=8)
    ax.set_xlabel("F1")
    ax.set_title("per-class F1 on the evaluation data")
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)  # figures are kept alive by pyplot until closed
    return out


# Evaluation metrics worth a curve, most telling first; the first _MAX_METRIC_PANELS found are drawn.
_CURVE_METRICS = ("accuracy", "f1_macro", "exact_match", "f1", "bits_per_char", "perplexity", "f1_micro",
                  "precision_macro", "recall_macro", "bits_per_byte")
_MAX_METRIC_PANELS = 2
# Metrics logged both while training and at evaluation (TRL's DPO trainer: ``rewards/accuracies`` and
# ``eval_rewards/accuracies``...): one panel each, train and eval lines together, after the metric panels.
_PAIRED_CURVES = (("reward accuracy", "rewards/accuracies"), ("reward margin", "rewards/margins"))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a ``.jsonl`` file; blank and unreadable lines (a crash mid-write) are skipped."""
    import json

    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of every record holding a number under ``key`` (null/NaN are gaps, not zeros)."""
    points = [(r["step"], r[key]) for r in records
              if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
              and isinstance(r.get("step"), (int, float))]
    return [float(s) for s, _ in points], [float(v) for _, v in points]


def curves_png(jsonl_path: str | Path, png_path: str | Path) -> Path | None:
    """Draw training curves from a run's ``logs/metrics.jsonl``.

    Panels: training and evaluation loss against the step, the learning rate, up to two
    evaluation metrics (accuracy, F1, exact match, bits per character... whichever were logged) and,
    for preference tuning (DPO), the reward accuracy and reward margin, train and eval.

    Args:
        jsonl_path: The metrics log (``MetricsLogCallback`` writes one object per logged step).
        png_path: File to write (parent folders are created).

    Returns:
        The path written, or None when the log holds no loss, learning rate or metric to draw.
    """
    records = read_jsonl(jsonl_path)
    panels: list[tuple[str, list[tuple[str, tuple[list[float], list[float]]]]]] = []
    losses = [(name, _series(records, key)) for name, key in (("train", "loss"), ("eval", "eval_loss"))]
    losses = [(name, s) for name, s in losses if s[0]]
    if losses:
        panels.append(("loss", losses))
    lr = _series(records, "learning_rate")
    if lr[0]:
        panels.append(("learning rate", [("lr", lr)]))
    metrics = [(m, _series(records, f"eval_{m}")) for m in _CURVE_METRICS]
    panels += [(f"eval {m}", [(m, s)]) for m, s in metrics if s[0]][:_MAX_METRIC_PANELS]
    for title, key in _PAIRED_CURVES:
        lines = [(name, _series(records, k)) for name, k in (("train", key), ("eval", f"eval_{key}"))]
        if any(s[0] for _, s in lines):
            panels.append((title, [(name, s) for name, s in lines if s[0]]))
    if not panels:
        return None
    plt = _pyplot()
    cols = min(2, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.6 * rows), squeeze=False)
    for ax, (title, lines) in zip(axes.flat, panels):
        for name, (steps, values) in lines:
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend()
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    return _save(fig, plt, png_path)
