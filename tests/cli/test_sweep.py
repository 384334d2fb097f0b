"""``llmtune sweep``: bad input refused before any trial, a 3-trial sweep end to end, pruning, 2 workers on one study."""

import subprocess
import sys

import pytest
from helpers import one_line_error, png_size

optuna = pytest.importorskip("optuna")

TINY = ["--set", "train.max_steps=2", "--set", "train.eval_steps=1", "--set", "train.max_length=32",
        "--set", "train.batch_size=8", "--set", "train.time_budget=null", "--set", "train.logging_steps=1"]


def _base(tiny_bert, cls_data):
    return ["-t", "classification", "-m", str(tiny_bert), "-d", str(cls_data / "train.csv"),
            "--eval-dataset", str(cls_data / "val.csv"), *TINY]


def _study(out):
    return optuna.load_study(study_name="llmtune-sweep", storage=f"sqlite:///{out / 'study.db'}")


@pytest.mark.parametrize("params, extra, words", [
    (["train.lr"], [], ["needs the form path=kind:args"]),
    (["train.lr=normal:1:2"], [], ["'normal' is not a search space", "loguniform"]),
    (["train.lr=loguniform:0:1e-3"], [], ["low end above 0"]),
    (["train.lr=uniform:1e-3:1e-3"], [], ["is empty"]),
    (["train.epochs=int:4:2"], [], ["is empty"]),
    (["train.lr=uniform:a:1"], [], ["'a' is not a number"]),
    (["train.epochs=int:1:2.5"], [], ["not an integer"]),
    (["train.batch_size=choice:"], [], ["choice needs values"]),
    (["train.batch_size=choice:8,8"], [], ["listed twice"]),
    (["train.lrr=loguniform:1e-5:1e-3"], [], ["--param train.lrr", "unknown key", "did you mean train.lr?"]),
    (["model.dropout=uniform:0:1.5"], [], ["--param model.dropout (1.5)", "less than 1"]),
    (["train.lr=loguniform:1e-5:1e-3", "train.lr=uniform:0:1"], [], ["given twice"]),
    (["train.lr=loguniform:1e-5:1e-3"], ["--metric", "bleu"], ["--metric bleu", "classification never reports it",
                                                                "eval_accuracy"]),
    (["train.lr=loguniform:1e-5:1e-3"], ["--direction", "up"], ["--direction up"]),
    (["train.lr=loguniform:1e-5:1e-3"], ["--storage", "redis://x"], ["--storage redis://x", "sqlite:///"]),
    (["train.lr=loguniform:1e-5:1e-3"], ["--time-budget", "soon"], ["--time-budget", "not a duration"]),
    (["train.lr=loguniform:1e-5:1e-3"], ["--set", "train.lr=1e-4"], ["also fixed by --set"]),
    ([], [], ["nothing to search"]),
])
def test_bad_input_one_line_exit_2(cli, tiny_bert, cls_data, tmp_path, params, extra, words):
    flags = [f"--param={p}" for p in params]
    result = cli("sweep", *_base(tiny_bert, cls_data), *flags, *extra, "-o", str(tmp_path / "s"))
    one_line_error(result, *words)
    assert not (tmp_path / "s").exists()  # refused before any trial (and before the study)


def test_three_trials_table_best_recipe_and_plots(cli, tiny_bert, cls_data, tmp_path):
    out = tmp_path / "sweep"
    result = cli("sweep", *_base(tiny_bert, cls_data), "--param", "train.lr=loguniform:1e-4:1e-2",
                 "--param", "model.config.hidden_size=choice:32,30", "--trials", "3", "-o", str(out),
                 "--set", "train.seed=3")  # TPE seeded by train.seed: 32, 30, 32
    assert result.exit_code == 0, result.output
    trials = sorted(_study(out).get_trials(), key=lambda t: t.number)
    assert [t.number for t in trials] == [0, 1, 2]
    for t in trials:  # hidden size 30 does not fit the 32-wide checkpoint: that trial fails, the sweep goes on
        if t.params["model.config.hidden_size"] == 30:
            assert t.state.name == "FAIL" and t.user_attrs["note"]
        else:
            assert t.state.name in ("COMPLETE", "PRUNED")
            config = (out / f"trial-{t.number:03d}" / "config.yaml").read_text()
            assert f"lr: {t.params['train.lr']!r}" in config or f"lr: {t.params['train.lr']}" in config
    assert any(t.state.name == "FAIL" for t in trials) and any(t.state.name == "COMPLETE" for t in trials)
    table = (out / "sweep.md").read_text().splitlines()
    rows = [line for line in table if line.startswith("| ") and not line.startswith("| trial")]
    assert [row.split(" | ")[0] for row in rows] == ["| 0", "| 1", "| 2"]
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert f"best: trial {best.number}" in "\n".join(table)

    from llmtune.config import load_config

    cfg = load_config("finetune", str(out / "best.yaml"))  # a recipe --recipe accepts
    assert cfg.train.lr == best.params["train.lr"] and cfg.model.config["hidden_size"] == 32
    assert cfg.train.output_dir is None and cfg.task == "classification"
    assert png_size(out / "plots" / "history.png")[0] > 100
    assert png_size(out / "plots" / "parallel.png")[0] > 100 and (out / "plots" / "importance.png").is_file()


