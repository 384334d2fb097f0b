"""Text classification: single-label (binary or multi-class), multi-label and text pairs.

Rows have ``text``, ``label`` and optionally ``text_pair``. Labels are integer ids or string names
(string names are sorted and numbered, integers keep their order); a label column holding lists of
names or ids makes the task multi-label (float multi-hot targets, sigmoid/BCE loss via
``problem_type="multi_label_classification"``). The label names end up in the model config
(``id2label``/``label2id``) so pipelines and ``llmtune eval`` show names, not ids.

Texts are tokenized with truncation at ``max_length`` and left unpadded: the collator pads each
batch to its own longest row (dynamic padding), and a ``length`` column lets the Trainer group rows
of similar length. Rows with an empty text or no label are skipped and counted, never silently fed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from llmtune.config.schema import RunConfig
from llmtune.errors import DataError
from llmtune.tasks.base import MAP_BATCH_SIZE, Features, Record, longest_first, unsort
from llmtune.tasks.labels import (
    LabelSpace, build_label_space, check_eval_labels, class_counts, class_weights, distribution_line, label_kind,
    model_label_space, with_class_names,
)
from llmtune.tasks.registry import TASKS



# --------------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# Rows -> features
# --------------------------------------------------------------------------------------------------


def _blank(text: Any) -> bool:
    return not isinstance(text, str) or not text.strip()


def usable_rows(batch: dict[str, list[Any]]) -> list[bool]:
    """Which rows of a batch can be trained on: non-blank text (and pair) and a label present."""
    pairs = batch.get("text_pair", [None] * len(batch["text"]))
    has_pair = "text_pair" in batch
    return [
        not _blank(text) and not (has_pair and _blank(pair)) and label_kind(label) != "missing"
        for text, pair, label in zip(batch["text"], pairs, batch["label"])
    ]


def truncation_flags(encoding: Any, max_length: int) -> list[bool]:
    """Whether each row of a tokenizer output lost tokens to truncation.

    Fast tokenizers record what they cut (``overflowing``); for slow ones a row that fills
    ``max_length`` exactly is counted as truncated (it usually is).
    """
    encodings = getattr(encoding, "encodings", None)
    if encodings:
        return [bool(enc.overflowing) for enc in encodings]
    return [len(ids) >= max_length for ids in encoding["input_ids"]]


def tokenize_batch(
    batch: dict[str, list[Any]], tokenizer: Any, max_length: int, space: LabelSpace
) -> dict[str, list[Any]]:
    """Model features for a batch of usable rows (for ``Dataset.map(batched=True)``).

    Returns:
        The tokenizer's outputs (unpadded), ``labels`` (ids or multi-hot floats), ``length``
        (tokens, for length-grouped batches) and ``truncated`` (bool per row).
    """
    pairs = batch.get("text_pair")
    encoding = tokenizer(batch["text"], pairs, truncation=True, max_length=max_length, padding=False)
    features = {key: list(values) for key, values in encoding.items()}
    features["labels"] = [space.encode(v) for v in batch["label"]]
    features["length"] = [len(ids) for ids in encoding["input_ids"]]
    features["truncated"] = truncation_flags(encoding, max_length)
    return features


class PadCollator:
    """Pad a batch to its own longest row, passing only model inputs and labels to the model.

    A class rather than a closure so dataloader worker processes can pickle it.
    """

    def __init__(self, tokenizer: Any) -> None:
        from transformers import DataCollatorWithPadding

        self.pad = DataCollatorWithPadding(tokenizer)
        self.keep = {*tokenizer.model_input_names, "labels"}

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        return self.pad([{k: v for k, v in f.items() if k in self.keep} for f in features])


# --------------------------------------------------------------------------------------------------
# Predictions -> metrics, loss
# --------------------------------------------------------------------------------------------------


def shrink_logits(logits: Any, labels: Any, *, multi_label: bool = False) -> Any:
    """Class ids (or 0/1 per label) instead of logits, so evaluation keeps one number per row."""
    if isinstance(logits, (tuple, list)):  # models asked for hidden states return them after the logits
        logits = logits[0]
    return (logits > 0).long() if multi_label else logits.argmax(dim=-1)


def score(predictions: Any, label_ids: Any, space: LabelSpace) -> dict[str, Any]:
    """``classification_metrics`` on shrunk predictions and the Trainer's label ids."""
    import numpy as np

    from llmtune.metrics.core import classification_metrics

    refs = np.asarray(label_ids)
    refs = (refs > 0.5).astype(np.int64) if space.multi_label else refs.astype(np.int64)
    return classification_metrics(np.asarray(predictions), refs, len(space.values), space.names)


