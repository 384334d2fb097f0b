"""Tests for llmtune.engine.callbacks, driven by a real tiny transformers.Trainer on CPU."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from transformers import TrainerCallback, TrainerControl, TrainerState

from llmtune.engine.callbacks import (
    METRICS_FILE,
    MetricsLogCallback,
    ThroughputTracker,
    TimeBudgetCallback,
    check_budget_fits,
    json_safe,
)
from llmtune.engine.progress import PredictionProgress, ProgressCallback, replace_default_progress
from llmtune.errors import ConfigError

BLOCK, BATCH, MAX_STEPS = 16, 4, 20


class FakeClock:
    """A clock that only moves when told to, so time-based behaviour is deterministic."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Tick(TrainerCallback):
    """Pretend every optimizer step takes ``seconds`` (runs before the callbacks under test)."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        self.clock, self.seconds = clock, seconds

    def on_step_end(self, args, state, control, **kwargs):
        self.clock.now += self.seconds


def _blocks(n: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 64, (n, BLOCK), generator=generator)
    return [{"input_ids": row, "labels": row} for row in ids]


def _trainer(tmp_path: Path, callbacks: list[TrainerCallback], **overrides: Any) -> transformers.Trainer:
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_positions=BLOCK, n_layer=2, n_embd=32, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config)
    settings = dict(output_dir=str(tmp_path / "out"), max_steps=MAX_STEPS, per_device_train_batch_size=BATCH,
                    learning_rate=1e-3, logging_steps=2, save_strategy="no", report_to=[], use_cpu=True,
                    dataloader_pin_memory=False, disable_tqdm=True)
    args = transformers.TrainingArguments(**{**settings, **overrides})
    return transformers.Trainer(model=model, args=args, train_dataset=_blocks(64), eval_dataset=_blocks(8),
                                callbacks=callbacks)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_time_budget_stops_evaluates_saves_and_logs(tmp_path: Path) -> None:
    clock = FakeClock()
    budget = TimeBudgetCallback(5.5, clock=clock)
    metrics_path = tmp_path / "run" / METRICS_FILE
    trainer = _trainer(tmp_path, [Tick(clock, 1.0), budget, MetricsLogCallback(metrics_path)],
                       eval_strategy="steps", eval_steps=1000, save_strategy="steps", save_steps=1000)

    trainer.train()

    # 1 s per step: after step 5, 5 s elapsed + 1 s for the next step would pass 5.5 s.
    assert trainer.state.global_step == 5
    assert budget.stopped_early and budget.elapsed == pytest.approx(5.0)
    assert budget.steps_possible() == 0
    assert (tmp_path / "out" / "checkpoint-5").is_dir()
    records = _read_jsonl(metrics_path)
    evals = [r for r in records if "eval_loss" in r]
    assert len(evals) == 1 and evals[0]["step"] == 5 and math.isfinite(evals[0]["eval_loss"])


def test_time_budget_leaves_a_roomy_run_alone(tmp_path: Path) -> None:
    clock = FakeClock()
    budget = TimeBudgetCallback(100.0, clock=clock)
    trainer = _trainer(tmp_path, [Tick(clock, 1.0), budget])
    trainer.train()
    assert trainer.state.global_step == MAX_STEPS and not budget.stopped_early
    assert budget.mean_step_seconds == pytest.approx(1.0)
    assert budget.steps_possible() == 80


def test_budget_too_short_for_one_step() -> None:
    with pytest.raises(ConfigError, match=r"time budget 1s is too short to run one training step \(~3.2 s each\); "
                                          r"give at least 5s"):
        check_budget_fits(1.0, 3.2)
    check_budget_fits(10.0, 3.2)


def test_metrics_log_has_one_json_object_per_line_with_increasing_steps(tmp_path: Path) -> None:
    path = tmp_path / "run" / METRICS_FILE
    _trainer(tmp_path, [MetricsLogCallback(path)]).train()

    records = _read_jsonl(path)
    loss_steps = [r["step"] for r in records if "loss" in r]
    assert loss_steps == list(range(2, MAX_STEPS + 1, 2))
    assert [r["step"] for r in records] == sorted(r["step"] for r in records)
    assert all({"epoch", "time", "elapsed", "learning_rate"} <= r.keys() for r in records if "loss" in r)
    assert records[-1]["step"] == MAX_STEPS and "train_runtime" in records[-1]


def test_metrics_log_writes_strict_json_and_only_on_main_process(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    callback = MetricsLogCallback(path, clock=FakeClock())
    state = TrainerState()
    state.global_step = 3
    callback.on_log(None, state, TrainerControl(), logs={"loss": float("nan"), "grad_norm": torch.tensor(2.0),
                                                         "lr": float("inf"), "tags": ("a", 1)})
    state.is_world_process_zero = False
    callback.on_log(None, state, TrainerControl(), logs={"loss": 1.0})

    lines = path.read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["step"] == 3 and record["loss"] is None and record["lr"] is None
    assert record["grad_norm"] == 2.0 and record["tags"] == ["a", 1]
    assert json_safe({"x": [float("-inf"), 1.5]}) == {"x": [None, 1.5]}


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream_cls", [io.StringIO, FakeTty])
def test_progress_replaces_the_default_display(tmp_path: Path, stream_cls: type) -> None:
    stream = stream_cls()
    trainer = _trainer(tmp_path, [], disable_tqdm=False)
    replace_default_progress(trainer, ProgressCallback(tokens_per_step=BATCH * BLOCK, stream=stream, every=5))
    kinds = {type(cb) for cb in trainer.callback_handler.callbacks}
    assert transformers.trainer_callback.ProgressCallback not in kinds
    assert transformers.trainer_callback.PrinterCallback not in kinds

    trainer.train()

    out = stream.getvalue()
    assert "20/20" in out and "tok/s" in out and "loss" in out
    if stream_cls is io.StringIO:
        lines = [line for line in out.splitlines() if line.startswith("step ")]
        assert [line.split()[1] for line in lines] == ["5/20", "10/20", "15/20", "20/20"]
        assert "eta" in lines[0]


class SeeRows(TrainerCallback):
    """Record the rows of the training display while the evaluation at step 10 runs (added after the progress)."""

    def __init__(self, train: ProgressCallback) -> None:
        self.train, self.rows = train, []

    def on_prediction_step(self, args, state, control, **kwargs):
        live = self.train._progress
        self.rows.append([t.description for t in live.tasks] if live is not None else None)


def test_eval_progress_during_training_is_a_row_of_the_training_bar_on_a_terminal(tmp_path: Path) -> None:
    stream = FakeTty()
    trainer = _trainer(tmp_path, [], eval_strategy="steps", eval_steps=10, per_device_eval_batch_size=4)
    train = ProgressCallback(tokens_per_step=BATCH * BLOCK, stream=stream)
    replace_default_progress(trainer, train)
    seen = SeeRows(train)
    trainer.add_callback(PredictionProgress(stream=stream, beside=train))
    trainer.add_callback(seen)
    trainer.train()
    # 8 eval rows / batch 4 = 2 batches at steps 10 and 20: one display, with an "eval" row only while evaluating
    assert seen.rows == [["train", "eval"]] * 4
    assert "20/20" in stream.getvalue() and train._progress is None  # the training display stopped at the end


def test_progress_shows_samples_per_second_without_token_count(tmp_path: Path) -> None:
    stream = io.StringIO()
    trainer = _trainer(tmp_path, [])
    replace_default_progress(trainer, ProgressCallback(stream=stream))
    trainer.train()
    assert "samples/s" in stream.getvalue() and "step 20/20 (100%)" in stream.getvalue()


class CutShort(TrainerCallback):
    """Lower ``max_steps`` mid-run, as a time-budget refit does."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 4:
            state.max_steps = 10


def test_progress_follows_a_refitted_step_count(tmp_path: Path) -> None:
    stream = io.StringIO()
    trainer = _trainer(tmp_path, [CutShort()])
    replace_default_progress(trainer, ProgressCallback(tokens_per_step=BATCH * BLOCK, stream=stream, every=5))
    trainer.train()
    lines = [line.split()[1] for line in stream.getvalue().splitlines() if line.startswith("step ")]
    assert lines == ["5/10", "10/10"]


def test_throughput_excludes_the_first_step(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = ThroughputTracker(tokens_per_step=BATCH * BLOCK, clock=clock)
    _trainer(tmp_path, [Tick(clock, 0.5), tracker]).train()

    summary = tracker.summary()

    assert summary["steps_timed"] == MAX_STEPS - 1
    assert summary["train_steady_steps_per_second"] == pytest.approx(2.0)
    assert summary["train_steady_samples_per_second"] == pytest.approx(2.0 * BATCH)
    assert summary["train_steady_tokens_per_second"] == pytest.approx(2.0 * BATCH * BLOCK)
    assert summary["peak_memory_kind"] in ("rss", "cuda") and summary["peak_memory_bytes"] > 10 * 2**20
