"""Run dirs of failed fresh runs are removed, refusals only name flags the command has, short runs say so.

* ``runs.common.removed_on_bad_input``: every command that opens a run dir with ``start_run`` deletes
  it when bad input stops a fresh run, so the corrected command needs no ``--overwrite``; a folder
  that holds a checkpoint is never deleted.
* ``RESUMABLE_COMMANDS``: the "holds no finished run" refusal suggests ``--resume`` only for commands
  that have the flag (checked against the CLI itself).
* ``few_steps_warning``: fewer than ``MIN_ADVISED_STEPS`` optimizer steps -> one warning line.
"""

import pytest
from helpers import classification_rows, one_line_error, write_csv

from llmtune.config.schema import RunConfig
from llmtune.errors import DataError
from llmtune.runs.common import MIN_ADVISED_STEPS, RESUMABLE_COMMANDS, few_steps_warning, removed_on_bad_input


def test_tokenizer_train_on_an_empty_folder_leaves_nothing_and_the_fix_runs(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "tok"
    result = cli("tokenizer", "train", "--dataset", tmp_path / "empty", "--vocab-size", "300", "-o", out)
    assert result.exit_code == 2, result.output
    assert not out.exists()  # no config.yaml / env.json / logs left behind
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 20)
    fixed = cli("tokenizer", "train", "--dataset", tmp_path / "text", "--type", "char", "--vocab-size", "300",
                "-o", out)
    assert fixed.exit_code == 0, fixed.output
    assert (out / "tokenizer.json").is_file()


def test_unfinished_dir_refusal_names_resume_only_where_the_command_has_it(cli, tmp_path):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "notes.txt").write_text("someone else's file\n")
    (tmp_path / "a.txt").write_text("hello world\n" * 10)
    result = cli("tokenizer", "train", "--dataset", tmp_path / "a.txt", "-o", out)
    one_line_error(result, "holds no finished run", "pass --overwrite to start over")
    assert "--resume" not in result.output
    assert (out / "notes.txt").is_file()  # not a fresh run: nothing of the user's is deleted


def test_resumable_commands_are_the_ones_with_a_resume_flag():
    import typer

    from llmtune.cli.app import app

    group = typer.main.get_command(app)
    with_resume = {name for name in ("pretrain", "finetune", "eval", "distill", "prune")
                   if any("--resume" in getattr(p, "opts", ()) for p in group.commands[name].params)}
    tokenizer_train = group.commands["tokenizer"].commands["train"]
    assert not any("--resume" in getattr(p, "opts", ()) for p in tokenizer_train.params)
    assert with_resume == set(RESUMABLE_COMMANDS) == {"pretrain", "finetune"}
    # Every command with a run dir can replace an unfinished one, as its refusal says.
    for command in [*(group.commands[n] for n in ("pretrain", "finetune", "eval", "distill", "prune")), tokenizer_train]:
        assert any("--overwrite" in getattr(p, "opts", ()) for p in command.params), command.name


def test_tokenizer_train_overwrite_replaces_a_left_over_folder(cli, tmp_path):
    out = tmp_path / "tok"
    (out / "logs").mkdir(parents=True)
    (out / "config.yaml").write_text("command: tokenizer\n")  # as a killed run leaves it
    (tmp_path / "a.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 20)
    args = ("tokenizer", "train", "--dataset", tmp_path / "a.txt", "--type", "char", "--vocab-size", "300", "-o", out)
    one_line_error(cli(*args), "holds no finished run", "pass --overwrite")
    result = cli(*args, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (out / "tokenizer.json").is_file()


def test_a_run_dir_with_a_checkpoint_is_never_removed(tmp_path):
    (tmp_path / "checkpoint-5").mkdir(parents=True)
    with pytest.raises(DataError), removed_on_bad_input(tmp_path, fresh=True):
        raise DataError("bad row")
    assert (tmp_path / "checkpoint-5").is_dir()
    fresh_dir = tmp_path / "fresh"
    (fresh_dir / "logs").mkdir(parents=True)
    with pytest.raises(DataError), removed_on_bad_input(fresh_dir, fresh=True):
        raise DataError("bad row")
    assert not fresh_dir.exists()


@pytest.mark.parametrize(("rows", "batch", "epochs", "accum", "steps"), [
    (60, 32, 3.0, 1, 6),     # the README tour's 60-row CSV: 2 steps per epoch
    (100, 16, 1.0, 2, 4),    # 7 micro-batches, 4 optimizer steps
    (540, 32, 3.0, 1, 51),   # 17 steps per epoch: enough
])
def test_few_steps_warning_counts_optimizer_steps(rows, batch, epochs, accum, steps):
    cfg = RunConfig.model_validate({"train": {"batch_size": batch, "epochs": epochs, "grad_accum": accum}})
    message = few_steps_warning(cfg, rows, "examples")
    if steps >= MIN_ADVISED_STEPS:
        assert message is None
    else:
        assert message is not None and message.startswith(f"warning: only {steps} optimizer steps ({rows} examples")
        assert f"{epochs:g} epochs" in message and f">= {MIN_ADVISED_STEPS} steps" in message


def test_few_steps_warning_respects_max_steps():
    cfg = RunConfig.model_validate({"train": {"batch_size": 32, "max_steps": 3}})
    assert few_steps_warning(cfg, 60) is None


def test_finetune_on_60_rows_warns_in_one_line(cli, tiny_bert, tmp_path):
    write_csv(tmp_path / "train.csv", classification_rows(60, seed=3))
    write_csv(tmp_path / "val.csv", classification_rows(20, seed=4))
    result = cli("finetune", "--task", "classification", "--model", tiny_bert, "--dataset", tmp_path / "train.csv",
                 "--eval-dataset", tmp_path / "val.csv", "--batch-size", "32", "--epochs", "3", "-o", tmp_path / "run")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "optimizer steps" in line]
    assert warnings == [("[llmtune] warning: only 6 optimizer steps (60 examples, batch 32, 3 epochs): the result "
                         "will be mostly noise; use more data, --epochs N or a smaller --batch-size (>= 50 steps "
                         "advised)")]
