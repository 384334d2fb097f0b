"""``engine.budget.fit_to_budget``: the one time-budget plan pretrain, finetune and distill share.

Clocks are injected: every number below is checkable by hand from the formulas in ``engine/budget.py``
(step = pass x grad_accum x 1.1; one evaluation = eval batches / 3 passes; plan margin 1.1, refit 1.03).
"""

from types import SimpleNamespace

import pytest
import torch
from transformers import get_scheduler

from llmtune.config.schema import RunConfig
from llmtune.engine.budget import ScheduleRefitCallback, finish_seconds, fit_to_budget, planned_steps
from llmtune.errors import ConfigError


class _Clock:
    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _cfg(**train) -> RunConfig:
    base = {"batch_size": 8, "eval_batch_size": 64, "epochs": 3, "warmup_fraction": 0.1}
    return RunConfig(command="finetune", train={**base, **train})


def test_planned_steps_as_the_trainer_counts_them():
    # 200 rows / batch 8 = 25 steps per epoch; 3 epochs = 75; grad_accum 2 -> ceil(25 / 2) = 13 -> 39.
    assert planned_steps(_cfg().train, 200) == (75, 25)
    assert planned_steps(_cfg(grad_accum=2).train, 200) == (39, 13)
    assert planned_steps(_cfg(max_steps=10).train, 200) == (10, 25)


def test_no_budget_changes_nothing():
    cfg = _cfg()
    fit = fit_to_budget(cfg, 0.0, n_rows=200, clock=_Clock())
    assert fit.cfg is cfg and fit.seconds_left is None and fit.callbacks == []


def test_first_estimate_caps_the_steps_at_twice_what_fits():
    # 5 s spent; step = 0.5 x 1.1 = 0.55 s; (20 - 5 - 1) / 1.1 / 0.55 = 23.1 -> 23 fit -> cap 46 of 75.
    fit = fit_to_budget(_cfg(time_budget="20s"), 0.0, n_rows=200, pass_seconds=0.5, clock=_Clock(5.0))
    assert fit.cfg.train.max_steps == 46 and fit.seconds_left == pytest.approx(15.0)
    (refit,) = fit.callbacks
    assert isinstance(refit, ScheduleRefitCallback) and refit.deadline == 20.0 and refit.planned == 75


def test_first_estimate_keeps_the_plan_when_it_fits():
    fit = fit_to_budget(_cfg(time_budget="1h"), 0.0, n_rows=200, pass_seconds=0.5, clock=_Clock(5.0))
    assert fit.cfg.train.max_steps is None and len(fit.callbacks) == 1


def test_budget_below_one_step_is_refused():
    with pytest.raises(ConfigError, match="too short to run one training step"):
        fit_to_budget(_cfg(time_budget="2s"), 0.0, n_rows=200, pass_seconds=5.0, clock=_Clock(0.5))


def test_budget_spent_before_training_is_refused_without_an_estimate():
    with pytest.raises(ConfigError, match="used up before training started"):
        fit_to_budget(_cfg(time_budget="10s"), 0.0, n_rows=200, clock=_Clock(12.0))


def test_eval_reserve_is_forward_time_times_eval_batches():
    # 60 eval rows at eval batch 64 = 1 batch = 1/3 pass = 1 / (3 x 1.1) steps; every epoch (25 steps).
    fit = fit_to_budget(_cfg(time_budget="100s"), 0.0, n_rows=200, n_eval_rows=60, clock=_Clock())
    (refit,) = fit.callbacks
    assert refit.eval_cost_steps == pytest.approx(1 / 3.3) and refit.eval_every == 25
    fit = fit_to_budget(_cfg(time_budget="100s", eval_steps=10, eval_batch_size=8), 0.0, n_rows=200,
                        n_eval_rows=60, clock=_Clock())
    assert fit.callbacks[0].eval_cost_steps == pytest.approx(8 / 3.3) and fit.callbacks[0].eval_every == 10


def test_finish_seconds_counts_weights_and_optimizer_state():
    model = torch.nn.Linear(1000, 100)  # 100,100 fp32 parameters: 4 x 400,400 bytes / 200 MB/s = 0.008 s
    assert finish_seconds(model) == pytest.approx(1.0 + 4 * 400_400 / 200e6)


