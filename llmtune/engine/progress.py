"""Progress displays: training (``ProgressCallback``) and every evaluation/prediction (``PredictionProgress``).

On a terminal they draw rich progress bars (an evaluation during training is one more row of the training
display); otherwise (CI, pipes, log files) they print plain lines. Only the main process shows anything.
Wiring, in the engine::

    progress = ProgressCallback(tokens_per_step)
    replace_default_progress(trainer, progress)  # instead of transformers' tqdm bar / log printer
    trainer.add_callback(PredictionProgress(beside=progress))

Clocks are injectable (``clock=``) so tests can drive the displays deterministically.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Optional, TextIO

import transformers
from transformers import TrainerCallback

Clock = Callable[[], float]


def _format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def samples_per_step(args: Any) -> int:
    """Samples in one optimizer step across all processes (batch x accumulation x processes)."""
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
        self._per_step = self.tokens_per_step or samples_per_step(args)
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
