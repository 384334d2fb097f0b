"""End-to-end: tokenizer train and pretrain on tiny text, checking real learning and loadable outputs."""

import json
import math

import pytest
from helpers import pretrain_lines

TINY = ["--arch", "gpt2", "--set", "model.config={n_layer: 2, n_embd: 32, n_head: 2}", "--set", "train.max_length=32",
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


@pytest.fixture
def transformers_warnings():
    """Warnings transformers logs (its logger does not propagate, so caplog misses them)."""
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pretrain_reports_samples_mfu_once_and_quietly(cli, text_files, tmp_path, transformers_warnings, recwarn):
    out = tmp_path / "run"
    result = cli("pretrain", "--dataset", str(text_files / "train.txt"), "--eval-dataset", str(text_files / "val.txt"),
                 "--max-steps", "6", "--batch-size", "8", "-o", str(out), *TINY, "--set", "train.eval_steps=3")
    assert result.exit_code == 0, result.output
    samples = _jsonl(out / "samples.jsonl")
    assert [s["step"] for s in samples] == [3, 6]
    assert samples[0]["prompt"] and samples[0]["prompt"] in (text_files / "val.txt").read_text()
    assert "sample at step 6: " in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 < metrics["mfu"] < 1 and metrics["peak_flops"] > 0 and metrics["peak_flops_source"]
    assert metrics["mfu"] == pytest.approx(metrics["model_flops_per_second"] / metrics["peak_flops"])
    assert "MFU" in result.output and "tok/s" in result.output
    # The step-6 evaluation that training ended with is the final one: not repeated.
    evals = [r for r in _jsonl(out / "logs" / "metrics.jsonl") if "eval_loss" in r]
    assert [r["step"] for r in evals] == [3, 6] and metrics["eval_loss"] == evals[-1]["eval_loss"]
    assert result.output.count("eval at step 6") == 1
    for noise in ("Writing model shards", "Generating train split", "Filter:", "packing train:", "Map:"):
        assert noise not in result.output
    assert not [r for r in transformers_warnings if "loss_type" in r.getMessage()]
    assert not [w for w in recwarn if "checkpointing" in str(w.message)]


def test_pretrain_resume_continues_from_the_last_checkpoint(cli, tmp_path):
    data = tmp_path / "corpus.txt"  # a file of its own: the first run cannot find a cache from other tests
    data.write_text("\n".join(pretrain_lines(300)) + "\n")
    out = tmp_path / "run"
    args = ["pretrain", "--dataset", str(data), "--batch-size", "8", "-o", str(out), *TINY,
            "--set", "train.save_steps=2", "--set", "train.eval_steps=4", "--set", "train.logging_steps=1"]
    first = cli(*args, "--max-steps", "4")
    assert first.exit_code == 0, first.output
    assert "(tokenized; cached for reruns" in first.output
    (out / "run_complete.json").unlink()  # as if it crashed after writing checkpoint-4
    again = cli(*args, "--max-steps", "8")
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = cli(*args, "--max-steps", "8", "--resume", "last")
    assert resumed.exit_code == 0, resumed.output
    assert "tokenizer: the run's own" in resumed.output
    assert "loaded from the datasets cache: not tokenized again" in resumed.output
    assert "missing keys" not in resumed.output
    state = json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-6", "checkpoint-8"]  # save_total_limit 2
    steps = [r["step"] for r in _jsonl(out / "logs" / "metrics.jsonl") if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]  # the second run started at step 5, not 1
    assert [s["step"] for s in _jsonl(out / "samples.jsonl")] == [4, 8]
    assert (out / "run_complete.json").is_file()


@pytest.fixture(scope="module")
def masked_tokenizer_dir(tmp_path_factory):
    from llmtune.config.schema import TokenizerConfig
    from llmtune.tokenizer import save_tokenizer, train_tokenizer

    tok = train_tokenizer(pretrain_lines(100), TokenizerConfig(type="wordpiece", vocab_size=200), family="masked")
    return save_tokenizer(tok, tmp_path_factory.mktemp("bert-tok"))


BAD_INPUT = {
    "empty corpus": (["--dataset", "{empty}"], "file is empty"),
    "whitespace corpus": (["--dataset", "{blank}"], "only whitespace"),
    "vocab below alphabet": (["--set", "tokenizer.vocab_size=100"], "vocab_size 100 is too small"),
    "missing tokenizer dir": (["--tokenizer", "{tmp}/no-such-tokenizer"], "tokenizer folder not found"),
    "tokenizer dir without files": (["--tokenizer", "{tmp}"], "no tokenizer files in"),
    "tokenizer of the wrong family": (["--tokenizer", "{bert_tok}"], "the tokenizer has no eos_token"),
    "model vocab below tokenizer": (["--set", "model.config={n_layer: 2, n_embd: 32, n_head: 2, vocab_size: 10}"],
                                    "smaller than the tokenizer's"),
    "block longer than positions": (["--set", "model.config={n_layer: 2, n_embd: 32, n_head: 2, n_positions: 16}"],
                                    "longer than the model's 16 positions"),
    "budget below one step": (["--time-budget", "0.01s"], "too short to run one training step"),
}


def _fill(arg: str, names: dict) -> str:
    for name, value in names.items():
        arg = arg.replace(f"{{{name}}}", str(value))
    return arg


def _tiny_with(extra: list[str]) -> list[str]:
    """TINY with ``extra`` winning: a later --set of model.config replaces the whole mapping, and --set
    train.time_budget=null would beat the --time-budget flag."""
    args = [*TINY, *extra]
    if "--time-budget" in extra:
        at = args.index("train.time_budget=null")
        del args[at - 1 : at + 1]
    return args


@pytest.mark.parametrize("case", BAD_INPUT, ids=list(BAD_INPUT))
def test_pretrain_bad_input_fails_in_one_line_before_training(cli, text_files, tmp_path, masked_tokenizer_dir, case,
                                                             monkeypatch):
    monkeypatch.delenv("LLMTUNE_DEBUG", raising=False)  # tracebacks are for --debug only
    extra, message = BAD_INPUT[case]
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("  \n\t\n")
    names = {"empty": tmp_path / "empty.txt", "blank": tmp_path / "blank.txt", "tmp": tmp_path,
             "bert_tok": masked_tokenizer_dir}
    out = tmp_path / "run"
    result = cli("pretrain", "--dataset", str(text_files / "train.txt"), "--max-steps", "2", "-o", str(out),
                 *_tiny_with([_fill(arg, names) for arg in extra]))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("[llmtune]")]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output
    assert not out.exists(), "a run that never trained leaves no run dir behind (rerunning needs no --overwrite)"
