"""Knowledge distillation as a loss on the shared engine: ``alpha * T^2 * KL(teacher || student) + (1 - alpha) * task``.

``DistillLoss`` is a ``compute_loss`` for ``EngineInputs`` (the Trainer's ``compute_loss_func``), so
distillation runs on the same Trainer, callbacks, checkpoints and reports as every other run. The
Trainer hands a ``compute_loss_func`` only the student's outputs and the labels, so the loss attaches a
forward pre-hook to the student that keeps the batch's inputs; the teacher (eval mode, no gradients,
moved to the student's device on first use) then sees exactly the batch the student saw. Teacher logits
are computed live each step, not cached: caching would pin one epoch's dropout-free logits to disk for
a saving that only matters for several epochs over big data.

The loss is task-agnostic: it needs logits over the same classes (or vocabulary) and a mask of the
positions that count, which the labels give (``-100`` = ignored). ``shift`` says the logits at position
``t`` predict label ``t + 1`` (causal LMs). Both weighted terms are kept (``DistillLog``) so the run
reports how much of the loss came from each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from transformers import TrainerCallback

from llmtune.modeling import IGNORE

_TEACHER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "use_cache")


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


def task_term(logits: Any, labels: Any, shift: bool) -> Any:
    """Cross-entropy per counted position, summed (classification rows or LM tokens)."""
    import torch.nn.functional as F

    if shift:
        logits, labels = logits[..., :-1, :], labels[..., 1:]
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")


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
        shift: Causal LM: logits at ``t`` predict label ``t + 1``.
        task_loss: ``f(outputs, labels, num_items_in_batch)`` for the task term (e.g. class-weighted);
            None: plain cross-entropy over the counted positions.

    In evaluation (the student not training) only the task term is returned, so ``eval_loss`` and what
    is derived from it (perplexity, bits per character) compare with runs trained without a teacher.
    """

    def __init__(self, student: Any, teacher: Any, temperature: float, alpha: float, shift: bool = False,
                 task_loss: Optional[Callable[..., Any]] = None) -> None:
        self.student, self.teacher = student, teacher.eval().requires_grad_(False)
        self.temperature, self.alpha, self.shift, self.task_loss = temperature, alpha, shift, task_loss
        self.log = DistillLog()
        self.inputs: dict[str, Any] = {}
        student.register_forward_pre_hook(self._keep_inputs, with_kwargs=True)

    def _keep_inputs(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.inputs = {k: v for k, v in kwargs.items() if k in _TEACHER_INPUTS}

    def teacher_logits(self, device: Any) -> Any:
        """The teacher's logits for the batch the student just saw (no gradients)."""
        import torch

        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        with torch.no_grad():
            return self.teacher(**self.inputs)["logits"]

    def __call__(self, outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        logits = outputs["logits"]
        counted = (labels[..., 1:] if self.shift else labels) != IGNORE
        denominator = num_items_in_batch if num_items_in_batch is not None else counted.sum().clamp(min=1)
        task = (self.task_loss(outputs, labels, num_items_in_batch) if self.task_loss is not None
                else task_term(logits, labels, self.shift) / denominator)
        if not self.student.training or self.alpha == 0:
            if self.student.training:
                self.log.add(0.0, float(task.detach()))
            return task
        teacher = self.teacher_logits(logits.device)
        if teacher.shape[-1] != logits.shape[-1]:
            raise ValueError(f"teacher logits have {teacher.shape[-1]} classes, the student's {logits.shape[-1]}")
        student_part, teacher_part = (logits[..., :-1, :], teacher[..., :-1, :]) if self.shift else (logits, teacher)
        kd = (kd_term(student_part, teacher_part, self.temperature) * counted).sum() / denominator
        kd_weighted, task_weighted = self.alpha * kd, (1 - self.alpha) * task
        self.log.add(float(kd_weighted.detach()), float(task_weighted.detach()))
        return kd_weighted + task_weighted


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
