"""Knowledge distillation as a loss on the shared engine: ``alpha * T^2 * KL(teacher || student) + (1 - alpha) * task``.

``DistillLoss`` is a ``compute_loss`` for ``EngineInputs`` (the Trainer's ``compute_loss_func``), so
distillation runs on the same Trainer, callbacks, checkpoints and reports as every other run. The
Trainer hands a ``compute_loss_func`` only the student's outputs and the labels, so the loss attaches a
forward pre-hook to the student that keeps the batch's inputs; the teacher (eval mode, no gradients,
moved to the student's device on first use) then sees exactly the batch the student saw. With
``cache_rows`` (classification: one logit vector a row) the teacher's logits are kept in memory per row,
keyed by the row's unpadded token ids, so each row costs one teacher forward pass in the whole run (the
first epoch) instead of one per epoch; the teacher is in eval mode, so the cached logits are the ones a live
pass would give (up to float rounding from other padding). Per-token tasks (LM, generation) can keep the
teacher's top-k log-probabilities per position instead (``TopKCache``: fp16 values + token ids, a vocabulary
row per token would not fit; ``fill`` runs the teacher over the training set once before step 1), and the KL
then compares the teacher's top-k distribution, renormalised over its k tokens, with the student's full
log-softmax gathered at those k ids (``topk_kd_term``; with k = the vocabulary it is the full KL). Without a
cache (QA, or top-k 0) the teacher runs live each step. Nothing goes to disk.

The loss is task-agnostic: a ``LogitView`` says, per task, which ``(student logits, teacher logits,
mask)`` pairs the KL compares and what the task term is. ``LabelLogits`` covers classification, LM and
generation: one pair over classes (or the vocabulary), counted where the labels are not ``-100`` (so a
generation batch, whose labels mask the prompt, is distilled on its response tokens only), with ``shift``
for causal LMs (logits at ``t`` predict label ``t + 1``). ``SpanLogits`` covers extractive QA: two pairs,
start and end logits over the window's positions (padding masked out of both softmaxes), averaged, and
the model's own QA loss as the task term. Both weighted terms are kept (``DistillLog``) so the run
reports how much of the loss came from each.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

from transformers import TrainerCallback

from llmtune.engine.teacher_cache import TEACHER_INPUTS, RowCache, TopK, TopKCache, TeacherCache
from llmtune.modeling import IGNORE

_PADDING_LOGIT = -1e4  # QA: padded positions get (almost) no probability in either model's softmax

Pair = tuple[Any, Any, Any]  # student logits [..., C], teacher logits [..., C], mask [...] of the rows that count
# The label of a classification row that counts in the KL term only: a transfer-set copy (data.augment), whose gold
# label may not hold once words are masked. Unlike IGNORE the Trainer counts it in ``num_items_in_batch``, so both
# terms are averaged over every row of the batch.
KD_ONLY = -1


def kd_term(student_logits: Any, teacher_logits: Any, temperature: float) -> Any:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))`` per row (summed over the last dimension).

    Args:
        student_logits: ``[..., C]`` logits of the student.
        teacher_logits: ``[..., C]`` logits of the teacher (same shape).
        temperature: T > 0; the T^2 factor keeps the gradient scale independent of T (Hinton et al.).

    Returns:
        A tensor of shape ``[...]`` (one value per row / position).
    """
    import torch.nn.functional as F

    log_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1) * temperature**2


def topk_kd_term(student_logits: Any, teacher: TopK, temperature: float) -> Any:
    """``T^2 * KL(p_k || q)`` per position: the teacher's top-k distribution vs the student's.

    ``p_k`` is the teacher's ``softmax(log p / T)`` over its k kept tokens (renormalised: the tail mass is
    dropped, not kept as a bucket), ``q`` the student's log-softmax over the WHOLE vocabulary gathered at
    those k ids, so the student is also pushed off the tail. With k = the vocabulary size this is ``kd_term``.

    Args:
        student_logits: ``[..., V]`` logits of the student.
        teacher: ``TopK`` with ``[..., k]`` log-probabilities (at T=1; any shift cancels) and token ids.
        temperature: T > 0.

    Returns:
        A tensor of shape ``[...]``.
    """
    import torch.nn.functional as F

    log_s = F.log_softmax(student_logits.float() / temperature, dim=-1).gather(-1, teacher.indices.long())
    log_t = F.log_softmax(teacher.logprobs.float() / temperature, dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1) * temperature**2


def task_term(logits: Any, labels: Any, shift: bool) -> Any:
    """Cross-entropy per counted position, summed (classification rows or LM tokens)."""
    import torch.nn.functional as F

    if shift:
        logits, labels = logits[..., :-1, :], labels[..., 1:]
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")


def task_labels(labels: Any) -> Any:
    """``labels`` with ``KD_ONLY`` rows turned into ``IGNORE``, so the task term skips them (the KL keeps them)."""
    if labels is None or labels.is_floating_point():
        return labels
    return labels.masked_fill(labels == KD_ONLY, IGNORE)


