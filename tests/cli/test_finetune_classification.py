"""End-to-end ``llmtune finetune --task classification`` on a tiny BERT built in-process.

The model folder is what ``llmtune pretrain --arch bert`` writes (BertForMaskedLM + WordPiece
tokenizer), built from a config in a second instead of pre-trained; the data has class keywords a
2-layer, 32-wide BERT learns in a few epochs, so accuracy must end far above the majority rate.
"""

import csv
import json
import shutil

import pytest
from helpers import CLASSES, classification_rows, invoke, png_size, write_csv, write_jsonl

# The encoder is random, not pre-trained: a larger initial scale for the new pooler/head (a model.config
# override, passed through to from_pretrained) lets it find the keywords in 3 epochs on every seed tried.
# Its random token embeddings must learn too, so they are not frozen as the default recipe does.
FAST = ["--epochs", "3", "--lr", "3e-3", "--batch-size", "8", "--set", "train.max_length=32",
        "--set", "model.config={initializer_range: 0.2}", "--set", "train.logging_steps=5",
        "--set", "train.freeze_embeddings=false"]


@pytest.fixture(scope="module")
def finetuned(tiny_bert, cls_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "cls"
    result = invoke("finetune", "--task", "classification", "--model", tiny_bert, "--dataset", cls_data / "train.csv",
                    "--eval-dataset", cls_data / "val.csv", "-o", out, *FAST)
    return result, out


def test_finetune_learns_and_reports(finetuned, cls_data):
    result, out = finetuned
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    val = list(csv.DictReader(open(cls_data / "val.csv")))
    majority = max(sum(r["label"] == name for r in val) for name in CLASSES) / len(val)
    assert majority < 0.5 and metrics["eval_accuracy"] >= 0.85
    for key in ("f1_macro", "f1_micro", "f1_weighted", "precision_macro", "recall_weighted"):
        assert 0 <= metrics[f"eval_{key}"] <= 1
    assert metrics["labels"] == sorted(CLASSES)
    matrix = metrics["confusion_matrix"]
    assert len(matrix) == 3 and all(len(row) == 3 for row in matrix) and sum(map(sum, matrix)) == len(val)
    assert [row["label"] for row in metrics["per_class"]] == sorted(CLASSES)
    assert sum(row["support"] for row in metrics["per_class"]) == len(val)
    for name in ("confusion_matrix.png", "per_class_f1.png"):
        width, height = png_size(out / "plots" / name)
        assert width > 100 and height > 100
    assert "classes in training data (3 classes, 200 rows)" in result.output
    assert "new weights (trained from scratch" in result.output and "classifier" in result.output
    assert (out / "run_complete.json").is_file() and (out / "model.safetensors").is_file()


def test_saved_model_reproduces_eval_accuracy(finetuned, cls_data):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _, out = finetuned
    model = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    assert model.config.id2label == dict(enumerate(sorted(CLASSES)))
    val = list(csv.DictReader(open(cls_data / "val.csv")))
    batch = tok([r["text"] for r in val], truncation=True, max_length=32, padding=True, return_tensors="pt")
    with torch.no_grad():
        predicted = model(**batch).logits.argmax(-1).tolist()
    accuracy = sum(model.config.id2label[p] == r["label"] for p, r in zip(predicted, val)) / len(val)
    assert accuracy == pytest.approx(json.loads((out / "metrics.json").read_text())["eval_accuracy"])


def test_multi_label_with_balanced_weights(tiny_bert, tmp_path, monkeypatch):
    """List-valued labels train a multi-label head; ``--set train.class_weights=balanced`` reaches the loss.

    Training rows 0-39 (the blank row is skipped): ``classification_rows`` gives row i sports when
    i % 5 == 0, else class i % 3 (sports, weather, cooking), and "news" joins every 4th row, so the counts
    are cooking 10, news 10, sports 8 + 11 = 19, weather 11 of 40. Balanced multi-label weights are each
    label's negatives / positives: 30/10, 30/10, 21/19, 29/11. One epoch of 40 rows in batches of 8 is
    5 training steps, each computing its loss with them (evaluation calls run without gradients).
    """
    import torch

    from llmtune.tasks.classification import WeightedLoss

    rows = [{"text": r["text"], "label": [r["label"], "news"] if i % 4 == 0 else [r["label"]]}
            for i, r in enumerate(classification_rows(48, seed=3))]
    write_jsonl(tmp_path / "train.jsonl", rows[:40] + [{"text": "  ", "label": ["news"]}])
    write_jsonl(tmp_path / "val.jsonl", rows[40:])
    losses = []
    original = WeightedLoss.__call__

    def spy(self, *args, **kwargs):
        losses.append((self.weights, torch.is_grad_enabled()))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(WeightedLoss, "__call__", spy)
    out = tmp_path / "run"
    result = invoke("finetune", "--task", "classification", "--model", tiny_bert,
                    "--dataset", tmp_path / "train.jsonl", "--eval-dataset", tmp_path / "val.jsonl", "-o", out,
                    "--epochs", "1", "--batch-size", "8", "--set", "train.max_length=32",
                    "--set", "train.class_weights=balanced")
    assert result.exit_code == 0, result.output
    assert "multi-label" in result.output
    assert "class weights: cooking 3, news 3, sports 1.11, weather 2.64" in result.output
    assert "skipped 1 of 41 rows of the training data (train.jsonl) with an empty text" in result.output
    assert losses and len(losses[0][0]) == 4
    assert sum(training for _, training in losses) == 5
    for weights, _ in losses:
        assert weights == pytest.approx([30 / 10, 30 / 10, 21 / 19, 29 / 11])
    metrics = json.loads((out / "metrics.json").read_text())
    assert "confusion_matrix" not in metrics and len(metrics["per_class"]) == 4
    assert (out / "plots" / "per_class_f1.png").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert sorted(config["id2label"].values()) == sorted([*CLASSES, "news"])


@pytest.fixture(scope="module")
def classifier_2_labels(tiny_bert, tmp_path_factory):
    """A folder that already holds a 2-label classification head."""
    from transformers import AutoModelForSequenceClassification

    root = tmp_path_factory.mktemp("cls2")
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2)
    model.save_pretrained(str(root))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_bert / name, root / name)
    return root


