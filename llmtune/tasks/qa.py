"""Extractive question answering (SQuAD v1.1 / v2.0 format).

Rows have ``question``, ``context`` and ``answers`` (``{"text": [...], "answer_start": [...]}``,
character offsets into the context), optionally ``id`` and ``title``.

A context longer than the model's window is cut into overlapping windows (``qa_features``); the
stride between windows follows one rule, ``doc_stride``, in training and in ``llmtune eval`` alike,
so an evaluation reproduces the numbers of the run's own final evaluation. Start/end logits become
answer text through n-best post-processing (``qa_postprocess``), scored with SQuAD EM/F1.

Features are left unpadded: the collator pads each batch to its longest window, on the right, so
token positions in the model's logits are the positions in the feature (labels and offsets stay valid).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

from llmtune.config.schema import RunConfig
from llmtune.errors import ConfigError, ModelError
from llmtune.tasks.base import MAP_BATCH_SIZE, Features, Record, longest_first
from llmtune.tasks.qa_features import (
    LABEL_COLUMNS, ensure_example_ids, prepare_eval_features, prepare_train_features, validate_examples,
)
from llmtune.tasks.qa_postprocess import compute_metrics_fn, postprocess_predictions
from llmtune.tasks.registry import TASKS




def check_tokenizer(tokenizer: Any) -> None:
    """Refuse a tokenizer that cannot map tokens back to character offsets.

    Raises:
        ModelError: The tokenizer is a slow (pure Python) one.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(
            f"extractive QA needs a fast tokenizer (offset mapping); {type(tokenizer).__name__} has none; "
            "use the model's tokenizer.json / a *TokenizerFast, or train one with `llmtune tokenizer train`"
        )


# --------------------------------------------------------------------------------------------------
# Answers and row validation
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# The plug-in
# --------------------------------------------------------------------------------------------------


class QATask:
    """Extractive QA: window long contexts, label answer tokens, score n-best spans with EM/F1."""

    name = "qa"
    columns = TASKS["qa"].columns
    auto_class = "AutoModelForQuestionAnswering"

    def __init__(
        self,
        max_length: int = 384,
        doc_stride: int = 128,
        max_answer_length: int = 30,
        n_best: int = 20,
        allow_no_answer: bool = False,
        null_score_threshold: float = 0.0,
    ) -> None:
        problems = []  # all at once, like the config loader
        if not 0 <= doc_stride < max_length:
            problems.append(f"doc_stride {doc_stride} must be >= 0 and below max_length {max_length}")
        if max_answer_length < 1:
            problems.append(f"max_answer_length {max_answer_length} must be at least 1")
        if n_best < 1:
            problems.append(f"n_best {n_best} must be at least 1")
        if problems:
            raise ConfigError("; ".join(problems))
        self.max_length = max_length
        self.doc_stride = doc_stride
        self.max_answer_length = max_answer_length
        self.n_best = n_best
        self.allow_no_answer = allow_no_answer
        self.null_score_threshold = null_score_threshold
        self.last_predictions: dict[str, str] = {}

    check_tokenizer = staticmethod(check_tokenizer)

    def validate(self, dataset: Any) -> tuple[Any, dict[str, int]]:
        """``validate_examples`` with this task's ``allow_no_answer``."""
        return validate_examples(dataset, self.allow_no_answer)

    def _map(
        self, dataset: Any, fn: Callable[..., dict[str, list[Any]]], tokenizer: Any, desc: str, num_proc: Optional[int]
    ) -> Any:
        check_tokenizer(tokenizer)
        return dataset.map(
            fn,
            batched=True,
            batch_size=MAP_BATCH_SIZE,
            remove_columns=dataset.column_names,
            fn_kwargs={"tokenizer": tokenizer, "max_length": self.max_length, "doc_stride": self.doc_stride},
            num_proc=num_proc,
            desc=desc,
        )

    def preprocess_train(
        self, dataset: Any, tokenizer: Any, desc: str = "windowing", num_proc: Optional[int] = None
    ) -> Any:
        """Training features from validated rows (run ``validate`` first); cached by ``Dataset.map``."""
        return self._map(dataset, prepare_train_features, tokenizer, desc, num_proc)

    def prepare_eval(
        self, dataset: Any, tokenizer: Any, desc: str = "windowing", num_proc: Optional[int] = None
    ) -> tuple[Any, Any]:
        """Evaluation examples (with unique ids) and their window features.

        Returns:
            ``(examples, features)``: pass both to ``compute_metrics_fn``/``postprocess``.
        """
        examples = ensure_example_ids(dataset)
        return examples, self._map(examples, prepare_eval_features, tokenizer, desc, num_proc)

    def collator(self, tokenizer: Any) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        """Pad each batch to its longest window, always on the right, keeping only model inputs and labels.

        Right padding is forced: left padding would shift every token position and break the
        start/end labels and the offsets post-processing reads.
        """
        keep = set(tokenizer.model_input_names) | set(LABEL_COLUMNS)

        def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
            rows = [{k: v for k, v in f.items() if k in keep} for f in features]
            return tokenizer.pad(rows, padding=True, padding_side="right", return_tensors="pt")

        return collate

    def postprocess(self, examples: Any, features: Any, start_logits: Any, end_logits: Any) -> dict[str, str]:
        """Best answer text per example id (also kept in ``last_predictions``)."""
        self.last_predictions = postprocess_predictions(
            examples, features, start_logits, end_logits, self.n_best, self.max_answer_length,
            self.allow_no_answer, self.null_score_threshold,
        )
        return self.last_predictions

    def compute_metrics_fn(self, eval_examples: Any, eval_features: Any) -> Callable[[Any], dict[str, float]]:
        """``compute_metrics`` for the Trainer; each call stores its predictions in ``last_predictions``."""

        def store(predictions: dict[str, str]) -> None:
            self.last_predictions = predictions

        return compute_metrics_fn(
            eval_examples, eval_features, self.n_best, self.max_answer_length, self.allow_no_answer,
            self.null_score_threshold, on_predictions=store,
        )


