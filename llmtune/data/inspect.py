"""``llmtune data inspect``: describe loaded task data as a plain dict, and render it with rich."""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets
    from rich.console import Console

    from llmtune.data.loading import TaskData
    from llmtune.tasks.registry import ColumnSpec

MAX_CHARS = 120
MAX_LABELS = 30


def inspect_data(data: TaskData, columns: ColumnSpec, n_examples: int = 3) -> dict[str, Any]:
    """Summarise every split of ``data`` in a JSON-serialisable dict.

    Args:
        data: Result of :func:`llmtune.data.loading.load_task_data`.
        columns: The task's columns (required ones are listed; the label column is counted).
        n_examples: Example rows per split (strings truncated to ~120 characters).

    Returns:
        ``{"splits": {name: {"rows", "source", "columns": {name: dtype}, "examples",
        "label_distribution"?, "text_length"?}}, "required": [...], "notes": [...]}``.
    """
    splits = {"train": data.train}
    if data.validation is not None:
        splits["validation"] = data.validation
    return {
        "splits": {name: _split_report(ds, data.sources.get(name, ""), n_examples) for name, ds in splits.items()},
        "required": list(columns.required),
        "notes": list(data.notes),
    }


def _split_report(dataset: datasets.Dataset, source: str, n_examples: int) -> dict[str, Any]:
    report: dict[str, Any] = {
        "rows": len(dataset),
        "source": source,
        "columns": {name: dtype_name(feature) for name, feature in dataset.features.items()},
        "examples": [truncate(dataset[i]) for i in range(min(n_examples, len(dataset)))],
    }
    if "label" in dataset.column_names:
        report["label_distribution"] = label_distribution(dataset)
    if "text" in dataset.column_names:
        stats = text_length_stats(dataset)
        if stats:
            report["text_length"] = stats
    return report


def dtype_name(feature: Any) -> str:
    """Short type name of a ``datasets`` feature: ``string``, ``int64``, ``ClassLabel(neg, pos)``, ``list<string>``."""
    from datasets import ClassLabel, List, Value

    if isinstance(feature, Value):
        return "string" if feature.dtype == "large_string" else feature.dtype
    if isinstance(feature, ClassLabel):
        return f"ClassLabel({', '.join(feature.names)})"
    if isinstance(feature, List):
        return f"list<{dtype_name(feature.feature)}>"
    if isinstance(feature, dict):
        return "{" + ", ".join(f"{k}: {dtype_name(v)}" for k, v in feature.items()) + "}"
    return type(feature).__name__


def truncate(value: Any, limit: int = MAX_CHARS) -> Any:
    """Copy ``value`` with every string longer than ``limit`` cut (ending in ``...``); lists keep 5 items."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[: limit - 3] + "..."
    if isinstance(value, dict):
        return {key: truncate(item, limit) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [truncate(item, limit) for item in value[:5]]
        return items + [f"... {len(value) - 5} more"] if len(value) > 5 else items
    return value


def label_distribution(dataset: datasets.Dataset) -> dict[str, int]:
    """Rows per label, most common first (ClassLabel ids shown as names; at most 30 labels)."""
    from datasets import ClassLabel

    feature = dataset.features["label"]
    values = dataset.with_format("arrow")["label"].to_pylist()
    names = feature.names if isinstance(feature, ClassLabel) else None
    counts = Counter(_label_key(value, names) for value in values)
    return dict(counts.most_common(MAX_LABELS))


def _label_key(value: Any, names: list[str] | None) -> str:
    if names is not None and isinstance(value, int) and 0 <= value < len(names):
        return names[value]
    return value if isinstance(value, str) else json.dumps(value)


def text_length_stats(dataset: datasets.Dataset) -> dict[str, float]:
    """Min / mean / max characters of the ``text`` column (empty dict when it is not a string column)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = dataset.with_format("arrow")["text"]
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)) or len(column) == 0:
        return {}
    lengths = pc.utf8_length(column)
    return {
        "min": int(pc.min(lengths).as_py() or 0),
        "mean": round(float(pc.mean(lengths).as_py() or 0.0), 1),
        "max": int(pc.max(lengths).as_py() or 0),
    }


