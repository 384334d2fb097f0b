"""`llmtune data clean` end to end on a small hand-made corpus whose clean result is known in advance."""

import hashlib
import json
from pathlib import Path

import pytest
from helpers import one_line_error, png_size

PROSE = Path(__file__).resolve().parents[2] / "llmtune" / "data" / "builtin" / "text" / "train.txt"
EXTRA = ("Our village library opened a new reading room last winter. Volunteers painted the walls, built "
         "shelves from old oak planks and collected more than two thousand books from neighbours. On Saturday "
         "mornings a retired teacher reads stories to small children, while their parents drink tea and talk "
         "about the harvest, the weather and the price of bread.")
GERMAN = ("Der Hund läuft jeden Morgen schnell über die Straße und bellt laut, weil er die Katze im Garten "
          "sieht und sie jagen will, aber sie ist viel zu schnell für ihn und klettert auf den Baum.")


def corpus() -> tuple[list[str], list[int]]:
    """14 documents and the rows a default clean keeps (by hand: the defects are planted)."""
    prose = PROSE.read_text(encoding="utf-8").split("\n")
    long_doc = prose[0] + " " + EXTRA
    words = long_doc.split()
    near = " ".join(w if i not in (40, len(words) - 1) else "zebra" for i, w in enumerate(words))  # Jaccard 0.90
    docs = [
        long_doc,                                                    # 0 kept
        prose[1],                                                    # 1 kept
        "<html><body><nav>Home | About</nav><p>" + prose[2] + "</p></body></html>",  # 2 kept (HTML converted)
        GERMAN,                                                      # 3 language
        "Too short.",                                                # 4 length
        prose[4] + " It\u00e2\u20ac\u2122s a quiet place.",             # 5 kept (mojibake repaired)
        long_doc,                                                    # 6 exact copy of 0
        prose[5],                                                    # 7 kept
        near,                                                        # 8 near copy of 0
        prose[6],                                                    # 9 kept
        prose[1],                                                    # 10 exact copy of 1 (another shard at 3 rows/shard)
        prose[7] + "\nWe use cookies. Accept all",                   # 11 kept, cookie line dropped
        prose[8],                                                    # 12 kept
        near.upper(),                                                # 13 exact copy (case) of 8
    ]
    return docs, [0, 1, 2, 5, 7, 9, 11, 12]


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    path = tmp_path / "raw" / "raw.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps({"text": t, "url": f"u{i}"}) + "\n" for i, t in enumerate(corpus()[0])))
    return path


