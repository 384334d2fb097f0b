"""``--report-to``: TensorBoard events and an MLflow file store under the run dir, read back with their own readers."""

import json

import pytest
from helpers import one_line_error

pytest.importorskip("tensorboard")

STEPS = ["--max-steps", "4", "--set", "train.eval_steps=2", "--set", "train.logging_steps=1",
         "--set", "train.max_length=32", "--lr", "1e-3", "--batch-size", "8"]


def _finetune(cli, tiny_bert, cls_data, out, *extra):
    return cli("finetune", "-t", "classification", "-m", str(tiny_bert), "-d", str(cls_data / "train.csv"),
               "--eval-dataset", str(cls_data / "val.csv"), "-o", str(out), *STEPS, *extra)


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_and_mlflow_get_losses_llmtune_metrics_and_the_config(cli, tiny_bert, cls_data, tmp_path):
    pytest.importorskip("mlflow")
    out = tmp_path / "run"
    result = _finetune(cli, tiny_bert, cls_data, out, "--report-to", "tensorboard", "--report-to", "mlflow")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())

    acc = _events(out / "tensorboard")
    scalars = acc.Tags()["scalars"]
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4]  # logging_steps=1, 4 steps
    assert [e.step for e in acc.Scalars("eval/accuracy")] == [2, 4]  # eval_steps=2: llmtune's metric, each eval
    assert acc.Scalars("eval/accuracy")[-1].value == pytest.approx(metrics["eval_accuracy"])
    assert acc.Scalars("eval/f1_macro")[-1].value == pytest.approx(metrics["eval_f1_macro"])
    # end-of-run metrics computed after training reach it at the last step
    assert "final/wall_seconds" in scalars and acc.Scalars("final/wall_seconds")[0].step == 4
    assert acc.Scalars("final/eval_accuracy")[0].value == pytest.approx(metrics["eval_accuracy"])
    config_tags = [t for t in acc.Tags()["tensors"] if t.startswith("llmtune/config")]
    text = acc.Tensors(config_tags[0])[0].tensor_proto.string_val[0].decode()
    assert "lr: 0.001" in text and "report_to:" in text

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "run"  # the run dir's name
    assert run.data.params["llmtune.train.lr"] == "0.001"
    assert run.data.params["llmtune.task"] == "classification"
    assert run.data.params["llmtune.train.report_to"] == '["tensorboard", "mlflow"]'
    assert "env.python" in run.data.params or any(k.startswith("env.") for k in run.data.params)
    history = client.get_metric_history(run.info.run_id, "eval_accuracy")
    assert [m.step for m in history] == [2, 4]
    assert history[-1].value == pytest.approx(metrics["eval_accuracy"])
    assert run.data.metrics["final/eval_accuracy"] == pytest.approx(metrics["eval_accuracy"])


def test_report_to_in_the_config_and_none(cli, tiny_bert, cls_data, tmp_path):
    out = tmp_path / "cfg"
    result = _finetune(cli, tiny_bert, cls_data, out, "--set", "train.report_to=[tensorboard]")
    assert result.exit_code == 0, result.output
    assert len(_events(out / "tensorboard").Scalars("train/loss")) == 4
    silent = _finetune(cli, tiny_bert, cls_data, tmp_path / "none", "--report-to", "none")
    assert silent.exit_code == 0, silent.output
    assert not (tmp_path / "none" / "tensorboard").exists() and not (tmp_path / "none" / "mlruns").exists()


def test_a_tracker_not_installed_names_the_extra(cli, tiny_bert, cls_data, tmp_path, monkeypatch):
    from llmtune.engine import trackers

    monkeypatch.setattr(trackers, "installed", lambda name: name != "wandb")
    result = _finetune(cli, tiny_bert, cls_data, tmp_path / "w", "--report-to", "wandb")
    one_line_error(result, "--report-to wandb", "not installed", "pip install 'llmtune[track]'")
    assert not (tmp_path / "w").exists()  # refused before the run dir was made


def test_an_unknown_tracker_is_one_line(cli, tiny_bert, cls_data, tmp_path):
    result = _finetune(cli, tiny_bert, cls_data, tmp_path / "x", "--report-to", "comet")
    one_line_error(result, "train.report_to", "tensorboard")


def test_resolve_report_to_drops_none_and_duplicates():
    from llmtune.engine.trackers import resolve_report_to

    assert resolve_report_to(["none"]) == []
    assert resolve_report_to(["mlflow", "none", "tensorboard", "mlflow"]) == ["mlflow", "tensorboard"]


def test_flat_params_reads_config_and_env(tmp_path):
    from llmtune.engine.trackers import flat_params

    (tmp_path / "config.yaml").write_text("task: qa\ntrain:\n  lr: 3.0e-05\n  report_to: [mlflow]\n")
    (tmp_path / "env.json").write_text(json.dumps({"torch": "2.13.0", "device": {"cuda": False}}))
    assert flat_params(tmp_path) == {"llmtune.task": "qa", "llmtune.train.lr": "3e-05",
                                     "llmtune.train.report_to": '["mlflow"]', "env.torch": "2.13.0",
                                     "env.device.cuda": "false"}


def test_pretrain_bits_per_char_and_mfu_reach_tensorboard(cli, text_files, tmp_path):
    out = tmp_path / "lm"
    result = cli("pretrain", "--arch", "llama", "-d", str(text_files / "train.txt"),
                 "--eval-dataset", str(text_files / "val.txt"), "-o", str(out), "--max-steps", "4",
                 "--set", "model.config={num_hidden_layers: 1, hidden_size: 32, num_attention_heads: 2, "
                 "num_key_value_heads: 2, intermediate_size: 64}", "--set", "tokenizer.vocab_size=300",
                 "--set", "train.max_length=32", "--set", "train.time_budget=null", "--set", "train.eval_steps=2",
                 "--batch-size", "8", "--report-to", "tensorboard")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    acc = _events(out / "tensorboard")
    bpc = acc.Scalars("eval/bits_per_char")  # derived from each evaluation's loss by llmtune
    assert [e.step for e in bpc] == [2, 4] and bpc[-1].value == pytest.approx(metrics["eval_bits_per_char"])
    assert acc.Scalars("final/mfu")[0].value == pytest.approx(metrics["mfu"])  # computed after training
    assert acc.Scalars("final/train_steady_tokens_per_second")[0].value == pytest.approx(metrics["train_steady_tokens_per_second"])
