"""Steps every runner shares: open the run dir, log progress lines, write results and mark completion."""

from __future__ import annotations

import math
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from llmtune.config.schema import RunConfig
from llmtune.dist import is_main_process, log, world_size
from llmtune.errors import LlmtuneError
from llmtune.rundir import RunDir


# Commands with a --resume flag (tests/cli/test_run_dir_lifecycle.py checks this against the CLI):
# only their "holds no finished run" refusal suggests --resume.
RESUMABLE_COMMANDS = ("pretrain", "finetune")


# Fewer optimizer steps than this and a fine-tuned model is mostly its starting point plus noise: the
# run says so in one line (docs/finetune.md, "Small data"). max_steps runs are not warned: the user chose.
MIN_ADVISED_STEPS = 50


@dataclass
class RunResult:
    """What a runner returns to its command for the summary."""

    run_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)


def output_path(cfg: RunConfig, default_name: str) -> Path:
    """The run dir ``start_run`` opens: ``train.output_dir``, else ``runs/<default_name>``."""
    return Path(cfg.train.output_dir or Path("runs") / default_name).expanduser()


def is_fresh(cfg: RunConfig, output_dir: Path) -> bool:
    """Whether this run starts with an empty (or replaced) output folder, i.e. nothing in it is worth keeping."""
    return cfg.train.overwrite or not output_dir.is_dir() or not any(output_dir.iterdir())


@contextmanager
def removed_on_bad_input(run_dir: Path, fresh: bool) -> Iterator[None]:
    """Delete the run dir a fresh run created when bad input stops it before training, then re-raise.

    A rerun of the corrected command must not need ``--overwrite``. Every runner that calls
    ``start_run`` wraps its checks and preparation in this. A resumed or reused folder is kept, and so
    is one that holds a checkpoint (a run that already trained is never deleted).
    """
    try:
        yield
    except LlmtuneError:
        if fresh and is_main_process() and not any(Path(run_dir).glob("checkpoint-*")):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def start_run(cfg: RunConfig, default_name: str) -> Path:
    """Prepare the run dir and record the resolved config and environment."""
    from llmtune.config import dump_config

    output_dir = output_path(cfg, default_name)
    if not is_main_process():
        # Rank 0 checks and prepares the folder; checking here too would race with its first writes.
        return output_dir
    run = RunDir.prepare(output_dir, overwrite=cfg.train.overwrite, resume=bool(cfg.train.resume),
                         resumable=cfg.command in RESUMABLE_COMMANDS)
    run.write_config(dump_config(cfg.model_copy(update={"train": cfg.train.model_copy(update={"output_dir": str(run.path)})})))
    run.write_env()
    log(f"run dir: {run.path}")
    return run.path


def finish_run(cfg: RunConfig, run_dir: Path, metrics: dict[str, Any], metrics_file: str = "metrics.json") -> RunResult:
    """Write the metrics (``metrics_file``) and ``plots/curves.png``, then mark the run complete.

    The marker is written last, so a run that crashed on the way never looks finished.
    """
    run = RunDir(run_dir)
    if is_main_process():
        run.write_env()  # again: the device and world size are known now
        run.write_metrics(metrics, metrics_file)
        from llmtune.engine.trackers import log_final_metrics  # --report-to: tokens/s, MFU... as final/<name>

        log_final_metrics(run_dir, metrics)
        plot_curves(run_dir)
        run.mark_complete({"command": cfg.command, "task": cfg.task})
    return RunResult(run_dir, metrics)


def plot_curves(run_dir: Path) -> None:
    """``plots/curves.png`` from ``logs/metrics.jsonl`` when it holds anything; a failure is logged, never raised."""
    log_file = Path(run_dir) / "logs" / "metrics.jsonl"
    if not log_file.is_file() or log_file.stat().st_size == 0:
        return
    try:
        from llmtune.reports.plots import curves_png

        curves_png(log_file, Path(run_dir) / "plots" / "curves.png")
    except Exception as exc:  # noqa: BLE001 - a plot is never worth failing a finished run
        log(f"could not draw plots/curves.png ({type(exc).__name__}: {exc}); `llmtune report {run_dir}` retries")




def few_steps_warning(cfg: RunConfig, rows: int, unit: str = "rows") -> Optional[str]:
    """The one-line warning for a run of fewer than ``MIN_ADVISED_STEPS`` optimizer steps (None: enough steps).

    Args:
        cfg: ``train.epochs``, ``batch_size``, ``grad_accum`` and ``max_steps`` (set: no warning).
        rows: Training features (examples, QA windows, packed blocks).
        unit: What one feature is called in the message.
    """
    from llmtune.engine.estimates import steps_per_epoch

    t = cfg.train
    if t.max_steps or rows <= 0:
        return None
    world = world_size()
    steps = math.ceil(steps_per_epoch(rows, t.batch_size, t.grad_accum, world) * t.epochs)
    if steps >= MIN_ADVISED_STEPS:
        return None
    batch = f"batch {t.batch_size}" + (f" x {t.grad_accum} accumulated" if t.grad_accum > 1 else "") \
        + (f" x {world} processes" if world > 1 else "")
    return (f"warning: only {steps} optimizer steps ({rows} {unit}, {batch}, {t.epochs:g} epochs): the result will "
            f"be mostly noise; use more data, --epochs N or a smaller --batch-size (>= {MIN_ADVISED_STEPS} steps "
            "advised)")


def warn_few_steps(cfg: RunConfig, rows: int, unit: str = "rows") -> None:
    """Log ``few_steps_warning`` when the run is that short."""
    message = few_steps_warning(cfg, rows, unit)
    if message:
        log(message)
