"""`llmtune distill -t generation` and `-t qa` end to end on tiny models built in-process, and task/tokenizer mismatches."""

import json
import math

import pytest
from helpers import invoke, one_line_error, read_jsonl, save_bert_classifier, save_tiny_llama, write_jsonl

FAST = ["--max-steps", "2", "--batch-size", "8", "--set", "train.logging_steps=1", "--set", "train.max_length=64"]
SMALL_LLAMA = ["--set", "model.config.hidden_size=16", "--set", "model.config.intermediate_size=32",
               "--set", "model.config.num_hidden_layers=1", "--set", "model.config.num_attention_heads=2",
               "--set", "model.config.num_key_value_heads=2"]


def _builtin_rows(name, split, n):
    from llmtune.data.builtin import builtin_dir

    return read_jsonl(builtin_dir(name) / f"{split}.jsonl")[:n]


@pytest.fixture(scope="module")
def sft_teacher(tmp_path_factory):
    """A random tiny LlamaForCausalLM on a BPE tokenizer trained on the builtin instructions."""
    root = tmp_path_factory.mktemp("sft-teacher")
    rows = _builtin_rows("instructions", "train", 400)
    save_tiny_llama(root, [" ".join(str(v) for v in r.values()) for r in rows], vocab_size=300, context=128)
    return root




def _steps(run):
    return [r for r in read_jsonl(run / "logs" / "metrics.jsonl") if "loss" in r]


def test_generation_distill_on_instructions_then_generate_and_eval_load_it(sft_teacher, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    val = write_jsonl(tmp_path / "val.jsonl", _builtin_rows("instructions", "validation", 8))
    out = tmp_path / "sft-student"
    result = invoke("distill", "--teacher", sft_teacher, "--student-arch", "llama", "--student-size", "tiny",
                    "-t", "generation", "-d", "builtin:instructions", "--max-samples", "32", "--eval-dataset", val,
                    "-o", out, *SMALL_LLAMA, *FAST)
    assert result.exit_code == 0, result.output
    assert "data format: alpaca" in result.output and "responses only" in result.output  # finetune's own features
    student = AutoModelForCausalLM.from_pretrained(str(out))
    assert student.config.hidden_size == 16
    assert AutoTokenizer.from_pretrained(str(out)).get_vocab() == AutoTokenizer.from_pretrained(
        str(sft_teacher)).get_vocab()
    steps = _steps(out)
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert r["distill_kd_term"] > 0 and r["distill_task_term"] > 0
        assert r["loss"] == pytest.approx(r["distill_kd_term"] + r["distill_task_term"], rel=1e-3)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data_format"] == "alpaca" and 0 < metrics["distill_kd_share"] < 1
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]), rel=1e-4)
    generated = invoke("generate", "-m", out, "Add 2 and 3.", "--temperature", "0", "--max-new-tokens", "4")
    assert generated.exit_code == 0, generated.output
    evaluated = invoke("eval", "--model", out, "--task", "generation", "--dataset", val, "-o", tmp_path / "eval")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())["eval_perplexity"] > 1


def test_qa_distill_then_eval_reproduces_the_runs_exact_match(qa_model, tiny_bert, tmp_path):
    from transformers import AutoModelForQuestionAnswering

    dev = write_jsonl(tmp_path / "dev.jsonl", _builtin_rows("qa", "validation", 8))
    out = tmp_path / "qa-student"
    result = invoke("distill", "--teacher", qa_model, "--student", tiny_bert, "-t", "qa", "-d", "builtin:qa",
                    "--max-samples", "24", "--eval-dataset", dev, "-o", out, "--temperature", "2", *FAST)
    assert result.exit_code == 0, result.output
    assert type(AutoModelForQuestionAnswering.from_pretrained(str(out))).__name__ == "BertForQuestionAnswering"
    steps = _steps(out)
    assert [r["step"] for r in steps] == [1, 2] and all(r["distill_kd_term"] > 0 for r in steps)
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["eval_exact_match"] <= 100 and 0 <= metrics["eval_f1"] <= 100
    assert len(json.loads((out / "predictions.json").read_text())) == 8
    evaluated = invoke("eval", "--model", out, "--dataset", dev)
    assert evaluated.exit_code == 0, evaluated.output
    scored = json.loads((out / "eval" / "eval_metrics.json").read_text())
    assert (scored["eval_exact_match"], scored["eval_f1"]) == (metrics["eval_exact_match"], metrics["eval_f1"])


def test_task_and_tokenizer_mismatches_one_line_exit_2(qa_model, sft_teacher, tiny_bert, tmp_path):
    classifier = tmp_path / "cls"
    save_bert_classifier(classifier, tiny_bert, ["a", "b"])
    one_line_error(invoke("distill", "--teacher", classifier, "--student", tiny_bert, "-t", "qa", "-d", "builtin:qa",
                          "-o", tmp_path / "a"),
                   "-t qa distils an extractive question-answering teacher", "BertForSequenceClassification",
                   "pass -t classification")
    one_line_error(invoke("distill", "--teacher", qa_model, "--student-arch", "llama", "-t", "generation",
                          "-d", "builtin:instructions", "-o", tmp_path / "b"),
                   "causal LM teacher", "BertForQuestionAnswering", "pass -t qa")
    one_line_error(invoke("distill", "--teacher", sft_teacher, "--student", tiny_bert, "-t", "generation",
                          "-d", "builtin:instructions", "-o", tmp_path / "c"), "do not share a tokenizer", "vocab")
    one_line_error(invoke("distill", "--teacher", qa_model, "--student", sft_teacher, "-t", "qa",
                          "-d", "builtin:qa", "-o", tmp_path / "d"), "do not share a tokenizer", "offsets")
    assert not any((tmp_path / name).exists() for name in "abcd")
