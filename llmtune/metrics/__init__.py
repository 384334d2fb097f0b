"""Offline metrics: pure-numpy arithmetic in :mod:`llmtune.metrics.core` plus ``evaluate`` modules.

Each metric in :data:`METRIC_NAMES` is a local ``evaluate`` module folder next to this file, so
``evaluate.load`` never has to reach the Hugging Face Hub. This module stays import-light: neither
``evaluate`` nor ``numpy`` is imported until a metric is actually loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtune.errors import ConfigError

if TYPE_CHECKING:
    import evaluate

METRIC_NAMES: tuple[str, ...] = ("classification", "squad", "lm", "rouge", "bleu")

_HERE = Path(__file__).resolve().parent


def metric_path(name: str) -> str:
    """Absolute path of the ``evaluate`` module folder of a bundled metric.

    Args:
        name: One of :data:`METRIC_NAMES`.

    Returns:
        The folder holding ``<name>.py``, suitable for ``evaluate.load``.

    Raises:
        ConfigError: If ``name`` is not a bundled metric.
    """
    if name not in METRIC_NAMES:
        known = ", ".join(METRIC_NAMES)
        raise ConfigError(f"unknown metric {name!r}; choose one of: {known}")
    return str(_HERE / name)


def load_metric(name: str, **kwargs: Any) -> evaluate.EvaluationModule:
    """Loads a bundled metric through ``evaluate.load`` from its local folder (works offline).

    Args:
        name: One of :data:`METRIC_NAMES`.
        **kwargs: Passed on to ``evaluate.load`` (e.g. ``experiment_id``, ``keep_in_memory``).

    Returns:
        The loaded ``evaluate`` metric.

    Raises:
        ConfigError: If ``name`` is not a bundled metric.
    """
    path = metric_path(name)
    import evaluate  # deferred: importing evaluate costs seconds

    return evaluate.load(path, **kwargs)
