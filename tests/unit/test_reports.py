"""Reports: training curves from metrics.jsonl, report.md tables, rebuilding a run dir's report."""

import json

import pytest
from helpers import png_size

from llmtune.reports import report_md as md
from llmtune.reports.plots import curves_png, read_jsonl
from llmtune.reports.run_report import history_table, regenerate

PER_CLASS = [{"label": "neg", "precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2},
             {"label": "pos|x", "precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1}]


def _log(path, records, extra_lines=()):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "".join(extra_lines))
    return path


TRAINING_LOG = [
    *({"step": s, "epoch": s / 6, "loss": 2.0 / s, "learning_rate": 1e-3 * (1 - s / 6)} for s in range(1, 7)),
    {"step": 3, "epoch": 0.5, "eval_loss": 1.1, "eval_accuracy": 0.6, "eval_runtime": 0.1},
    {"step": 6, "epoch": 1.0, "eval_loss": 0.9, "eval_accuracy": None, "eval_f1_macro": 0.7},  # NaN is logged as null
    {"step": 6, "epoch": 1.0, "train_runtime": 3.0, "train_loss": 0.8},  # the end-of-training summary
]


def test_curves_png_draws_loss_lr_and_metrics(tmp_path):
    log = _log(tmp_path / "logs" / "metrics.jsonl", TRAINING_LOG, ["{not json\n", "\n"])
    assert len(read_jsonl(log)) == len(TRAINING_LOG)  # the broken line (a crash mid-write) is skipped
    out = curves_png(log, tmp_path / "plots" / "curves.png")
    # loss, learning rate, eval accuracy, eval f1_macro: a 2 x 2 grid of 6 x 3.6 inch panels at 100 dpi.
    assert out == tmp_path / "plots" / "curves.png" and png_size(out) == (1200, 720)


def test_curves_png_without_curves(tmp_path):
    log = _log(tmp_path / "metrics.jsonl", [{"step": 0, "train_runtime": 1.0}])
    assert curves_png(log, tmp_path / "curves.png") is None and not (tmp_path / "curves.png").exists()
    only_loss = _log(tmp_path / "loss.jsonl", [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}])
    assert png_size(curves_png(only_loss, tmp_path / "loss.png")) == (600, 360)


def test_markdown_tables():
    assert md.per_class_table(PER_CLASS) == (
        "| class | precision | recall | F1 | support |\n"
        "|---|---:|---:|---:|---:|\n"
        "| neg | 1 | 0.5 | 0.6667 | 2 |\n"
        "| pos\\|x | 0.5 | 1 | 0.6667 | 1 |")
    assert md.confusion_table([[1, 1], [0, 1]], ["neg", "pos"]) == (
        "| gold \\ predicted | neg | pos |\n"
        "|---|---:|---:|\n"
        "| **neg** | 1 | 1 |\n"
        "| **pos** | 0 | 1 |")
    assert md.cell("a\nb " + "x" * 200, limit=10) == "a b xxxxx…"
    assert [md.fmt(v) for v in (None, True, 12345, 0.123456, 1234567.8, float("inf"))] == [
        "-", "true", "12,345", "0.1235", "1,234,568", "inf"]


def test_headline_metrics_come_first():
    metrics = {"eval_runtime": 1.0, "zeta": 2, "eval_loss": 0.5, "eval_f1_macro": 0.7, "eval_accuracy": 0.8,
               "model": "m", "per_class": PER_CLASS, "task": "classification"}
    assert [k for k, _ in md.ordered_scalars(metrics)] == [
        "task", "model", "eval_accuracy", "eval_f1_macro", "eval_loss", "zeta", "eval_runtime"]


def test_history_table_lists_each_evaluation():
    table = history_table(TRAINING_LOG).splitlines()
    assert table[0] == "| step | epoch | loss | accuracy | f1_macro |"
    assert table[2:] == ["| 3 | 0.5 | 1.1 | 0.6 | - |", "| 6 | 1 | 0.9 | - | 0.7 |"]


def test_regenerate_a_training_run(tmp_path):
    _log(tmp_path / "logs" / "metrics.jsonl", TRAINING_LOG)
    metrics = {"eval_accuracy": 0.75, "per_class": PER_CLASS, "labels": ["neg", "pos|x"],
               "confusion_matrix": [[1, 1], [0, 1]]}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "config.yaml").write_text("command: finetune\ntask: classification\nmodel: {name_or_path: bert}\n"
                                          "train: {lr: 0.001, batch_size: 8, epochs: 1.0}\n")
    metrics, written = regenerate(tmp_path)
    assert metrics["eval_accuracy"] == 0.75
    assert sorted(p.name for p in written) == ["confusion_matrix.png", "curves.png", "per_class_f1.png", "report.md"]
    report = (tmp_path / "report.md").read_text()
    assert report.startswith(f"# Run report: {tmp_path.name}\n")
    assert "| model | bert |" in report and "| schedule | lr 0.001, batch 8, 1.0 epochs |" in report
    assert "| finished | no (crashed or running) |" in report and "| **pos\\|x** | 0 | 1 |" in report


def test_regenerate_an_evaluation(tmp_path):
    metrics = {"task": "classification (--task)", "model": "runs/cls", "data": "val.csv", "rows": 3,
               "eval_accuracy": 2 / 3, "notes": ["measured with care"]}
    (tmp_path / "eval_metrics.json").write_text(json.dumps(metrics))
    records = [{"input": "a", "reference": "x", "prediction": "x", "correct": True},
               {"input": "b", "reference": "x", "prediction": "y", "correct": False}]
    _log(tmp_path / "predictions.jsonl", records)
    regenerate(tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# Evaluation of cls\n") and "| data | val.csv |" in report
    assert "- measured with care" in report and "| eval_accuracy | 0.6667 |" in report
    errors = "| input | reference | prediction |\n|---|---|---|\n| b | x | y |\n"
    assert f"## First errors (1 of 2 examples wrong)\n\n{errors}" in report


def test_regenerate_refuses_a_folder_without_metrics(tmp_path):
    from llmtune.errors import ConfigError

    with pytest.raises(ConfigError, match="neither metrics.json nor eval_metrics.json"):
        regenerate(tmp_path)


def test_a_failing_plot_never_fails_the_run(tmp_path, monkeypatch, capsys):
    import llmtune.reports.plots as plots
    from llmtune.config.schema import RunConfig
    from llmtune.runs.common import finish_run

    _log(tmp_path / "logs" / "metrics.jsonl", TRAINING_LOG)

    def broken(*args):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(plots, "curves_png", broken)
    finish_run(RunConfig(command="pretrain"), tmp_path, {"eval_loss": 1.0})
    assert (tmp_path / "run_complete.json").is_file() and json.loads((tmp_path / "metrics.json").read_text())
    assert "could not draw plots/curves.png (RuntimeError: no fonts)" in capsys.readouterr().err
