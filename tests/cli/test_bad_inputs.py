"""Table-driven bad inputs across commands: each gives one line on stderr, exit code 2, no traceback,
and leaves no run dir marked complete. The session prints how many cases passed (tests/conftest.py)."""

import json
import os
import time

import pytest


def _files(root):
    (root / "empty.csv").write_text("")
    (root / "ragged.csv").write_text("text,label\nhello,1\nbad,row,extra,cols\nok,0\n")
    (root / "broken.jsonl").write_text('{"text": "a", "label": 1}\n{"text": "b", "label": \n{"text": "c", "label": 0}\n')
    (root / "reviews.csv").write_text("text,stars\ngood film,pos\nbad film,neg\nfine film,pos\nawful film,neg\n")
    (root / "one.csv").write_text("text,label\ngood film,pos\n")
    (root / "four.csv").write_text("text,label\ngood film,pos\nbad film,neg\nfine film,pos\nawful film,neg\n")
    (root / "data.xlsx").write_text("not really excel")
    (root / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (root / "notamap.yaml").write_text("- a\n- b\n")
    (root / "typo.yaml").write_text("command: pretrain\ntrain:\n  lrr: 0.001\n")
    (root / "badyaml.yaml").write_text("train: {lr: [1, 2\n")
    done = root / "done"
    done.mkdir()
    (done / "run_complete.json").write_text("{}")
    (root / "notamodel").mkdir()
    (root / "crashed" / "checkpoint-3").mkdir(parents=True)  # killed while saving: no completion marker
    (root / "crashed" / "config.yaml").write_text("command: pretrain\n")
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny BERT folder, a copy with pickled weights only, one needing remote code, a too-large tokenizer."""
    import shutil

    import torch
    from transformers import BertConfig, BertForMaskedLM

    from llmtune.config.schema import TokenizerConfig
    from llmtune.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("bad-models")
    words = "good bad fine awful film movie plot actor scene the a was very".split()
    tok = train_tokenizer(words, TokenizerConfig(type="wordpiece", vocab_size=60, min_frequency=1), family="masked")
    config = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    model = BertForMaskedLM(config)
    model.save_pretrained(str(root / "bert"))
    tok.save_pretrained(str(root / "bert"))
    shutil.copytree(root / "bert", root / "pickled")
    (root / "pickled" / "model.safetensors").unlink()
    torch.save(model.state_dict(), root / "pickled" / "pytorch_model.bin")
    shutil.copytree(root / "bert", root / "remote")
    config_json = json.loads((root / "remote" / "config.json").read_text())
    config_json.update(model_type="mystery-net", auto_map={"AutoConfig": "modeling_mystery.MysteryConfig"})
    (root / "remote" / "config.json").write_text(json.dumps(config_json))
    big = train_tokenizer(words + [f"w{i}" for i in range(200)],
                          TokenizerConfig(type="wordpiece", vocab_size=300, min_frequency=1), family="masked")
    big.save_pretrained(str(root / "bigtok"))
    return root


def _readonly(root):
    """A folder this process cannot create: a chmod 555 parent, or /sys for root (who ignores modes)."""
    if os.geteuid() == 0:
        return "/sys/llmtune-readonly-test/run"
    parent = root / "ro"
    parent.mkdir(exist_ok=True)
    parent.chmod(0o555)
    return str(parent / "run")


CLS = ["finetune", "--task", "classification", "--max-steps", "1"]
PRE = ["pretrain", "--dataset", "builtin:text", "--max-steps", "1"]
CASES = [
    # data
    ("missing file", ["data", "inspect", "--dataset", "{root}/nope.csv"], ["not found"]),
    ("unknown extension", ["data", "inspect", "--dataset", "{root}/data.xlsx"], [".xlsx"]),
    ("empty file", ["data", "inspect", "--dataset", "{root}/empty.csv"], ["empty"]),
    ("ragged csv", ["data", "inspect", "--dataset", "{root}/ragged.csv"], ["ragged.csv", "line 3"]),
    ("broken jsonl", ["data", "inspect", "--dataset", "{root}/broken.jsonl"], ["broken.jsonl", "line 2"]),
    ("non-utf8 text", ["data", "inspect", "--dataset", "{root}/latin1.txt"], ["UTF-8"]),
    ("missing column", ["data", "inspect", "--dataset", "{root}/reviews.csv", "--task", "classification"],
     ["label", "stars", "--label-column"]),
    ("mapped column absent", ["data", "inspect", "--dataset", "{root}/reviews.csv", "--label-column", "rating"],
     ["rating"]),
    ("bad --columns", ["data", "inspect", "--dataset", "{root}/reviews.csv", "--columns", "oops"], ["source=target"]),
    ("unknown builtin", ["data", "inspect", "--dataset", "builtin:nope"], ["builtin"]),
    ("hub id offline", ["data", "inspect", "--dataset", "someone/some-dataset"], ["someone/some-dataset", "local"]),
    ("dataset of 1 row", [*CLS, "--model", "{models}/bert", "--dataset", "{root}/one.csv", "-o", "{root}/r1"],
     ["at least 2 rows"]),
    ("validation split larger than the data",
     [*CLS, "--model", "{models}/bert", "--dataset", "{root}/four.csv", "--set", "data.eval_fraction=0.95",
      "-o", "{root}/r2"], ["leaves 0 training rows"]),
    # recipes and config
    ("recipe not a mapping", ["pretrain", "--recipe", "{root}/notamap.yaml"], ["mapping"]),
    ("recipe with a key typo", ["pretrain", "--recipe", "{root}/typo.yaml"], ["train.lrr", "train.lr"]),
    ("recipe that is not YAML", ["pretrain", "--recipe", "{root}/badyaml.yaml"], ["badyaml.yaml"]),
    ("unknown recipe", ["finetune", "--recipe", "classification/tiny-cpuu"], ["did you mean"]),
    ("unknown --set key", [*PRE, "--set", "train.learning_rate=1e-3"], ["train.learning_rate"]),
    ("--set value of the wrong type", [*PRE, "--set", "train.batch_size=many"], ["train.batch_size"]),
    ("zero batch size", ["pretrain", "--recipe", "gpt2-tiny", "--batch-size", "0"], ["train.batch_size"]),
    ("negative lr", ["pretrain", "--recipe", "gpt2-tiny", "--lr", "-1"], ["train.lr"]),
    ("zero epochs", [*PRE, "--epochs", "0"], ["train.epochs"]),
    ("negative max steps", ["pretrain", "--dataset", "builtin:text", "--max-steps", "-3"], ["train.max_steps"]),
    ("time budget that is not a duration", [*PRE, "--time-budget", "soon"], ["not a duration"]),
    ("LoRA with pretrain", [*PRE, "--set", "lora.enabled=true"], ["lora.enabled"]),
    ("finetune without a task", ["finetune", "--model", "{models}/bert", "--dataset", "{root}/four.csv"], ["--task"]),
    ("greedy with several sequences", ["generate", "--model", "{models}/bert", "--temperature", "0",
                                       "--num-return-sequences", "2", "hi"], ["num_return_sequences"]),
    # output dirs
    ("finished run dir", ["tokenizer", "train", "--dataset", "builtin:text", "-o", "{root}/done"], ["--overwrite"]),
    ("output dir is a file", ["tokenizer", "train", "--dataset", "builtin:text", "-o", "{root}/reviews.csv"],
     ["is a file"]),
    ("read-only output dir", ["tokenizer", "train", "--dataset", "builtin:text", "-o", "{readonly}"],
     ["cannot write to output dir"]),
    # models
    ("model folder missing", ["generate", "--model", "{root}/no-model", "hi"], ["not found"]),
    ("model folder without config.json", ["eval", "--model", "{root}/notamodel", "--dataset", "{root}/four.csv"],
     ["no config.json"]),
    ("pickled weights without --allow-pickle",
     [*CLS, "--model", "{models}/pickled", "--dataset", "{root}/four.csv", "-o", "{root}/r3"],
     ["pickled weights", "pytorch_model.bin", "allow"]),
    ("model that ships its own code", [*CLS, "--model", "{models}/remote", "--dataset", "{root}/four.csv",
                                       "-o", "{root}/r4"], ["trust-remote-code"]),
    ("tokenizer larger than the model's vocabulary",
     [*CLS, "--model", "{models}/bert", "--dataset", "{root}/four.csv", "--set", "model.tokenizer={models}/bigtok",
      "-o", "{root}/r5"], ["vocabulary", "tokenizer"]),
    # resume
    ("--resume last without any checkpoint", [*PRE, "-o", "{root}/r7", "--resume", "last"],
     ["no checkpoint-N folder", "start without --resume"]),
    ("--resume from an incomplete checkpoint", [*PRE, "-o", "{root}/r6", "--resume", "{root}/crashed/checkpoint-3"],
     ["cannot resume from", "not completely written"]),
    ("report on a folder without metrics", ["report", "{root}/notamodel"], ["metrics"]),
]


@pytest.mark.parametrize(("name", "args", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_one_line_exit_2(cli, tmp_path, models, name, args, words, monkeypatch):
    monkeypatch.delenv("LLMTUNE_DEBUG", raising=False)
    root = _files(tmp_path)
    names = {"root": root, "models": models, "readonly": _readonly(root) if "{readonly}" in " ".join(args) else ""}
    start = time.monotonic()
    result = cli(*[a.format(**names) for a in args])
    assert time.monotonic() - start < 10, "bad input must fail fast"
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("[llmtune]")]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert [p.parent.name for p in root.rglob("run_complete.json")] == ["done"], "no run may look finished"


def test_the_table_holds_at_least_30_distinct_cases():
    assert len({c[0] for c in CASES}) == len(CASES) >= 30
    assert {c[1][0] for c in CASES} >= {"data", "pretrain", "finetune", "tokenizer", "generate", "eval", "report"}


def test_disk_too_small_for_a_checkpoint_stops_before_training(cli, tmp_path, monkeypatch):
    from collections import namedtuple

    from llmtune.engine import reliability

    usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(reliability.shutil, "disk_usage", lambda path: usage(10**6, 10**6, 1000))
    out = tmp_path / "run"
    result = cli("pretrain", "--arch", "gpt2", "--dataset", "builtin:text", "--max-samples", "50", "--max-steps", "1",
                 "-o", str(out),
                 "--set", "model.config={n_layer: 1, n_embd: 16, n_head: 2}", "--set", "train.max_length=16",
                 "--set", "tokenizer.vocab_size=300", "--set", "train.time_budget=null")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("[llmtune]")]
    assert len(lines) == 1 and "only 1000.0 B free" in lines[0] and "one checkpoint needs about" in lines[0]
    assert not out.exists(), "a run stopped before training leaves no run dir behind"


def test_inspect_builtin_classification(cli):
    result = cli("data", "inspect", "--dataset", "builtin:classification", "--task", "classification")
    assert result.exit_code == 0, result.output
    for word in ("train", "validation", "label", "positive", "negative", "3,000"):
        assert word in result.output


def test_inspect_maps_label_column(cli, tmp_path):
    root = _files(tmp_path)
    result = cli("data", "inspect", "--dataset", f"{root}/reviews.csv", "--task", "classification",
                 "--label-column", "stars")
    assert result.exit_code == 0, result.output
    assert "carved" in result.output or "validation" in result.output
