"""Fit the step count and the LR schedule to a wall-clock budget from *real* step times.

``fit_to_budget`` is the one entry point the training runners (pretrain, finetune, distill) call. It
plans the run's budget: the optimizer steps the data and epochs allow, an optional first estimate of the
step time (pretrain times two passes before building the Trainer; finetune and distill rely on the first
real steps), and the time kept for evaluations (forward-pass time x eval batches) and the final save.
On a busy or warming-up machine a first estimate is off by up to several times, so a run would either
stop long before its budget or be cut off before its learning rate has decayed: ``ScheduleRefitCallback``
measures the mean step time over the first real steps and then moves the schedule's end (warm-up and
decay included) and ``state.max_steps`` to the step that the remaining budget allows.
``TimeBudgetCallback`` (``engine/callbacks.py``) stays the hard stop.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from transformers import TrainerCallback

from llmtune.config.schema import RunConfig, TrainConfig
from llmtune.dist import log, world_size
from llmtune.errors import ConfigError

REFIT_SKIP, REFIT_MEASURE = 3, 20  # warm-up steps ignored, then (at most) steps measured before refitting
MEASURE_FRACTION = 0.1  # ... or fewer: stop measuring once this share of the remaining budget is spent
REFIT_HEADROOM = 2.0  # the real step time may be up to 2x better than a first estimate
STEP_MARGIN = 1.1  # step-time noise: plan ~10 % fewer steps than a first estimate allows
REFIT_MARGIN = 1.03  # ... and ~3 % fewer than the measured step time allows
RETUNE_TOLERANCE = 0.05  # a later refit lengthens the schedule only by more than this share of the steps left
FINISH_SECONDS = 1.0  # final save (and pretrain's MFU peak measurement), beyond the checkpoint bytes
_FORWARD_SHARE = 1 / 3  # a forward pass costs about a third of forward + backward
_STEP_OVERHEAD = 1.1  # an optimizer step: the micro-batch passes + optimizer update and data loading
_WRITE_BYTES_PER_SECOND = 200e6  # checkpoint (weights + optimizer state) and model writes


@dataclass
class BudgetFit:
    """What a runner changes for a time budget.

    Attributes:
        cfg: The run config, ``train.max_steps`` lowered when a first estimate says fewer steps fit.
        seconds_left: The budget left for the Trainer's hard stop (``TimeBudgetCallback``; None: no budget).
        callbacks: The ``ScheduleRefitCallback`` to add to the Trainer (none without a budget).
    """

    cfg: RunConfig
    seconds_left: Optional[float] = None
    callbacks: list[Any] = field(default_factory=list)


def planned_steps(train: TrainConfig, n_rows: int) -> tuple[int, int]:
    """Optimizer steps the run plans (``max_steps`` or the epochs) and steps per epoch, as the Trainer counts."""
    from llmtune.engine.estimates import steps_per_epoch

    per_epoch = steps_per_epoch(n_rows, train.batch_size, train.grad_accum, world_size())
    return train.max_steps or math.ceil(per_epoch * train.epochs), per_epoch


def steps_done(checkpoint: Optional[str]) -> int:
    """Optimizer steps a checkpoint already holds (0 when starting fresh)."""
    state = Path(checkpoint) / "trainer_state.json" if checkpoint else None
    if state is None or not state.is_file():
        return 0
    return int(json.loads(state.read_text()).get("global_step", 0))


def finish_seconds(model: Any) -> float:
    """Seconds kept for the final checkpoint and model save: weights plus Adam's two moments of the trained ones."""
    params = list(model.parameters())
    size = sum(p.numel() * p.element_size() for p in params)
    trained = sum(p.numel() * 4 for p in params if p.requires_grad)
    return FINISH_SECONDS + (2 * size + 2 * trained) / _WRITE_BYTES_PER_SECOND


