"""``--dry-run``: the estimates equal hand-computed values and what a real model of that config holds; nothing is written."""

import math

import pytest
from helpers import classification_rows, write_csv

from llmtune.engine.estimates import epoch_seconds, estimate_memory, steps_per_epoch

GPT2 = {"n_layer": 2, "n_embd": 32, "n_head": 2}


def test_memory_formula_by_hand():
    m = estimate_memory(1000, 100, batch=2, seq_len=4, layers=1, hidden=8, heads=2, vocab=10)
    # weights 4 N, gradients 4 T, AdamW 8 T; activations 1 layer x 8 tokens x (34 x 8 + 5 x 2 x 4) x 4 B / 2
    # = 4,992 plus logits and their gradient 2 x 8 tokens x 10 x 4 B = 640.
    assert (m.weights, m.gradients, m.optimizer, m.activations) == (4000, 400, 800, 4992 + 640)
    half = estimate_memory(1000, 100, batch=2, seq_len=4, layers=1, hidden=8, heads=2, precision="bf16")
    assert half.activations == 4992 // 2
    kept = estimate_memory(1000, 100, batch=2, seq_len=4, layers=3, hidden=8, heads=2, checkpointing=True)
    assert kept.activations == 3 * 8 * 8 * 4 + 4992  # each layer's input + one layer recomputed
    assert m.total == 4000 + 400 + 800 + 4992 + 640


def test_steps_and_time_by_hand():
    assert steps_per_epoch(100, 8) == 13
    assert steps_per_epoch(100, 8, world_size=2) == 7  # 16 rows a step
    assert steps_per_epoch(100, 8, grad_accum=2, world_size=2) == 4
    assert epoch_seconds(1e6, 6e6, 1e12, 0.5, world_size=2) == pytest.approx(6.0)


@pytest.fixture(scope="module")
def text(text_files):
    """The shared text files (540 training lines of ``pretrain_lines(600)``) and a tokenizer trained on them."""
    from llmtune.config.schema import TokenizerConfig
    from llmtune.tokenizer import train_tokenizer

    lines = (text_files / "train.txt").read_text().splitlines()
    tok = train_tokenizer(lines, TokenizerConfig(vocab_size=300, min_frequency=1, model_max_length=32))
    tok.save_pretrained(str(text_files / "tok"))
    return text_files, lines, tok


def _config(command, **params):
    from llmtune.cli._common import resolve_config

    return resolve_config(command, params)


def test_pretrain_estimates_match_the_real_model(text, tmp_path, monkeypatch):
    from transformers import GPT2Config, GPT2LMHeadModel

    from llmtune.runs.pretrain import dry_run

    root, lines, tok = text
    cfg = _config("pretrain", arch="gpt2", dataset=str(root / "train.txt"), eval_dataset=str(root / "val.txt"),
                  tokenizer=str(root / "tok"), batch_size=8, output_dir=str(tmp_path / "run"),
                  set_=[f"model.config={GPT2}".replace("'", ""), "train.max_length=32", "train.time_budget=null"])
    e = dry_run(cfg, world_size=2)
    real = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=256, **GPT2))
    assert e["total_params"] == e["trainable_params"] == sum(p.numel() for p in real.parameters())
    tokens = sum(len(tok(line, add_special_tokens=False)["input_ids"]) + 1 for line in lines)  # + eos each
    blocks = tokens // 32
    assert e["steps_per_epoch"] == math.ceil(blocks / 16)  # 8 rows on each of 2 processes
    assert e["memory"].weights == 4 * e["total_params"] and e["memory"].optimizer == 8 * e["total_params"]
    assert e["world_size"] == 2 and not (tmp_path / "run").exists()
    from llmtune.runs import pretrain

    monkeypatch.setattr(pretrain, "_EXACT_ROWS", 200)  # big data: pack the first rows only, scale by characters
    sampled = dry_run(cfg, world_size=1)
    assert abs(sampled["steps_per_epoch"] - math.ceil(blocks / 8)) <= 0.05 * blocks / 8


def test_pretrain_dry_run_cli_writes_nothing(cli, text, tmp_path):
    root, _, _ = text
    out = tmp_path / "run"
    result = cli("pretrain", "--arch", "gpt2", "--dataset", str(root / "train.txt"), "-o", str(out), "--dry-run",
                 "--set", "model.config={n_layer: 2, n_embd: 32, n_head: 2}", "--set", "train.max_length=32",
                 "--set", "tokenizer.vocab_size=300")
    assert result.exit_code == 0, result.output
    for phrase in ("nothing trained", "parameters", "memory per process", "steps per epoch", "time per epoch"):
        assert phrase in result.output
    assert not out.exists() and "warning" not in result.output
    huge = cli("pretrain", "--arch", "gpt2", "--dataset", str(root / "train.txt"), "-o", str(out), "--dry-run",
               "--tokenizer", str(root / "tok"), "--set", "train.max_length=32", "--batch-size", "1000000")
    # activations alone: 4 layers x 1e6 rows x 32 tokens x (34 x 256 + 5 x 4 x 32) x 4 B / 2 = 2.3 TB
    assert huge.exit_code == 0 and "warning: estimated memory" in huge.output and "exceeds" in huge.output
    assert not out.exists()


def test_finetune_estimates_with_frozen_embeddings_and_lora(text, tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from llmtune.runs.finetune import dry_run

    write_csv(tmp_path / "train.csv", classification_rows(90, seed=1))
    base = dict(task="classification", model=str(tiny_bert), dataset=str(tmp_path / "train.csv"), batch_size=16,
                output_dir=str(tmp_path / "run"))
    frozen = dry_run(_config("finetune", **base, set_=["train.freeze_embeddings=true"]))
    real = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=3)
    total = sum(p.numel() for p in real.parameters())
    assert frozen["total_params"] == total
    assert frozen["trainable_params"] == total - real.get_input_embeddings().weight.numel()
    assert frozen["steps_per_epoch"] == math.ceil(81 / 16)  # 90 rows, 10 % carved off for evaluation
    lora = dry_run(_config("finetune", **base, lora=True, set_=["lora.r=4"]))
    # r x (in + out) on every linear layer of the encoder (2 layers x q, k, v, o 32->32, up 32->64, down 64->32)
    # plus the new pooler (32 x 32 + 32) and classifier (32 x 3 + 3), trained in full.
    adapters = 2 * (4 * 4 * (32 + 32) + 2 * 4 * (32 + 64))
    assert lora["trainable_params"] == adapters + (32 * 32 + 32) + (32 * 3 + 3)
    assert not (tmp_path / "run").exists()
