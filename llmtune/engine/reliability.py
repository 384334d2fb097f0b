"""Nothing lost on a crash: Ctrl-C stops, checkpoints that say when they are complete, NaN guards, disk checks.

Pieces the engine (``engine/trainer.py``) wires into every training run:

- ``GracefulStop``: SIGINT/SIGTERM ask training to stop after the current optimizer step and save a
  checkpoint; the runner then exits 130 with the exact command that resumes (``TrainingInterrupted``).
  A second Ctrl-C quits at once.
- ``mark_checkpoint_complete`` / ``checkpoint_problem`` / ``last_good_checkpoint``: a checkpoint folder
  counts only once ``checkpoint_complete.json`` (written atomically, last, after the files are synced)
  lists its files with their sizes; resuming skips incomplete or corrupt checkpoints with a message
  and falls back to the previous good one.
- ``NonFiniteGuard``: a NaN/inf training loss stops the run naming the step (``train.on_nonfinite:
  stop``) or drops that batch's gradient (``skip``).
- ``check_disk_space``: refuse to start when one checkpoint cannot fit, warn when two cannot.
- ``drop_records_after``: a resumed run rewinds ``logs/metrics.jsonl`` to the checkpoint's step, so
  no step is logged twice.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from transformers import TrainerCallback

from llmtune.errors import ConfigError, LlmtuneError
from llmtune.rundir import atomic_write_text, redact

CHECKPOINT_MARKER = "checkpoint_complete.json"
"""Written last into every checkpoint folder; a folder without it was interrupted while saving."""

INTERRUPTED_EXIT_CODE = 130  # what shells report for a process ended by SIGINT
MAX_SKIPPED_IN_A_ROW = 10  # with on_nonfinite=skip: this many bad batches in a row means the weights are broken


class TrainingInterrupted(LlmtuneError):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint."""

    exit_code = INTERRUPTED_EXIT_CODE


class NonFiniteLossError(LlmtuneError):
    """The training loss became NaN or infinite."""


def _say(message: str) -> None:
    from llmtune.dist import log

    log(message)


# --- Ctrl-C / SIGTERM -------------------------------------------------------------------------------


class GracefulStop(TrainerCallback):
    """Turn SIGINT/SIGTERM into "stop after this step and save a checkpoint".

    Use ``with stop.installed(): trainer.train(...)``; handlers are only installed from the main
    thread and are restored on exit. After training, ``signum`` tells whether a signal arrived and
    ``step`` at which optimizer step training stopped.
    """

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.step: Optional[int] = None

    @contextmanager
    def installed(self) -> Iterator["GracefulStop"]:
        """Install the handlers for the duration of the block (no-op outside the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # asked twice: the user wants out now
            raise KeyboardInterrupt
        self.signum = signum
        _say(f"{signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
             "(press Ctrl-C again to quit at once without saving)")

    def on_step_end(self, args, state, control, **kwargs):
        if self.signum is None:
            return control
        self.step = state.global_step
        control.should_training_stop = True
        control.should_save = True
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.signum is not None and self.step == state.global_step:
            # Stopping mid-epoch: the checkpoint is saved; an epoch-end evaluation would only delay the exit.
            control.should_evaluate = False
            control.should_save = False
        return control


def resume_command(argv: Sequence[str], run_dir: Path) -> str:
    """The command that continues an interrupted run: the same arguments plus ``--resume last``.

    ``--resume``/``--overwrite`` (which would wipe the run) are dropped from the original arguments.
    When ``argv`` is not an llmtune command line (e.g. llmtune was called as a library) the run's
    own resolved config is the recipe.
    """
    program = Path(argv[0]).name if argv else ""
    if program not in ("llmtune", "__main__.py") or len(argv) < 2:
        recipe = shlex.quote(str(run_dir / "config.yaml"))
        return f"llmtune {_command_of(run_dir)} --recipe {recipe} --set train.overwrite=false --resume last"
    kept: list[str] = []
    args = list(argv[1:])
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--overwrite" or arg.startswith("--resume="):
            i += 1
        elif arg == "--resume":
            i += 2
        elif arg == "--set" and i + 1 < len(args) and args[i + 1].split("=")[0] in ("train.resume", "train.overwrite"):
            i += 2
        else:
            kept.append(arg)
            i += 1
    return redact(shlex.join(["llmtune", *kept, "--resume", "last"]))


def _command_of(run_dir: Path) -> str:
    try:
        import yaml

        return yaml.safe_load((run_dir / "config.yaml").read_text()).get("command", "pretrain")
    except (OSError, ValueError, AttributeError, ImportError):
        return "pretrain"


def interrupted_error(stop: GracefulStop, run_dir: Path, argv: Sequence[str]) -> TrainingInterrupted:
    """The one-line report of an interrupted run: where its checkpoint is and how to resume."""
    name = signal.Signals(stop.signum).name if stop.signum else "signal"
    saved = run_dir / f"checkpoint-{stop.step}"
    where = f"checkpoint saved in {saved}" if (saved / CHECKPOINT_MARKER).is_file() else "no checkpoint was saved"
    return TrainingInterrupted(
        f"training interrupted ({name}) at step {stop.step}; {where}; resume with: {resume_command(argv, run_dir)}"
    )


# --- complete checkpoints -------------------------------------------------------------------------------


def mark_checkpoint_complete(folder: Path) -> None:
    """Sync ``folder``'s files to disk, then atomically write the marker listing them with their sizes."""
    folder = Path(folder)
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKPOINT_MARKER):
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        files[str(path.relative_to(folder))] = path.stat().st_size
    step = folder.name.rsplit("-", 1)[-1]
    atomic_write_text(folder / CHECKPOINT_MARKER, json.dumps({"step": int(step) if step.isdigit() else None,
                                                              "files": files}, indent=1))


