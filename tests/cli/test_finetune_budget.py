"""``llmtune finetune --time-budget`` (and ``distill``) fit max_steps, warm-up and decay to the steps that fit.

Step times are faked (2 s per optimizer step on an injected clock, while the tiny BERT really takes
milliseconds), so the fitted step count is the same on every machine; the hard stop
(``TimeBudgetCallback``) runs on the real clock and never fires in a run this short.
"""

import functools
import json

import pytest
from helpers import invoke, read_jsonl, save_bert_classifier

import llmtune.engine.budget as budget

STEP_SECONDS = 2.0
# 200 training rows, batch 8: 25 steps per epoch, 75 for 3 epochs; 60 eval rows = 1 batch of 64 (default).
ARGS = ["--epochs", "3", "--batch-size", "8", "--set", "train.max_length=32", "--set", "train.logging_steps=1",
        "--set", "train.save_steps=1000"]


class _StepClock:
    """Fake time: ``STEP_SECONDS`` per optimizer step, read by the refit callback."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_steps(monkeypatch):
    """Run the budget plan on a clock that advances ``STEP_SECONDS`` per optimizer step from 0 at the start."""
    clock, made = _StepClock(), []

    class SteppedRefit(budget.ScheduleRefitCallback):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

        def on_step_end(self, args, state, control, **kwargs):
            clock.now = STEP_SECONDS * state.global_step
            return super().on_step_end(args, state, control, **kwargs)

    real = budget.fit_to_budget
    monkeypatch.setattr(budget, "ScheduleRefitCallback", SteppedRefit)
    monkeypatch.setattr(budget, "fit_to_budget",
                        lambda cfg, started, **kw: real(cfg, 0.0, **{**kw, "clock": clock}))
    return made


def _finetune(out, tiny_bert, cls_data, time_budget):
    return invoke("finetune", "--task", "classification", "--model", tiny_bert, "--dataset", cls_data / "train.csv",
                  "--eval-dataset", cls_data / "val.csv", "-o", out, "--time-budget", time_budget, *ARGS)


def _learning_rates(out) -> dict[int, float]:
    """The learning rate each step trained with (the Trainer logs lr(step - 1): step 1 at lr(0))."""
    return {r["step"]: r["learning_rate"] for r in read_jsonl(out / "logs" / "metrics.jsonl") if "learning_rate" in r}


def test_a_short_budget_trains_the_fitted_steps_down_to_zero_lr(fake_steps, tiny_bert, cls_data, tmp_path):
    # Refit at step 8 (3 skipped + 5 measured = 10 % of the 94 s left): (100 - 16 - 1 - 0.6 final eval) / 1.03
    # / (2 s x (1 + 0.303 / 25 per-epoch evals)) = 39.5 -> 39 more steps: 47 of 75 (as tests/unit/test_budget_fit.py).
    result = _finetune(tmp_path / "run", tiny_bert, cls_data, "100s")
    assert result.exit_code == 0, result.output
    (refit,) = fake_steps
    assert refit.refitted_to == 47
    assert "time budget: ~47 of 75 planned steps fit; schedule refitted" in result.output
    lrs = _learning_rates(tmp_path / "run")
    # Warm-up refitted to ceil(0.1 x 47) = 5 steps, linear decay reaching 0 at step 47: the last step trains
    # at lr(46) = 1/42 of the peak (2e-4, the default recipe's), step 27 at lr(26) = half of it.
    assert max(lrs) == 47 and lrs[47] == pytest.approx(2e-4 / 42, rel=1e-6)
    assert lrs[27] == pytest.approx(1e-4, rel=1e-6)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "eval_accuracy" in metrics and (tmp_path / "run" / "model.safetensors").is_file()


def test_a_budget_larger_than_needed_changes_nothing(fake_steps, tiny_bert, cls_data, tmp_path):
    result = _finetune(tmp_path / "run", tiny_bert, cls_data, "1h")
    assert result.exit_code == 0, result.output
    (refit,) = fake_steps
    assert refit.refitted_to == 75 and "schedule refitted" not in result.output
    lrs = _learning_rates(tmp_path / "run")
    # The planned schedule: warm-up ceil(0.1 x 75) = 8 steps, linear decay to 0 at step 75; step 35 trains at
    # lr(34) = 41/67 of the peak, the last at lr(74) = 1/67.
    assert max(lrs) == 75 and lrs[75] == pytest.approx(2e-4 / 67, rel=1e-6)
    assert lrs[35] == pytest.approx(2e-4 * 41 / 67, rel=1e-6)


def test_distill_fits_its_schedule_the_same_way(fake_steps, tiny_bert, cls_data, tmp_path):
    teacher = tmp_path / "teacher"
    save_bert_classifier(teacher, tiny_bert, ["cooking", "sports", "weather"])
    result = invoke("distill", "-t", "classification", "--teacher", teacher, "--student", tiny_bert,
                    "--dataset", cls_data / "train.csv", "--eval-dataset", cls_data / "val.csv", "-o", tmp_path / "run",
                    "--time-budget", "100s", *ARGS, "--set", "train.eval_batch_size=8", "--set", "train.warmup_fraction=0",
                    "--set", "distill.augment=0")  # the recipe's transfer set would triple the 200 rows
    assert result.exit_code == 0, result.output
    (refit,) = fake_steps
    lrs = _learning_rates(tmp_path / "run")
    # Fewer than the 75 planned steps fit; the run ends there, its last step at the schedule's smallest lr.
    # Eval batch 8 (set here; recipes/distill/classification has 64, as finetune's test): 60 rows = 8 batches = 2.42 steps per evaluation. At step 8: (100 - 16 - 1
    # - 4.85) / 1.03 / (2 s x (1 + 2.42 / 25)) = 34.6 -> 42 steps. The step-25 evaluation then takes 0 s on the
    # fake clock, which replaces the estimate: the next refit (at a step s of 25-28) gives s + floor((100 - 2s - 1)
    # / 1.03 / 2 s) = 48, over 5 % more, so the schedule is lengthened.
    assert refit.refitted_to == 48 and max(lrs) == 48
    assert "~42 of 75 planned steps fit; schedule refitted" in result.output
    assert "~48 of 75 planned steps fit; schedule refitted" in result.output
    # No warm-up here: the last step trains at lr(47) = 1/48 of the peak.
    assert lrs[48] == pytest.approx(max(lrs.values()) / 48, rel=1e-6)
