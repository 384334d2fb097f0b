"""Experiment trackers (``--report-to tensorboard|wandb|mlflow``) through the Trainer's own integrations.

``training_arguments`` passes ``train.report_to`` to ``TrainingArguments.report_to``, so the Trainer
creates transformers' TensorBoard / W&B / MLflow callbacks and they log every ``Trainer.log`` record:
losses, learning rate and each evaluation's metrics, llmtune's derived ones included (bits per char,
perplexity, accuracy...: ``derive_metrics`` adds them to the evaluation's dict before it is logged).
This module adds what the integrations do not do for llmtune runs:

- where things go: TensorBoard events in ``RUN_DIR/tensorboard/`` (unless ``TENSORBOARD_LOGGING_DIR`` is
  set), MLflow to a file store in ``RUN_DIR/mlruns`` (unless ``MLFLOW_TRACKING_URI`` is set), W&B files in
  the run dir (unless ``WANDB_DIR`` is set; ``WANDB_MODE=offline`` is honoured by wandb itself);
- the run's resolved config and environment (``config.yaml``, ``env.json``) as parameters
  (``llmtune.train.lr``, ``env.torch`` ...) and as a YAML text in TensorBoard;
- the end-of-run metrics runners compute after training (tokens/s, MFU, peak memory, wall time) as
  ``final/<name>`` (``log_final_metrics``, called by ``runs.common.finish_run``).

The callback that hands over the parameters is ``engine/tracker_params.py`` (this module stays free of
transformers, so ``--report-to`` is checked before anything heavy loads). It also holds ``extra_callbacks``: callbacks a caller (the sweep's pruning reporter) hands to every
Trainer built inside a ``with`` block, without the runners knowing.
"""

from __future__ import annotations

import importlib.util
import json
import os
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from llmtune.errors import ConfigError

TRACKERS = ("tensorboard", "wandb", "mlflow")
INSTALL_HINT = "pip install 'llmtune[track]'"
PARAM_PREFIX = "llmtune."
_MAX_PARAM_CHARS = 500
_EXTRA: ContextVar[tuple[Any, ...]] = ContextVar("llmtune_extra_callbacks", default=())
OPEN: dict[str, dict[str, Any]] = {}  # run dir -> tracker handles still to receive the final metrics
_WANDB_DIR_OURS: list[str] = []  # WANDB_DIR values llmtune set (a user's own value is never replaced)


def resolve_report_to(names: Iterable[str]) -> list[str]:
    """The trackers to report to, in order, without duplicates; ``none`` (alone or not) adds nothing."""
    out: list[str] = []
    for name in names:
        if name != "none" and name not in out:
            out.append(name)
    return out


def installed(name: str) -> bool:
    """Whether the tracker package ``name`` can be imported (without importing it)."""
    return importlib.util.find_spec(name) is not None


def check_trackers(names: Iterable[str]) -> list[str]:
    """The trackers of ``names`` (``resolve_report_to``), each checked to be installed.

    Raises:
        ConfigError: One line naming the missing package and the extra that installs it.
    """
    wanted = resolve_report_to(names)
    missing = [n for n in wanted if not installed(n)]
    if missing:
        raise ConfigError(f"--report-to {' '.join(missing)}: {', '.join(missing)} is not installed; "
                          f"{INSTALL_HINT} (or pip install {' '.join(missing)}), or drop --report-to")
    return wanted


@contextmanager
def extra_callbacks(callbacks: Sequence[Any]) -> Iterator[None]:
    """Inside the block, every Trainer ``engine.trainer.build_trainer`` makes also gets ``callbacks``."""
    token = _EXTRA.set(tuple(callbacks))
    try:
        yield
    finally:
        _EXTRA.reset(token)


def active_extra_callbacks() -> list[Any]:
    """The callbacks of the innermost ``extra_callbacks`` block (none outside one)."""
    return list(_EXTRA.get())


def flat_params(run_dir: Path) -> dict[str, str]:
    """``config.yaml`` and ``env.json`` of ``run_dir`` flattened to ``{"llmtune.train.lr": "5e-05", "env.torch": ...}``.

    Values are strings, lists as JSON, each cut to 500 characters (tracker parameter limits).
    """
    import yaml

    params: dict[str, str] = {}
    config, env = run_dir / "config.yaml", run_dir / "env.json"
    if config.is_file():
        _flatten(yaml.safe_load(config.read_text(encoding="utf-8")) or {}, PARAM_PREFIX.rstrip("."), params)
    if env.is_file():
        _flatten(json.loads(env.read_text(encoding="utf-8")), "env", params)
    return params


def _flatten(node: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            _flatten(value, f"{prefix}.{key}", out)
        return
    text = node if isinstance(node, str) else json.dumps(node, default=str)
    out[prefix] = text[:_MAX_PARAM_CHARS]


def attach_trackers(trainer: Any, run_dir: Path) -> list[str]:
    """Point the Trainer's tracker callbacks at ``run_dir`` and add the config/env reporter; returns their names."""
    names = resolve_report_to(trainer.args.report_to or [])
    if not names:
        return []
    found = {type(cb).__name__: cb for cb in trainer.callback_handler.callbacks}
    tensorboard = found.get("TensorBoardCallback")
    if tensorboard is not None and not os.environ.get("TENSORBOARD_LOGGING_DIR"):
        tensorboard.logging_dir = str(run_dir / "tensorboard")
    if "MLflowCallback" in found and not os.environ.get("MLFLOW_TRACKING_URI"):
        import mlflow

        # MLflow 3 keeps the file store working but refuses it unless told: it is the store that needs no
        # server and no database (MLFLOW_TRACKING_URI=sqlite:///... picks the database backend instead).
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri((run_dir / "mlruns").resolve().as_uri())  # the callback keeps a URI already set
    if "WandbCallback" in found and os.environ.get("WANDB_DIR") in (None, *_WANDB_DIR_OURS):
        os.environ["WANDB_DIR"] = str(run_dir)
        _WANDB_DIR_OURS.append(str(run_dir))
    from llmtune.engine.tracker_params import TrackerParams  # imports transformers: only when a Trainer exists

    trainer.add_callback(TrackerParams(run_dir, found, flat_params(run_dir), OPEN))  # after the integrations: their runs exist by then
    return names


def log_final_metrics(run_dir: Path, metrics: dict[str, Any], step: int = 0) -> list[str]:
    """Send the numeric end-of-run ``metrics`` to the trackers the run opened, as ``final/<name>``.

    Returns:
        The trackers written to (none when the run reported to none).
    """
    handles = OPEN.pop(str(run_dir), None)
    if not handles:
        return []
    step = handles.pop("step", step)
    final = {f"final/{k}": float(v) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if "tensorboard" in handles:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(log_dir=handles["tensorboard"]) as writer:
            for key, value in final.items():
                writer.add_scalar(key, value, step)
    if "mlflow" in handles:
        from mlflow.tracking import MlflowClient

        uri, run_id = handles["mlflow"]
        client = MlflowClient(tracking_uri=uri)
        for key, value in final.items():
            client.log_metric(run_id, key, value, step=step)
    if "wandb" in handles and handles["wandb"].run is not None:
        handles["wandb"].run.summary.update(final)
        handles["wandb"].finish()
    return sorted(handles)
