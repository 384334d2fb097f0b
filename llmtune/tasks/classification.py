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

import math
import numbers
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from llmtune.errors import ConfigError, DataError
from llmtune.tasks.base import ColumnSpec

MAP_BATCH_SIZE = 1000
_SHOW = 5  # examples quoted in an error message


# --------------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------------


def label_kind(value: Any) -> str:
    """What one raw label is: ``missing``, ``int``, ``str``, ``list`` or ``bad``.

    Integral floats (``2.0``, as pandas writes an int column with a gap) count as ints; NaN, None
    and blank strings are missing labels.
    """
    if value is None:
        return "missing"
    if isinstance(value, (bool, numbers.Integral)):
        return "int"
    if isinstance(value, numbers.Real):
        if math.isnan(float(value)):
            return "missing"
        return "int" if float(value).is_integer() else "bad"
    if isinstance(value, str):
        return "str" if value.strip() else "missing"
    if isinstance(value, (list, tuple)):
        return "list"
    return "bad"


def _scalar(value: Any) -> Any:
    """The canonical form of a single label (ints as ``int``, names as they are)."""
    return value if isinstance(value, str) else int(value)


@dataclass(frozen=True)
class LabelSpace:
    """The classes a model predicts and how raw labels map onto them.

    Attributes:
        values: The raw label of each class id (ints or strings), in id order.
        multi_label: True when each row holds a list of labels.
        display: Names for the values when the data has them (a ``ClassLabel`` column), else None.
    """

    values: tuple[Any, ...]
    multi_label: bool = False
    display: Optional[tuple[str, ...]] = None
    _index: dict[Any, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {v: i for i, v in enumerate(self.values)})

    @property
    def names(self) -> list[str]:
        """Display names in id order."""
        return list(self.display) if self.display else [str(v) for v in self.values]

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def encode(self, raw: Any) -> Any:
        """Class id of a single-label row, or a float multi-hot list for a multi-label row."""
        if not self.multi_label:
            return self._index[_scalar(raw)]
        hot = [0.0] * len(self.values)
        for item in raw:
            hot[self._index[_scalar(item)]] = 1.0
        return hot


def _examples(values: Sequence[Any]) -> str:
    shown = ", ".join(repr(v) for v in list(values)[:_SHOW])
    return shown + (", ..." if len(values) > _SHOW else "")


def _flat_labels(labels: Sequence[Any], where: str) -> tuple[bool, list[Any]]:
    """``(multi_label, labels)``: the layout and every present label (list items flattened), checked.

    Raises:
        DataError: Floats/dicts, lists mixed with single labels, or ints mixed with strings.
    """
    kinds = Counter(label_kind(v) for v in labels)
    bad = [v for v in labels if label_kind(v) == "bad"]
    if bad:
        raise DataError(
            f"labels in {where} must be integer ids or string names (or lists of them for multi-label), got "
            f"{type(bad[0]).__name__} values such as {_examples(bad)}; regression targets are not classification"
        )
    multi = kinds["list"] > 0
    if multi and kinds["int"] + kinds["str"]:
        scalar = next(v for v in labels if label_kind(v) in ("int", "str"))
        raise DataError(f"the label column of {where} mixes lists (multi-label) with single labels such as "
                        f"{scalar!r}; write every label as a list for multi-label data")
    items = [i for v in labels if label_kind(v) == "list" for i in v] if multi else labels
    odd = [i for i in items if label_kind(i) in ("bad", "list")] if multi else []
    if odd:
        raise DataError(f"multi-label lists in {where} must hold names or ids, got {_examples(odd)}")
    present = [i for i in items if label_kind(i) != "missing"]
    if len({label_kind(i) for i in present}) > 1:
        what = "multi-label lists" if multi else "the label column"
        raise DataError(f"{what} of {where} mix integer ids and string names (inconsistent label types); "
                        "use one kind for every label, e.g. all names")
    return multi, [_scalar(i) for i in present]


def build_label_space(labels: Sequence[Any], where: str = "the training data") -> LabelSpace:
    """Find the classes in the training labels.

    String names are sorted alphabetically; integer labels are sorted numerically, so labels
    ``0..K-1`` keep their ids and e.g. star ratings ``1..5`` become ids ``0..4`` named ``"1".."5"``.

    Args:
        labels: The raw training labels (missing ones are ignored).
        where: How to name the data in messages.

    Raises:
        DataError: Labels that are neither ints nor strings (floats, dicts), mixed types, lists mixed
            with single labels, no labels at all, or a single class in single-label data.
    """
    multi, items = _flat_labels(labels, where)
    values = sorted(set(items))
    if not values:
        raise DataError(f"{where} has no labels; check --label-column")
    if not multi and len(values) < 2:
        raise DataError(
            f"{where} holds a single class ({values[0]!r} in all {len(items)} labelled rows); a classifier "
            "needs at least two classes: check --label-column or add rows of the other classes"
        )
    return LabelSpace(tuple(values), multi_label=multi)


