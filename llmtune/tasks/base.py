"""What a task plug-in provides, and how runners get one.

A task owns everything that differs between jobs: which columns it needs, how raw rows become
features, how features are batched, how predictions become metrics and reports. The engine never
looks inside a task, and a task never builds a Trainer. Each task is one module, named by its
registry entry (``llmtune/tasks/registry.py``), that defines two factories:

* ``training_task(cfg) -> FinetuneTask`` for ``llmtune finetune`` (tasks ``finetune`` takes);
* ``eval_task(cfg, config) -> EvalTask`` for ``llmtune eval`` (``config``: the model's transformers
  config, read before its weights load).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence

from llmtune.config.schema import RunConfig
from llmtune.errors import ConfigError
from llmtune.tasks.registry import TASKS, ColumnSpec, TaskInfo

Record = dict[str, Any]  # one line of an evaluation's predictions.jsonl
MAP_BATCH_SIZE = 1000  # rows per Dataset.map batch when tokenizing


@dataclass
class Features:
    """A task's features, ready for the engine, with notes for the user."""

    train: Any
    eval: Optional[Any]
    notes: list[str] = field(default_factory=list)


class FinetuneTask(Protocol):
    """What ``llmtune finetune`` needs from a task."""

    name: str
    columns: ColumnSpec
    auto_class: str  # e.g. "AutoModelForSequenceClassification"

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Raise ModelError for a tokenizer the task cannot use (e.g. QA needs offsets)."""

    def prepare(self, data: Any, tokenizer: Any, max_length: int) -> Features:
        """Validate and featurize ``TaskData`` (every data check happens here, before weights load)."""

    def model_kwargs(self) -> dict[str, Any]:
        """Extra ``from_pretrained`` arguments (head size, label names...); valid after ``prepare``."""

    def engine_parts(self, tokenizer: Any) -> dict[str, Any]:
        """``collator``, ``compute_metrics``, ``preprocess_logits``, ``compute_loss``, ``derive_metrics`` (each optional)."""

    def report(self, run_dir: Path) -> dict[str, Any]:
        """Extra final metrics for metrics.json (and any plots), after the final evaluation."""


class EvalTask(Protocol):
    """What ``llmtune eval`` needs from a task.

    ``prepare`` checks the rows against the model and sets ``features``, sorted longest first (each
    batch is then padded only to its own longest row); ``finish`` turns ``Trainer.predict``'s output
    into extra metrics (and plots) and one record per example, in the order of the data.
    """

    name: str
    columns: ColumnSpec
    auto_class: str
    features: Any
    notes: list[str]

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Raise ModelError for a tokenizer the task cannot use."""

    def prepare(self, rows: Any, tokenizer: Any, max_length: int, where: str) -> None:
        """Check ``rows`` (from ``where``) and build ``features``."""

    def engine_parts(self, tokenizer: Any) -> dict[str, Any]:
        """The collator, ``compute_metrics`` and logits shrinking, as in training."""

    def finish(self, output: Any, out_dir: Path, model: Any, tokenizer: Any) -> tuple[dict[str, Any], list[Record]]:
        """Extra metrics and the prediction records (``model``/``tokenizer``: for tasks that also generate)."""


def _module(name: str, command: str) -> Any:
    info: Optional[TaskInfo] = TASKS.get(name)
    if info is None or command not in info.commands:
        choices = ", ".join(n for n, i in TASKS.items() if command in i.commands)
        raise ConfigError(f"`llmtune {command}` does not take task '{name}'; choose one of: {choices}")
    return importlib.import_module(info.module)


def training_task(cfg: RunConfig) -> FinetuneTask:
    """The task plug-in ``llmtune finetune`` trains ``cfg.task`` with."""
    return _module(str(cfg.task), "finetune").training_task(cfg)


def eval_task(name: str, cfg: RunConfig, config: Any) -> EvalTask:
    """The task plug-in ``llmtune eval`` scores task ``name`` with."""
    return _module(name, "eval").eval_task(cfg, config)


def longest_first(features: Any, lengths: Sequence[int]) -> tuple[Any, list[int]]:
    """``features`` reordered longest first, and ``order`` (position -> index in ``features``)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return features.select(order), order


def unsort(values: Sequence[Any], order: Sequence[int]) -> list[Any]:
    """Undo ``longest_first``: ``values[pos]`` belongs to row ``order[pos]``."""
    out: list[Any] = [None] * len(order)
    for pos, index in enumerate(order):
        out[index] = values[pos]
    return out

