"""engine/reliability.py: resume commands, checkpoint markers, log rewinding, NaN guard, disk check, signals."""

import json
import os
import signal
from collections import namedtuple

import pytest

from llmtune.engine import reliability as r
from llmtune.errors import ConfigError


def test_resume_command_repeats_the_arguments_without_resume_or_overwrite():
    argv = ["/x/llmtune/__main__.py", "pretrain", "--dataset", "my file.txt", "-o", "runs/a", "--overwrite",
            "--resume", "checkpoint-3", "--set", "train.resume=last", "--set", "train.lr=1e-3", "--resume=x"]
    assert r.resume_command(argv, r.Path("runs/a")) == (
        "llmtune pretrain --dataset 'my file.txt' -o runs/a --set train.lr=1e-3 --resume last")


def test_resume_command_hides_tokens_and_falls_back_to_the_run_config(tmp_path):
    assert "hf_***" in r.resume_command(["llmtune", "finetune", "--model", "hf_abcdefghijkl"], tmp_path)
    (tmp_path / "config.yaml").write_text("command: finetune\n")
    assert r.resume_command(["pytest", "-q"], tmp_path) == (
        f"llmtune finetune --recipe {tmp_path / 'config.yaml'} --set train.overwrite=false --resume last")


def _checkpoint(root, step, n=10):
    import torch
    from safetensors.torch import save_file

    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    save_file({"w": torch.arange(n, dtype=torch.float32)}, str(folder / "model.safetensors"))
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def test_marker_lists_sizes_and_truncation_is_caught(tmp_path):
    folder = _checkpoint(tmp_path, 2)
    assert "not completely written" in r.checkpoint_problem(folder)
    r.mark_checkpoint_complete(folder)
    marker = json.loads((folder / r.CHECKPOINT_MARKER).read_text())
    weights = folder / "model.safetensors"
    assert marker == {"step": 2, "files": {"model.safetensors": weights.stat().st_size, "trainer_state.json": 18}}
    assert r.checkpoint_problem(folder) is None
    size = weights.stat().st_size
    with open(weights, "r+b") as handle:
        handle.truncate(size - 8)
    assert r.checkpoint_problem(folder) == f"model.safetensors is {size - 8} bytes, {size} were written"
    r.mark_checkpoint_complete(folder)  # even with matching sizes, the tensors must end where the file ends
    assert r.checkpoint_problem(folder) == "model.safetensors is truncated"
    (folder / "model.safetensors").unlink()
    assert r.checkpoint_problem(folder) == "model.safetensors is missing"


def test_last_good_checkpoint_skips_broken_ones_with_a_message(tmp_path, capsys):
    assert r.last_good_checkpoint(tmp_path) is None
    good = _checkpoint(tmp_path, 2)
    r.mark_checkpoint_complete(good)
    corrupt = _checkpoint(tmp_path, 10)
    r.mark_checkpoint_complete(corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\0" * 3)
    _checkpoint(tmp_path, 12)  # never marked: killed while saving
    assert r.last_good_checkpoint(tmp_path) == str(good)
    err = capsys.readouterr().err
    assert "skipping checkpoint-12: it was not completely written" in err
    assert "skipping checkpoint-10: model.safetensors is 3 bytes" in err
    assert r.last_good_checkpoint(tmp_path, quiet=True) == str(good)
    assert [p.name for p in r.checkpoint_folders(tmp_path)] == ["checkpoint-12", "checkpoint-10", "checkpoint-2"]
    (good / r.CHECKPOINT_MARKER).unlink()  # none intact (killed while writing the first): the caller starts over
    assert r.last_good_checkpoint(tmp_path) is None
    assert r.last_good_checkpoint(tmp_path, quiet=True) is None


def test_drop_records_after_rewinds_the_log(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 6)) + '{"step": 6, "lo')
    assert r.drop_records_after(log, 3) == 3
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3]
    assert r.drop_records_after(log, 3) == 0 and r.drop_records_after(tmp_path / "none.jsonl", 1) == 0


def test_nonfinite_stop_names_the_step_and_a_lower_lr(tmp_path):
    import torch

    model = torch.nn.Linear(2, 1)
    guard = r.NonFiniteGuard("stop", tmp_path, lr=1e-3)
    loss = model(torch.ones(1, 2)).sum()
    assert guard.check(loss, model, step=3) is loss
    with pytest.raises(r.NonFiniteLossError) as info:
        guard.check(torch.tensor(float("nan")), model, step=7)
    message = str(info.value)
    assert "loss is nan at step 7" in message and "--lr 0.0001" in message and "no checkpoint was saved" in message
    assert "train.on_nonfinite=skip" in message


def test_nonfinite_skip_gives_no_gradient_and_gives_up_in_the_end(tmp_path):
    import torch

    model = torch.nn.Linear(2, 1)
    guard = r.NonFiniteGuard("skip", tmp_path, lr=1.0)
    for _ in range(r.MAX_SKIPPED_IN_A_ROW):
        guard.check(torch.tensor(float("inf")), model, step=5).backward()
    assert guard.skipped == r.MAX_SKIPPED_IN_A_ROW
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())
    with pytest.raises(r.NonFiniteLossError, match="after 10 skipped batches in a row"):
        guard.check(torch.tensor(float("inf")), model, step=6)


Usage = namedtuple("Usage", "total used free")


@pytest.mark.parametrize(("free", "outcome"), [(10_000, "error"), (15_000, "warning"), (30_000, None)])
def test_disk_check_against_one_checkpoint(tmp_path, monkeypatch, free, outcome):
    monkeypatch.setattr(r.shutil, "disk_usage", lambda path: Usage(10**9, 0, free))
    assert r.checkpoint_bytes(1000) == 12_000 and r.checkpoint_bytes(1000, 0) == 4_000
    if outcome == "error":
        with pytest.raises(ConfigError, match="only 9.8 KiB free .* needs about 11.7 KiB"):
            r.check_disk_space(tmp_path, 1000)
    elif outcome == "warning":
        assert "warning: only 14.6 KiB free" in r.check_disk_space(tmp_path, 1000)
    else:
        assert r.check_disk_space(tmp_path, 1000) is None


def test_first_signal_stops_after_the_step_second_quits(monkeypatch):
    from transformers import TrainerControl

    before = signal.getsignal(signal.SIGINT)
    stop = r.GracefulStop()
    state = type("State", (), {"global_step": 4})()
    with stop.installed():
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
        control = stop.on_step_end(None, state, TrainerControl())
        assert control.should_training_stop and control.should_save and stop.step == 4
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
    error = r.interrupted_error(stop, r.Path("runs/x"), ["llmtune", "pretrain", "-o", "runs/x"])
    assert error.exit_code == 130
    assert str(error) == ("training interrupted (SIGTERM) at step 4; no checkpoint was saved; "
                          "resume with: llmtune pretrain -o runs/x --resume last")


def test_ctrl_c_outside_training_exits_130_in_one_line(capsys):
    import typer

    from llmtune.cli._common import handle_errors

    @handle_errors
    def command():
        raise KeyboardInterrupt

    with pytest.raises(typer.Exit) as info:
        command()
    assert info.value.exit_code == 130
    assert capsys.readouterr().err.strip().startswith("error: interrupted; a training run that saved a checkpoint")
