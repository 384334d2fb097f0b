"""End-to-end: tokenizer train and pretrain on tiny text, checking real learning and loadable outputs."""

import json
import math

import pytest

SENTENCES = [
    "the {a} {n} walks to the {p} in the morning .",
    "a {a} {n} sleeps near the {p} at night .",
    "every {n} likes the {a} {p} .",
]
ADJ = ["red", "small", "quiet", "old", "happy"]
NOUNS = ["cat", "dog", "bird", "fox", "horse"]
PLACES = ["river", "market", "garden", "forest", "hill"]


def _corpus(n: int) -> list[str]:
    lines = []
    for i in range(n):
        template = SENTENCES[i % len(SENTENCES)]
        lines.append(template.format(a=ADJ[i % 5], n=NOUNS[(i // 5) % 5], p=PLACES[(i // 25) % 5]))
    return lines


@pytest.fixture(scope="module")
def text_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    lines = _corpus(600)
    (root / "train.txt").write_text("\n".join(lines[:540]) + "\n")
    (root / "val.txt").write_text("\n".join(lines[540:]) + "\n")
    return root


TINY = ["--set", "model.config={n_layer: 2, n_embd: 32, n_head: 2}", "--set", "train.max_length=32",
        "--set", "tokenizer.vocab_size=300", "--set", "train.time_budget=null", "--set", "train.logging_steps=5"]


def test_tokenizer_train_cli(cli, text_files, tmp_path):
    out = tmp_path / "tok"
    result = cli("tokenizer", "train", "--dataset", str(text_files / "train.txt"), "--type", "bpe",
                 "--vocab-size", "300", "--min-frequency", "1", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "vocab size" in result.output and "bytes/token" in result.output
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    text = "the red cat walks  to the market.\n"
    assert tok.decode(tok(text)["input_ids"]) == text
    assert json.loads((out / "metrics.json").read_text())["vocab_size"] <= 300


def test_tokenizer_vocab_too_small(cli, text_files, tmp_path):
    result = cli("tokenizer", "train", "--dataset", str(text_files / "train.txt"), "--vocab-size", "100", "-o", str(tmp_path / "t"))
    assert result.exit_code == 2 and "too small" in result.output


def test_pretrain_gpt2_learns_and_saves(cli, text_files, tmp_path):
    out = tmp_path / "run"
    result = cli("pretrain", "--dataset", str(text_files / "train.txt"), "--eval-dataset", str(text_files / "val.txt"),
                 "--max-steps", "40", "--batch-size", "8", "--lr", "3e-3", "-o", str(out), *TINY)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["eval_bits_per_char"]) and metrics["eval_bits_per_char"] > 0
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]), rel=1e-6)
    losses = [r["loss"] for r in map(json.loads, (out / "logs" / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) >= 4 and losses[-1] < losses[0] * 0.8
    assert (out / "run_complete.json").is_file() and (out / "config.yaml").is_file()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    assert model.config.vocab_size == len(tok) and model.config.eos_token_id == tok.eos_token_id
    again = cli("pretrain", "--dataset", str(text_files / "train.txt"), "-o", str(out), *TINY)
    assert again.exit_code == 2 and "finished run" in again.output


def test_pretrain_bert_mlm(cli, text_files, tmp_path):
    out = tmp_path / "bert"
    result = cli("pretrain", "--arch", "bert", "--dataset", str(text_files / "train.txt"), "--max-steps", "4",
                 "--batch-size", "8", "-o", str(out), "--set", "model.config={num_hidden_layers: 1, hidden_size: 32, num_attention_heads: 2, intermediate_size: 64}",
                 "--set", "train.max_length=32", "--set", "tokenizer.vocab_size=300", "--set", "train.time_budget=null")
    assert result.exit_code == 0, result.output
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    AutoModelForMaskedLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.mask_token == "[MASK]" and "token_type_ids" in tok("a", "b")
