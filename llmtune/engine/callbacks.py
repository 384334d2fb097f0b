"""Trainer callbacks: time budget, metrics.jsonl and throughput (the progress displays are in ``engine/progress.py``).

This module imports transformers at the top because only training runs import it; keep
``llmtune.engine/__init__`` free of it so ``llmtune --help`` stays fast.

Wiring, in the engine::

    trainer = transformers.Trainer(..., callbacks=[TimeBudgetCallback(budget), MetricsLogCallback(path),
                                                   ThroughputTracker(tokens_per_step)])

Clocks are injectable (``clock=``) so tests can drive the callbacks deterministically.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Optional

from transformers import TrainerCallback

from llmtune.engine.progress import Clock, samples_per_step
from llmtune.errors import ConfigError

logger = logging.getLogger(__name__)

METRICS_FILE = "logs/metrics.jsonl"
"""Where a run dir keeps its metric log, relative to the run dir."""

def check_budget_fits(seconds: float, est_step_seconds: float, spent: float = 0.0) -> None:
    """Refuse a time budget that cannot fit even one optimizer step.

    Args:
        seconds: The wall-clock budget.
        est_step_seconds: Estimated seconds per optimizer step (e.g. from a timed warm-up step).
        spent: Seconds of the budget already used before training (data, tokenizer, model).

    Raises:
        ConfigError: ``spent + est_step_seconds`` exceeds ``seconds``.
    """
    if spent + est_step_seconds <= seconds:
        return
    each = f"~{est_step_seconds:.1f} s each" + (f", after {spent:.1f} s already spent" if spent else "")
    raise ConfigError(
        f"time budget {seconds:g}s is too short to run one training step ({each}); "
        f"give at least {math.ceil(spent + est_step_seconds) + 1}s (about {math.ceil(spent + 10 * est_step_seconds)}s "
        "for 10 steps) or remove train.time_budget"
    )


def _enabled(strategy: Any) -> bool:
    # IntervalStrategy/SaveStrategy are str enums, so this also works on plain strings.
    return strategy not in (None, "no")


class TimeBudgetCallback(TrainerCallback):
    """Stop training cleanly before a wall-clock budget runs out.

    After each optimizer step it predicts whether one more step (plus the last measured evaluation
    and checkpoint time, which the final evaluate/save will cost again) still fits. If not, it asks
    the Trainer to stop, log, evaluate (when evaluation is configured) and save (when saving is
    configured). The budget counts from ``on_train_begin``; dataset and model loading are not in it.

    Step time is the moving mean over the last ``window`` steps, measured between step ends and
    excluding time spent in evaluation or saving.

    Attributes:
        stopped_early: True when this callback ended training before ``max_steps``.
        elapsed: Seconds since training began, as of the last step.
        mean_step_seconds: Moving mean step time (None before the first step).
    """

    def __init__(self, seconds: float, *, clock: Clock = time.monotonic, window: int = 20) -> None:
        """Args:
        seconds: The wall-clock budget for training (positive).
        clock: Monotonic time source (injectable for tests).
        window: Number of recent steps averaged for the step time.
        """
        assert seconds > 0, "time budget must be positive"
        self.seconds = float(seconds)
        self.clock = clock
        self.stopped_early = False
        self.elapsed = 0.0
        self._durations: deque[float] = deque(maxlen=window)
        self._start = self._mark = 0.0
        self._eval_seconds = self._save_seconds = 0.0
        self._evaluated_step = self._saved_step = -1

    @property
    def mean_step_seconds(self) -> Optional[float]:
        """Moving mean seconds per optimizer step (None before the first step)."""
        return sum(self._durations) / len(self._durations) if self._durations else None

    @property
    def reserve_seconds(self) -> float:
        """Time kept back for one more step plus the final evaluation and save."""
        return (self.mean_step_seconds or 0.0) + self._eval_seconds + self._save_seconds

    def steps_possible(self) -> Optional[int]:
        """How many more steps fit in the budget (None before the first step is timed)."""
        mean = self.mean_step_seconds
        if mean is None:
            return None
        left = self.seconds - self.elapsed - self._eval_seconds - self._save_seconds
        return max(0, math.floor(left / mean))

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = self._mark = self.clock()
        self.stopped_early = False
        self.elapsed = 0.0

    def on_step_end(self, args, state, control, **kwargs):
        now = self.clock()
        self._durations.append(now - self._mark)
        self._mark = now
        self.elapsed = now - self._start
        if self.elapsed + self.reserve_seconds <= self.seconds or state.global_step >= state.max_steps:
            return control
        self.stopped_early = True
        control.should_training_stop = True
        control.should_log = True
        control.should_evaluate = _enabled(args.eval_strategy)
        control.should_save = _enabled(args.save_strategy)
        logger.info("time budget %.0fs nearly spent after %.1fs: stopping at step %d of %d",
                    self.seconds, self.elapsed, state.global_step, state.max_steps)
        return control

    def on_evaluate(self, args, state, control, **kwargs):
        now = self.clock()
        self._eval_seconds, self._mark = now - self._mark, now
        self._evaluated_step = state.global_step

    def on_save(self, args, state, control, **kwargs):
        now = self.clock()
        self._save_seconds, self._mark = now - self._mark, now
        self._saved_step = state.global_step

    def on_epoch_end(self, args, state, control, **kwargs):
        # An epoch-end evaluate/save right after our stop would repeat the work at the same step.
        if self.stopped_early and self._evaluated_step == state.global_step:
            control.should_evaluate = False
        if self.stopped_early and self._saved_step == state.global_step:
            control.should_save = False
        return control


def json_safe(value: Any) -> Any:
    """Make a logged value strict-JSON serialisable.

    NaN and +/-inf become ``null`` (JSON has no such numbers, and ``null`` is what every JSON reader
    understands as "no value"); tensors and numpy scalars become Python numbers; anything else
    unknown becomes its ``str``.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item"):
        try:
            return json_safe(value.item())
        except (ValueError, RuntimeError):  # arrays/tensors with more than one element
            return json_safe(value.tolist())
    return str(value)