def checkpoint_problem(folder: Path) -> Optional[str]:
    """Why ``folder`` cannot be resumed from (None when it is a complete, intact checkpoint)."""
    folder = Path(folder)
    marker = folder / CHECKPOINT_MARKER
    if not marker.is_file():
        return "it was not completely written (interrupted while saving)"
    try:
        files = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError, OSError):
        return f"its {CHECKPOINT_MARKER} is unreadable"
    for name, size in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} is {path.stat().st_size} bytes, {size} were written"
        if name.endswith(".safetensors"):
            problem = _safetensors_problem(path)
            if problem:
                return f"{name} {problem}"
    return None


def _safetensors_problem(path: Path) -> Optional[str]:
    """A cheap integrity check: the header parses and the tensors it lists end where the file ends."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            header_len = int.from_bytes(handle.read(8), "little")
            if header_len <= 0 or 8 + header_len > size:
                return "has a broken header"
            header = json.loads(handle.read(header_len))
    except (OSError, ValueError):
        return "has a broken header"
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    if 8 + header_len + max(ends, default=0) != size:
        return "is truncated"
    return None


def checkpoint_step(folder: Path) -> int:
    """The step number in a ``checkpoint-N`` folder name (-1 when there is none)."""
    tail = Path(folder).name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def checkpoint_folders(run_dir: Path) -> list[Path]:
    """The ``checkpoint-N`` folders in ``run_dir``, newest (highest N) first."""
    return sorted((p for p in Path(run_dir).glob("checkpoint-*") if p.is_dir() and checkpoint_step(p) >= 0),
                  key=checkpoint_step, reverse=True)


def last_good_checkpoint(run_dir: Path, *, quiet: bool = False) -> Optional[str]:
    """The newest intact ``checkpoint-N`` in ``run_dir``; newer broken ones are reported and skipped.

    Args:
        run_dir: The run directory.
        quiet: No messages.

    Returns:
        The folder as a string, or None when no checkpoint folder is intact (or there is none). With
        only broken ones the run was killed while writing its first checkpoint: nothing trained can be
        lost, so the caller starts over (``RewindLogs`` then clears the old logs and broken folders).
    """
    for folder in checkpoint_folders(run_dir):
        problem = checkpoint_problem(folder)
        if problem is None:
            return str(folder)
        if not quiet:
            _say(f"skipping {folder.name}: {problem}; trying the previous checkpoint")
    return None


def drop_records_after(path: Path, step: int) -> int:
    """Rewrite a JSON-lines log without the records logged after ``step``; return how many were dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record_step = json.loads(line).get("step", 0)
        except ValueError:  # a line cut short by a kill
            dropped += 1
            continue
        if isinstance(record_step, int) and record_step > step:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        atomic_write_text(path, "".join(line + "\n" for line in kept))
    return dropped


