"""Table-driven bad inputs: each gives one line on stderr, exit code 2, no traceback."""

import time

import pytest


def _files(root):
    (root / "empty.csv").write_text("")
    (root / "ragged.csv").write_text("text,label\nhello,1\nbad,row,extra,cols\nok,0\n")
    (root / "broken.jsonl").write_text('{"text": "a", "label": 1}\n{"text": "b", "label": \n{"text": "c", "label": 0}\n')
    (root / "reviews.csv").write_text("text,stars\ngood film,pos\nbad film,neg\nfine film,pos\nawful film,neg\n")
    (root / "data.xlsx").write_text("not really excel")
    (root / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (root / "notamap.yaml").write_text("- a\n- b\n")
    done = root / "done"
    done.mkdir()
    (done / "run_complete.json").write_text("{}")
    return root


CASES = [
    ("missing file", ["data", "inspect", "--dataset", "{root}/nope.csv"], ["not found"]),
    ("unknown extension", ["data", "inspect", "--dataset", "{root}/data.xlsx"], [".xlsx"]),
    ("empty file", ["data", "inspect", "--dataset", "{root}/empty.csv"], ["empty"]),
    ("ragged csv", ["data", "inspect", "--dataset", "{root}/ragged.csv"], ["ragged.csv", "line 3"]),
    ("broken jsonl", ["data", "inspect", "--dataset", "{root}/broken.jsonl"], ["broken.jsonl", "line 2"]),
    ("non-utf8 text", ["data", "inspect", "--dataset", "{root}/latin1.txt"], ["UTF-8"]),
    ("missing column", ["data", "inspect", "--dataset", "{root}/reviews.csv", "--task", "classification"],
     ["label", "stars", "--label-column"]),
    ("mapped column absent", ["data", "inspect", "--dataset", "{root}/reviews.csv", "--label-column", "rating"],
     ["rating"]),
    ("bad --columns", ["data", "inspect", "--dataset", "{root}/reviews.csv", "--columns", "oops"], ["source=target"]),
    ("unknown builtin", ["data", "inspect", "--dataset", "builtin:nope"], ["builtin"]),
    ("hub id offline", ["data", "inspect", "--dataset", "someone/some-dataset"], ["someone/some-dataset", "local"]),
    ("recipe not a mapping", ["pretrain", "--recipe", "{root}/notamap.yaml"], ["mapping"]),
    ("unknown recipe", ["finetune", "--recipe", "classification/tiny-cpuu"], ["did you mean"]),
    ("finished run dir", ["tokenizer", "train", "--dataset", "builtin:text", "-o", "{root}/done"], ["--overwrite"]),
    ("output dir is a file", ["tokenizer", "train", "--dataset", "builtin:text", "-o", "{root}/reviews.csv"],
     ["is a file"]),
    ("zero batch size", ["pretrain", "--recipe", "gpt2-tiny", "--batch-size", "0"], ["train.batch_size"]),
    ("negative lr", ["pretrain", "--recipe", "gpt2-tiny", "--lr", "-1"], ["train.lr"]),
]


@pytest.mark.parametrize(("name", "args", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_one_line_exit_2(cli, tmp_path, name, args, words):
    root = _files(tmp_path)
    start = time.monotonic()
    result = cli(*[a.format(root=root) for a in args])
    assert time.monotonic() - start < 5, "bad input must fail fast"
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("[llmtune]")]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not (root / "done2").exists()


def test_inspect_builtin_classification(cli):
    result = cli("data", "inspect", "--dataset", "builtin:classification", "--task", "classification")
    assert result.exit_code == 0, result.output
    for word in ("train", "validation", "label", "positive", "negative", "3,000"):
        assert word in result.output


def test_inspect_maps_label_column(cli, tmp_path):
    root = _files(tmp_path)
    result = cli("data", "inspect", "--dataset", f"{root}/reviews.csv", "--task", "classification",
                 "--label-column", "stars")
    assert result.exit_code == 0, result.output
    assert "carved" in result.output or "validation" in result.output
