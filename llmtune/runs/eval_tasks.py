"""What ``llmtune eval`` does per task: features from rows, engine parts, metrics and prediction records.

Each adapter wraps the task plug-in training uses (same preprocessing, collator and
``compute_metrics``), so an evaluation reproduces the numbers written at the end of training. They
share one shape, used by ``llmtune.runs.evaluate``:

* ``prepare(rows, tokenizer, max_length, where)`` checks the rows against the model (labels it knows,
  columns it needs) and builds ``features``, sorted longest first: each batch is then padded only to
  its own longest row and holds rows of similar length, which wastes the least compute on padding;
* ``engine_parts(tokenizer)`` gives the collator, ``compute_metrics`` and logits shrinking;
* ``finish(output, out_dir)`` turns ``Trainer.predict``'s output into extra metrics (and plots) and
  one record per example for ``predictions.jsonl``, in the order of the data.

Language modelling and generation live in ``llmtune.runs.eval_lm``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from llmtune.config.schema import RunConfig
from llmtune.tasks.base import ColumnSpec

Record = dict[str, Any]


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


# --------------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------------


def _uses_ids(labels: Sequence[Any]) -> bool:
    """Whether the data's labels are integers (ids or numbers) rather than names."""
    from llmtune.tasks.classification import label_kind

    for value in labels:
        for item in value if label_kind(value) == "list" else [value]:
            kind = label_kind(item)
            if kind in ("int", "str"):
                return kind == "int"
    return False


def model_label_space(config: Any, labels: Sequence[Any], feature: Any = None) -> Any:
    """The model's classes (``id2label``) as a ``LabelSpace`` over the raw labels the data uses.

    Names in the data map through the names in ``id2label``. Integers map through a ``ClassLabel``
    column's names when the data has them, else through numeric class names (a model trained on
    star ratings 1-5 has classes named "1".."5"), else they are class ids.
    """
    from llmtune.tasks.classification import LabelSpace

    names = [str(config.id2label.get(i, i)) for i in range(config.num_labels)]
    multi = getattr(config, "problem_type", None) == "multi_label_classification"
    if not _uses_ids(labels):
        return LabelSpace(tuple(names), multi_label=multi)
    class_names = getattr(getattr(feature, "feature", feature), "names", None)
    if class_names and set(names) <= set(class_names):
        return LabelSpace(tuple(class_names.index(n) for n in names), multi, tuple(names))
    if all(re.fullmatch(r"-?\d+", n) for n in names):
        return LabelSpace(tuple(int(n) for n in names), multi_label=multi)
    return LabelSpace(tuple(range(len(names))), multi, tuple(names))


class ClassificationEval:
    """Sequence classification: labels mapped through the model's ``label2id``; accuracy/F1, confusion matrix."""

    name = "classification"
    auto_class = "AutoModelForSequenceClassification"
    columns = ColumnSpec(required=("text", "label"), optional=("text_pair",))

    def __init__(self, config: Any) -> None:
        from llmtune.tasks.classification import ClassificationTask

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
        from llmtune.tasks.classification import check_eval_labels, drop_unusable, featurize_rows

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

    def finish(self, output: Any, out_dir: Path) -> tuple[dict[str, Any], list[Record]]:
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


# --------------------------------------------------------------------------------------------------
# Extractive QA
# --------------------------------------------------------------------------------------------------


class QAEval:
    """Extractive QA: windows with stride, n-best answers, SQuAD EM/F1 (HasAns/NoAns with unanswerable rows)."""

    name = "qa"
    auto_class = "AutoModelForQuestionAnswering"
    columns = ColumnSpec(required=("question", "context", "answers"), optional=("id", "title"))

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.task: Any = None
        self.notes: list[str] = []
        self.features: Any = None

    def check_tokenizer(self, tokenizer: Any) -> None:
        """QA needs a fast tokenizer (offsets)."""
        from llmtune.tasks.qa import check_tokenizer

        check_tokenizer(tokenizer)

    def prepare(self, rows: Any, tokenizer: Any, max_length: int, where: str) -> None:
        """Window every context (training's stride rule), longest windows first."""
        from llmtune.tasks.qa import QATask

        stride = self.cfg.train.doc_stride or min(128, max_length // 4)  # as finetune's QAAdapter
        allow = self.cfg.data.allow_no_answer
        self.task = QATask(max_length, stride, allow_no_answer=allow)
        self.examples, features = self.task.prepare_eval(rows, tokenizer, desc="windowing")
        unanswerable = sum(not any(t.strip() for t in (a or {}).get("text") or []) for a in rows["answers"])
        if unanswerable and not allow:
            self.notes.append(f"{unanswerable} questions of {where} have no answer, but the model is not asked to "
                              "predict 'no answer'; pass --set data.allow_no_answer=true for SQuAD v2 scoring")
        self.notes.append(f"{len(rows)} questions -> {len(features)} windows of up to {max_length} tokens "
                          f"(stride {stride})")
        self.features, _ = longest_first(features, [len(ids) for ids in features["input_ids"]])

    def engine_parts(self, tokenizer: Any) -> dict[str, Any]:
        """The QA task's collator and n-best post-processing metrics, over the sorted windows."""
        return {"collator": self.task.collator(tokenizer),
                "compute_metrics": self.task.compute_metrics_fn(self.examples, self.features)}

    def finish(self, output: Any, out_dir: Path) -> tuple[dict[str, Any], list[Record]]:
        """One record per question: its answers, the predicted span and whether it matches exactly."""
        from llmtune.metrics.core import squad_metrics

        predictions = self.task.last_predictions
        records = []
        for qid, question, answers in zip(self.examples["id"], self.examples["question"], self.examples["answers"]):
            gold = list((answers or {}).get("text") or [])
            prediction = predictions.get(str(qid), "")
            exact = squad_metrics({"q": prediction}, {"q": gold})["exact_match"] == 100.0
            records.append({"id": str(qid), "input": question, "reference": gold, "prediction": prediction,
                            "correct": exact})
        return {}, records


def make_eval_task(name: str, cfg: RunConfig, config: Any, masked: bool = False) -> Any:
    """The adapter for task ``name`` (``classification``, ``qa``, ``lm`` or ``generation``)."""
    if name == "classification":
        return ClassificationEval(config)
    if name == "qa":
        return QAEval(cfg)
    from llmtune.runs.eval_lm import GenerationEval, LanguageModelEval

    if name == "lm":
        return LanguageModelEval(cfg, masked)
    assert name == "generation", name
    return GenerationEval(cfg)


def first_errors(records: Sequence[Record], limit: int = 10) -> list[Record]:
    """The first ``limit`` records that are not correct (for the report)."""
    return [r for r in records if r.get("correct") is False][:limit]