class MetricsLogCallback(TrainerCallback):
    """Append every Trainer log record to a JSON-lines file (conventionally ``run_dir/METRICS_FILE``).

    Each line is one object: ``step``, ``epoch``, ``time`` (Unix seconds), ``elapsed`` (seconds since
    training began) and the logged values (``loss``, ``learning_rate``, ``eval_*`` ...), made safe by
    ``json_safe`` (NaN/inf are written as ``null``). Lines are flushed as written so a crashed run
    keeps its history. Only the main process writes. A resumed run appends to the same file after
    ``reliability.RewindLogs`` dropped the lines logged past the checkpoint, so each step appears once.
    """

    def __init__(self, path: str | Path, *, clock: Clock = time.time) -> None:
        """Args:
        path: The ``.jsonl`` file to append to; parent folders are created.
        clock: Wall-clock source (injectable for tests).
        """
        self.path = Path(path)
        self.clock = clock
        self._start = clock()

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = self.clock()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now = self.clock()
        record = {"step": state.global_step, "epoch": state.epoch, "time": round(now, 3),
                  "elapsed": round(now - self._start, 3), **logs}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(json_safe(record), allow_nan=False) + "\n")


def peak_memory(device_type: str = "cpu") -> dict[str, Any]:
    """Peak memory of this process: CUDA allocations when training ran on a GPU, else the max RSS.

    Args:
        device_type: ``args.device.type`` of the run (``"cuda"`` or ``"cpu"``).

    Returns:
        ``{"peak_memory_bytes": int | None, "peak_memory_kind": "cuda" | "rss" | None}``.
    """
    import torch

    if device_type == "cuda" and torch.cuda.is_available():
        return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated()), "peak_memory_kind": "cuda"}
    try:
        import resource
    except ImportError:  # Windows has no resource module
        return {"peak_memory_bytes": None, "peak_memory_kind": None}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return {"peak_memory_bytes": int(rss if sys.platform == "darwin" else rss * 1024), "peak_memory_kind": "rss"}


class ThroughputTracker(TrainerCallback):
    """Measure training throughput for the end-of-run summary.

    Timing starts at the end of the first step (compilation, allocator and cache warm-up make it
    unrepresentative) and excludes time spent in evaluation and checkpointing. Tokens come from the
    Trainer's own counter when ``include_num_input_tokens_seen`` is on (exact, padding-aware), else
    from ``tokens_per_step``; without either only samples/s is reported.
    """

    def __init__(self, tokens_per_step: Optional[int] = None, *, clock: Clock = time.perf_counter) -> None:
        """Args:
        tokens_per_step: Tokens in one optimizer step across all processes, or None.
        clock: Monotonic time source (injectable for tests).
        """
        self.tokens_per_step = tokens_per_step
        self.clock = clock
        self.steps_timed = 0
        self.seconds = 0.0
        self._first_step_seconds: Optional[float] = None
        self._first_tokens = 0
        self._last_tokens = 0
        self._samples_per_step = 0
        self._mark = 0.0
        self._device_type = "cpu"

    def on_train_begin(self, args, state, control, **kwargs):
        import torch

        self._device_type = args.device.type
        if self._device_type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        self._samples_per_step = samples_per_step(args)
        self._mark = self.clock()

    def on_step_end(self, args, state, control, **kwargs):
        now = self.clock()
        if self._first_step_seconds is None:
            self._first_step_seconds = now - self._mark
            self._first_tokens = state.num_input_tokens_seen
        else:
            self.steps_timed += 1
            self.seconds += now - self._mark
        self._last_tokens = state.num_input_tokens_seen
        self._mark = now

    def on_evaluate(self, args, state, control, **kwargs):
        self._mark = self.clock()

    def on_save(self, args, state, control, **kwargs):
        self._mark = self.clock()

    def summary(self) -> dict[str, Any]:
        """Throughput and peak memory.

        Returns:
            ``train_steady_steps_per_second``, ``train_steady_samples_per_second``,
            ``train_steady_tokens_per_second`` (None when tokens are unknown), ``steps_timed`` and the keys
            of ``peak_memory()``. With a single step the warm-up step itself is used. "steady" keeps these
            apart from the Trainer's ``train_samples_per_second``/``train_steps_per_second``, which divide
            by the whole ``train_runtime`` (first step, evaluations and checkpoints included).
        """
        steps, seconds = self.steps_timed, self.seconds
        tokens = self._last_tokens - self._first_tokens
        if steps == 0 and self._first_step_seconds:
            steps, seconds, tokens = 1, self._first_step_seconds, self._last_tokens
        if not steps or seconds <= 0:
            return {"train_steady_steps_per_second": None, "train_steady_samples_per_second": None,
                    "train_steady_tokens_per_second": None, "steps_timed": 0, **peak_memory(self._device_type)}
        if tokens <= 0 and self.tokens_per_step:
            tokens = steps * self.tokens_per_step
        return {
            "train_steady_steps_per_second": steps / seconds,
            "train_steady_samples_per_second": steps * self._samples_per_step / seconds,
            "train_steady_tokens_per_second": tokens / seconds if tokens > 0 else None,
            "steps_timed": steps,
            **peak_memory(self._device_type),
        }
