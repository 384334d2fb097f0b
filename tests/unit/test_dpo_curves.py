"""plots/curves.png of a DPO run: reward accuracy and reward margin panels (train and eval) next to loss and lr."""

import json

from helpers import png_size

from llmtune.reports.plots import curves_png

# What TRL's DPO trainer logs through MetricsLogCallback: train rows and eval rows (prefixed eval_).
DPO_LOG = [
    *({"step": s, "loss": 0.7 / s, "learning_rate": 1e-3, "rewards/accuracies": 0.5 + s / 10,
       "rewards/margins": 0.2 * s, "logps/chosen": -10.0} for s in (1, 2, 3, 4)),
    {"step": 2, "eval_loss": 0.5, "eval_rewards/accuracies": 0.7, "eval_rewards/margins": 0.5},
    {"step": 4, "eval_loss": 0.3, "eval_rewards/accuracies": 0.9, "eval_rewards/margins": 1.5},
]


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_dpo_run_curves_show_reward_accuracy_and_margin(tmp_path):
    out = curves_png(_write(tmp_path / "metrics.jsonl", DPO_LOG), tmp_path / "curves.png")
    # loss, learning rate, reward accuracy, reward margin: a 2 x 2 grid of 6 x 3.6 inch panels at 100 dpi.
    assert png_size(out) == (1200, 720)


def test_reward_panels_from_training_rows_alone(tmp_path):
    rows = [{"step": s, "rewards/accuracies": 0.5, "rewards/margins": 0.1} for s in (1, 2)]
    # no loss or lr logged: just the two reward panels, side by side.
    assert png_size(curves_png(_write(tmp_path / "m.jsonl", rows), tmp_path / "c.png")) == (1200, 360)