class LogitView(Protocol):
    """How a task's outputs become the KL's logit pairs and its task term."""

    uses_labels: bool  # False: the batch has no ``labels`` (QA's start/end positions go to the model itself)

    def pairs(self, student: Any, teacher: Any, labels: Any, inputs: dict[str, Any]) -> list[Pair]:
        """``(student logits, teacher logits, mask)`` per compared distribution (``inputs``: the batch)."""

    def task(self, student: Any, labels: Any, denominator: Any) -> Any:
        """The task term (a scalar) for the student's outputs."""

    def counted(self, student: Any, labels: Any) -> Any:
        """The mask of the rows (positions) that count, for the denominator when the Trainer gives none."""


@dataclass(frozen=True)
class LabelLogits:
    """One distribution per labelled row or token: ``logits`` over classes or the vocabulary, masked by labels.

    Attributes:
        shift: Causal LM: logits at ``t`` predict label ``t + 1`` (the last position predicts nothing).
    """

    shift: bool = False
    uses_labels: bool = True

    def counted(self, student: Any, labels: Any) -> Any:
        return (labels[..., 1:] if self.shift else labels) != IGNORE

    def pairs(self, student: Any, teacher: Any, labels: Any, inputs: dict[str, Any]) -> list[Pair]:
        s, t = student["logits"], teacher["logits"]
        if self.shift:
            s, t = s[..., :-1, :], t[..., :-1, :]
        return [(s, t, self.counted(student, labels))]

    def task(self, student: Any, labels: Any, denominator: Any) -> Any:
        return task_term(student["logits"], labels, self.shift) / denominator


@dataclass(frozen=True)
class SpanLogits:
    """Extractive QA: start and end logits over a window's positions, one distribution each per window.

    The task term is the model's own QA loss (it got the start/end positions); padded positions are
    pushed out of both models' softmaxes so the KL compares the real tokens only.
    """

    uses_labels: bool = False

    def counted(self, student: Any, labels: Any) -> Any:
        import torch

        return torch.ones(student["start_logits"].shape[0], dtype=torch.bool, device=student["start_logits"].device)

    def pairs(self, student: Any, teacher: Any, labels: Any, inputs: dict[str, Any]) -> list[Pair]:
        rows, padding = self.counted(student, labels), inputs.get("attention_mask")
        out = []
        for key in ("start_logits", "end_logits"):
            s, t = student[key].float(), teacher[key].float()
            if padding is not None:
                s, t = (x.masked_fill(padding == 0, _PADDING_LOGIT) for x in (s, t))
            out.append((s, t, rows))
        return out

    def task(self, student: Any, labels: Any, denominator: Any) -> Any:
        if student.get("loss") is None:
            raise ValueError("the QA student returned no loss: its batch has no start_positions/end_positions")
        return student["loss"]


class _NoLabelsExpected(logging.Filter):
    """Drop the Trainer's per-step warning that ``compute_loss_func`` got ``labels=None``: a view that does not
    use labels (QA) expects exactly that."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`compute_loss_func` is defined but `labels=None`" not in str(record.msg)


def _expect_no_labels() -> None:
    logger = logging.getLogger("transformers.trainer")
    if not any(isinstance(f, _NoLabelsExpected) for f in logger.filters):
        logger.addFilter(_NoLabelsExpected())


@dataclass
class DistillLog:
    """Sums of the weighted terms since the last log line, and over the whole run."""

    kd: float = 0.0
    task: float = 0.0
    steps: int = 0
    total: dict[str, float] = field(default_factory=lambda: {"kd": 0.0, "task": 0.0, "steps": 0})

    def add(self, kd: float, task: float) -> None:
        self.kd, self.task, self.steps = self.kd + kd, self.task + task, self.steps + 1
        self.total = {"kd": self.total["kd"] + kd, "task": self.total["task"] + task, "steps": self.total["steps"] + 1}

    def take(self) -> dict[str, float]:
        """Mean weighted terms since the last call (empty when no step ran), then reset."""
        if not self.steps:
            return {}
        out = {"distill_kd_term": self.kd / self.steps, "distill_task_term": self.task / self.steps}
        self.kd, self.task, self.steps = 0.0, 0.0, 0
        return out

    def summary(self) -> dict[str, float]:
        """Run means of both weighted terms and the KL term's share of the loss, for metrics.json."""
        n = self.total["steps"]
        if not n:
            return {}
        kd, task = self.total["kd"] / n, self.total["task"] / n
        return {"distill_kd_term": kd, "distill_task_term": task,
                "distill_kd_share": kd / (kd + task) if kd + task > 0 else 0.0}


