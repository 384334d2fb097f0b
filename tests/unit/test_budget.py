"""Refitting the step count and LR schedule to a time budget from measured step times."""

from types import SimpleNamespace

import pytest
import torch
from transformers import get_scheduler

from llmtune.engine.budget import ScheduleRefitCallback, set_schedule_horizon


def _scheduler(kind: str, total: int, warmup: int):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return opt, get_scheduler(kind, opt, num_warmup_steps=warmup, num_training_steps=total)


def test_set_horizon_moves_the_end_of_a_linear_schedule():
    _, sched = _scheduler("linear", total=100, warmup=0)
    assert set_schedule_horizon(sched, total_steps=50, warmup_steps=0)
    # linear decay: lr(step) = (50 - step) / 50
    assert sched.lr_lambdas[0](25) == pytest.approx(0.5)
    assert sched.lr_lambdas[0](50) == 0.0


def test_constant_schedule_has_no_horizon():
    _, sched = _scheduler("constant", total=100, warmup=0)
    assert not set_schedule_horizon(sched, 50, 0)


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_refit_uses_real_step_time():
    clock = _Clock()
    _, sched = _scheduler("cosine", total=1000, warmup=10)
    # 100 s budget, 10 s reserved; steps take 0.5 s -> after 23 steps (11.5 s) 78.5 s remain -> 157 steps
    # more (/1.0 margin) -> 180 in all, below the 1000-step cap.
    cb = ScheduleRefitCallback(100.0, reserve_seconds=10.0, skip_steps=3, measure_steps=20, margin=1.0, clock=clock)
    state = SimpleNamespace(global_step=0, max_steps=1000)
    args = SimpleNamespace(get_warmup_steps=lambda total: 5)
    cb.on_train_begin(args, state, None)
    for step in range(1, 24):
        clock.now = 0.5 * step
        state.global_step = step
        cb.on_step_end(args, state, None, lr_scheduler=sched)
    assert cb.refitted_to == 180 and state.max_steps == 180
    assert sched.lr_lambdas[0](180) == pytest.approx(0.0, abs=1e-9)
    assert sched.lr_lambdas[0].keywords["num_warmup_steps"] == 5


def test_refit_never_exceeds_the_cap():
    clock = _Clock()
    _, sched = _scheduler("linear", total=40, warmup=0)
    cb = ScheduleRefitCallback(1e6, reserve_seconds=0.0, skip_steps=1, measure_steps=2, clock=clock)
    state = SimpleNamespace(global_step=0, max_steps=40)
    args = SimpleNamespace(get_warmup_steps=lambda total: 0)
    cb.on_train_begin(args, state, None)
    for step in range(1, 4):
        clock.now = float(step)
        state.global_step = step
        cb.on_step_end(args, state, None, lr_scheduler=sched)
    assert cb.refitted_to == 40 and state.max_steps == 40
