"""Crash and resume with real processes: Ctrl-C (SIGINT) and kill -9, then ``--resume last``.

A resumed run must end where an uninterrupted run with the same seed ends (optimizer, LR schedule,
RNG and data position restored), and its ``logs/metrics.jsonl`` must hold every step exactly once.
kill -9 is real: the child process sends itself SIGKILL at a chosen step (deterministic, unlike a
timer), so nothing in it gets to clean up.
"""

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time

import pytest

KILLER = """
import os, signal, sys
from transformers import TrainerCallback
import llmtune.engine.trainer as engine

class Kill(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == int(os.environ["KILL_AT_STEP"]):
            os.kill(os.getpid(), signal.SIGKILL)

build = engine.build_trainer
def build_trainer(*args, **kwargs):
    trainer, throughput = build(*args, **kwargs)
    trainer.add_callback(Kill())
    return trainer, throughput
engine.build_trainer = build_trainer
sys.argv = ["llmtune", *sys.argv[1:]]
from llmtune.cli.app import main
main()
"""

WORDS = ["red", "small", "cat", "dog", "walks", "sleeps", "river", "market", "the", "a", "near", "to"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("resume-text") / "train.txt"
    path.write_text("\n".join(" ".join(rng.choices(WORDS, k=9)) + " ." for _ in range(300)) + "\n")
    return path


TINY_GPT2 = ["--arch", "gpt2", "--set", "model.config={n_layer: 2, n_embd: 32, n_head: 2}",
             "--set", "train.max_length=32", "--set", "tokenizer.vocab_size=300", "--set", "train.time_budget=null",
             "--set", "train.logging_steps=1", "--batch-size", "8", "--lr", "3e-3"]


def _killed_run(args, step):
    """Run ``llmtune *args`` in a child process that kill -9s itself at the end of optimizer step ``step``."""
    env = {**os.environ, "KILL_AT_STEP": str(step)}
    return subprocess.run([sys.executable, "-c", KILLER, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=120)


def _records(run_dir, key="loss"):
    return [r for r in map(json.loads, (run_dir / "logs" / "metrics.jsonl").read_text().splitlines()) if key in r]


def _assert_same_run(resumed_dir, reference_dir, keys):
    """Same per-step losses, every step logged once, same final metrics (within 1e-4)."""
    resumed, reference = _records(resumed_dir), _records(reference_dir)
    assert [r["step"] for r in resumed] == [r["step"] for r in reference] == list(range(1, len(reference) + 1))
    for mine, theirs in zip(resumed, reference):
        assert mine["loss"] == pytest.approx(theirs["loss"], abs=1e-4), mine["step"]
    final, expected = (json.loads((d / "metrics.json").read_text()) for d in (resumed_dir, reference_dir))
    for key in keys:
        assert final[key] == pytest.approx(expected[key], abs=1e-4), key
    assert (resumed_dir / "run_complete.json").is_file()


def test_pretrain_kill_9_then_resume_matches_an_uninterrupted_run(cli, corpus, tmp_path):
    args = ["pretrain", "--dataset", corpus, "--max-steps", "12", *TINY_GPT2,
            "--set", "train.save_steps=4", "--set", "train.eval_steps=12", "--set", "data.eval_fraction=0.1"]
    reference = cli(*map(str, args), "-o", str(tmp_path / "ref"))
    assert reference.exit_code == 0, reference.output
    out = tmp_path / "run"
    killed = _killed_run([*args, "-o", out], step=11)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]
    assert [r["step"] for r in _records(out)][-1] == 10 and not (out / "run_complete.json").exists()
    weights = out / "checkpoint-8" / "model.safetensors"  # a corrupt newest checkpoint: the previous one is used
    weights.write_bytes(weights.read_bytes()[:1000])
    resumed = cli(*map(str, args), "-o", str(out), "--resume", "last")
    assert resumed.exit_code == 0, resumed.output
    assert "skipping checkpoint-8: model.safetensors is 1000 bytes" in resumed.output
    assert f"resuming from {out / 'checkpoint-4'}: step 4" in resumed.output
    # train_loss: the whole run's mean, steps 1-4 (before the resume) included
    _assert_same_run(out, tmp_path / "ref", ["eval_loss", "eval_bits_per_char", "train_loss"])


def test_killed_while_writing_the_first_checkpoint_resume_last_starts_over(cli, corpus, tmp_path):
    args = ["pretrain", "--dataset", corpus, "--max-steps", "8", *TINY_GPT2,
            "--set", "train.save_steps=4", "--set", "train.eval_steps=8", "--set", "data.eval_fraction=0.1"]
    reference = cli(*map(str, args), "-o", str(tmp_path / "ref"))
    assert reference.exit_code == 0, reference.output
    out = tmp_path / "run"
    killed = _killed_run([*args, "-o", out], step=6)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (out / "checkpoint-4" / "checkpoint_complete.json").unlink()  # as if killed while writing checkpoint-4
    assert [r["step"] for r in _records(out)] == [1, 2, 3, 4, 5]  # killed before step 6 was logged
    resumed = cli(*map(str, args), "-o", str(out), "--resume", "last")
    assert resumed.exit_code == 0, resumed.output
    assert "skipping checkpoint-4: it was not completely written" in resumed.output
    assert (f"--resume last: none of the 1 checkpoint(s) in {out} was completely written (killed while saving), "
            "so there is nothing to resume: starting over from step 0") in resumed.output
    # a fresh run in the same folder: every step logged once, the same losses and result as the reference
    _assert_same_run(out, tmp_path / "ref", ["eval_loss", "train_loss"])
    assert (out / "checkpoint-4" / "checkpoint_complete.json").is_file()


@pytest.fixture(scope="module")
def classification(tmp_path_factory):
    """A tiny random BERT folder and a CSV whose label is given away by one keyword."""
    from transformers import BertConfig, BertForMaskedLM

    from llmtune.config.schema import TokenizerConfig
    from llmtune.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("resume-cls")
    rng = random.Random(1)
    keywords = {"up": "good", "down": "bad"}
    lines = ["text,label"]
    for i in range(96):
        word = "up" if i % 2 else "down"
        lines.append(" ".join(rng.sample(WORDS, 4) + [word]) + f",{keywords[word]}")
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    tok = train_tokenizer(WORDS + ["up", "down"], TokenizerConfig(type="wordpiece", vocab_size=60, min_frequency=1,
                                                                  model_max_length=32), family="masked")
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32)
    BertForMaskedLM(config).save_pretrained(str(root / "bert"))
    tok.save_pretrained(str(root / "bert"))
    return root


