"""Two real processes on CPU (gloo DDP through ``--num-processes 2``) against one process with the same global batch.

Each 2-process run goes through the whole path a user takes: ``llmtune ... --num-processes 2`` re-launches
itself with ``accelerate launch``; both ranks train (``env.json`` records world size 2), one model is saved
and the logged loss follows the 1-process run with twice the per-device batch step by step (dropout off:
the only difference left is the order of floating-point sums).
"""

import json
import os
import subprocess
import sys

import pytest
from helpers import classification_rows, write_csv

LLAMA = ["--arch", "llama", "--set", "model.config={num_hidden_layers: 2, hidden_size: 32, num_attention_heads: 2, "
         "num_key_value_heads: 2, intermediate_size: 64}", "--set", "tokenizer.vocab_size=300",
         "--set", "train.max_length=32", "--set", "train.time_budget=null"]
COMMON = ["--set", "model.dropout=0", "--set", "train.logging_steps=1", "--lr", "3e-3", "--max-steps", "6"]
TOLERANCE = 2e-3  # nats; float sums in another order drift by ~1e-5 per step


def _launch(args, cwd):
    """``python -m llmtune ARGS --num-processes 2`` in a subprocess (the launcher needs a real argv)."""
    command = [sys.executable, "-m", "llmtune", *map(str, args), "--num-processes", "2"]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def _log(run_dir, key="loss"):
    records = [json.loads(line) for line in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r[key]) for r in records if key in r]


def _check_two_ranks(result, run_dir):
    assert result.returncode == 0, result.stderr[-3000:]
    assert "launching: ACCELERATE_USE_CPU=true accelerate launch" in result.stderr
    assert json.loads((run_dir / "env.json").read_text())["world_size"] == 2
    assert len(list(run_dir.glob("*.safetensors"))) == 1 and (run_dir / "run_complete.json").is_file()


def _same_curve(one, two):
    assert [s for s, _ in one] == [s for s, _ in two] == list(range(1, 7))  # one line per step: rank 0 logs
    assert max(abs(a - b) for (_, a), (_, b) in zip(one, two)) < TOLERANCE, (one, two)


def test_pretrain_two_processes_match_one(cli, text_files, tmp_path):
    data = ["--dataset", text_files / "train.txt", "--eval-dataset", text_files / "val.txt"]
    one = cli("pretrain", *map(str, data), "-o", str(tmp_path / "one"), "--batch-size", "8", *LLAMA, *COMMON)
    assert one.exit_code == 0, one.output
    two = _launch(["pretrain", *data, "-o", tmp_path / "two", "--batch-size", "4", *LLAMA, *COMMON], tmp_path)
    _check_two_ranks(two, tmp_path / "two")
    _same_curve(_log(tmp_path / "one"), _log(tmp_path / "two"))
    assert _log(tmp_path / "two")[-1][1] < _log(tmp_path / "two")[0][1]  # and it learns
    eval_one, eval_two = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert abs(eval_one["eval_loss"] - eval_two["eval_loss"]) < TOLERANCE


@pytest.mark.slow  # ~45 s on 2 busy cores (two more process launches); `make test-all` runs it
def test_classification_two_processes_match_one(cli, tiny_bert, tmp_path):
    write_csv(tmp_path / "train.csv", classification_rows(120, seed=1))
    write_csv(tmp_path / "val.csv", classification_rows(61, seed=2))  # odd: one rank gets a padded batch, gathered once
    args = ["finetune", "--task", "classification", "--model", tiny_bert, "--dataset", tmp_path / "train.csv",
            "--eval-dataset", tmp_path / "val.csv", "--set", "train.max_length=32",
            "--set", "model.config={initializer_range: 0.2}", "--set", "train.freeze_embeddings=false", *COMMON]
    one = cli(*map(str, args), "-o", str(tmp_path / "one"), "--batch-size", "8")
    assert one.exit_code == 0, one.output
    two = _launch([*args, "-o", tmp_path / "two", "--batch-size", "4"], tmp_path)
    _check_two_ranks(two, tmp_path / "two")
    _same_curve(_log(tmp_path / "one"), _log(tmp_path / "two"))
    metrics = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two")]
    assert sum(map(sum, metrics[1]["confusion_matrix"])) == 61  # every eval row scored exactly once
    assert metrics[1]["eval_accuracy"] == metrics[0]["eval_accuracy"]
    # The Trainer's eval loss is a per-batch mean: the padded last batch (1 real row + 3 repeats) stands in
    # for its one row, so the loss differs a little although every prediction above counts once.
    assert metrics[1]["eval_loss"] == pytest.approx(metrics[0]["eval_loss"], rel=0.05)


def test_launch_command_on_cpu():
    from llmtune.launch import launch_command, strip_launch_flags

    args = strip_launch_flags(["pretrain", "--num-processes", "2", "-d", "x.txt", "--accelerate-config=a.yaml"])
    assert args == ["pretrain", "-d", "x.txt"]
    argv, env = launch_command(args, 2, None, gpu=False, port=29555)
    assert env == {"ACCELERATE_USE_CPU": "true"}  # with --multi_gpu: N gloo processes (--cpu alone starts one)
    assert argv[1:3] == ["-m", "accelerate.commands.launch"] and "--multi_gpu" in argv
    assert argv[argv.index("--num_processes") + 1] == "2" and argv[-5:] == ["-m", "llmtune", "pretrain", "-d", "x.txt"]
    argv, env = launch_command(args, None, "fsdp.yaml", gpu=True, port=29555)
    assert env == {} and "--multi_gpu" not in argv and argv[argv.index("--config_file") + 1] == "fsdp.yaml"


