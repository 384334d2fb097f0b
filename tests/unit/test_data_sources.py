"""llmtune.data.sources: every kind of source, every error, builtin datasets, and no network for local loads."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from llmtune.data.sources import load_source, looks_like_path, select_split
from llmtune.errors import DataError

BUILTIN_ROWS = {
    "text": (2000, 100),
    "classification": (3000, 300),
    "qa": (1500, 200),
    "instructions": (1000, 100),
    "chat": (300, 50),
    "preferences": (1000, 100),
}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def rows(dataset) -> list[dict]:  # noqa: ANN001
    return [dict(row) for row in dataset]


def error_of(spec: str, split: str | None = None) -> str:
    with pytest.raises(DataError) as info:
        load_source(spec, split)
    message = str(info.value)
    assert "\n" not in message.strip()
    return message


# --- each kind of source ---------------------------------------------------------------------------


def test_csv_file_is_the_train_split(tmp_path: Path) -> None:
    path = write(tmp_path / "reviews.csv", "text,label\ngood,pos\nbad,neg\n")
    loaded = load_source(str(path))
    assert list(loaded) == ["train"]
    assert rows(loaded["train"]) == [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}]


def test_tsv_uses_tabs(tmp_path: Path) -> None:
    path = write(tmp_path / "data.tsv", "text\tlabel\na, b\t1\n")
    assert rows(load_source(str(path))["train"]) == [{"text": "a, b", "label": 1}]


def test_json_array_and_jsonl(tmp_path: Path) -> None:
    array = write(tmp_path / "a.json", json.dumps([{"q": "x", "n": 1}, {"q": "y", "n": 2}]))
    lines = write(tmp_path / "b.jsonl", '{"q": "x", "n": 1}\n\n{"q": "y", "n": 2}\n')
    for path in (array, lines):
        assert rows(load_source(str(path))["train"]) == [{"q": "x", "n": 1}, {"q": "y", "n": 2}]


def test_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"text": ["a", "b", "c"], "label": [0, 1, 0]}), path)
    assert load_source(str(path))["train"]["label"][:] == [0, 1, 0]


def test_txt_gives_one_text_row_per_nonempty_line(tmp_path: Path) -> None:
    path = write(tmp_path / "corpus.txt", "First paragraph.\n\n   \nSecond one.\nThird.\n")
    loaded = load_source(str(path))
    assert loaded["train"].column_names == ["text"]
    assert loaded["train"]["text"][:] == ["First paragraph.", "Second one.", "Third."]


def test_directory_files_named_by_split(tmp_path: Path) -> None:
    write(tmp_path / "d" / "train.jsonl", '{"x": 1}\n{"x": 2}\n')
    write(tmp_path / "d" / "dev.jsonl", '{"x": 3}\n')
    write(tmp_path / "d" / "test.json", '[{"x": 4}]')
    write(tmp_path / "d" / "README.md", "not data")
    loaded = load_source(str(tmp_path / "d"))
    assert {name: len(split) for name, split in loaded.items()} == {"train": 2, "validation": 1, "test": 1}


def test_directory_shards_and_valid_alias(tmp_path: Path) -> None:
    write(tmp_path / "d" / "train-00000-of-00002.csv", "a\n1\n")
    write(tmp_path / "d" / "train-00001-of-00002.csv", "a\n2\n")
    write(tmp_path / "d" / "valid.csv", "a\n3\n")
    loaded = load_source(str(tmp_path / "d"))
    assert sorted(loaded["train"]["a"][:]) == [1, 2]
    assert loaded["validation"]["a"][:] == [3]


def test_directory_without_split_names_is_all_train(tmp_path: Path) -> None:
    write(tmp_path / "d" / "part_a.csv", "a\n1\n")
    write(tmp_path / "d" / "part_b.csv", "a\n2\n")
    loaded = load_source(str(tmp_path / "d"))
    assert list(loaded) == ["train"] and sorted(loaded["train"]["a"][:]) == [1, 2]


def test_glob(tmp_path: Path) -> None:
    write(tmp_path / "train.jsonl", '{"x": 1}\n')
    write(tmp_path / "test.jsonl", '{"x": 2}\n')
    write(tmp_path / "other.csv", "x\n3\n")
    loaded = load_source(str(tmp_path / "*.jsonl"))
    assert {name: split["x"][:] for name, split in loaded.items()} == {"train": [1], "test": [2]}


def test_split_argument_keeps_one_split(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", "a\n1\n")
    write(tmp_path / "test.csv", "a\n2\n")
    loaded = load_source(str(tmp_path), split="test")
    assert list(loaded) == ["test"] and loaded["test"]["a"][:] == [2]


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["data/missing.csv", "missing.jsonl", "./nothing", "~/no/such/file.txt"])
def test_missing_path(spec: str) -> None:
    assert "file not found" in error_of(spec)


def test_unknown_split_lists_available(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "a\n1\n")
    message = error_of(str(path), split="validation")
    assert "split 'validation' not found" in message and "available splits: train" in message
    with pytest.raises(DataError, match="available splits: train"):
        select_split(load_source(str(path)), "tset", "a.csv")


def test_unsupported_extension_lists_supported(tmp_path: Path) -> None:
    message = error_of(str(write(tmp_path / "data.xlsx", "x")))
    assert "unsupported file type '.xlsx'" in message
    for ext in (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt"):
        assert ext in message


@pytest.mark.parametrize(("name", "content"), [
    ("empty.csv", ""), ("blank.jsonl", "  \n\n\t\n"), ("blank.txt", "\n\n"), ("empty.parquet", ""),
])
def test_empty_file(tmp_path: Path, name: str, content: str) -> None:
    message = error_of(str(write(tmp_path / name, content)))
    assert "file is empty" in message and name in message


def test_ragged_csv_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "rag.csv", "a,b\n1,2\n3,4\n5,6,7\n8,9\n")
    message = error_of(str(path))
    assert "malformed CSV" in message and "line 4" in message and "rag.csv" in message


def test_malformed_jsonl_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.jsonl", '{"a": 1}\n{"a": 2}\n{"a": 3\n{"a": 4}\n')
    message = error_of(str(path))
    assert "malformed JSON" in message and "line 3" in message and "bad.jsonl" in message


def test_malformed_json_document_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.json", '[\n  {"a": 1},\n  {"a": 2}\n  {"a": 3}\n]\n')
    message = error_of(str(path))
    assert "malformed JSON" in message and "line 4" in message


@pytest.mark.parametrize(("name", "data", "offset"), [
    ("latin.csv", b"text,label\ncaf\xe9,1\n", 14),
    ("latin.txt", b"fine line\nna\xefve\n", 12),
    ("latin.jsonl", b'{"t": "ok"}\n{"t": "\xe9"}\n', 19),
])
def test_non_utf8_names_offset_and_fix(tmp_path: Path, name: str, data: bytes, offset: int) -> None:
    message = error_of(str(write(tmp_path / name, data)))
    assert "not valid UTF-8" in message and f"offset {offset}" in message and "re-encode" in message


def test_corrupt_parquet(tmp_path: Path) -> None:
    assert "not a readable Parquet file" in error_of(str(write(tmp_path / "x.parquet", "not parquet")))


def test_directory_with_mixed_types(tmp_path: Path) -> None:
    write(tmp_path / "d" / "train.csv", "a\n1\n")
    write(tmp_path / "d" / "test.jsonl", '{"a": 1}\n')
    assert "different types" in error_of(str(tmp_path / "d"))


def test_directory_with_unplaceable_file(tmp_path: Path) -> None:
    write(tmp_path / "d" / "train.csv", "a\n1\n")
    write(tmp_path / "d" / "extra.csv", "a\n2\n")
    message = error_of(str(tmp_path / "d"))
    assert "extra.csv" in message and "train.*" in message


def test_directory_without_data_files(tmp_path: Path) -> None:
    write(tmp_path / "d" / "notes.md", "hello")
    message = error_of(str(tmp_path / "d"))
    assert "no data files" in message and ".csv" in message


def test_glob_without_matches(tmp_path: Path) -> None:
    assert "no files match" in error_of(str(tmp_path / "*.jsonl"))


@pytest.mark.parametrize("offline_env", [True, False])
def test_unreachable_hub_id_fails_fast(monkeypatch: pytest.MonkeyPatch, offline_env: bool) -> None:
    import llmtune.hub

    if not offline_env:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setattr(llmtune.hub, "_reachable_cache", {})
    start = time.perf_counter()
    message = error_of("llmtune-tests/no-such-dataset:default")
    assert time.perf_counter() - start < 5
    assert "llmtune-tests/no-such-dataset" in message
    assert "local" in message


def test_looks_like_path() -> None:
    assert looks_like_path("data/train.csv") and looks_like_path("train.jsonl") and looks_like_path("./x")
    assert looks_like_path("~/data") and looks_like_path("data/*.jsonl") and looks_like_path("a/b.xlsx")
    assert not looks_like_path("imdb") and not looks_like_path("glue:sst2") and not looks_like_path("user/data.v2")


def test_local_load_makes_no_network_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    # Simulate a shell without any offline variable: datasets would then ping the hub per load.
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_UPDATE_DOWNLOAD_COUNTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_UPDATE_DOWNLOAD_COUNTS", True)
    lookups: list[object] = []

    def refuse(host, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        lookups.append(host)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    path = write(tmp_path / "fast.csv", "text,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(200)))
    start = time.perf_counter()
    assert len(load_source(str(path))["train"]) == 200
    assert time.perf_counter() - start < 1.5
    assert lookups == []


# --- builtin datasets ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILTIN_ROWS))
def test_builtin_loads_with_sane_sizes(name: str) -> None:
    loaded = load_source(f"builtin:{name}")
    min_train, min_valid = BUILTIN_ROWS[name]
    assert set(loaded) == {"train", "validation"}
    assert min_train <= len(loaded["train"]) <= 3 * min_train
    assert min_valid <= len(loaded["validation"]) <= 3 * min_valid


def test_builtin_columns() -> None:
    assert load_source("builtin:classification")["train"].column_names == ["text", "label"]
    assert set(load_source("builtin:classification")["validation"]["label"][:]) == {"negative", "neutral", "positive"}
    assert load_source("builtin:instructions")["train"].column_names == ["instruction", "input", "output"]
    first = load_source("builtin:chat")["train"][0]["messages"]
    assert first[-1]["role"] == "assistant" and {m["role"] for m in first} <= {"system", "user", "assistant"}


def test_builtin_qa_offsets_are_correct() -> None:
    qa = load_source("builtin:qa")
    assert qa["train"].column_names == ["id", "title", "context", "question", "answers"]
    for split in qa.values():
        for row in split:
            text, start = row["answers"]["text"][0], row["answers"]["answer_start"][0]
            assert row["context"][start : start + len(text)] == text


def test_unknown_builtin_lists_names() -> None:
    message = error_of("builtin:sentiment")
    assert "unknown builtin dataset 'sentiment'" in message
    for name in BUILTIN_ROWS:
        assert name in message


def test_list_builtin_describes_every_dataset() -> None:
    from llmtune.data import list_builtin

    described = list_builtin()
    assert set(described) == set(BUILTIN_ROWS) and all(described.values())


def test_builtin_files_are_current_and_small() -> None:
    from llmtune.data.builtin import generate

    assert generate.main(["--check"]) == 0, "builtin files differ from the generator's output"
    total = sum(p.stat().st_size for p in generate.OUT.rglob("*") if p.suffix in (".txt", ".jsonl"))
    assert total < 3 * 1024 * 1024
