"""Map a dataset's own column names onto the canonical names tasks read, and check they exist."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Optional

from llmtune.errors import DataError

if TYPE_CHECKING:
    import datasets

    from llmtune.config.schema import DataConfig

#: Canonical column -> other names we accept for it, used only when the canonical column is absent
#: and exactly one of these exists. Kept short on purpose: a wrong guess trains on the wrong column.
ALIASES: dict[str, tuple[str, ...]] = {
    "text": ("sentence", "sentence1", "content", "review", "document", "premise", "question1"),
    "text_pair": ("sentence2", "hypothesis", "question2"),
    "label": ("labels", "target", "sentiment", "class", "category"),
}
#: Canonical column -> the flag that names its source column.
FLAGS = {"text": "--text-column", "text_pair": "--text-pair-column", "label": "--label-column"}


def requested_renames(cfg: DataConfig) -> dict[str, tuple[str, str]]:
    """Source column -> (canonical column, the option that asked for it), from flags and ``columns``.

    Raises:
        DataError: Two sources are mapped onto the same canonical column.
    """
    pairs = [(cfg.text_column, "text", "--text-column"), (cfg.text_pair_column, "text_pair", "--text-pair-column"),
             (cfg.label_column, "label", "--label-column")]
    pairs += [(source, target, f"--columns {source}={target}") for source, target in cfg.columns.items()]
    renames: dict[str, tuple[str, str]] = {}
    targets: dict[str, str] = {}
    for source, target, option in pairs:
        if source is None:
            continue
        if target in targets and targets[target] != source:
            raise DataError(
                f"both '{targets[target]}' and '{source}' are mapped to column '{target}'; keep one mapping"
            )
        targets[target] = source
        renames[source] = (target, option)
    return renames


def apply_renames(
    dataset: datasets.Dataset, renames: dict[str, tuple[str, str]], where: str
) -> tuple[datasets.Dataset, list[str]]:
    """Rename source columns to canonical ones; an existing column of the canonical name is replaced.

    Args:
        dataset: The split to rename.
        renames: From :func:`requested_renames`.
        where: How to name this split in messages (``train.csv``, ``the 'test' split of imdb``).

    Returns:
        The renamed dataset and notes about replaced columns.

    Raises:
        DataError: A source column does not exist (the message lists the columns that do).
    """
    columns = list(dataset.column_names)
    for source, (_, option) in renames.items():
        if source not in columns:
            raise DataError(f"column '{source}' (from {option}) not found in {where}; columns are: "
                            f"{', '.join(columns)}{_did_you_mean(source, columns)}")
    mapping = {source: target for source, (target, _) in renames.items() if source != target}
    # A canonical column that is being replaced (and is not itself renamed away) is dropped first.
    replaced = [target for target in mapping.values() if target in columns and target not in mapping]
    notes = [f"replaced column '{t}' of {where} with '{s}'" for s, t in mapping.items() if t in replaced]
    if replaced:
        dataset = dataset.remove_columns(replaced)
    return (dataset.rename_columns(mapping) if mapping else dataset), notes


def apply_aliases(
    dataset: datasets.Dataset, wanted: Iterable[str], taken: Iterable[str], where: str
) -> tuple[datasets.Dataset, list[str]]:
    """Rename a well-known alias to a wanted canonical column that is missing (see :data:`ALIASES`).

    Args:
        dataset: The split (after explicit renames).
        wanted: Canonical columns the task reads (required and optional).
        taken: Source columns the user mapped explicitly (never reused as an alias).
        where: How to name this split in notes.

    Returns:
        The dataset and one note per alias used.
    """
    columns, taken = set(dataset.column_names), set(taken)
    mapping: dict[str, str] = {}
    for canonical in wanted:
        if canonical in columns or canonical not in ALIASES:
            continue
        present = [alias for alias in ALIASES[canonical] if alias in columns and alias not in taken]
        if len(present) == 1 and present[0] not in mapping:
            mapping[present[0]] = canonical
    notes = [f"using column '{s}' of {where} as '{t}' (pass {FLAGS[t]} to choose another)" for s, t in mapping.items()]
    return (dataset.rename_columns(mapping) if mapping else dataset), notes


def check_required(dataset: datasets.Dataset, required: Iterable[str], known: Iterable[str], where: str) -> None:
    """Raise a DataError naming the first required column that is missing, with a fix.

    Args:
        dataset: The split after renaming.
        required: Canonical columns that must exist.
        known: All canonical columns of the task (not proposed as the missing column's source).
        where: How to name this split in the message.
    """
    columns = list(dataset.column_names)
    for name in required:
        if name in columns:
            continue
        raise DataError(f"column '{name}' not found in {where}; columns are: {', '.join(columns) or 'none'}. "
                        f"{_fix_for(name, [c for c in columns if c not in set(known)])}")


def _fix_for(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    guess: Optional[str] = close[0] if close else (candidates[0] if len(candidates) == 1 else None)
    if name in FLAGS:
        if guess:
            return f"Pass {FLAGS[name]} {guess}"
        return f"Pass {FLAGS[name]} NAME to say which column holds the {name}"
    return f"Pass --columns {guess}={name}" if guess else f"Map a column onto it with --columns SOURCE={name}"


def _did_you_mean(name: str, columns: list[str]) -> str:
    close = difflib.get_close_matches(name, columns, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
