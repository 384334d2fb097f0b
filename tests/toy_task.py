"""A toy task written the way docs/extending-tasks.md says: one module, registered by one ``TaskInfo`` entry.

"Word-count parity": is the number of words in ``text`` even? The labels come from the text itself, so
the data needs one column. ``tests/cli/test_extending.py`` registers it (in the test only) and trains it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmtune.config.schema import RunConfig
from llmtune.tasks.base import MAP_BATCH_SIZE, Features
from llmtune.tasks.registry import ColumnSpec, TaskInfo

INFO = TaskInfo("parity", ColumnSpec(required=("text",)), "is the number of words even?", "toy_task",
                ("finetune",), heads=("ForSequenceClassification",))


def featurize(batch: dict[str, list[Any]], tokenizer: Any, max_length: int) -> dict[str, list[Any]]:
    """Token ids of each text and its label: 1 when it has an even number of words."""
    encoded = tokenizer(batch["text"], truncation=True, max_length=max_length)
    return {**encoded, "labels": [int(len(text.split()) % 2 == 0) for text in batch["text"]]}


def accuracy(eval_pred: Any) -> dict[str, float]:
    """Share of texts whose parity the model got right."""
    predictions = eval_pred.predictions.argmax(-1)
    return {"accuracy": float((predictions == eval_pred.label_ids).mean())}


class ParityTask:
    """The plug-in ``llmtune finetune`` trains (``FinetuneTask``)."""

    name = "parity"
    columns = INFO.columns
    auto_class = "AutoModelForSequenceClassification"

    def __init__(self) -> None:
        self.rows = 0

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Any tokenizer works."""

    def prepare(self, data: Any, tokenizer: Any, max_length: int) -> Features:
        def mapped(split: Any) -> Any:
            return split.map(featurize, batched=True, batch_size=MAP_BATCH_SIZE, remove_columns=split.column_names,
                             fn_kwargs={"tokenizer": tokenizer, "max_length": max_length})

        self.rows = len(data.train)
        evaluation = mapped(data.validation) if data.validation is not None else None
        return Features(mapped(data.train), evaluation, [f"parity: {self.rows} training texts"])

    def model_kwargs(self) -> dict[str, Any]:
        return {"num_labels": 2}

    def engine_parts(self, tokenizer: Any) -> dict[str, Any]:
        from transformers import DataCollatorWithPadding

        return {"collator": DataCollatorWithPadding(tokenizer), "compute_metrics": accuracy}

    def report(self, run_dir: Path) -> dict[str, Any]:
        return {"parity_training_rows": self.rows}


def training_task(cfg: RunConfig) -> ParityTask:
    """The plug-in ``llmtune finetune --task parity`` trains with."""
    return ParityTask()