def fit_to_budget(
    cfg: RunConfig,
    started: float,
    *,
    n_rows: int,
    n_eval_rows: int = 0,
    done: int = 0,
    pass_seconds: Optional[float] = None,
    reserve_seconds: float = FINISH_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> BudgetFit:
    """Plan ``train.time_budget``: the steps that fit, the time kept for evaluations and saving, the refit.

    The budget counts from ``started`` (the start of the run), so loading data and the model are in it; so
    are the periodic and final evaluations (one costs ``eval batches x`` a forward pass, itself about a
    third of a training pass) and the final save (``reserve_seconds``). With a first estimate
    (``pass_seconds``: one forward+backward pass of a training micro-batch), the step count is capped at
    ``REFIT_HEADROOM`` times what it says fits, so the schedule starts near its final shape; without one,
    the run starts with the planned schedule. Either way a ``ScheduleRefitCallback`` refits the step count,
    warm-up and decay from the first real step times (never above the planned steps).

    Args:
        cfg: The run config (``train``: budget, batch sizes, epochs, ``max_steps``, ``eval_steps``).
        started: ``clock()`` at the start of the run.
        n_rows: Training rows (blocks, features) per epoch, all processes together.
        n_eval_rows: Evaluation rows (0: no evaluation).
        done: Optimizer steps a resumed checkpoint already holds.
        pass_seconds: Timed forward+backward pass of one training micro-batch, if measured.
        reserve_seconds: Time kept for the final save (``finish_seconds(model)``).
        clock: Monotonic time source (injectable for tests).

    Returns:
        The config to train with, the seconds left and the callbacks (``cfg`` alone without a budget).

    Raises:
        ConfigError: The budget was spent before training, or cannot fit one step (``check_budget_fits``).
    """
    from llmtune.engine.callbacks import check_budget_fits

    train = cfg.train
    budget = train.time_budget_seconds
    if budget is None:
        return BudgetFit(cfg)
    planned, per_epoch = planned_steps(train, n_rows)
    eval_batches = math.ceil(n_eval_rows / ((train.eval_batch_size or train.batch_size) * world_size()))
    # One evaluation in units of training steps: the estimate scales with the measured step time.
    eval_cost = eval_batches * _FORWARD_SHARE / (train.grad_accum * _STEP_OVERHEAD)
    eval_every = (train.eval_steps or per_epoch) if n_eval_rows else 0
    spent = clock() - started
    remaining = planned - done
    if pass_seconds is None and budget - spent <= 0:
        raise ConfigError(f"the time budget {train.time_budget} was used up before training started "
                          "(loading data and model); raise --time-budget")
    if pass_seconds is not None:
        step_seconds = pass_seconds * train.grad_accum * _STEP_OVERHEAD
        check_budget_fits(budget, step_seconds, spent=spent)
        fit = _steps_that_fit(budget - spent - reserve_seconds, step_seconds, step_seconds * eval_cost, eval_every,
                              STEP_MARGIN)
        if fit < remaining:
            log(f"time budget: ~{fit} of {remaining} planned steps fit (first estimate; refitted from the first "
                "real step times)")
            cap = done + min(remaining, math.ceil(fit * REFIT_HEADROOM))
            cfg = cfg.model_copy(update={"train": train.model_copy(update={"max_steps": cap})})
    refit = ScheduleRefitCallback(
        started + budget, reserve_seconds=reserve_seconds, eval_cost_steps=eval_cost, eval_every=eval_every,
        skip_steps=REFIT_SKIP, measure_steps=REFIT_MEASURE,
        # Several processes must refit at the same steps (to the same count): windows by step count only.
        measure_fraction=MEASURE_FRACTION if world_size() == 1 else None, planned=planned, clock=clock,
    )
    return BudgetFit(cfg, max(1e-3, budget - (clock() - started)), [refit])


def _steps_that_fit(seconds: float, step_seconds: float, eval_seconds: float, eval_every: int, margin: float) -> int:
    """Steps of ``step_seconds`` that fit in ``seconds`` with the final evaluation and the periodic ones."""
    per_step = step_seconds + (eval_seconds / eval_every if eval_every else 0.0)
    return max(1, math.floor((seconds - eval_seconds) / margin / per_step))


def _same_on_every_rank(steps: int) -> int:
    """Rank 0's step count on every process (ranks that stopped at different steps would hang in DDP)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return steps
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    value = torch.tensor([steps], dtype=torch.long, device=device)
    dist.broadcast(value, src=0)
    return int(value.item())


def set_schedule_horizon(lr_scheduler: Any, total_steps: int, warmup_steps: int) -> bool:
    """Point a transformers LambdaLR schedule (linear, cosine, ...) at a new last step.

    Args:
        lr_scheduler: The Trainer's scheduler (possibly wrapped by Accelerate).
        total_steps: The new ``num_training_steps``.
        warmup_steps: The new ``num_warmup_steps``.

    Returns:
        True when the schedule was changed; False for schedules without a horizon (constant ones).
    """
    scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)
    lambdas = getattr(scheduler, "lr_lambdas", None)
    changed = False
    for i, fn in enumerate(lambdas or []):
        if isinstance(fn, functools.partial) and "num_training_steps" in fn.keywords:
            keywords = {**fn.keywords, "num_training_steps": total_steps}
            if "num_warmup_steps" in keywords:
                keywords["num_warmup_steps"] = warmup_steps
            lambdas[i] = functools.partial(fn.func, *fn.args, **keywords)
            changed = True
    return changed


class ScheduleRefitCallback(TrainerCallback):
    """Refit ``max_steps`` and the LR schedule from measured step times, first after the first real steps.

    It keeps measuring in windows (``measure_steps`` steps, or less once time runs short) and refits
    again when the machine got slower (always) or faster (by more than ``RETUNE_TOLERANCE`` of the steps
    left, never above the steps planned at the start), so a busy machine still ends on a decayed learning
    rate. Time spent in evaluations and checkpoints is left out of the step time; the measured evaluation
    time replaces the first estimate.

    Attributes:
        refitted_to: The step count chosen last (None until the first refit).
    """

    def __init__(
        self,
        deadline: float,
        *,
        reserve_seconds: float,
        eval_cost_steps: float = 0.0,
        eval_every: int = 0,
        skip_steps: int = REFIT_SKIP,
        measure_steps: int = REFIT_MEASURE,
        measure_fraction: Optional[float] = None,
        margin: float = REFIT_MARGIN,
        planned: Optional[int] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Args:
        deadline: ``clock()`` value at which the whole run must be done.
        reserve_seconds: Time kept for the final save.
        eval_cost_steps: One evaluation's cost in measured training steps (until an evaluation was timed).
        eval_every: Steps between periodic evaluations (0: none).
        skip_steps: Warm-up steps left out of the measurement.
        measure_steps: Steps measured before each refit (at most).
        measure_fraction: Refit sooner (after at least 2 measured steps) once measuring has taken this share
            of the time left when it began: slow steps in a short budget (None: always ``measure_steps``).
        margin: Plan this factor fewer steps than the measurement allows (noise).
        planned: The steps the data and epochs ask for, for the log line (None: ``state.max_steps``).
        clock: Monotonic time source (injectable for tests).
        """
        self.deadline = deadline
        self.reserve_seconds = reserve_seconds
        self.eval_cost_steps = eval_cost_steps
        self.eval_every = eval_every
        self.skip_steps = skip_steps
        self.measure_steps = measure_steps
        self.measure_fraction = measure_fraction
        self.margin = margin
        self.planned = planned
        self.clock = clock
        self.refitted_to: Optional[int] = None
        self._start_step: Optional[int] = None
        self._cap = 0
        self._eval_seconds: Optional[float] = None  # the last evaluation, measured
        self._window = (0.0, 0, 0.0)  # start time, start step, seconds left out (evaluations, checkpoints)
        self._mark = 0.0  # end of the last step, evaluation or checkpoint

    def on_train_begin(self, args, state, control, **kwargs):
        self._start_step = state.global_step  # resumed runs start counting where they are
        self._cap = state.max_steps  # the Trainer's epochs end here: never refit above it

    def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):
        if self._start_step is None:
            return control
        now = self._mark = self.clock()
        done = state.global_step - self._start_step
        if done == self.skip_steps:
            self._window = (now, state.global_step, 0.0)
        elif done > self.skip_steps:
            t0, step0, left_out = self._window
            measured = state.global_step - step0
            if measured >= self.measure_steps or (measured >= 2 and self._measured_enough(t0, now)):
                self._refit(args, state, lr_scheduler, (now - t0 - left_out) / measured, now)
                self._window = (now, state.global_step, 0.0)
        return control

    def on_evaluate(self, args, state, control, **kwargs):
        self._eval_seconds = self._leave_out()
        return control

    def on_save(self, args, state, control, **kwargs):
        self._leave_out()
        return control

    def _leave_out(self) -> float:
        """Take the time since the last mark out of the step measurement; return it."""
        now = self.clock()
        seconds, self._mark = now - self._mark, now
        t0, step0, left_out = self._window
        self._window = (t0, step0, left_out + seconds)
        return seconds

    def _measured_enough(self, t0: float, now: float) -> bool:
        if self.measure_fraction is None:
            return False
        return now - t0 >= self.measure_fraction * (self.deadline - t0)

    def _refit(self, args: Any, state: Any, lr_scheduler: Any, step_seconds: float, now: float) -> None:
        """Move ``state.max_steps`` and the schedule's horizon to what the time left allows."""
        left = self.deadline - now - self.reserve_seconds
        eval_seconds = self._eval_seconds if self._eval_seconds is not None else step_seconds * self.eval_cost_steps
        fit = _steps_that_fit(left, step_seconds, eval_seconds, self.eval_every, self.margin)
        total = _same_on_every_rank(min(self._cap, state.global_step + fit))
        tolerance = max(2, RETUNE_TOLERANCE * (state.max_steps - state.global_step))
        first = self.refitted_to is None
        self.refitted_to = state.max_steps
        if total < state.max_steps or (not first and total > state.max_steps + tolerance):
            set_schedule_horizon(lr_scheduler, total, args.get_warmup_steps(total))
            if first or abs(total - state.max_steps) > RETUNE_TOLERANCE * state.max_steps:  # noise goes unsaid
                log(f"time budget: ~{total} of {self.planned or self._cap} planned steps fit; schedule refitted "
                    f"({step_seconds:.3g}s per step)")
            state.max_steps = self.refitted_to = total
