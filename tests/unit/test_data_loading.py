"""llmtune.data.loading / splits / inspect: eval data, carving, column mapping, caps and the inspect report."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pytest

from llmtune.config.schema import DataConfig
from llmtune.data.loading import TaskData, load_task_data
from llmtune.data.splits import random_split_indices, stratified_split_indices
from llmtune.errors import DataError
from llmtune.tasks.registry import TASKS, ColumnSpec

CLASSIFY = TASKS["classification"].columns
QA = TASKS["qa"].columns


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def reviews(n: int, text: str = "text", label: str = "label") -> list[dict]:
    labels = ["pos", "neg", "neg", "neutral", "pos", "neg"]
    return [{text: f"review {i}", label: labels[i % len(labels)]} for i in range(n)]


def load(tmp_path: Path, rows: list[dict], spec: ColumnSpec = CLASSIFY, **cfg) -> TaskData:  # noqa: ANN003
    return load_task_data(DataConfig(dataset=write_jsonl(tmp_path / "train.jsonl", rows), **cfg), spec)


# --- stratified_split_indices (pure) ---------------------------------------------------------------


def test_stratified_keeps_every_class_on_both_sides() -> None:
    labels = ["a"] * 50 + ["b"] * 9 + ["c"] * 2 + ["d"]
    train, val = stratified_split_indices(labels, 0.1, seed=0)
    assert sorted(train + val) == list(range(len(labels)))
    assert {labels[i] for i in train} == {"a", "b", "c", "d"}
    assert {labels[i] for i in val} == {"a", "b", "c"}  # "d" has one row: it stays in train
    assert Counter(labels[i] for i in val) == {"a": 5, "b": 1, "c": 1}
    assert train == sorted(train) and val == sorted(val)


def test_stratified_matches_fraction_and_is_seeded() -> None:
    labels = [i % 3 for i in range(1000)]
    train, val = stratified_split_indices(labels, 0.2, seed=7)
    assert len(val) == 200
    assert Counter(labels[i] for i in val) == {0: 67, 1: 67, 2: 66}
    assert stratified_split_indices(labels, 0.2, seed=7) == (train, val)
    assert stratified_split_indices(labels, 0.2, seed=8) != (train, val)


def test_stratified_edge_cases() -> None:
    assert stratified_split_indices([], 0.5, seed=1) == ([], [])
    assert stratified_split_indices(["x", "y", "z"], 0.5, seed=1) == ([0, 1, 2], [])
    assert stratified_split_indices(["x", "x"], 0.9, seed=1)[0] != []  # train keeps one of each class


def test_random_split() -> None:
    train, val = random_split_indices(10, 0.3, seed=3)
    assert len(val) == 3 and sorted(train + val) == list(range(10))
    assert random_split_indices(10, 0.3, seed=3) == (train, val)


# --- evaluation data ---------------------------------------------------------------------------------


def test_validation_split_in_folder_is_used(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "d" / "train.jsonl", reviews(8))
    write_jsonl(tmp_path / "d" / "dev.jsonl", reviews(3))
    data = load_task_data(DataConfig(dataset=str(tmp_path / "d")), CLASSIFY)
    assert (len(data.train), len(data.validation)) == (8, 3)
    assert any("'validation'" in note for note in data.notes)


def test_eval_dataset_file(tmp_path: Path) -> None:
    eval_path = write_jsonl(tmp_path / "held_out.jsonl", reviews(4))
    data = load(tmp_path, reviews(10), eval_dataset=eval_path)
    assert (len(data.train), len(data.validation)) == (10, 4)
    assert data.sources["validation"] == "held_out.jsonl"


def test_eval_dataset_folder_prefers_validation_then_test(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "e" / "train.jsonl", reviews(9))
    write_jsonl(tmp_path / "e" / "test.jsonl", reviews(2))
    assert len(load(tmp_path, reviews(6), eval_dataset=str(tmp_path / "e")).validation) == 2
    assert len(load(tmp_path, reviews(6), eval_dataset=str(tmp_path / "e"), eval_split="train").validation) == 9


def test_eval_split_of_same_source(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "d" / "train.jsonl", reviews(8))
    write_jsonl(tmp_path / "d" / "test.jsonl", reviews(5))
    write_jsonl(tmp_path / "d" / "validation.jsonl", reviews(2))
    data = load_task_data(DataConfig(dataset=str(tmp_path / "d"), eval_split="test"), CLASSIFY)
    assert len(data.validation) == 5
    with pytest.raises(DataError, match=r"split 'dev' not found .*available splits: .*Pass --eval-split NAME"):
        load_task_data(DataConfig(dataset=str(tmp_path / "d"), eval_split="dev"), CLASSIFY)


def test_unknown_train_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="split 'training' not found.*available splits: train"):
        load(tmp_path, reviews(5), split="training")


# --- carving -----------------------------------------------------------------------------------------


def test_carve_is_stratified_and_noted(tmp_path: Path) -> None:
    data = load(tmp_path, reviews(60), eval_fraction=0.2)
    assert (len(data.train), len(data.validation)) == (48, 12)
    assert set(data.train["label"][:]) == set(data.validation["label"][:]) == {"pos", "neg", "neutral"}
    assert not set(data.train["text"][:]) & set(data.validation["text"][:])
    assert any("carved 20 %" in note and "stratified by label" in note and "seed 42" in note for note in data.notes)


def test_carve_without_stratify_column_is_random(tmp_path: Path) -> None:
    rows = [{"text": f"line {i}"} for i in range(20)]
    data = load(tmp_path, rows, spec=TASKS["causal_lm"].columns)
    assert (len(data.train), len(data.validation)) == (18, 2)
    assert any("random" in note for note in data.notes)


def test_carve_is_deterministic(tmp_path: Path) -> None:
    first = load(tmp_path, reviews(40))
    second = load(tmp_path, reviews(40))
    assert first.validation["text"][:] == second.validation["text"][:]


def test_one_row_cannot_be_carved(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="need at least 2 rows to carve a validation split.*--eval-dataset"):
        load(tmp_path, reviews(1))


def test_eval_fraction_leaving_no_training_rows(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="eval_fraction 0.9 leaves 0 training rows"):
        load(tmp_path, reviews(2), eval_fraction=0.9)


def test_zero_rows(tmp_path: Path) -> None:
    path = tmp_path / "header_only.csv"
    path.write_text("text,label\n", encoding="utf-8")
    with pytest.raises(DataError, match="header_only.csv has no rows"):
        load_task_data(DataConfig(dataset=str(path)), CLASSIFY)


def test_no_dataset() -> None:
    with pytest.raises(DataError, match="--dataset"):
        load_task_data(DataConfig(), CLASSIFY)


# --- columns -----------------------------------------------------------------------------------------


def test_text_and_label_column_flags(tmp_path: Path) -> None:
    data = load(tmp_path, reviews(10, text="body", label="stars"), text_column="body", label_column="stars")
    assert data.train.column_names == ["text", "label"]


def test_columns_mapping_and_pair(tmp_path: Path) -> None:
    rows = [{"q1": f"a{i}", "q2": f"b{i}", "y": i % 2} for i in range(10)]
    data = load(tmp_path, rows, text_column="q1", text_pair_column="q2", columns={"y": "label"})
    assert sorted(data.train.column_names) == ["label", "text", "text_pair"]


def test_mapping_a_missing_column_lists_columns(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load(tmp_path, reviews(5), label_column="labell")
    message = str(info.value)
    assert "column 'labell' (from --label-column) not found in train.jsonl" in message
    assert "columns are: text, label" in message and "did you mean 'label'" in message


def test_mapping_replaces_existing_canonical_column(tmp_path: Path) -> None:
    rows = [{"text": "<b>raw</b>", "clean": "raw", "label": "pos"}, {"text": "x", "clean": "y", "label": "neg"}] * 3
    data = load(tmp_path, rows, text_column="clean")
    assert data.train["text"][0] in ("raw", "y")
    assert any("replaced column 'text'" in note for note in data.notes)


def test_aliases_are_used_and_noted(tmp_path: Path) -> None:
    data = load(tmp_path, reviews(10, text="sentence", label="sentiment"))
    assert data.train.column_names == ["text", "label"] == data.validation.column_names
    assert any("'sentence'" in note and "--text-column" in note for note in data.notes)
    assert any("'sentiment'" in note for note in data.notes)


def test_ambiguous_aliases_are_not_guessed(tmp_path: Path) -> None:
    rows = [{"review": "a", "content": "b", "label": "pos"}] * 4
    with pytest.raises(DataError, match="column 'text' not found.*Pass --text-column NAME"):
        load(tmp_path, rows)


def test_missing_required_column_suggests_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load(tmp_path, reviews(5, label="polarity"))
    assert str(info.value) == (
        "column 'label' not found in train.jsonl; columns are: text, polarity. Pass --label-column polarity"
    )


def test_missing_qa_column_suggests_columns_mapping(tmp_path: Path) -> None:
    rows = [{"question": "q", "passage": "c", "answers": {"text": ["c"], "answer_start": [0]}}] * 3
    with pytest.raises(DataError, match=r"column 'context' not found.*Pass --columns passage=context"):
        load(tmp_path, rows, spec=QA)


def test_required_columns_checked_in_eval_data_too(tmp_path: Path) -> None:
    eval_path = write_jsonl(tmp_path / "eval.jsonl", [{"text": "x", "other": 1}])
    with pytest.raises(DataError, match="column 'label' not found in eval.jsonl"):
        load(tmp_path, reviews(4), eval_dataset=eval_path)


# --- caps --------------------------------------------------------------------------------------------


def test_max_samples_take_first_rows(tmp_path: Path) -> None:
    eval_path = write_jsonl(tmp_path / "eval.jsonl", reviews(30))
    data = load(tmp_path, reviews(100), max_samples=10, eval_dataset=eval_path, max_eval_samples=7)
    assert data.train["text"][:] == [f"review {i}" for i in range(10)]
    assert data.validation["text"][:] == [f"review {i}" for i in range(7)]
    assert any("max_samples" in note for note in data.notes)


def test_max_samples_applies_before_carving(tmp_path: Path) -> None:
    data = load(tmp_path, reviews(100), max_samples=20)
    assert len(data.train) + len(data.validation) == 20
    # Stratified: each of the three labels (7 pos, 10 neg, 3 neutral) gets a validation row.
    assert sorted(data.validation["label"][:]) == ["neg", "neutral", "pos"]


# --- builtin + inspect -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "task"), [
    ("text", "causal_lm"), ("classification", "classification"), ("qa", "qa"),
    ("instructions", "generation"), ("chat", "generation"),
])
def test_builtin_datasets_fit_their_tasks(name: str, task: str) -> None:
    data = load_task_data(DataConfig(dataset=f"builtin:{name}"), TASKS[task].columns)
    assert len(data.train) >= 300 and len(data.validation) >= 50


def test_inspect_report_and_rendering(tmp_path: Path) -> None:
    from rich.console import Console

    from llmtune.data.inspect import inspect_data, print_inspection

    rows = [{"text": "x" * (i + 1) * 50, "label": "pos" if i % 2 else "neg"} for i in range(20)]
    report = inspect_data(load(tmp_path, rows), CLASSIFY, n_examples=2)
    train = report["splits"]["train"]
    assert train["rows"] == 18 and report["splits"]["validation"]["rows"] == 2
    assert train["columns"] == {"text": "string", "label": "string"}
    assert len(train["examples"]) == 2 and all(len(row["text"]) <= 120 for row in train["examples"])
    assert sum(train["label_distribution"].values()) == 18 and set(train["label_distribution"]) == {"pos", "neg"}
    assert train["text_length"]["min"] == 50 and train["text_length"]["max"] <= 1000
    json.dumps(report)  # plain data, ready for --json output
    console = Console(file=io.StringIO(), width=120, record=True)
    print_inspection(report, console)
    shown = console.export_text()
    assert "train" in shown and "validation" in shown and "neg" in shown and "carved" in shown


def test_inspect_nested_columns() -> None:
    from llmtune.data.inspect import inspect_data

    report = inspect_data(load_task_data(DataConfig(dataset="builtin:qa", max_samples=50), QA), QA, n_examples=1)
    columns = report["splits"]["train"]["columns"]
    assert columns["answers"] == "{text: list<string>, answer_start: list<int64>}"
    assert "label_distribution" not in report["splits"]["train"]