def with_class_names(space: LabelSpace, feature: Any) -> LabelSpace:
    """Name integer classes after the data's ``ClassLabel`` (hub datasets such as imdb store ids + names)."""
    feature = getattr(feature, "feature", feature)  # a list of ClassLabel (multi-label) holds one
    names = getattr(feature, "names", None)
    if not names or not all(isinstance(v, int) and 0 <= v < len(names) for v in space.values):
        return space
    return LabelSpace(space.values, space.multi_label, tuple(names[v] for v in space.values))


def check_eval_labels(space: LabelSpace, labels: Sequence[Any], where: str = "the evaluation data") -> None:
    """Refuse evaluation labels the model cannot predict (unseen in training) or of another layout.

    Raises:
        DataError: Names the unseen labels with their row counts.
    """
    multi, items = _flat_labels(labels, where)
    if multi != space.multi_label and items:
        raise DataError(
            f"{where} has {'lists of labels' if multi else 'single labels'} but the training data has "
            f"{'lists (multi-label)' if space.multi_label else 'single labels'}; use the same layout in both"
        )
    unseen = Counter(i for i in items if i not in space._index)
    if unseen:
        listed = ", ".join(f"{name!r} ({n} rows)" for name, n in unseen.most_common(_SHOW))
        more = f" and {len(unseen) - _SHOW} more" if len(unseen) > _SHOW else ""
        raise DataError(
            f"labels in {where} never occur in the training data: {listed}{more}; the model cannot predict them. "
            f"Training classes are: {_examples(space.values)}. Add training rows for them or drop those rows"
        )


def class_counts(space: LabelSpace, encoded: Sequence[Any]) -> list[int]:
    """Rows per class id (multi-label: rows where the label is on)."""
    counts = [0] * len(space.values)
    for row in encoded:
        if space.multi_label:
            for i, on in enumerate(row):
                counts[i] += int(on > 0)
        else:
            counts[row] += 1
    return counts


def distribution_line(space: LabelSpace, counts: Sequence[int], total: int, where: str) -> str:
    """Human-readable class distribution, most frequent first (top 10)."""
    order = sorted(range(len(counts)), key=lambda i: -counts[i])
    parts = [f"{space.names[i]} {counts[i]} ({100 * counts[i] / max(total, 1):.0f} %)" for i in order[:10]]
    more = f", +{len(order) - 10} more" if len(order) > 10 else ""
    kind = "multi-label" if space.multi_label else f"{len(counts)} classes"
    return f"classes in {where} ({kind}, {total} rows): {', '.join(parts)}{more}"


def class_weights(spec: Any, space: LabelSpace, counts: Sequence[int], total: int) -> Optional[list[float]]:
    """Per-class loss weights from ``train.class_weights``.

    Args:
        spec: None, ``"balanced"`` (``total / (classes * count)``, sklearn's rule; multi-label: the
            positive weight ``negatives / positives`` of each label), a list in id order, or a
            mapping label name -> weight (unnamed classes get 1.0).
        space: The label space.
        counts: Training rows per class (``class_counts``).
        total: Training rows.

    Returns:
        One weight per class id, or None for an unweighted loss.

    Raises:
        ConfigError: An unknown spec, a list of the wrong length, an unknown name or a weight <= 0.
    """
    if spec is None:
        return None
    k = len(space.values)
    if spec == "balanced":
        if space.multi_label:
            return [(total - c) / c if c else 1.0 for c in counts]
        return [total / (k * c) if c else 1.0 for c in counts]
    if isinstance(spec, (list, tuple)):
        if len(spec) != k:
            raise ConfigError(f"train.class_weights: {len(spec)} weights given for {k} classes "
                              f"({_examples(space.names)})")
        weights = [float(w) for w in spec]
    elif isinstance(spec, dict):
        unknown = [name for name in spec if str(name) not in space.label2id]
        if unknown:
            raise ConfigError(f"train.class_weights: unknown classes {_examples(unknown)}; "
                              f"classes are {_examples(space.names)}")
        weights = [float(spec.get(name, spec.get(_scalar(v), 1.0))) for name, v in zip(space.names, space.values)]
    else:
        raise ConfigError(f"train.class_weights: use 'balanced', a list of {k} weights or a mapping class -> weight")
    if min(weights) <= 0:
        raise ConfigError("train.class_weights: every weight must be positive")
    return weights


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


@dataclass
class Prepared:
    """Features ready for the engine, with notes for the user."""

    train: Any
    eval: Optional[Any]
    notes: list[str] = field(default_factory=list)


class ClassificationTask:
    """Sequence classification: label mapping, tokenizing, dynamic padding, metrics and plots.

    Call ``prepare`` first: it finds the classes, which everything after it needs.
    """

    name = "classification"
    columns = ColumnSpec(required=("text", "label"), optional=("text_pair",), stratify="label")
    auto_class = "AutoModelForSequenceClassification"

    def __init__(self, class_weights: Any = None) -> None:
        self.class_weights_spec = class_weights
        self.space: Optional[LabelSpace] = None
        self.weights: Optional[list[float]] = None
        self.last_report: dict[str, Any] = {}  # the full result of the latest evaluation

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Any tokenizer works (padding is the runner's concern)."""

    def prepare(self, data: Any, tokenizer: Any, max_length: int) -> Prepared:
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
        return Prepared(train_features, eval_features, notes)

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
