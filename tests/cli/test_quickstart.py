"""`llmtune quickstart`: every stage runs on a sliver of the builtin data (2 steps each) and leaves its run dir."""

import json

import pytest

from llmtune.data.builtin import builtin_dir
from llmtune.pipelines.quickstart import STAGES, label_baselines, logged

ROWS = 24  # training and evaluation rows per stage


@pytest.fixture(scope="module")
def quickstart_dir(tmp_path_factory):
    from typer.testing import CliRunner

    from llmtune.cli.app import app

    out = tmp_path_factory.mktemp("qs") / "demo"
    result = CliRunner().invoke(app, ["quickstart", "-o", str(out), "--max-steps", "2", "--max-samples", str(ROWS),
                                      "--lm-budget", "60s", "--mlm-budget", "60s"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_every_stage_leaves_a_finished_run(quickstart_dir):
    out, output = quickstart_dir
    summary = json.loads((out / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == [
        "tokenizer (BPE)", "pre-train causal LM (Llama)", "SFT on instructions", "pre-train masked LM (BERT)",
        "classifier (reviews)", "extractive QA", "generate (SFT model)"]
    assert len(summary["stages"]) == len(STAGES)
    for run in ("tokenizer", "llama-tiny", "llama-tiny/eval", "sft", "sft/eval", "bert-tiny", "classifier",
                "classifier/eval", "qa", "qa/eval"):
        assert (out / run / "run_complete.json").is_file(), run
    # Two steps each: the step cap reached every training stage.
    for run in ("llama-tiny", "sft", "bert-tiny", "classifier", "qa"):
        logged = [json.loads(line) for line in (out / run / "logs" / "metrics.jsonl").read_text().splitlines() if line]
        assert max(entry.get("step", 0) for entry in logged) == 2, run
    assert (out / "classifier" / "eval" / "plots" / "confusion_matrix.png").is_file()
    assert "llmtune quickstart: done" in output and "summary.md" in output
    assert (out / "summary.md").read_text().count("\n| ") == len(STAGES) + 1  # header + one row per stage


def test_generations_and_baselines(quickstart_dir):
    out, _ = quickstart_dir
    summary = json.loads((out / "summary.json").read_text())
    lines = (out / "generations.jsonl").read_text().splitlines()
    assert len(lines) == len(summary["generations"]) == 5
    assert all(json.loads(line)["prompt"].startswith("### Instruction:\n") for line in lines)
    # The classifier's baselines are those of the first ROWS validation rows (what eval scored).
    labels = [json.loads(line)["label"]
              for line in (builtin_dir("classification") / "validation.jsonl").read_text().splitlines()[:ROWS]]
    majority = max(labels.count(label) for label in set(labels)) / ROWS
    row = next(s for s in summary["stages"] if s["stage"] == "classifier (reviews)")
    assert row["baseline"] == f"chance 33.3 %, majority {100 * majority:.1f} %"  # 3 classes


def test_refuses_a_used_folder_without_overwrite(cli, tmp_path):
    (tmp_path / "old.txt").write_text("x")
    result = cli("quickstart", "-o", str(tmp_path))
    assert result.exit_code == 2 and "--overwrite" in result.output


def test_bad_budget_is_one_line(cli, tmp_path):
    result = cli("quickstart", "-o", str(tmp_path / "q"), "--lm-budget", "soon")
    assert result.exit_code == 2 and "--lm-budget" in result.output and "not a duration" in result.output


def test_label_baselines_from_supports():
    metrics = {"per_class": [{"label": "a", "support": 6}, {"label": "b", "support": 3}, {"label": "c", "support": 1}]}
    assert label_baselines(metrics) == (1 / 3, 0.6)
    assert label_baselines({**metrics, "labels": ["a", "b", "c", "d"]}) == (1 / 4, 0.6)  # a class absent from the rows
    assert all(v != v for v in label_baselines({}))  # NaN when nothing is known


def test_logged(tmp_path):
    assert logged(tmp_path, "eval_loss") == []  # no logs
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "metrics.jsonl").write_text('{"loss": 3}\n\n{"eval_loss": 2.5}\n{"eval_loss": 1.0}\n')
    assert logged(tmp_path, "eval_loss") == [2.5, 1.0]
    assert logged(tmp_path, "missing") == []


def test_encoder_corpus_adds_the_review_texts_without_labels(tmp_path):
    import json

    from llmtune.data.builtin import builtin_dir
    from llmtune.pipelines.quickstart import encoder_corpus

    train, validation = encoder_corpus(tmp_path / "corpus")
    lines = train.read_text(encoding="utf-8").splitlines()
    prose = (builtin_dir("text") / "train.txt").read_text(encoding="utf-8").splitlines()
    reviews = [json.loads(r)["text"] for r in (builtin_dir("classification") / "train.jsonl").read_text().splitlines()]
    assert lines == prose + reviews  # the prose, then one review per line; no label anywhere
    held_out = validation.read_text(encoding="utf-8")
    assert json.loads((builtin_dir("classification") / "validation.jsonl").read_text().splitlines()[0])["text"] in held_out
