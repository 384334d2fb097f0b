"""Trainer callbacks: time budget, metrics.jsonl, progress display and throughput.

This module imports transformers at the top because only training runs import it; keep
``llmtune.engine/__init__`` free of it so ``llmtune --help`` stays fast.

Wiring, in the engine::

    trainer = transformers.Trainer(..., callbacks=[TimeBudgetCallback(budget), MetricsLogCallback(path),
                                                   ThroughputTracker(tokens_per_step)])
    replace_default_progress(trainer, ProgressCallback(tokens_per_step))

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
from typing import Any, Callable, Optional, TextIO

import transformers
from transformers import TrainerCallback

from llmtune.errors import ConfigError

logger = logging.getLogger(__name__)

METRICS_FILE = "logs/metrics.jsonl"
"""Where a run dir keeps its metric log, relative to the run dir."""

Clock = Callable[[], float]


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


def _format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _samples_per_step(args: Any) -> int:
    return args.train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)


class ProgressCallback(TrainerCallback):
    """One progress display: step/total, tokens/s (or samples/s), last loss and ETA.

    On a terminal it draws a rich progress bar; otherwise (CI, pipes, log files) it prints one plain
    line every ``every`` steps and at the last step. Evaluation results are printed as a line. Only
    the main process shows anything.

    It replaces transformers' own display; remove that with ``replace_default_progress(trainer, cb)``,
    i.e. ``trainer.remove_callback(transformers.trainer_callback.ProgressCallback)`` and
    ``trainer.remove_callback(transformers.trainer_callback.PrinterCallback)`` (the Trainer installs
    the latter instead when ``disable_tqdm=True``).
    """

    def __init__(self, tokens_per_step: Optional[int] = None, *, stream: Optional[TextIO] = None,
                 every: Optional[int] = None, clock: Clock = time.monotonic) -> None:
        """Args:
        tokens_per_step: Tokens in one optimizer step across all processes (batch x accumulation x
            processes x block size); None shows samples/s instead.
        stream: Where to draw (default: ``sys.stderr`` at train begin, like tqdm).
        every: Plain-mode print interval in steps (default: about 20 lines per run).
        clock: Monotonic time source (injectable for tests).
        """
        self.tokens_per_step = tokens_per_step
        self.stream = stream
        self.every = every
        self.clock = clock
        self.loss: Optional[float] = None
        self._progress: Any = None
        self._active = False

    def on_train_begin(self, args, state, control, **kwargs):
        self._active = state.is_world_process_zero
        if not self._active:
            return
        self._out = self.stream or sys.stderr
        self._total = state.max_steps
        self._every = self.every or max(1, self._total // 20)
        self._per_step = self.tokens_per_step or _samples_per_step(args)
        self._unit = "tok/s" if self.tokens_per_step else "samples/s"
        self._first: Optional[tuple[int, float]] = None
        if getattr(self._out, "isatty", lambda: False)():
            self._start_rich(state.global_step)

    def _start_rich(self, completed: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[stats]}"), console=Console(file=self._out))
        self._task = self._progress.add_task("train", total=self._total, completed=completed, stats="")
        self._progress.start()

    def _stats(self, step: int) -> str:
        """Rate and ETA measured from the end of the first step seen (the first step is warm-up)."""
        now = self.clock()
        if self._first is None:
            self._first = (step, now)
        parts = []
        first_step, first_time = self._first
        if step > first_step and now > first_time:
            steps_per_s = (step - first_step) / (now - first_time)
            parts += [f"{steps_per_s * self._per_step:,.0f} {self._unit}",
                      f"eta {_format_duration((self._total - step) / steps_per_s)}"]
        if self.loss is not None:
            parts.insert(0, f"loss {self.loss:.4f}")
        return " | ".join(parts)

    def on_step_end(self, args, state, control, **kwargs):
        if not self._active:
            return
        step = state.global_step
        if state.max_steps != self._total:  # a time budget refitted the step count
            self._total = state.max_steps
            if self._progress is not None:
                self._progress.update(self._task, total=self._total)
        stats = self._stats(step)
        if self._progress is not None:
            self._progress.update(self._task, completed=step, stats=stats)
        elif step % self._every == 0 or step >= self._total:
            pct = 100 * step / max(1, self._total)
            self._print(f"step {step}/{self._total} ({pct:.0f}%)" + (f" | {stats}" if stats else ""))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self._active or not logs:
            return
        if isinstance(logs.get("loss"), (int, float)):
            self.loss = float(logs["loss"])
        evals = {k: v for k, v in logs.items() if k.startswith("eval_") and isinstance(v, (int, float))}
        if evals:
            shown = " | ".join(f"{k[5:]} {v:.4g}" for k, v in evals.items() if not k.endswith(("_runtime", "_per_second")))
            self._print(f"eval at step {state.global_step}: {shown}")

    def _print(self, line: str) -> None:
        if self._progress is not None:
            self._progress.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self._out, flush=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def replace_default_progress(trainer: transformers.Trainer, callback: TrainerCallback) -> None:
    """Swap transformers' tqdm bar / log printer for ``callback`` (e.g. a ``ProgressCallback``)."""
    trainer.remove_callback(transformers.trainer_callback.ProgressCallback)
    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
    trainer.add_callback(callback)


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
        self._samples_per_step = _samples_per_step(args)
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