class WeightedLoss:
    """Class-weighted loss for the Trainer's ``compute_loss_func``.

    Summed and divided by ``num_items_in_batch`` (labels in the whole accumulated batch) when the
    Trainer gives it, so gradient accumulation and multi-process runs weigh every row equally.
    """

    def __init__(self, weights: Sequence[float], multi_label: bool) -> None:
        self.weights = list(weights)
        self.multi_label = multi_label

    def __call__(self, outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        import torch.nn.functional as F
        from torch import tensor

        logits = outputs["logits"]
        weights = tensor(self.weights, dtype=logits.dtype, device=logits.device)
        if self.multi_label:
            total = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), pos_weight=weights,
                                                       reduction="sum")
        else:
            total = F.cross_entropy(logits.view(-1, len(self.weights)), labels.view(-1), weight=weights,
                                    reduction="sum")
        count = num_items_in_batch if num_items_in_batch is not None else labels.numel()
        return total / count


# --------------------------------------------------------------------------------------------------
# The plug-in
# --------------------------------------------------------------------------------------------------


class ClassificationTask:
    """Sequence classification: label mapping, tokenizing, dynamic padding, metrics and plots.

    Call ``prepare`` first: it finds the classes, which everything after it needs.
    """

    name = "classification"
    columns = TASKS["classification"].columns
    auto_class = "AutoModelForSequenceClassification"

    def __init__(self, class_weights: Any = None) -> None:
        self.class_weights_spec = class_weights
        self.space: Optional[LabelSpace] = None
        self.weights: Optional[list[float]] = None
        self.last_report: dict[str, Any] = {}  # the full result of the latest evaluation

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Any tokenizer works (padding is the runner's concern)."""

    def prepare(self, data: Any, tokenizer: Any, max_length: int) -> Features:
        """Check labels, skip unusable rows, tokenize both splits (cached by ``Dataset.map``).

        Args:
            data: A ``TaskData`` (``train``, ``validation``, ``sources``).
            tokenizer: The model's tokenizer.
            max_length: Tokens kept per row.

        Returns:
            Training and evaluation features and notes (skipped/truncated rows, class distribution).

        Raises:
            DataError: Bad labels (see ``build_label_space``/``check_eval_labels``) or no usable row.
        """
        notes: list[str] = []
        sources = getattr(data, "sources", {})
        where_train = "the training data" + (f" ({sources['train']})" if "train" in sources else "")
        where_eval = "the evaluation data" + (f" ({sources['validation']})" if "validation" in sources else "")
        train = drop_unusable(data.train, where_train, notes)
        space = build_label_space(list(train["label"]), where_train)
        self.space = space = with_class_names(space, train.features.get("label"))
        evaluation = None
        if data.validation is not None:
            evaluation = drop_unusable(data.validation, where_eval, notes)
            check_eval_labels(space, list(evaluation["label"]), where_eval)
        train_features, counts = featurize_rows(train, tokenizer, max_length, space, "training data", notes)
        eval_features = None
        if evaluation is not None:
            eval_features, _ = featurize_rows(evaluation, tokenizer, max_length, space, "evaluation data", notes)
        self.weights = class_weights(self.class_weights_spec, space, counts, len(train_features))
        if self.weights is not None:
            notes.append("class weights: " + ", ".join(f"{n} {w:.3g}" for n, w in zip(space.names, self.weights)))
        return Features(train_features, eval_features, notes)

    def model_kwargs(self) -> dict[str, Any]:
        """``from_pretrained`` arguments that size the head and name the classes."""
        space = self._space()
        kwargs: dict[str, Any] = {"num_labels": len(space.values), "id2label": space.id2label,
                                  "label2id": space.label2id}
        if space.multi_label:
            kwargs["problem_type"] = "multi_label_classification"
        return kwargs

    def engine_parts(self, tokenizer: Any) -> dict[str, Any]:
        """The task's share of ``EngineInputs``: collator, metrics, logits shrinking, loss."""
        return {"collator": PadCollator(tokenizer), "compute_metrics": self.compute_metrics,
                "preprocess_logits": self.preprocess_logits, "compute_loss": self.loss_fn()}

    def compute_metrics(self, eval_pred: Any) -> dict[str, float]:
        """Scalar metrics for the logs; the full report (per class, confusion) stays in ``last_report``."""
        self.last_report = score(eval_pred.predictions, eval_pred.label_ids, self._space())
        # Lists (per-class rows, confusion matrix) would clutter every log line: metrics.json gets them.
        return {k: v for k, v in self.last_report.items() if isinstance(v, float)}

    def preprocess_logits(self, logits: Any, labels: Any) -> Any:
        """``shrink_logits`` for this label layout."""
        return shrink_logits(logits, labels, multi_label=self._space().multi_label)

    def loss_fn(self) -> Optional[WeightedLoss]:
        """A weighted loss when ``class_weights`` asks for one, else None (the model's own loss)."""
        return None if self.weights is None else WeightedLoss(self.weights, self._space().multi_label)

    def report(self, run_dir: Path) -> dict[str, Any]:
        """Per-class rows and confusion matrix of the last evaluation, drawn into ``run_dir/plots``.

        Returns:
            ``labels``, ``per_class`` and (single-label) ``confusion_matrix`` for metrics.json; empty
            when there was no evaluation.
        """
        from llmtune.reports.plots import confusion_matrix_png, per_class_f1_png

        last = self.last_report
        if not last:
            return {}
        out: dict[str, Any] = {"labels": self._space().names, "per_class": last["per_class"]}
        per_class_f1_png(last["per_class"], run_dir / "plots" / "per_class_f1.png")
        if "confusion_matrix" in last:
            out["confusion_matrix"] = last["confusion_matrix"]
            confusion_matrix_png(last["confusion_matrix"], out["labels"], run_dir / "plots" / "confusion_matrix.png")
        return out

    def _space(self) -> LabelSpace:
        assert self.space is not None, "call prepare() first"
        return self.space


def drop_unusable(dataset: Any, where: str, notes: list[str]) -> Any:
    """Drop rows with an empty text or no label, counting them in a note."""
    kept = dataset.filter(usable_rows, batched=True, batch_size=MAP_BATCH_SIZE, desc="checking rows")
    dropped = len(dataset) - len(kept)
    if dropped == len(dataset):
        raise DataError(f"every row of {where} has an empty text or no label; check --text-column and --label-column")
    if dropped:
        notes.append(f"skipped {dropped} of {len(dataset)} rows of {where} with an empty text or no label")
    return kept


def featurize_rows(
    rows: Any, tokenizer: Any, max_length: int, space: LabelSpace, where: str, notes: list[str]
) -> tuple[Any, list[int]]:
    """Tokenize one split (cached by ``Dataset.map``); note truncation and the class distribution."""
    features = rows.map(
        tokenize_batch, batched=True, batch_size=MAP_BATCH_SIZE, remove_columns=rows.column_names,
        fn_kwargs={"tokenizer": tokenizer, "max_length": max_length, "space": space}, desc=f"tokenizing {where}",
    )
    truncated = sum(features["truncated"])
    if truncated:
        notes.append(f"{where}: {truncated} of {len(features)} rows ({100 * truncated / len(features):.1f} %) were "
                     f"truncated to {max_length} tokens; raise --set train.max_length to keep more of them")
    counts = class_counts(space, features["labels"])
    notes.append(distribution_line(space, counts, len(features), where))
    return features, counts


class ClassificationEval:
    """Sequence classification: labels mapped through the model's ``label2id``; accuracy/F1, confusion matrix."""

    name = "classification"
    auto_class = "AutoModelForSequenceClassification"
    columns = TASKS["classification"].columns

    def __init__(self, config: Any) -> None:
        self.config = config
        self.task = ClassificationTask()
        self.notes: list[str] = []
        self.features: Any = None

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Any tokenizer works."""

    def prepare(self, rows: Any, tokenizer: Any, max_length: int, where: str) -> None:
        """Skip blank rows, refuse labels the model does not know, tokenize (unpadded), sort by length.

        Raises:
            DataError: Labels outside the model's classes (named, with their row counts).
        """
        rows = drop_unusable(rows, where, self.notes)
        labels = list(rows["label"])
        space = model_label_space(self.config, labels, rows.features.get("label"))
        check_eval_labels(space, labels, where)
        self.task.space = space
        pairs = rows["text_pair"] if "text_pair" in rows.column_names else None
        self.inputs = [[t, p] for t, p in zip(rows["text"], pairs)] if pairs else list(rows["text"])
        self.references = [space.encode(v) for v in labels]
        features, _ = featurize_rows(rows, tokenizer, max_length, space, "evaluation data", self.notes)
        self.features, self.order = longest_first(features, features["length"])

    def engine_parts(self, tokenizer: Any) -> dict[str, Any]:
        """The classification task's own collator, metrics and logits shrinking."""
        return self.task.engine_parts(tokenizer)

    def finish(self, output: Any, out_dir: Path, model: Any, tokenizer: Any) -> tuple[dict[str, Any], list[Record]]:
        """Per-class table, confusion matrix (+ PNGs in ``out_dir/plots``) and one record per row."""
        extra = self.task.report(out_dir)
        names = self.task.space.names
        predicted = unsort(output.predictions.tolist(), self.order)

        def named(value: Any) -> Any:
            return [names[i] for i, on in enumerate(value) if on] if isinstance(value, list) else names[value]

        rows = zip(self.inputs, self.references, predicted)
        records = [{"input": text, "reference": named(ref), "prediction": named(pred),
                    "correct": named(ref) == named(pred)} for text, ref, pred in rows]
        return extra, records


def training_task(cfg: RunConfig) -> ClassificationTask:
    """The plug-in ``llmtune finetune --task classification`` trains with."""
    return ClassificationTask(cfg.train.class_weights)


def eval_task(cfg: RunConfig, config: Any) -> ClassificationEval:
    """The plug-in ``llmtune eval --task classification`` scores with (the model's classes from ``config``)."""
    return ClassificationEval(config)
