"""`llmtune distill` end to end on tiny models built in-process (classification and causal LM), and bad input."""

import json

import pytest
from helpers import invoke, one_line_error, pretrain_lines, read_jsonl, save_bert_classifier, save_tiny_llama

NAMES = ["cooking", "sports", "weather"]  # the classes of helpers.classification_rows, sorted as llmtune numbers them
FAST = ["--max-steps", "2", "--batch-size", "8", "--set", "train.logging_steps=1", "--set", "train.max_length=32"]


@pytest.fixture(scope="module")
def bert_teacher(tiny_bert, tmp_path_factory):
    """A 3-class BertForSequenceClassification on tiny_bert's tokenizer, the classes named as in the data."""
    root = tmp_path_factory.mktemp("teacher")
    save_bert_classifier(root, tiny_bert, NAMES)
    return root


@pytest.fixture(scope="module")
def llama_teacher(tmp_path_factory, text_files):
    """A random tiny LlamaForCausalLM on a BPE tokenizer trained on the LM toy text (8 padding rows in its vocab)."""
    root = tmp_path_factory.mktemp("llama-teacher")
    save_tiny_llama(root, pretrain_lines(600), context=64, extra_vocab=8)
    return root


def test_classification_distill_writes_a_loadable_student_and_both_loss_terms(bert_teacher, tiny_bert, cls_data,
                                                                               tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "student"
    result = invoke("distill", "--teacher", bert_teacher, "--student", tiny_bert, "-t", "classification",
                    "-d", cls_data / "train.csv", "--eval-dataset", cls_data / "val.csv", "-o", out,
                    "--temperature", "2", "--alpha", "0.5", *FAST)
    assert result.exit_code == 0, result.output
    student = AutoModelForSequenceClassification.from_pretrained(str(out))
    assert student.config.id2label == dict(enumerate(NAMES)) and student.config.num_hidden_layers == 2
    steps = [r for r in read_jsonl(out / "logs" / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:  # the logged loss is the sum of the two weighted terms, each positive
        assert r["distill_kd_term"] > 0 and r["distill_task_term"] > 0
        assert r["loss"] == pytest.approx(r["distill_kd_term"] + r["distill_task_term"], rel=1e-3)
    metrics = json.loads((out / "metrics.json").read_text())
    share = metrics["distill_kd_term"] / (metrics["distill_kd_term"] + metrics["distill_task_term"])
    assert metrics["distill_kd_share"] == pytest.approx(share) and 0 < share < 1
    # 2 steps x 8 rows went through the teacher's per-row logit cache: each row either computed or served from it
    assert metrics["distill_teacher_rows_computed"] + metrics["distill_teacher_rows_cached"] == 16
    assert metrics["distill_teacher_rows_computed"] >= 1
    assert 0 <= metrics["eval_accuracy"] <= 1
    evaluated = invoke("eval", "--model", out, "--dataset", cls_data / "val.csv", "-o", tmp_path / "eval")
    assert evaluated.exit_code == 0, evaluated.output


def test_lm_distill_into_a_student_built_on_the_teachers_tokenizer(llama_teacher, text_files, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "lm-student"
    result = invoke("distill", "--teacher", llama_teacher, "--student-arch", "llama", "--student-size", "tiny",
                    "-t", "lm", "-d", text_files / "train.txt", "--eval-dataset", text_files / "val.txt", "-o", out,
                    "--set", "model.config.hidden_size=16", "--set", "model.config.intermediate_size=32",
                    "--set", "model.config.num_hidden_layers=1", *FAST)
    assert result.exit_code == 0, result.output
    student = AutoModelForCausalLM.from_pretrained(str(out))
    teacher_tok = AutoTokenizer.from_pretrained(str(llama_teacher))
    assert student.config.hidden_size == 16 and student.config.num_hidden_layers == 1
    assert student.config.vocab_size == len(teacher_tok) + 8  # the teacher's (padded) vocabulary, so logits align
    assert AutoTokenizer.from_pretrained(str(out)).get_vocab() == teacher_tok.get_vocab()
    steps = [r for r in read_jsonl(out / "logs" / "metrics.jsonl") if "loss" in r]
    assert len(steps) == 2 and all(r["distill_kd_term"] > 0 and r["distill_task_term"] > 0 for r in steps)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_bits_per_char"] > 0 and 0 < metrics["distill_kd_share"] < 1
    # the default top-k cache: one teacher pass over every training block, then each step's 8 blocks from memory
    assert metrics["distill_teacher_top_k"] == 64 and metrics["distill_teacher_pass_seconds"] > 0
    assert metrics["distill_teacher_rows_cached"] == 2 * 8 and metrics["distill_teacher_rows_computed"] >= 8
    assert "teacher pass:" in result.output and "top-64 log-probs" in result.output


def test_lm_distill_top_k_zero_runs_the_teacher_live_and_top_k_above_the_vocab_is_refused(llama_teacher, text_files,
                                                                                          tmp_path):
    from transformers import AutoConfig

    common = ["distill", "--teacher", llama_teacher, "--student-arch", "llama", "--student-size", "tiny", "-t", "lm",
              "-d", text_files / "train.txt", "--set", "model.config.hidden_size=16",
              "--set", "model.config.intermediate_size=32", "--set", "model.config.num_hidden_layers=1", *FAST]
    result = invoke(*common, "-o", tmp_path / "live", "--set", "distill.teacher_top_k=0")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert "distill_teacher_rows_computed" not in metrics and "computed live each step" in result.output
    vocab = AutoConfig.from_pretrained(str(llama_teacher)).vocab_size
    one_line_error(invoke(*common, "-o", tmp_path / "big", "--set", f"distill.teacher_top_k={vocab + 1}"),
                   "distill.teacher_top_k", f"({vocab} tokens)")
    assert not (tmp_path / "big").exists()


def _adapter_folder(root):
    root.mkdir()
    (root / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "x", "task_type": "SEQ_CLS"}))
    return root


@pytest.mark.parametrize("extra, words", [
    (["--temperature", "0"], ["distill.temperature", "greater than 0"]),
    (["--alpha", "1.5"], ["distill.alpha", "less than or equal to 1"]),
    (["--alpha", "-0.1"], ["distill.alpha"]),
    (["--student-arch", "bert"], ["not both"]),
    (["--set", "distill.teacher_top_k=-1"], ["distill.teacher_top_k", "greater than or equal to 0"]),
])
def test_bad_settings_one_line_exit_2(bert_teacher, tiny_bert, cls_data, tmp_path, extra, words):
    result = invoke("distill", "--teacher", bert_teacher, "--student", tiny_bert, "-t", "classification",
                    "-d", cls_data / "train.csv", "-o", tmp_path / "x", *extra)
    one_line_error(result, *words)


def test_bad_models_one_line_exit_2(bert_teacher, tiny_bert, llama_teacher, cls_data, text_files, tmp_path):
    adapter = _adapter_folder(tmp_path / "adapter")
    one_line_error(invoke("distill", "--teacher", adapter, "--student", tiny_bert, "-t", "classification",
                          "-d", cls_data / "train.csv", "-o", tmp_path / "a"), "LoRA adapter", "merge")
    # the teacher's classes are not the data's: refused, naming both lists
    lm_rows = tmp_path / "lm.csv"
    lm_rows.write_text("text,label\n" + "".join(f"row {i},{'yes' if i % 2 else 'no'}\n" for i in range(20)))
    one_line_error(invoke("distill", "--teacher", bert_teacher, "--student", tiny_bert, "-t", "classification",
                          "-d", lm_rows, "-o", tmp_path / "b"), "label spaces differ", "cooking, sports, weather",
                   "no, yes")
    # a student with another tokenizer: refused, naming both vocab sizes
    one_line_error(invoke("distill", "--teacher", llama_teacher, "--student", tiny_bert, "-t", "lm",
                          "-d", text_files / "train.txt", "-o", tmp_path / "c"), "do not share a tokenizer", "vocab")
    # a classifier teacher for language modelling: the task does not match
    one_line_error(invoke("distill", "--teacher", bert_teacher, "--student-arch", "llama", "-t", "lm",
                          "-d", text_files / "train.txt", "-o", tmp_path / "d"), "causal LM teacher",
                   "BertForSequenceClassification", "-t classification")
    assert not any((tmp_path / name).exists() for name in "bcd")