@pytest.mark.parametrize("flags, message", [
    (["--num-processes", "64"], "--num-processes 64: this machine has"),
    (["--num-processes", "0"], "must be at least 1"),
    (["--accelerate-config", "missing.yaml"], "file not found: missing.yaml"),
    (["--accelerate-config", "{bad}"], "is not valid YAML (line 2)"),
    (["--accelerate-config", "{list}"], "must hold a YAML mapping"),
    (["--accelerate-config", "fsdp"], "FSDP needs CUDA GPUs"),
    (["--precision", "bf16"], "bf16 without a GPU runs ~15x slower"),
])
def test_bad_launch_input(cli, tmp_path, flags, message):
    (tmp_path / "bad.yaml").write_text("a: [1\nb: 2\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    flags = [f.replace("{bad}", str(tmp_path / "bad.yaml")).replace("{list}", str(tmp_path / "list.yaml")) for f in flags]
    result = cli("pretrain", "--dataset", "builtin:text", "-o", str(tmp_path / "run"), *flags)
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_gpu_flags_reach_the_trainer(tmp_path):
    from llmtune.cli._common import resolve_config
    from llmtune.engine.trainer import training_arguments

    cfg = resolve_config("pretrain", {"dataset": "builtin:text", "precision": "fp32", "compile": True,
                                      "auto_find_batch_size": True, "gradient_checkpointing": True})
    assert (cfg.train.precision, cfg.train.compile, cfg.train.auto_find_batch_size) == ("fp32", True, True)
    args = training_arguments(cfg, tmp_path, has_eval=False)
    assert args.torch_compile and args.auto_find_batch_size
    assert getattr(args, "activation_checkpointing", None) or args.gradient_checkpointing
    assert args.use_cpu  # no GPU here: without it, each of N CPU processes would train alone (see launch.py)


@pytest.mark.slow  # ~90 s on 2 busy cores (three launches); `make test-all` runs it
def test_two_machines_match_one_machine_with_two_processes(text_files, tmp_path):
    """``--num-machines 2`` x 1 process on loopback (two "machines" = two launches) against 1 machine x 2 processes."""
    from llmtune.launch import _free_port

    args = ["pretrain", "--dataset", text_files / "train.txt", "--eval-dataset", text_files / "val.txt",
            "--batch-size", "4", *LLAMA, *COMMON]
    one = _launch([*args, "-o", tmp_path / "one"], tmp_path)
    _check_two_ranks(one, tmp_path / "one")
    port = str(_free_port())
    nodes = [subprocess.Popen([sys.executable, "-m", "llmtune", *map(str, args), "-o", str(tmp_path / "two"),
                               "--num-machines", "2", "--machine-rank", str(rank), "--main-process-ip", "127.0.0.1",
                               "--main-process-port", port],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}) for rank in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    for rank, (node, (_, err)) in enumerate(zip(nodes, outputs)):
        assert node.returncode == 0, err[-3000:]
        assert f"--num_machines 2 --mixed_precision no --dynamo_backend no --multi_gpu --machine_rank {rank} " \
               f"--main_process_ip 127.0.0.1 --num_processes 2 --main_process_port {port}" in err
    env = json.loads((tmp_path / "two" / "env.json").read_text())
    assert env["world_size"] == 2 and (tmp_path / "two" / "run_complete.json").is_file()
    _same_curve(_log(tmp_path / "one"), _log(tmp_path / "two"))


def test_launch_command_on_several_machines():
    from llmtune.launch import Machines, launch_command

    machines = Machines(count=3, rank=2, ip="10.0.0.1", port=29501)
    argv, env = launch_command(["finetune", "-d", "x.csv"], 2, None, gpu=True, port=29501, machines=machines)
    assert env == {}
    assert argv[3:] == ["--num_machines", "3", "--mixed_precision", "no", "--dynamo_backend", "no", "--multi_gpu",
                        "--machine_rank", "2", "--main_process_ip", "10.0.0.1",
                        "--num_processes", "6",  # 2 per machine x 3 machines: Accelerate counts them all
                        "--main_process_port", "29501", "-m", "llmtune", "finetune", "-d", "x.csv"]
    argv, _ = launch_command(["finetune"], None, "cfg.yaml", gpu=True, port=29500, machines=Machines(2, 1, "h"))
    assert argv[argv.index("--num_machines") + 1] == "2" and argv[argv.index("--num_processes") + 1] == "2"


@pytest.mark.parametrize("flags, message", [
    (["--num-machines", "2"], "pass --main-process-ip"),
    (["--num-machines", "2", "--machine-rank", "2", "--main-process-ip", "h"], "--machine-rank 2: must be 0..1"),
    (["--num-machines", "0"], "--num-machines 0: must be at least 1"),
    (["--num-machines", "2", "--main-process-ip", "h", "--main-process-port", "70000"], "must be 1..65535"),
])
def test_bad_machine_flags(cli, tmp_path, flags, message):
    result = cli("pretrain", "--dataset", "builtin:text", "-o", str(tmp_path / "run"), *flags)
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