def texts_of(out: Path) -> list[str]:
    """Every cleaned text in file order."""
    rows = []
    for path in sorted(out.glob("train-*.jsonl")):
        rows += [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
    return rows


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_clean_keeps_the_expected_documents_and_reports_each_stage(cli, raw, tmp_path):
    before = digest(raw)
    out = tmp_path / "corpus"
    result = cli("data", "clean", "--dataset", raw, "-o", out, "--set", "clean.shard_rows=3")
    assert result.exit_code == 0, result.output
    assert digest(raw) == before, "the input is never modified"
    docs, kept = corpus()
    texts = texts_of(out)
    assert len(texts) == len(kept)
    assert texts[0] == docs[0] and texts[1] == docs[1]
    assert texts[2].startswith(PROSE.read_text().split("\n")[2][:40]) and "<p>" not in texts[2] and "Home" not in texts[2]
    assert texts[3].endswith("It’s a quiet place.")  # mojibake repaired to the curly quote it was
    assert "cookies" not in texts[6]
    report = json.loads((out / "report" / "clean_report.json").read_text())
    stages = report["stages"]
    assert (report["input"]["docs"], report["output"]["docs"]) == (14, 8)
    assert stages["length"]["removed"] == {"too_short": 1}
    assert stages["language"]["removed"] == {"language_de": 1}
    assert stages["exact_dedup"]["removed"] == {"duplicate": 3}
    assert stages["near_dedup"]["removed"] == {"duplicate": 1}
    assert stages["near_dedup"]["docs_out"] == 8 and stages["exact_dedup"]["docs_out"] == 9
    assert report["duplicate_clusters"][0]["kept_row"] == 0 and report["duplicate_clusters"][0]["size"] == 4  # 0, 6, 8, 13
    assert "| 10 | near_dedup | yes | 9 | 8 |" in (out / "report" / "report.md").read_text()
    removed = [json.loads(line) for line in (out / "report" / "removed.jsonl").read_text().splitlines()]
    assert sorted((r["row"], r["stage"], r["detail"]) for r in removed) == [
        (3, "language", None), (4, "length", None), (6, "exact_dedup", "copy of row 0"),
        (8, "near_dedup", "copy of row 6"), (10, "exact_dedup", "copy of row 1"), (13, "exact_dedup", "copy of row 8")]
    assert png_size(out / "report" / "lengths.png")[0] > 100
    assert not (tmp_path / "corpus.partial").exists()
    import datasets  # the report folder's JSON files are not data

    assert datasets.load_dataset(str(out), split="train")["text"] == texts


def test_output_loads_with_the_data_layer_and_load_dataset(cli, raw, tmp_path):
    import datasets

    from llmtune.data.sources import load_source

    out = tmp_path / "corpus"
    assert cli("data", "clean", "--dataset", raw, "-o", out, "--format", "parquet").exit_code == 0
    loaded = load_source(str(out))
    assert list(loaded) == ["train"] and loaded["train"].column_names == ["text"] and len(loaded["train"]) == 8
    assert len(datasets.load_dataset(str(out), split="train")) == 8
    kept = tmp_path / "with-url"
    assert cli("data", "clean", "--dataset", raw, "-o", kept, "--set", "clean.keep_columns=[url]").exit_code == 0
    rows = load_source(str(kept))["train"]
    assert rows.column_names == ["text", "url"] and rows["url"] == [f"u{i}" for i in corpus()[1]]


def test_sharded_runs_then_a_final_run_equal_the_single_run(cli, raw, tmp_path):
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    args = ("data", "clean", "--dataset", raw, "--set", "clean.shard_rows=3")
    assert cli(*args, "-o", single).exit_code == 0
    first = cli(*args, "-o", sharded, "--shard", "0/2")
    assert first.exit_code == 0, first.output
    assert not sharded.exists() and (tmp_path / "sharded.partial" / "shards" / "00002" / "stats.json").is_file()
    assert cli(*args, "-o", sharded, "--shard", "1/2").exit_code == 0
    assert cli(*args, "-o", sharded).exit_code == 0
    assert texts_of(sharded) == texts_of(single) and len(texts_of(single)) == 8


def test_the_final_step_refuses_until_every_slice_has_finished(cli, raw, tmp_path):
    out = tmp_path / "sharded"
    args = ("data", "clean", "--dataset", raw, "--set", "clean.shard_rows=3", "-o", out)
    assert cli(*args, "--shard", "0/2").exit_code == 0  # 14 rows, 5 shards: slice 0 has 0, 2, 4; slice 1 has 1, 3
    one_line_error(cli(*args), "2 of 5 shards are not finished", "shard 1 (rows 3-5, slice 1/2)",
                   "shard 3 (rows 9-11, slice 1/2)", "with --shard 1/2")
    assert not out.exists() and not (tmp_path / "sharded.partial" / "shards" / "00001").exists()
    assert cli(*args, "--shard", "1/2").exit_code == 0
    assert cli(*args).exit_code == 0 and len(texts_of(out)) == 8


def test_two_workers_give_the_single_worker_result(cli, raw, tmp_path):
    args = ("data", "clean", "--dataset", raw, "--set", "clean.shard_rows=3")
    assert cli(*args, "-o", tmp_path / "one").exit_code == 0
    assert cli(*args, "-o", tmp_path / "two", "--num-workers", "2").exit_code == 0
    assert texts_of(tmp_path / "two") == texts_of(tmp_path / "one")


def test_a_killed_run_resumes_without_redoing_finished_shards(cli, raw, tmp_path, monkeypatch):
    from llmtune.data.clean import pipeline

    real, calls = pipeline.process_shard, []

    def dies_on_the_third(dataset, column, bounds, folder, cfg):
        calls.append(bounds[0])
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real(dataset, column, bounds, folder, cfg)

    monkeypatch.setattr(pipeline, "process_shard", dies_on_the_third)
    args = ("data", "clean", "--dataset", raw, "-o", tmp_path / "out", "--set", "clean.shard_rows=3")
    assert cli(*args).exit_code == 1
    assert not (tmp_path / "out").exists()
    calls.clear()
    monkeypatch.setattr(pipeline, "process_shard", lambda *a: (calls.append(a[2][0]), real(*a))[1])
    assert cli(*args).exit_code == 0
    assert calls == [6, 9, 12]  # shards 0 (rows 0-2) and 1 (rows 3-5) were finished before the kill
    assert cli("data", "clean", "--dataset", raw, "-o", tmp_path / "ref", "--set", "clean.shard_rows=3").exit_code == 0
    assert texts_of(tmp_path / "out") == texts_of(tmp_path / "ref")


def test_overwrite_replaces_an_existing_output(cli, raw, tmp_path):
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "old.txt").write_text("old")
    assert cli("data", "clean", "--dataset", raw, "-o", out, "--overwrite").exit_code == 0
    assert not (out / "old.txt").exists() and len(texts_of(out)) == 8