def _run_refit(cb: ScheduleRefitCallback, clock: _Clock, sched, max_steps: int, steps: int, step_s: float):
    state = SimpleNamespace(global_step=0, max_steps=max_steps)
    args = SimpleNamespace(get_warmup_steps=lambda total: -(-total // 10))  # warmup_fraction 0.1, rounded up
    cb.on_train_begin(args, state, None)
    for step in range(1, steps + 1):
        clock.now = step_s * step
        state.global_step = step
        cb.on_step_end(args, state, None, lr_scheduler=sched)
    return state


def test_refit_fits_decay_and_warmup_with_periodic_evals(capsys):
    clock = _Clock()
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_scheduler("linear", opt, num_warmup_steps=8, num_training_steps=75)
    fit = fit_to_budget(_cfg(time_budget="100s"), 0.0, n_rows=200, n_eval_rows=60, clock=clock)
    # t0 = 6 s after 3 skipped steps; measuring stops once 10 % of the 94 s left is spent: 5 steps (10 s) at
    # step 8, now 16 s. left = 100 - 16 - 1 = 83 s; minus the final eval 2 x 0.303 = 82.39 s; / 1.03 margin;
    # / (2 s x (1 + 0.303 / 25) periodic evals) = 39.5 -> 39 more steps: 47 of 75.
    state = _run_refit(fit.callbacks[0], clock, sched, 75, 10, 2.0)
    assert fit.callbacks[0].refitted_to == 47 and state.max_steps == 47
    assert sched.lr_lambdas[0].keywords == {"num_warmup_steps": 5, "num_training_steps": 47}
    assert sched.lr_lambdas[0](47) == 0.0 and sched.lr_lambdas[0](26) == pytest.approx(0.5)
    assert "time budget: ~47 of 75 planned steps fit; schedule refitted" in capsys.readouterr().err


def test_refit_with_room_to_spare_leaves_the_schedule_alone(capsys):
    clock = _Clock()
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_scheduler("linear", opt, num_warmup_steps=8, num_training_steps=75)
    before = sched.lr_lambdas[0]
    fit = fit_to_budget(_cfg(time_budget="1h"), 0.0, n_rows=200, n_eval_rows=60, clock=clock)
    state = _run_refit(fit.callbacks[0], clock, sched, 75, 30, 2.0)
    assert fit.callbacks[0].refitted_to == 75 and state.max_steps == 75 and sched.lr_lambdas[0] is before
    assert "schedule refitted" not in capsys.readouterr().err


def test_a_machine_that_slows_down_gets_a_shorter_schedule():
    clock = _Clock()
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_scheduler("linear", opt, num_warmup_steps=0, num_training_steps=1000)
    cb = ScheduleRefitCallback(100.0, reserve_seconds=10.0, skip_steps=3, measure_steps=20, margin=1.0, clock=clock)
    state = SimpleNamespace(global_step=0, max_steps=1000)
    args = SimpleNamespace(get_warmup_steps=lambda total: 0)
    cb.on_train_begin(args, state, None)
    for step in range(1, 64):
        # 0.5 s steps until step 23 (11.5 s: 78.5 / 0.5 = 157 more -> 180), then 1 s steps: at step 43
        # (31.5 s) 58.5 s are left -> 58 more -> 101; the next window (step 63, 51.5 s) keeps 101.
        clock.now = 0.5 * step if step <= 23 else 11.5 + (step - 23)
        state.global_step = step
        cb.on_step_end(args, state, None, lr_scheduler=sched)
        if step == 23:
            assert state.max_steps == 180
    assert cb.refitted_to == 101 and state.max_steps == 101 and sched.lr_lambdas[0](101) == 0.0


def test_evaluation_time_is_left_out_of_the_step_time_and_replaces_the_estimate():
    clock = _Clock()
    cb = ScheduleRefitCallback(100.0, reserve_seconds=0.0, eval_cost_steps=1.0, eval_every=10, skip_steps=0,
                               measure_steps=20, margin=1.0, clock=clock)
    state = SimpleNamespace(global_step=0, max_steps=1000)
    args = SimpleNamespace(get_warmup_steps=lambda total: 0)
    cb.on_train_begin(args, state, None)
    cb.on_step_end(args, state, None)  # step 0 at 0 s: the window opens
    for step in range(1, 21):
        clock.now += 1.0
        state.global_step = step
        cb.on_step_end(args, state, None)
        if step == 10:  # a 4 s evaluation
            clock.now += 4.0
            cb.on_evaluate(args, state, None)
    # 20 steps in 24 s, 4 of them evaluating: 1 s per step; 76 s left, minus a final 4 s evaluation = 72 s,
    # at 1 s + 4 s / 10 per step = 51 more steps -> 71.
    assert cb.refitted_to == 71 and state.max_steps == 71