def print_inspection(report: dict[str, Any], console: Console) -> None:
    """Render :func:`inspect_data`'s report: an overview, then per split columns, labels and examples."""
    from rich.table import Table

    overview = Table(title="Splits", show_lines=False)
    for header in ("split", "rows", "source", "text length (min / mean / max chars)"):
        overview.add_column(header)
    for name, split in report["splits"].items():
        length = split.get("text_length")
        shown = f"{length['min']} / {length['mean']} / {length['max']}" if length else "-"
        overview.add_row(name, f"{split['rows']:,}", split["source"], shown)
    console.print(overview)
    for name, split in report["splits"].items():
        _print_split(name, split, console)
    if report["required"]:
        console.print(f"[green]ok[/green]: required columns present: {', '.join(report['required'])}")
    for note in report["notes"]:
        console.print(f"[yellow]note[/yellow]: {note}")


def _print_split(name: str, split: dict[str, Any], console: Console) -> None:
    from rich.table import Table

    columns = Table(title=f"{name}: columns")
    columns.add_column("column")
    columns.add_column("type")
    for column, dtype in split["columns"].items():
        columns.add_row(column, dtype)
    console.print(columns)
    if "label_distribution" in split:
        labels = Table(title=f"{name}: labels")
        for header in ("label", "rows", "share"):
            labels.add_column(header)
        total = split["rows"] or 1
        for label, count in split["label_distribution"].items():
            labels.add_row(str(label), f"{count:,}", f"{100 * count / total:.1f} %")
        console.print(labels)
    if split["examples"]:
        examples = Table(title=f"{name}: first {len(split['examples'])} rows", show_lines=True)
        for column in split["columns"]:
            examples.add_column(column, overflow="fold")
        for row in split["examples"]:
            examples.add_row(*(_cell(row.get(column)) for column in split["columns"]))
        console.print(examples)


def _cell(value: Any) -> str:
    # Markup-free: data may contain [brackets] that rich would otherwise read as style tags.
    from rich.markup import escape

    return escape(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))


def print_masking(cfg: Any, data: TaskData, n: int, console: Console) -> None:
    """Print the first ``n`` training rows as generation fine-tuning tokenizes them.

    Trained tokens (the loss is computed on them) are shown bold green, the others dimmed; a newline
    token shows as ``↵``. Uses the same rendering and masking code as training
    (``llmtune.tasks.generation.masking_examples``).

    Raises:
        ConfigError: Not the generation task, or no model/tokenizer to tokenize with.
    """
    from rich.panel import Panel

    from llmtune.errors import ConfigError
    from llmtune.modeling import resolve_model_path
    from llmtune.modeling import IGNORE
    from llmtune.tasks.generation import masking_examples
    from llmtune.tokenizer import load_tokenizer

    if cfg.task not in ("generation", "dpo"):
        raise ConfigError("--show-masking shows generation or dpo training examples; pass --task generation or dpo")
    if not (cfg.model.tokenizer or cfg.model.name_or_path):
        raise ConfigError("--show-masking tokenizes with the model's tokenizer; pass --model (or --set model.tokenizer=...)")
    source = cfg.model.tokenizer or resolve_model_path(cfg.model.name_or_path)
    tokenizer = load_tokenizer(source, trust_remote_code=cfg.model.trust_remote_code)
    if cfg.task == "dpo":  # each pair as two rows: prompt + chosen, prompt + rejected
        from llmtune.tasks.dpo import masking_examples as pair_masking

        fmt, rows = pair_masking(data.train, tokenizer, cfg, n, data.sources.get("train", "the training data"))
    else:
        fmt, rows = masking_examples(data.train, tokenizer, cfg.data.format, cfg.train.max_length,
                                     cfg.train.train_on_prompt, n, data.sources.get("train", "the training data"))
    console.print(f"masking, {fmt} format: [bold green]trained tokens[/bold green] / [dim]not trained[/dim]")
    for i, (ids, labels) in enumerate(rows, start=1):
        trained = sum(label != IGNORE for label in labels)
        console.print(Panel(_masked_text(tokenizer, ids, labels), title=f"train row {i}: {len(ids)} tokens, "
                            f"{trained} trained", title_align="left"))


def _masked_text(tokenizer: Any, ids: list[int], labels: list[int]) -> Any:
    """A rich Text of the tokens, each styled by whether it is trained."""
    from rich.text import Text

    from llmtune.modeling import IGNORE

    text, done = Text(), ""
    for i, label in enumerate(labels):
        # Decoding growing prefixes keeps multi-byte characters split over tokens readable.
        full = tokenizer.decode(ids[: i + 1])
        piece = full[len(done):] if full.startswith(done) else tokenizer.decode(ids[i : i + 1])
        done = full
        text.append(piece.replace("\n", "↵\n"), style="dim" if label == IGNORE else "bold green")
    return text
