"""The callback that gives each tracker the run's config and environment (``engine.trackers.attach_trackers``).

Kept apart from ``engine/trackers.py`` so that checking ``--report-to`` does not import transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback


class TrackerParams(TrainerCallback):
    """At the start of training, give each open tracker the run's config and environment as parameters.

    The trackers' handles go into ``registry`` under the run dir (``engine.trackers.OPEN``), where
    ``log_final_metrics`` finds them after training.
    """

    def __init__(self, run_dir: Path, integrations: dict[str, Any], params: dict[str, str],
                 registry: dict[str, dict[str, Any]]) -> None:
        self.run_dir = Path(run_dir)
        self.integrations = integrations
        self.params = params
        self.registry = registry

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        params = self.params
        handles: dict[str, Any] = {}
        tensorboard = self.integrations.get("TensorBoardCallback")
        if tensorboard is not None and tensorboard.tb_writer is not None:
            config = self.run_dir / "config.yaml"
            if config.is_file():
                text = config.read_text(encoding="utf-8")
                tensorboard.tb_writer.add_text("llmtune/config", "    " + text.replace("\n", "\n    "))
            handles["tensorboard"] = tensorboard.logging_dir
        mlflow_cb = self.integrations.get("MLflowCallback")
        if mlflow_cb is not None and getattr(mlflow_cb, "_initialized", False):
            handles["mlflow"] = _mlflow_params(mlflow_cb._ml_flow, params)
        wandb_cb = self.integrations.get("WandbCallback")
        if wandb_cb is not None and getattr(wandb_cb, "_wandb", None) is not None and wandb_cb._wandb.run is not None:
            wandb_cb._wandb.config.update(params, allow_val_change=True)
            handles["wandb"] = wandb_cb._wandb
        self.registry[str(self.run_dir)] = handles

    def on_train_end(self, args, state, control, **kwargs):
        if str(self.run_dir) in self.registry:
            self.registry[str(self.run_dir)]["step"] = state.global_step  # the final metrics go at the last step


def _mlflow_params(mlflow: Any, params: dict[str, str]) -> tuple[str, str]:
    """Log ``params`` to the active MLflow run in batches; return ``(tracking_uri, run_id)``."""
    items = list(params.items())
    for start in range(0, len(items), 100):
        mlflow.log_params(dict(items[start:start + 100]))
    return mlflow.get_tracking_uri(), mlflow.active_run().info.run_id
