"""Fit the step count and the LR schedule to a wall-clock budget from *real* step times.

Before training, the runner estimates the step time from two timed passes; on a busy or warming-up
machine that estimate is off by up to several times, so a run either stops long before its budget or
is cut off before its learning rate has decayed. ``ScheduleRefitCallback`` measures the mean step time
over the first real steps and then moves the schedule's end (and ``state.max_steps``) to the step
that the remaining budget allows. ``TimeBudgetCallback`` stays the hard stop.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from typing import Any, Callable, Optional

from transformers import TrainerCallback

logger = logging.getLogger(__name__)


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
    """Refit ``max_steps`` and the LR schedule once, after ``measure_steps`` real steps.

    Attributes:
        refitted_to: The step count chosen (None until the refit happened).
    """

    def __init__(
        self,
        deadline: float,
        *,
        reserve_seconds: float,
        eval_seconds_per_step: float = 0.0,
        skip_steps: int = 3,
        measure_steps: int = 20,
        margin: float = 1.03,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Args:
        deadline: ``clock()`` value at which the whole run must be done.
        reserve_seconds: Time kept for the final evaluation and save.
        eval_seconds_per_step: Periodic evaluation cost spread over steps.
        skip_steps: Warm-up steps left out of the measurement.
        measure_steps: Steps measured before refitting.
        margin: Plan this factor fewer steps than the measurement allows (noise).
        clock: Monotonic time source (injectable for tests).
        """
        self.deadline = deadline
        self.reserve_seconds = reserve_seconds
        self.eval_seconds_per_step = eval_seconds_per_step
        self.skip_steps = skip_steps
        self.measure_steps = measure_steps
        self.margin = margin
        self.clock = clock
        self.refitted_to: Optional[int] = None
        self._start_step: Optional[int] = None
        self._t0 = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self._start_step = state.global_step  # resumed runs start counting where they are

    def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):
        if self.refitted_to is not None or self._start_step is None:
            return control
        now = self.clock()
        done = state.global_step - self._start_step
        if done == self.skip_steps:
            self._t0 = now
        elif done == self.skip_steps + self.measure_steps:
            step_seconds = (now - self._t0) / self.measure_steps + self.eval_seconds_per_step
            left = self.deadline - now - self.reserve_seconds
            total = min(state.max_steps, state.global_step + max(1, math.floor(left / step_seconds / self.margin)))
            if set_schedule_horizon(lr_scheduler, total, args.get_warmup_steps(total)) or total < state.max_steps:
                logger.info("time budget: refitted to %d steps from %.3fs per step", total, step_seconds)
                state.max_steps = total
            self.refitted_to = total
        return control