@pytest.fixture(scope="module")
def bad_inputs(tiny_bert, classifier_2_labels, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    good = classification_rows(30, seed=5)
    write_csv(root / "train.csv", good)
    (root / "stars.csv").write_text("text,stars\n" + "".join(f"{r['text']},{i % 2}\n" for i, r in enumerate(good)))
    floats = "".join(f"{r['text']},{i % 3 + 0.5}\n" for i, r in enumerate(good))
    (root / "floats.csv").write_text("text,label\n" + floats)
    write_jsonl(root / "dicts.jsonl", [{"text": r["text"], "label": {"name": r["label"]}} for r in good])
    write_csv(root / "one.csv", [{**r, "label": "sports"} for r in good])
    write_csv(root / "unseen.csv", [{**r, "label": "politics"} for r in good[:4]] + good[4:])
    write_jsonl(root / "mixed.jsonl", [{"text": r["text"], "label": [r["label"], 1]} for r in good])
    no_tok = root / "no-tokenizer"
    no_tok.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_bert / name, no_tok / name)
    return {"root": root, "bert": tiny_bert, "cls2": classifier_2_labels}


BAD = [
    ("label column missing", "bert", "stars.csv", None, ["label", "--label-column stars"]),
    ("float labels", "bert", "floats.csv", None, ["float", "integer ids or string names"]),
    ("dict labels", "bert", "dicts.jsonl", None, ["dict", "integer ids or string names"]),
    ("single class", "bert", "one.csv", None, ["single class", "'sports'"]),
    ("unseen validation label", "bert", "train.csv", "unseen.csv", ["'politics' (4 rows)", "never occur"]),
    ("mixed multi-label types", "bert", "mixed.jsonl", None, ["inconsistent label types"]),
    ("model without tokenizer", "root/no-tokenizer", "train.csv", None, ["no tokenizer", "--set model.tokenizer="]),
    ("head size mismatch", "cls2", "train.csv", None, ["2 labels", "3 classes", "model.ignore_mismatched_sizes=true"]),
]


