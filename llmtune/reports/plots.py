"""PNG plots for run reports: confusion matrix and per-class F1 bars.

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