def test_the_reporter_feeds_the_median_pruner_and_raises_on_prune():
    from types import SimpleNamespace

    from llmtune.pipelines.sweep import PruningReporter

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    first = study.ask()
    PruningReporter(first, "eval_accuracy").on_evaluate(None, SimpleNamespace(global_step=2, is_world_process_zero=True),
                                                        None, metrics={"eval_accuracy": 0.9})
    study.tell(first, 0.9)
    second = study.ask()
    reporter = PruningReporter(second, "eval_accuracy")
    state = SimpleNamespace(global_step=2, is_world_process_zero=True)
    reporter.on_evaluate(None, state, None, metrics={"eval_loss": 1.0})  # no metric: nothing reported
    assert reporter.reported == []
    with pytest.raises(optuna.TrialPruned, match="pruned at step 2"):
        reporter.on_evaluate(None, state, None, metrics={"eval_accuracy": 0.5})  # below the median 0.9
    assert second.storage.get_trial(second._trial_id).intermediate_values == {2: 0.5}


def test_two_workers_share_one_study_and_a_sweep_resumes(cli, tiny_bert, cls_data, tmp_path):
    out = tmp_path / "sw"
    args = ["sweep", *_base(tiny_bert, cls_data), "--param", "train.lr=loguniform:1e-4:1e-2", "-o", str(out)]
    first = cli(*args, "--trials", "1")
    assert first.exit_code == 0, first.output
    # A real process: the second worker is spawned, which needs a real interpreter and argv.
    two = subprocess.run([sys.executable, "-m", "llmtune", *args, "--trials", "4", "--workers", "2"],
                         capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    trials = _study(out).get_trials()
    numbers = [t.number for t in trials]
    assert sorted(numbers) == [0, 1, 2, 3]  # exactly --trials in all, no number twice
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert sorted(p.name for p in out.glob("trial-*")) == [f"trial-00{n}" for n in range(4)]
    assert "1 already in" in two.stderr


def test_a_killed_sweep_leaves_running_trials_that_resume_marks_failed(tmp_path):
    from llmtune.pipelines.sweep import fail_stale_trials

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="llmtune-sweep", storage=storage, direction="maximize")
    study.tell(study.ask(), 0.5)
    study.ask()  # the trial a killed worker was running
    assert fail_stale_trials(study, storage) == [1]
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "FAIL"]
    assert fail_stale_trials(study, "postgresql://db/sweeps") == []  # another machine's trials may be alive


def _seeded_copy(tiny_bert, folder):
    """The fixture's BERT re-initialised from seed 0, so what each trial learns is the same on every run."""
    import shutil

    import torch
    from transformers import BertConfig, BertForMaskedLM

    shutil.copytree(tiny_bert, folder)
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig.from_pretrained(tiny_bert)).save_pretrained(folder)
    return folder


def test_a_trial_worse_than_the_median_is_pruned_at_its_first_evaluation(cli, tiny_bert, cls_data, tmp_path,
                                                                          monkeypatch):
    import llmtune.pipelines.sweep as sweep

    monkeypatch.setattr(sweep, "PRUNER_STARTUP_TRIALS", 1)  # judge from the second trial on
    out = tmp_path / "pr"
    model = _seeded_copy(tiny_bert, tmp_path / "bert")
    base = [a.replace("train.max_steps=2", "train.max_steps=6").replace("eval_steps=1", "eval_steps=2")
            for a in _base(model, cls_data)]
    # TPE seeded with train.seed 42: trial 0 at lr 2.0e-4, trial 1 at lr 2.0e-2, whose loss at the first
    # evaluation (step 2) is above trial 0's there (1.151 vs 1.097 with this seeded model): pruned at once.
    result = cli("sweep", *base, "--param", "train.lr=loguniform:1e-5:3e-2", "--trials", "2", "--metric", "eval_loss",
                 "-o", str(out))
    assert result.exit_code == 0, result.output
    first, second = sorted(_study(out).get_trials(), key=lambda t: t.number)
    assert first.state.name == "COMPLETE" and sorted(first.intermediate_values) == [2, 4, 6]
    assert second.state.name == "PRUNED" and list(second.intermediate_values) == [2]  # stopped at once
    assert second.intermediate_values[2] > first.intermediate_values[2]  # eval_loss: lower is better
    assert not (out / "trial-001" / "run_complete.json").exists() and (out / "trial-000" / "run_complete.json").exists()
    assert "| 1 | pruned |" in (out / "sweep.md").read_text() and "pruned at step 2" in result.output
