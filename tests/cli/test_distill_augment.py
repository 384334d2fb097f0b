"""`llmtune distill -t classification` with a transfer set (distill.augment): masked copies, KL only, eval untouched."""

import json

import pytest
from helpers import classification_rows, invoke, one_line_error, read_jsonl, save_bert_classifier

NAMES = ["cooking", "sports", "weather"]  # the classes of helpers.classification_rows, sorted as llmtune numbers them
FAST = ["--batch-size", "64", "--set", "train.logging_steps=1", "--set", "train.max_length=32",
        "--set", "train.eval_batch_size=64"]


@pytest.fixture(scope="module")
def bert_teacher(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    save_bert_classifier(root, tiny_bert, NAMES)
    return root


def test_transfer_set_triples_the_training_rows_and_leaves_evaluation_alone(bert_teacher, tiny_bert, cls_data,
                                                                            tmp_path):
    out = tmp_path / "student"
    result = invoke("distill", "--teacher", bert_teacher, "--student", tiny_bert, "-t", "classification",
                    "-d", cls_data / "train.csv", "--eval-dataset", cls_data / "val.csv", "-o", out, "--epochs", "1",
                    "--set", "distill.augment=2", "--set", "distill.augment_mask=0.3", *FAST)
    assert result.exit_code == 0, result.output
    assert "transfer set: 400 masked copies" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    # one epoch over 200 rows + 2 x 200 copies at batch 64: ceil(600 / 64) = 10 steps, 600 rows through the teacher
    assert max(r["step"] for r in read_jsonl(out / "logs" / "metrics.jsonl")) == 10
    assert metrics["distill_teacher_rows_computed"] + metrics["distill_teacher_rows_cached"] == 600
    assert sum(metrics["confusion_matrix"][i][j] for i in range(3) for j in range(3)) == 60  # the 60 eval rows only
    assert metrics["distill_kd_term"] > 0 and metrics["distill_task_term"] > 0


def test_augment_is_refused_outside_classification(bert_teacher, tiny_bert, text_files, tmp_path):
    one_line_error(invoke("distill", "--teacher", bert_teacher, "--student", tiny_bert, "-t", "lm",
                          "-d", text_files / "train.txt", "-o", tmp_path / "x", "--set", "distill.augment=1"),
                   "distill.augment", "classification")


def test_transfer_data_adds_its_rows_to_the_masked_copies(bert_teacher, tiny_bert, cls_data, tmp_path):
    extra = tmp_path / "unlabelled.txt"  # 100 lines of text (two blank ones skipped), no labels
    lines = [r["text"] for r in classification_rows(100, seed=3)]
    extra.write_text("\n".join(lines[:50] + ["", " "] + lines[50:]) + "\n")
    out = tmp_path / "student"
    result = invoke("distill", "--teacher", bert_teacher, "--student", tiny_bert, "-t", "classification",
                    "-d", cls_data / "train.csv", "--eval-dataset", cls_data / "val.csv", "-o", out, "--epochs", "1",
                    "--transfer-data", extra, "--set", "distill.augment=1", *FAST)
    assert result.exit_code == 0, result.output
    assert "transfer set: 200 masked copies" in result.output and "transfer set: 100 rows of" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    # one epoch over 200 rows + 200 copies + 100 unlabelled rows at batch 64: ceil(500 / 64) = 8 steps
    assert max(r["step"] for r in read_jsonl(out / "logs" / "metrics.jsonl")) == 8
    assert metrics["distill_teacher_rows_computed"] + metrics["distill_teacher_rows_cached"] == 500
    assert sum(metrics["confusion_matrix"][i][j] for i in range(3) for j in range(3)) == 60  # the 60 eval rows only


def test_transfer_data_errors(bert_teacher, tiny_bert, cls_data, text_files, tmp_path):
    one_line_error(invoke("distill", "--teacher", bert_teacher, "--student", tiny_bert, "-t", "lm",
                          "-d", text_files / "train.txt", "-o", tmp_path / "x", "--transfer-data", text_files / "val.txt"),
                   "--transfer-data", "classification")
    questions = tmp_path / "questions.csv"
    questions.write_text("question\nwhat is the weather like\n")
    one_line_error(invoke("distill", "--teacher", bert_teacher, "--student", tiny_bert, "-t", "classification",
                          "-d", cls_data / "train.csv", "-o", tmp_path / "y", "--transfer-data", questions),
                   "transfer data", "distill.transfer_column")
    assert not (tmp_path / "y").exists()  # a fresh run dir that failed on bad input is removed