class DistillLoss:
    """``compute_loss(outputs, labels, num_items_in_batch)`` mixing the KL to the teacher with the task loss.

    Args:
        student: The model being trained (a pre-hook keeps each batch's inputs for the teacher).
        teacher: The teacher model; put in eval mode with gradients off.
        temperature: Softmax temperature T (> 0).
        alpha: Weight of the KL term (0..1).
        shift: Causal LM: logits at ``t`` predict label ``t + 1`` (``LabelLogits(shift)``; ignored with ``view``).
        task_loss: ``f(outputs, labels, num_items_in_batch)`` for the task term (e.g. class-weighted);
            None: the view's (cross-entropy over the counted positions; QA: the model's loss).
        view: The task's ``LogitView`` (None: ``LabelLogits(shift)``).
        cache_rows: Keep the teacher's ``logits`` per row in memory (``RowCache``; one vector a row:
            classification), so a row seen again in a later epoch costs no teacher pass.
        top_k: Per-token tasks: keep the teacher's top-k log-probabilities per token in memory instead
            (``TopKCache``; fill it before training with ``loss.cache.fill``) and compare top-k
            distributions (``topk_kd_term``). 0: no top-k cache.

    The KL term is ``T^2 * KL`` summed over the counted rows of each pair, divided by the same denominator
    as the task term (the Trainer's ``num_items_in_batch``, else the counted rows), averaged over the
    pairs (QA: start and end). In evaluation (the student not training) only the task term is returned,
    so ``eval_loss`` and what is derived from it (perplexity, bits per character) compare with runs
    trained without a teacher.
    """

    def __init__(self, student: Any, teacher: Any, temperature: float, alpha: float, shift: bool = False,
                 task_loss: Optional[Callable[..., Any]] = None, view: Optional[LogitView] = None,
                 cache_rows: bool = False, top_k: int = 0) -> None:
        self.student, self.teacher = student, teacher.eval().requires_grad_(False)
        self.cache: Optional[TeacherCache] = TopKCache(top_k) if top_k else RowCache() if cache_rows else None
        self.temperature, self.alpha, self.task_loss = temperature, alpha, task_loss
        self.view: LogitView = view if view is not None else LabelLogits(shift)
        if not self.view.uses_labels:
            _expect_no_labels()
        self.log = DistillLog()
        self.inputs: dict[str, Any] = {}
        student.register_forward_pre_hook(self._keep_inputs, with_kwargs=True)

    def _keep_inputs(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.inputs = {k: v for k, v in kwargs.items() if k in TEACHER_INPUTS}

    def teacher_outputs(self, device: Any) -> Any:
        """The teacher's outputs for the batch the student just saw (no gradients)."""
        import torch

        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        if self.cache is not None:
            return {"logits": self.cache.outputs(self.teacher, self.inputs, device)}
        with torch.no_grad():
            return self.teacher(**self.inputs)

    def __call__(self, outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        denominator = num_items_in_batch if num_items_in_batch is not None else \
            self.view.counted(outputs, labels).sum().clamp(min=1)
        hidden = task_labels(labels)  # transfer-set rows (KD_ONLY) count in the KL term only
        task = (self.task_loss(outputs, hidden, num_items_in_batch) if self.task_loss is not None
                else self.view.task(outputs, hidden, denominator))
        if not self.student.training or self.alpha == 0:
            if self.student.training:
                self.log.add(0.0, float(task.detach()))
            return task
        pairs = self.view.pairs(outputs, self.teacher_outputs(task.device), labels, self.inputs)
        kd = sum(self.kd(student, teacher, mask, denominator) for student, teacher, mask in pairs) / len(pairs)
        kd_weighted, task_weighted = self.alpha * kd, (1 - self.alpha) * task
        self.log.add(float(kd_weighted.detach()), float(task_weighted.detach()))
        return kd_weighted + task_weighted

    def kd(self, student: Any, teacher: Any, mask: Any, denominator: Any) -> Any:
        """``T^2 * KL`` summed over the rows ``mask`` counts, divided by ``denominator``."""
        if isinstance(teacher, TopK):
            return (topk_kd_term(student, teacher, self.temperature) * mask).sum() / denominator
        if teacher.shape[-1] != student.shape[-1]:
            raise ValueError(f"teacher logits have {teacher.shape[-1]} classes, the student's {student.shape[-1]}")
        return (kd_term(student, teacher, self.temperature) * mask).sum() / denominator


class DistillLogCallback(TrainerCallback):
    """Adds the mean weighted KL and task terms since the last log line to each training log line.

    It must run before the callback that writes ``logs/metrics.jsonl`` (``first_callback`` puts it there).
    """

    def __init__(self, log: DistillLog) -> None:
        self.log = log

    def on_log(self, args: Any, state: Any, control: Any, logs: Optional[dict[str, float]] = None, **kwargs: Any) -> None:
        if logs is not None and "loss" in logs:
            logs.update(self.log.take())


def first_callback(trainer: Any, callback: Any) -> None:
    """Make ``callback`` the trainer's first, so its changes to a log line reach every later callback."""
    trainer.callback_handler.callbacks.insert(0, callback)
