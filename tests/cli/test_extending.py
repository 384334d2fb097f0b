"""Adding a task is one module plus one registry entry (docs/extending-tasks.md): the toy task in tests/toy_task.py
is registered here only, and the unchanged finetune runner trains it."""

import json

import pytest
import toy_task
from helpers import write_jsonl

from llmtune.config import load_config
from llmtune.errors import ConfigError
from llmtune.tasks.registry import TASKS


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(TASKS, "parity", toy_task.INFO)


def test_an_unregistered_task_is_refused():
    with pytest.raises(ConfigError, match="unknown task 'parity'"):
        load_config("finetune", flags={"task": "parity", "data.dataset": "x.jsonl"})


def test_a_registered_toy_task_trains_for_two_steps(registered, tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from llmtune.runs.finetune import run

    words = "the cat sat on a mat by the door today".split()
    write_jsonl(tmp_path / "texts.jsonl", [{"text": " ".join(words[: 1 + i % 9])} for i in range(40)])
    cfg = load_config("finetune", flags={"task": "parity", "model.name_or_path": str(tiny_bert),
                                         "data.dataset": str(tmp_path / "texts.jsonl"), "train.max_steps": 2,
                                         "train.batch_size": 8, "train.output_dir": str(tmp_path / "run")})
    result = run(cfg)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["parity_training_rows"] == 36  # 40 rows, 10 % carved off for evaluation
    assert 0 <= metrics["eval_accuracy"] <= 1 and metrics["eval_accuracy"] * 4 == round(metrics["eval_accuracy"] * 4)
    steps = [json.loads(line) for line in (result.run_dir / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert max(r.get("step", 0) for r in steps) == 2
    model = AutoModelForSequenceClassification.from_pretrained(str(result.run_dir))
    assert model.config.num_labels == 2 and (result.run_dir / "run_complete.json").is_file()
