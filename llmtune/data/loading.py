"""Turn a ``DataConfig`` into the training and evaluation splits a task needs, checked up front.

The order of steps is fixed and documented because it decides which rows a run sees:

1. load ``data.dataset`` and take split ``data.split``;
2. ``data.max_samples`` keeps the *first* N rows of it (no shuffle, so runs are comparable and
   cheap; shuffle the file yourself if its order is meaningful);
3. find evaluation data: ``data.eval_dataset`` (its ``data.eval_split``, or the first of
   validation/valid/dev/test/train it has), else ``data.eval_split`` of the same source, else a
   validation/valid/dev/test split of the same source;
4. rename columns (flags, ``data.columns``, then well-known aliases) and check the task's required
   columns exist in every split;
5. with no evaluation data, carve ``data.eval_fraction`` of the (capped) training rows, stratified by
   the task's label column when it has one;
6. ``data.max_eval_samples`` keeps the first N evaluation rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from llmtune.data.columns import apply_aliases, apply_renames, check_required, requested_renames
from llmtune.data.sources import load_source, select_split
from llmtune.data.splits import random_split_indices, stratified_split_indices, validation_size
from llmtune.errors import DataError

if TYPE_CHECKING:
    import datasets

    from llmtune.config.schema import DataConfig
    from llmtune.tasks.registry import ColumnSpec

#: Split names searched for evaluation data, in order of preference.
EVAL_SPLITS = ("validation", "valid", "dev", "test")


@dataclass
class TaskData:
    """The splits a run trains and evaluates on, with notes on every choice made for the user.

    Attributes:
        train: Training rows, columns renamed to the task's canonical names.
        validation: Evaluation rows (same columns), or None when there are none.
        notes: Human-readable notes (carved splits, aliases used, caps applied) for the CLI to print.
        sources: Split name -> where its rows came from (``train.csv``, ``carved from train.csv``).
    """

    train: datasets.Dataset
    validation: Optional[datasets.Dataset]
    notes: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)


def load_task_data(cfg: DataConfig, columns: ColumnSpec, seed: int = 42) -> TaskData:
    """Load, rename, validate and split the data described by ``cfg`` (see the module docstring).

    Args:
        cfg: The ``data`` section of the run config.
        columns: Canonical columns the task needs (``TASKS[task].columns``).
        seed: Seed for carving a validation split.

    Returns:
        The training and evaluation splits with notes.

    Raises:
        DataError: No dataset, a missing split or column, no rows, or too few rows to carve from.
    """
    if not cfg.dataset:
        raise DataError("no training data given; pass --dataset with a file, folder, glob, hub id or builtin:NAME")
    notes: list[str] = []
    source = load_source(cfg.dataset)
    train_where = describe(cfg.dataset, cfg.split)
    train = non_empty_rows(select_split(source, cfg.split, cfg.dataset), train_where)
    if cfg.max_samples is not None and len(train) > cfg.max_samples:
        train = train.select(range(cfg.max_samples))
        notes.append(f"max_samples: kept the first {cfg.max_samples} rows of {train_where}")
    validation, eval_where = _find_eval(cfg, source, notes)

    renames = requested_renames(cfg)
    train = map_columns(train, renames, columns, train_where, notes)
    if validation is not None:
        validation = map_columns(non_empty_rows(validation, eval_where), renames, columns, eval_where, notes)
    else:
        train, validation = _carve(train, cfg.eval_fraction, columns.stratify, seed, train_where, notes)
        eval_where = f"carved from {train_where}"
    if cfg.max_eval_samples is not None and len(validation) > cfg.max_eval_samples:
        validation = validation.select(range(cfg.max_eval_samples))
        notes.append(f"max_eval_samples: kept the first {cfg.max_eval_samples} evaluation rows")
    return TaskData(train, validation, notes, {"train": train_where, "validation": eval_where})


def describe(spec: str, split: str) -> str:
    """How messages name one split of a source: the file name for a single file, else split + source."""
    if not spec.startswith("builtin:") and Path(spec).expanduser().is_file():
        return Path(spec).name
    return f"the '{split}' split of {spec}"


def non_empty_rows(dataset: datasets.Dataset, where: str) -> datasets.Dataset:
    if len(dataset) == 0:
        raise DataError(f"{where} has no rows; check the file (a header without rows?) or pass other data")
    return dataset


def _find_eval(
    cfg: DataConfig, source: datasets.DatasetDict, notes: list[str]
) -> tuple[Optional[datasets.Dataset], str]:
    """Evaluation split and its description, or (None, "") when one must be carved."""
    if cfg.eval_dataset:
        eval_source = load_source(cfg.eval_dataset)
        split = cfg.eval_split or default_eval_split(eval_source, cfg.eval_dataset)
        return select_split(eval_source, split, cfg.eval_dataset, "--eval-split"), describe(cfg.eval_dataset, split)
    if cfg.eval_split:
        if cfg.eval_split == cfg.split:
            notes.append(f"evaluating on the training split '{cfg.split}': scores will be optimistic")
        return select_split(source, cfg.eval_split, cfg.dataset, "--eval-split"), describe(cfg.dataset, cfg.eval_split)
    for split in EVAL_SPLITS:
        if split in source and split != cfg.split:
            notes.append(f"evaluating on split '{split}' of {cfg.dataset}")
            return source[split], describe(cfg.dataset, split)
    return None, ""


def default_eval_split(source: datasets.DatasetDict, spec: str) -> str:
    for split in (*EVAL_SPLITS, "train"):
        if split in source:
            return split
    if len(source) == 1:
        return next(iter(source))
    raise DataError(f"cannot tell which split of {spec} to evaluate on ({', '.join(source)}); pass --eval-split NAME")


def map_columns(
    dataset: datasets.Dataset, renames: dict[str, tuple[str, str]], columns: ColumnSpec, where: str,
    notes: list[str],
) -> datasets.Dataset:
    dataset, renamed = apply_renames(dataset, renames, where)
    wanted = (*columns.required, *columns.optional)
    dataset, aliased = apply_aliases(dataset, wanted, renames, where)
    check_required(dataset, columns.required, wanted, where)
    notes.extend(note for note in (*renamed, *aliased) if note not in notes)
    return dataset


def _carve(
    train: datasets.Dataset, fraction: float, stratify: Optional[str], seed: int, where: str, notes: list[str]
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split a validation set off ``train`` (stratified when the label column allows it)."""
    n_rows = len(train)
    if n_rows < 2:
        raise DataError(f"need at least 2 rows to carve a validation split from {where} (it has {n_rows}); "
                        "pass --eval-dataset")
    if n_rows - validation_size(n_rows, fraction) < 1:
        raise DataError(f"eval_fraction {fraction} leaves 0 training rows of the {n_rows} in {where}; "
                        "lower --set data.eval_fraction or pass --eval-dataset")
    labels = _stratify_labels(train, stratify)
    how = "random"
    train_idx, val_idx = [], []
    if labels is not None:
        train_idx, val_idx = stratified_split_indices(labels, fraction, seed)
        how = f"stratified by {stratify}"
    if not val_idx:  # e.g. every label unique: stratifying cannot work, a random split can
        train_idx, val_idx = random_split_indices(n_rows, fraction, seed)
        how = "random"
    notes.append(f"no validation split found: carved {fraction * 100:g} % ({len(val_idx)} rows, {how}, "
                 f"seed {seed}) from {where}")
    return train.select(train_idx), train.select(val_idx)


def _stratify_labels(train: datasets.Dataset, stratify: Optional[str]) -> Optional[list[Any]]:
    """The label of every row when stratifying makes sense (discrete scalar labels), else None."""
    if not stratify or stratify not in train.column_names:
        return None
    labels = train.with_format("arrow")[stratify].to_pylist()
    # Floats are regression targets and lists are multi-label: neither has classes to balance.
    if all(isinstance(label, (str, int, bool)) for label in labels):
        return labels
    return None