def test_decontamination_drops_the_document_sharing_a_13_gram(cli, raw, tmp_path):
    prose = PROSE.read_text(encoding="utf-8").split("\n")
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text(json.dumps({"question": " ".join(prose[5].split()[3:16]), "answer": "x"}) + "\n")
    out = tmp_path / "corpus"
    assert cli("data", "clean", "--dataset", raw, "-o", out, "--decontaminate", eval_file).exit_code == 0
    report = json.loads((out / "report" / "clean_report.json").read_text())
    assert report["stages"]["decontaminate"]["removed"] == {"shares_ngram": 1}
    assert report["stages"]["decontaminate"]["examples"]["shares_ngram"][0]["row"] == 7
    assert prose[5] not in texts_of(out)


def test_print_config_shows_the_clean_section(cli, raw):
    result = cli("data", "clean", "--dataset", raw, "--recipe", "clean/web", "--print-config")
    assert result.exit_code == 0
    assert "near_dedup:" in result.output and "min_words: 50" in result.output


def _bad_files(root: Path) -> None:
    (root / "in").mkdir()
    (root / "in" / "body.jsonl").write_text('{"body": "some words here", "url": "x"}\n')
    (root / "in" / "latin1.jsonl").write_bytes(b'{"text": "caf\xe9 au lait"}\n')
    (root / "in" / "ok.jsonl").write_text('{"text": "a tiny document"}\n')
    (root / "taken").mkdir()
    (root / "taken" / "x.txt").write_text("x")


BAD = [
    ("no text column", ["--dataset", "{r}/in/body.jsonl", "-o", "{r}/o"], ["column 'text' not found", "body, url", "--text-column body"]),
    ("not utf-8", ["--dataset", "{r}/in/latin1.jsonl", "-o", "{r}/o"], ["not valid UTF-8", "offset 13"]),
    ("everything filtered", ["--dataset", "{r}/in/ok.jsonl", "-o", "{r}/o"], ["every document was removed", "length 1"]),
    ("threshold out of range", ["--dataset", "{r}/in/ok.jsonl", "-o", "{r}/o", "--set", "clean.near_dedup.threshold=1.5"],
     ["clean.near_dedup.threshold"]),
    ("decontamination file missing", ["--dataset", "{r}/in/ok.jsonl", "-o", "{r}/o", "--decontaminate", "{r}/nope.jsonl"],
     ["decontamination file not found", "nope.jsonl"]),
    ("output inside input", ["--dataset", "{r}/in", "-o", "{r}/in/clean"], ["inside the input"]),
    ("existing output", ["--dataset", "{r}/in/ok.jsonl", "-o", "{r}/taken"], ["already exists", "--overwrite"]),
    ("bad slice", ["--dataset", "{r}/in/ok.jsonl", "-o", "{r}/o", "--shard", "2/2"], ["clean.shard"]),
    ("kept column missing", ["--dataset", "{r}/in/ok.jsonl", "-o", "{r}/o", "--set", "clean.keep_columns=[url]"],
     ["clean.keep_columns: url", "columns of"]),
]


@pytest.mark.parametrize(("name", "args", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_one_line_exit_2(cli, tmp_path, name, args, words):
    _bad_files(tmp_path)
    before = {p: digest(p) for p in (tmp_path / "in").iterdir()}
    result = cli("data", "clean", *[a.format(r=tmp_path) for a in args])
    one_line_error(result, *words)
    assert {p: digest(p) for p in (tmp_path / "in").iterdir()} == before
    assert not (tmp_path / "o").exists()


def test_a_missing_library_names_the_extra(cli, raw, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "datasketch" else real(name, *a))
    result = cli("data", "clean", "--dataset", raw, "-o", tmp_path / "o")
    one_line_error(result, "datasketch", "pip install 'llmtune[clean]'")


def test_pretrain_reads_the_cleaned_folder(cli, raw, tmp_path):
    out = tmp_path / "corpus"
    assert cli("data", "clean", "--dataset", raw, "-o", out).exit_code == 0
    result = cli("pretrain", "--dataset", out, "--dry-run", "-o", tmp_path / "lm")
    assert result.exit_code == 0, result.output
    assert "training blocks" in result.output