class RewindLogs(TrainerCallback):
    """Drop log lines written after the step training starts from (they will be logged again).

    On a resumed run that is the checkpoint's step. On a run starting at step 0 in a folder a killed run
    left behind (``--resume last`` with no intact checkpoint) it is every line, and the broken
    ``checkpoint-N`` folders go too; a fresh run's empty folder has nothing to drop.
    """

    def __init__(self, *paths: Path) -> None:
        self.paths = paths

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        for path in self.paths:
            drop_records_after(path, state.global_step)
        if state.global_step == 0:
            for folder in checkpoint_folders(args.output_dir):
                if checkpoint_problem(folder) is not None:
                    shutil.rmtree(folder, ignore_errors=True)


# --- non-finite loss ------------------------------------------------------------------------------------


class NonFiniteGuard:
    """Check each training micro-batch's loss before its backward pass.

    ``mode="stop"`` raises ``NonFiniteLossError`` (the weights are still those of the last good step
    and the last checkpoint is kept); ``mode="skip"`` replaces the loss by a zero that carries no
    gradient, so the batch changes nothing, and gives up after ``MAX_SKIPPED_IN_A_ROW`` bad batches.
    """

    def __init__(self, mode: str, run_dir: Path, lr: float) -> None:
        self.mode = mode
        self.run_dir = Path(run_dir)
        self.lr = lr
        self.skipped = 0
        self._in_a_row = 0

    def check(self, loss: Any, model: Any, step: int) -> Any:
        """Return ``loss`` (or a harmless zero in skip mode); raise in stop mode when it is not finite."""
        import torch

        if bool(torch.isfinite(loss.detach()).all()):
            self._in_a_row = 0
            return loss
        value = float(loss.detach().float().mean())
        if self.mode == "skip" and self._in_a_row < MAX_SKIPPED_IN_A_ROW:
            self.skipped += 1
            self._in_a_row += 1
            _say(f"loss is {value} at step {step}: skipping this batch (train.on_nonfinite=skip)")
            param = next(p for p in model.parameters() if p.requires_grad)
            return param.sum() * 0.0
        raise NonFiniteLossError(self._message(value, step))

    def _message(self, value: float, step: int) -> str:
        last = last_good_checkpoint(self.run_dir, quiet=True)
        kept = f"the last good checkpoint {last} is kept (resume with --resume last)" if last else "no checkpoint was saved yet"
        why = f" after {self._in_a_row} skipped batches in a row" if self._in_a_row else ""
        return (f"training loss is {value} at step {step}{why}; {kept}; lower the learning rate "
                f"(e.g. --lr {self.lr / 10:g}) or pass --set train.on_nonfinite=skip to skip such batches")


# --- disk space -----------------------------------------------------------------------------------------


def checkpoint_bytes(n_params: int, n_trainable: Optional[int] = None) -> int:
    """Estimated size of one checkpoint: fp32 weights (4 bytes a parameter) plus AdamW's two moments
    (8 bytes a trainable parameter); all parameters trainable unless ``n_trainable`` says otherwise."""
    trainable = n_params if n_trainable is None else n_trainable
    return 4 * int(n_params) + 8 * int(trainable)


def check_disk_space(folder: Path, n_params: int, n_trainable: Optional[int] = None) -> Optional[str]:
    """Refuse to train when a checkpoint cannot fit in ``folder``'s free space; warn when two cannot.

    Returns:
        The warning given, or None.

    Raises:
        ConfigError: Less free space than one checkpoint needs.
    """
    need = checkpoint_bytes(n_params, n_trainable)
    free = shutil.disk_usage(Path(folder)).free
    if free < need:
        raise ConfigError(f"only {_size(free)} free in {folder} but one checkpoint needs about {_size(need)}; "
                          "free some space or choose another --output-dir")
    if free < 2 * need:
        warning = (f"warning: only {_size(free)} free in {folder}; each checkpoint needs about {_size(need)} "
                   "(consider --set train.save_total_limit=1 or another --output-dir)")
        _say(warning)
        return warning
    return None


def _size(n_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return ""  # unreachable: the loop returns at GiB
