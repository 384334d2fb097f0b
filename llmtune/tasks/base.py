"""The Task plug-in interface.

A task owns everything that differs between training jobs: which columns it needs, how raw rows
become model features, how features are batched, and how predictions become metrics. The engine
never looks inside a task, and a task never builds a Trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol


@dataclass(frozen=True)
class ColumnSpec:
    """Canonical columns a task reads after column mapping.

    Attributes:
        required: Columns that must exist (after renaming) or the data is rejected.
        optional: Columns used when present.
        stratify: Column to stratify on when carving a validation split (None: random split).
    """

    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    stratify: Optional[str] = None


class Task(Protocol):
    """What a task plug-in provides. Implementations live in ``llmtune/tasks/<name>.py``."""

    name: str
    columns: ColumnSpec

    def preprocess(self, batch: dict[str, list[Any]], tokenizer: Any, cfg: Any) -> dict[str, list[Any]]:
        """Turn a batch of raw rows into model features (used with ``Dataset.map(batched=True)``)."""
        ...

    def collator(self, tokenizer: Any, cfg: Any) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        """Return the function that pads/masks a list of features into a batch."""
        ...

    def compute_metrics(self, eval_pred: Any) -> dict[str, float]:
        """Turn the Trainer's predictions into named metric values."""
        ...


@dataclass
class TaskInfo:
    """A registry entry: the task's name, columns and a one-line description (importable without torch)."""

    name: str
    columns: ColumnSpec
    description: str
    aliases: tuple[str, ...] = field(default_factory=tuple)