def test_classification_kill_9_in_the_second_epoch_then_resume_matches(cli, classification, tmp_path):
    # 87 training rows / batch 8 = 11 steps an epoch; killed at step 18 it resumes from checkpoint-16, inside
    # epoch 2, so the data order of a later epoch must be replayed too.
    args = ["finetune", "--task", "classification", "--model", classification / "bert", "--dataset",
            classification / "train.csv", "--epochs", "2", "--batch-size", "8", "--lr", "3e-3",
            "--set", "train.logging_steps=1", "--set", "train.save_steps=8", "--set", "train.max_length=16",
            "--set", "model.dropout=0.1"]
    reference = cli(*map(str, args), "-o", str(tmp_path / "ref"))
    assert reference.exit_code == 0, reference.output
    out = tmp_path / "run"
    killed = _killed_run([*args, "-o", out], step=18)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = cli(*map(str, args), "-o", str(out), "--resume", "last")
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming from {out / 'checkpoint-16'}: step 16" in resumed.output
    _assert_same_run(out, tmp_path / "ref", ["eval_loss", "eval_accuracy", "eval_f1_macro", "train_loss"])


def test_ctrl_c_saves_a_checkpoint_prints_the_resume_command_and_exits_130(cli, corpus, tmp_path):
    out = tmp_path / "run"
    args = ["pretrain", "--dataset", str(corpus), "--max-steps", "5000", *TINY_GPT2, "-o", str(out),
            "--set", "train.scheduler=constant", "--set", "train.save_steps=1000", "--set", "data.eval_fraction=0.1"]
    child = subprocess.Popen([sys.executable, "-m", "llmtune", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    log = out / "logs" / "metrics.jsonl"
    deadline = time.monotonic() + 90
    while not (log.is_file() and log.stat().st_size) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    step = int(last.split(" at step ")[1].split(";")[0])
    assert last.startswith(f"error: training interrupted (SIGINT) at step {step}; checkpoint saved in "
                           f"{out / f'checkpoint-{step}'}; resume with: llmtune pretrain "), last
    assert (out / f"checkpoint-{step}" / "checkpoint_complete.json").is_file()
    assert not (out / "run_complete.json").exists()
    command = shlex.split(last.split("resume with: ")[1])
    assert command[0] == "llmtune" and command[-2:] == ["--resume", "last"]
    resumed = cli(*command[1:], "--max-steps", str(step + 3))  # the printed command, shortened to 3 more steps
    assert resumed.exit_code == 0, resumed.output
    assert [r["step"] for r in _records(out)] == list(range(1, step + 4))
    assert (out / "run_complete.json").is_file()


def test_nonfinite_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(cli, corpus, tmp_path):
    out = tmp_path / "run"
    # lr 1e30: the first updates blow the weights up, so a loss a few steps in is not finite.
    result = cli("pretrain", "--dataset", str(corpus), "--max-steps", "6", *TINY_GPT2, "--lr", "1e30",
                 "--set", "train.save_steps=1", "--set", "train.save_total_limit=5", "-o", str(out))
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    step = int(errors[0].split(" at step ")[1].split(";")[0])
    assert 2 <= step <= 6, errors[0]
    assert errors[0] == (f"error: training loss is nan at step {step}; the last good checkpoint "
                         f"{out / f'checkpoint-{step - 1}'} is kept (resume with --resume last); lower the learning "
                         "rate (e.g. --lr 1e+29) or pass --set train.on_nonfinite=skip to skip such batches")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [f"checkpoint-{i}" for i in range(1, step)]
    assert (out / f"checkpoint-{step - 1}" / "checkpoint_complete.json").is_file()
    assert not (out / "run_complete.json").exists()