class PredictionProgress(TrainerCallback):
    """Progress of every ``Trainer.predict`` / ``evaluate``: batches done, examples/s and ETA.

    A rich bar on a terminal; otherwise a plain line at every tenth of the batches. Only the main
    process shows anything. The engine adds one to every Trainer, so ``llmtune eval`` and the
    evaluations during and after training (``finetune``, ``pretrain``...) show the same progress.
    During training, pass the run's ``ProgressCallback`` as ``beside``: while its bar is drawn, the
    evaluation bar is added to the same display (two live displays on one terminal garble each other).
    """

    def __init__(self, label: str = "eval", *, stream: Optional[TextIO] = None, clock: Clock = time.monotonic,
                 beside: Optional[ProgressCallback] = None) -> None:
        """Args:
        label: Shown before the bar.
        stream: Where to draw (default: ``sys.stderr``).
        clock: Monotonic time source (injectable for tests).
        beside: The training progress display to draw in while it is live, if any.
        """
        self.label = label
        self.stream = stream
        self.clock = clock
        self.beside = beside
        self._progress: Any = None
        self._shared = False
        self._done = 0
        self._total = 0
        self._start = 0.0

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if not state.is_world_process_zero:
            return
        if self._done == 0:
            self._begin(len(eval_dataloader) if eval_dataloader is not None else 0)
        self._done += 1
        now = self.clock()
        if self._done == 1:
            self._start = now  # rates count from the end of the first batch, which also paid for warm-up
        elapsed = now - self._start
        rate = (self._done - 1) / elapsed if elapsed > 0 else 0.0
        eta = _format_duration((self._total - self._done) / rate) if rate else "?"
        stats = f"{rate * args.eval_batch_size:,.1f} examples/s | eta {eta}" if rate else ""
        if self._progress is not None:
            self._progress.update(self._task, completed=self._done, stats=stats)
        elif self._done % max(1, self._total // 10) == 0 or self._done == self._total:
            print(f"{self.label} batch {self._done}/{self._total}" + (f" | {stats}" if stats else ""), file=self._out,
                  flush=True)

    def _begin(self, total: int) -> None:
        self._out = self.stream or sys.stderr
        self._total = total
        live = self.beside._progress if self.beside is not None else None
        if live is not None:  # inside training on a terminal: one more row in the training display
            self._progress, self._shared = live, True
            self._task = live.add_task(self.label, total=total, stats="")
        elif getattr(self._out, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[stats]}"), console=Console(file=self._out))
            self._task = self._progress.add_task(self.label, total=total, stats="")
            self._progress.start()

    def _end(self) -> None:
        if self._progress is not None and self._shared:
            self._progress.remove_task(self._task)
        elif self._progress is not None:
            self._progress.stop()
        self._progress, self._shared = None, False
        self._done = 0

    def on_predict(self, args, state, control, **kwargs):
        self._end()

    def on_evaluate(self, args, state, control, **kwargs):
        self._end()
