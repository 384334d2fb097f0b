"""Steps every runner shares: open the run dir, log progress lines, write results and mark completion."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from llmtune.config.schema import RunConfig
from llmtune.dist import is_main_process, log
from llmtune.errors import LlmtuneError
from llmtune.rundir import RunDir


@dataclass
class RunResult:
    """What a runner returns to its command for the summary."""

    run_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)


def is_fresh(cfg: RunConfig, output_dir: Path) -> bool:
    """Whether this run starts with an empty (or replaced) output folder, i.e. nothing in it is worth keeping."""
    return cfg.train.overwrite or not output_dir.is_dir() or not any(output_dir.iterdir())


@contextmanager
def removed_on_bad_input(run_dir: Path, fresh: bool) -> Iterator[None]:
    """Delete the run dir a fresh run created when bad input stops it before training, then re-raise.

    A rerun of the corrected command must not need ``--overwrite``; a resumed or reused folder is kept.
    """
    try:
        yield
    except LlmtuneError:
        if fresh and is_main_process():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def start_run(cfg: RunConfig, default_name: str) -> Path:
    """Prepare the run dir and record the resolved config and environment."""
    from llmtune.config import dump_config

    output_dir = cfg.train.output_dir or str(Path("runs") / default_name)
    if not is_main_process():
        # Rank 0 checks and prepares the folder; checking here too would race with its first writes.
        return Path(output_dir).expanduser()
    run = RunDir.prepare(output_dir, overwrite=cfg.train.overwrite, resume=bool(cfg.train.resume))
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