@pytest.mark.parametrize(("name", "model", "train", "val", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_one_line_exit_2(bad_inputs, tmp_path, name, model, train, val, words):
    root = bad_inputs["root"]
    model_dir = root / model.split("/", 1)[1] if model.startswith("root/") else bad_inputs[model]
    out = tmp_path / "run"
    extra = ["--eval-dataset", root / val] if val else []
    result = invoke("finetune", "--task", "classification", "--model", model_dir, "--dataset", root / train,
                    *extra, "-o", out, "--max-steps", "1")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("[llmtune]")]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not out.exists(), "a run that failed on bad input leaves no run dir behind"


def test_ignore_mismatched_sizes_replaces_head(bad_inputs, tmp_path):
    out = tmp_path / "run"
    result = invoke("finetune", "--task", "classification", "--model", bad_inputs["cls2"], "--dataset",
                    bad_inputs["root"] / "train.csv", "-o", out, "--max-steps", "2", "--batch-size", "4",
                    "--set", "model.ignore_mismatched_sizes=true", "--set", "train.max_length=32")
    assert result.exit_code == 0, result.output
    assert "re-initialised for a new shape: classifier" in result.output
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "cooking", "1": "sports", "2": "weather"}


def test_default_recipe_freezes_token_embeddings_and_drops_dropout(tiny_bert, cls_data, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "run"
    result = invoke("finetune", "--task", "classification", "--model", tiny_bert, "--dataset", cls_data / "train.csv",
                    "--eval-dataset", cls_data / "val.csv", "-o", out, "--max-steps", "3", "--set", "train.max_length=32")
    assert result.exit_code == 0, result.output
    assert "frozen: input embeddings" in result.output
    assert "new weights (trained from scratch, at 10x the lr): bert.pooler.dense, classifier" in result.output
    before = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=3)
    after = AutoModelForSequenceClassification.from_pretrained(str(out))
    assert after.config.hidden_dropout_prob == 0.0 and after.config.attention_probs_dropout_prob == 0.0
    emb = "bert.embeddings.word_embeddings.weight"
    layer = "bert.encoder.layer.0.attention.self.query.weight"
    assert before.state_dict()[emb].equal(after.state_dict()[emb])
    assert not before.state_dict()[layer].equal(after.state_dict()[layer])


def test_lora_saves_adapters_and_a_merged_model(tiny_bert, cls_data, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "lora"
    result = invoke("finetune", "--task", "classification", "--model", tiny_bert, "--dataset", cls_data / "train.csv",
                    "--eval-dataset", cls_data / "val.csv", "-o", out, "--lora", "--max-steps", "6", *FAST[2:])
    assert result.exit_code == 0, result.output
    # 2 layers x (query, key, value, 3 dense); the new pooler and classifier train in full.
    assert "LoRA r=8 on 12 layers" in result.output and "(bert.pooler.dense, classifier in full)" in result.output
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    tok = AutoTokenizer.from_pretrained(str(out))
    batch = tok(["rain and wind today", "the team scored a goal"], padding=True, return_tensors="pt")
    merged = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    labels = merged.config.id2label
    base = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=3, id2label=labels)
    adapted = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    with torch.no_grad():
        assert torch.allclose(merged(**batch).logits, adapted(**batch).logits, atol=1e-5)


def test_qa_plugs_into_the_same_runner(tiny_bert, tmp_path):
    """The runner's spine is task-agnostic: extractive QA goes through it with a small adapter."""
    from transformers import AutoModelForQuestionAnswering

    out = tmp_path / "qa"
    result = invoke("finetune", "--task", "qa", "--model", tiny_bert, "--dataset", "builtin:qa", "--max-samples", "32",
                    "--set", "data.max_eval_samples=16", "--max-steps", "2", "--batch-size", "8",
                    "--set", "train.max_length=64", "-o", out)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["eval_exact_match"] <= 100 and 0 <= metrics["eval_f1"] <= 100
    assert len(json.loads((out / "predictions.json").read_text())) == 16
    AutoModelForQuestionAnswering.from_pretrained(str(out))