class QAEval:
    """Extractive QA: windows with stride, n-best answers, SQuAD EM/F1 (HasAns/NoAns with unanswerable rows)."""

    name = "qa"
    auto_class = "AutoModelForQuestionAnswering"
    columns = TASKS["qa"].columns
    check_tokenizer = staticmethod(check_tokenizer)

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.task: Any = None
        self.notes: list[str] = []
        self.features: Any = None

    def prepare(self, rows: Any, tokenizer: Any, max_length: int, where: str) -> None:
        """Window every context (training's stride rule), longest windows first."""
        stride = doc_stride(self.cfg, max_length)
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

    def finish(self, output: Any, out_dir: Path, model: Any, tokenizer: Any) -> tuple[dict[str, Any], list[Record]]:
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


class QATraining:
    """``QATask`` behind ``FinetuneTask``: windows, n-best answers, EM/F1, predictions.json.

    The QA task is built in ``prepare``, once the model's usable ``max_length`` is known, because
    its window stride must fit inside it.
    """

    name = "qa"
    auto_class = "AutoModelForQuestionAnswering"
    columns = TASKS["qa"].columns
    check_tokenizer = staticmethod(check_tokenizer)

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.task: Any = None
        self.eval_examples: Any = None
        self.eval_features: Any = None

    def prepare(self, data: Any, tokenizer: Any, max_length: int) -> Features:
        stride = doc_stride(self.cfg, max_length)
        self.task = QATask(max_length, stride, allow_no_answer=self.cfg.data.allow_no_answer)
        train, counts = self.task.validate(data.train)
        notes = [f"skipped {counts['misaligned']} training rows whose answer is not at answer_start"] \
            if counts["misaligned"] else []
        features = self.task.preprocess_train(train, tokenizer, desc="windowing train")
        if data.validation is not None:
            self.eval_examples, self.eval_features = self.task.prepare_eval(data.validation, tokenizer,
                                                                            desc="windowing eval")
        notes.append(f"{len(train)} questions -> {len(features)} training windows of up to {max_length} tokens "
                     f"(stride {stride})")
        return Features(features, self.eval_features, notes)

    def model_kwargs(self) -> dict[str, Any]:
        return {}

    def engine_parts(self, tokenizer: Any) -> dict[str, Any]:
        metrics = None
        if self.eval_examples is not None:
            metrics = self.task.compute_metrics_fn(self.eval_examples, self.eval_features)
        return {"collator": self.task.collator(tokenizer), "compute_metrics": metrics}

    def report(self, run_dir: Path) -> dict[str, Any]:
        """The last evaluation's answers, id -> text, in ``predictions.json``."""
        if self.task is not None and self.task.last_predictions:
            text = json.dumps(self.task.last_predictions, indent=1, ensure_ascii=False)
            (run_dir / "predictions.json").write_text(text, encoding="utf-8")
        return {}


def doc_stride(cfg: RunConfig, max_length: int) -> int:
    """Tokens of overlap between a context's windows: ``train.doc_stride``, else SQuAD's ratio (128 in 384).

    The one stride rule: training, its final evaluation and ``llmtune eval`` all window with it.
    """
    return cfg.train.doc_stride or min(128, max_length // 3)


def training_task(cfg: RunConfig) -> QATraining:
    """The plug-in ``llmtune finetune --task qa`` trains with."""
    return QATraining(cfg)


def eval_task(cfg: RunConfig, config: Any) -> QAEval:
    """The plug-in ``llmtune eval --task qa`` scores with."""
    return QAEval(cfg)
