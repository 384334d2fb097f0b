"""Extractive QA task: answer validation, windowing/labels, n-best post-processing and metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmtune.config.schema import TokenizerConfig
from llmtune.errors import ConfigError, DataError, ModelError
from llmtune.metrics.core import normalize_answer
from llmtune.tasks.qa import QATask, check_tokenizer
from llmtune.tasks.qa_features import answer_status, answers_from_flat, ensure_example_ids, prepare_eval_features, prepare_train_features, validate_examples
from llmtune.tasks.qa_postprocess import compute_metrics_fn, postprocess_predictions
from llmtune.tokenizer import train_tokenizer

QA_DIR = Path(__file__).resolve().parents[2] / "llmtune" / "data" / "builtin" / "qa"


def _rows(split: str, n: int) -> list[dict]:
    with open(QA_DIR / f"{split}.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line, _ in zip(fh, range(n))]


def _columns(rows: list[dict]) -> dict[str, list]:
    return {key: [row[key] for row in rows] for key in rows[0]}


def _row(id_: str, context: str, question: str, text: str | None, start: int | None = None) -> dict:
    if text is None:
        answers = {"text": [], "answer_start": []}
    else:
        answers = {"text": [text], "answer_start": [context.index(text) if start is None else start]}
    return {"id": id_, "title": "t", "context": context, "question": question, "answers": answers}


LONG_CONTEXT = " ".join(
    f"Sentence {i} says the mill of Orford burned in the year {1700 + i}." for i in range(12)
) + " The harbour master was called Ilsa Varn."
LONG_ROW = _row("long", LONG_CONTEXT, "Who was the harbour master?", "Ilsa Varn")


@pytest.fixture(scope="module")
def tok():
    rows = _rows("train", 200) + _rows("validation", 50)
    corpus = [r["context"] for r in rows] + [r["question"] for r in rows] + [LONG_CONTEXT, LONG_ROW["question"]]
    cfg = TokenizerConfig(type="wordpiece", vocab_size=600, min_frequency=1)
    return train_tokenizer(corpus, cfg, family="masked")


def _span_text(context: str, offsets: list, start: int, end: int) -> str:
    return context[offsets[start][0] : offsets[end][1]]


# -------------------------------------------------------------------------------------------------
# (1) + (2) training windows and labels
# -------------------------------------------------------------------------------------------------


def test_train_labels_map_back_to_the_answer_text(tok) -> None:
    rows = _rows("train", 40) + [
        _row("sub", "Born in 1939,in Luss.", "When?", "1939"),
        _row("ws", "Go to Hess now", "Where?", " Hess ", 5),  # padded answer text: labels skip the spaces
    ]
    batch = _columns(rows)
    feats = prepare_train_features(batch, tok, max_length=384, doc_stride=128)
    assert len(feats["input_ids"]) == len(rows)  # short contexts: one window each
    assert "offset_mapping" not in feats and "overflow_to_sample_mapping" not in feats
    enc = tok(batch["question"], batch["context"], return_offsets_mapping=True)
    for i, row in enumerate(rows):
        start, end = feats["start_positions"][i], feats["end_positions"][i]
        assert 0 < start <= end < len(feats["input_ids"][i])
        gold = row["answers"]["text"][0].strip()
        assert _span_text(row["context"], enc["offset_mapping"][i], start, end) == gold
        decoded = tok.decode(feats["input_ids"][i][start : end + 1])
        assert normalize_answer(decoded).replace(" ", "") == normalize_answer(gold).replace(" ", "")


def test_long_context_gives_overlapping_windows_with_cls_outside_the_answer(tok) -> None:
    batch = _columns([LONG_ROW])
    max_length, stride = 32, 8
    feats = prepare_train_features(batch, tok, max_length=max_length, doc_stride=stride)
    enc = tok(batch["question"], batch["context"], truncation="only_second", max_length=max_length, stride=stride,
              return_overflowing_tokens=True, return_offsets_mapping=True)
    n = len(feats["input_ids"])
    assert n >= 4 and all(len(ids) <= max_length for ids in feats["input_ids"])
    answer_windows = [w for w in range(n) if feats["start_positions"][w] != 0]
    assert answer_windows and answer_windows[-1] == n - 1  # the answer is at the end of the context
    for w in range(n):
        start, end = feats["start_positions"][w], feats["end_positions"][w]
        if w in answer_windows:
            assert _span_text(LONG_CONTEXT, enc["offset_mapping"][w], start, end) == "Ilsa Varn"
        else:
            assert (start, end) == (0, 0) and feats["input_ids"][w][0] == tok.cls_token_id
    # Consecutive windows share exactly `stride` context tokens.
    ctx = [[t for t, s in zip(enc["input_ids"][w], enc.sequence_ids(w)) if s == 1] for w in range(n)]
    assert ctx[0][-stride:] == ctx[1][:stride]


def test_eval_features_keep_example_ids_and_context_offsets_only(tok) -> None:
    batch = _columns([LONG_ROW, _row("short", "Ruben Cen was a carpenter.", "Trade?", "carpenter")])
    feats = prepare_eval_features(batch, tok, max_length=32, doc_stride=8)
    ids = feats["example_id"]
    assert ids.count("short") == 1 and ids.count("long") == len(ids) - 1
    for w, offsets in enumerate(feats["offset_mapping"]):
        assert offsets[0] is None and offsets[-1] is None  # [CLS] ... [SEP]
        assert len(offsets) == len(feats["input_ids"][w])
        assert any(o is not None for o in offsets)
    assert "start_positions" in feats  # labels so the Trainer computes eval loss and metrics


def test_left_padding_tokenizer_reads_context_first(tok) -> None:
    left = tok.__class__(tokenizer_object=tok.backend_tokenizer, **tok.special_tokens_map)
    left.padding_side = "left"
    batch = _columns([LONG_ROW])
    feats = prepare_eval_features(batch, left, max_length=32, doc_stride=8)
    assert len(feats["input_ids"]) > 1
    for w, (start, end) in enumerate(zip(feats["start_positions"], feats["end_positions"])):
        if start:
            assert _span_text(LONG_CONTEXT, feats["offset_mapping"][w], start, end) == "Ilsa Varn"
            assert start < feats["input_ids"][w].index(tok.sep_token_id)  # context comes first


def test_long_question_is_cut_instead_of_crashing_and_tiny_max_length_is_refused(tok) -> None:
    row = _row("q", LONG_CONTEXT, "Who " * 60 + "was the harbour master?", "Ilsa Varn")
    feats = prepare_train_features(_columns([row]), tok, max_length=32, doc_stride=8)
    assert max(len(ids) for ids in feats["input_ids"]) <= 32
    with pytest.raises(ConfigError, match="max_length"):
        prepare_train_features(_columns([row]), tok, max_length=10, doc_stride=8)
    with pytest.raises(ConfigError, match="doc_stride"):
        QATask(max_length=64, doc_stride=64)


def test_collator_pads_right_and_drops_non_model_columns(tok) -> None:
    import datasets

    left = tok.__class__(tokenizer_object=tok.backend_tokenizer, **tok.special_tokens_map)
    left.model_input_names = tok.model_input_names
    left.padding_side = "left"
    task = QATask(max_length=32, doc_stride=8)
    rows = [LONG_ROW, _row("s", "Ruben Cen.", "Who?", "Ruben")]
    _, feats = task.prepare_eval(datasets.Dataset.from_list(rows), tok)
    batch = task.collator(left)([feats[i] for i in range(len(feats))])
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions"}
    short = batch["attention_mask"][-1]
    assert short[0] == 1 and short[-1] == 0  # padding went to the right


# -------------------------------------------------------------------------------------------------
# (3) post-processing on hand-made logits
# -------------------------------------------------------------------------------------------------

CONTEXT = "one two three four five"
#            CLS   one     two     three    four      five      SEP
OFFSETS = [None, (0, 3), (4, 7), (8, 13), (14, 18), (19, 23), None]


def _post(start, end, **kw) -> str:
    ex = {"id": ["a"], "context": [CONTEXT]}
    feats = {"example_id": ["a"], "offset_mapping": [OFFSETS]}
    return postprocess_predictions(ex, feats, np.array([start], float), np.array([end], float), **kw)["a"]


def test_postprocess_picks_the_best_valid_span() -> None:
    assert _post([0, 5, 1, 0, 0, 0, 0], [0, 0, 0, 6, 1, 0, 0]) == "one two three"
    # CLS and SEP have the highest logits but are outside the context.
    assert _post([9, 5, 1, 0, 0, 0, 9], [9, 0, 0, 6, 1, 0, 9]) == "one two three"
    # The top end lies before the top start: the best span with end >= start wins instead.
    assert _post([0, 0, 0, 0, 8, 0, 0], [0, 9, 0, 0, 0, 2, 0]) == "four five"
    # max_answer_length caps the span in tokens.
    assert _post([0, 5, 1, 0, 0, 0, 0], [0, 0, 0, 6, 1, 0, 0], max_answer_length=2) == "two three"
    assert _post([0, 5, 1, 0, 0, 0, 0], [0, 0, 0, 6, 1, 0, 0], max_answer_length=1) == "three"  # 0 + 6 > 5 + 0


def test_postprocess_no_answer_and_threshold() -> None:
    start, end = [4, 3, 0, 0, 0, 0, 0], [4, 0, 0, 2, 0, 0, 0]  # null 8, best span 5
    assert _post(start, end) == "one two three"  # v1 never abstains
    assert _post(start, end, allow_no_answer=True) == ""
    assert _post(start, end, allow_no_answer=True, null_score_threshold=2.9) == ""
    assert _post(start, end, allow_no_answer=True, null_score_threshold=3.1) == "one two three"


def test_postprocess_combines_windows_and_ignores_padding() -> None:
    ex = {"id": ["a", "b"], "context": [CONTEXT, "six"]}
    feats = {
        "example_id": ["a", "a", "b"],
        "offset_mapping": [OFFSETS[:4] + [None], [None, (14, 18), (19, 23), None], [None, (0, 3), None]],
    }
    pad = -100.0
    start = np.array([[0, 2, 0, 0, 0, 50, 50], [1, 0, 7, 0, pad, pad, pad], [0, 3, 0, pad, pad, pad, pad]])
    end = np.array([[0, 0, 0, 2, 0, 50, 50], [1, 0, 7, 0, pad, pad, pad], [0, 3, 0, pad, pad, pad, pad]])
    # Window 1 of "a" has a better span than window 0; values past each window's length (model
    # padding at 50, Trainer padding at -100) are never read.
    assert postprocess_predictions(ex, feats, start, end) == {"a": "five", "b": "six"}
    # The null score is the minimum over windows (1 + 1 = 2 < span score 14): still answers.
    assert postprocess_predictions(ex, feats, start, end, allow_no_answer=True)["a"] == "five"
    with pytest.raises(ValueError, match="logits"):
        postprocess_predictions(ex, feats, start[:2], end[:2])


# -------------------------------------------------------------------------------------------------
# (4) metrics through the Trainer's EvalPrediction
# -------------------------------------------------------------------------------------------------


def _gold_logits(feats, width: int, fill: float) -> tuple[np.ndarray, np.ndarray]:
    """Logits that put the answer windows' gold positions first (rows padded to ``width``)."""
    n = len(feats)
    start, end = np.full((n, width), fill), np.full((n, width), fill)
    for w in range(n):
        length = len(feats[w]["input_ids"])
        start[w, :length] = 0.0
        end[w, :length] = 0.0
        if feats[w]["start_positions"]:
            start[w, feats[w]["start_positions"]] = 10.0
            end[w, feats[w]["end_positions"]] = 10.0
    return start, end


def test_compute_metrics_scores_gold_logits_100(tok) -> None:
    import datasets
    from transformers import EvalPrediction

    rows = _rows("validation", 12) + [LONG_ROW]
    task = QATask(max_length=48, doc_stride=16)
    examples, feats = task.prepare_eval(datasets.Dataset.from_list(rows).remove_columns("id"), tok)
    assert len(feats) > len(rows)  # some contexts needed several windows
    metrics_fn = task.compute_metrics_fn(examples, feats)
    width = max(len(ids) for ids in feats["input_ids"]) + 5
    for fill in (-100.0, 30.0):  # Trainer's concat padding, and large logits on padded tokens
        start, end = _gold_logits(feats, width, fill)
        metrics = metrics_fn(EvalPrediction(predictions=(start, end), label_ids=None))
        assert metrics["exact_match"] == 100.0 and metrics["f1"] == 100.0 and metrics["total"] == len(rows)
    assert task.last_predictions["12"] == "Ilsa Varn" and len(task.last_predictions) == len(rows)
    # Wrong logits (all zero): the first context token wins everywhere, far from the gold answers.
    zeros = np.zeros((len(feats), width))
    assert metrics_fn(EvalPrediction(predictions=(zeros, zeros), label_ids=None))["exact_match"] < 50.0


def test_compute_metrics_reports_has_and_no_answer_groups() -> None:
    answers = [{"text": ["five"], "answer_start": [19]}, {"text": [], "answer_start": []}]
    ex = {"id": ["a", "b"], "context": [CONTEXT, CONTEXT], "answers": answers}
    feats = {"example_id": ["a", "b"], "offset_mapping": [OFFSETS, OFFSETS]}
    start = np.array([[0, 0, 0, 0, 0, 5, 0], [9, 0, 0, 0, 0, 5, 0]], float)
    fn = compute_metrics_fn(ex, feats, allow_no_answer=True)
    metrics = fn((start, start.copy()))
    assert metrics["exact_match"] == 100.0 and metrics["HasAns_total"] == 1 and metrics["NoAns_exact"] == 100.0


# -------------------------------------------------------------------------------------------------
# (5) validation, (6) tokenizer check
# -------------------------------------------------------------------------------------------------


def test_validate_examples_counts_and_drops_bad_rows() -> None:
    import datasets

    ctx = "Ruben Cen, a carpenter, founded the town in 1199."
    rows = [
        _row("ok", ctx, "Trade?", "carpenter"),
        _row("shifted", ctx, "Trade?", "carpenter", start=3),
        _row("far", ctx, "Year?", "1199", start=500),
        _row("none", ctx, "Mayor?", None),
    ]
    ds = datasets.Dataset.from_list(rows)
    kept, report = validate_examples(ds, allow_no_answer=True)
    assert report == {"misaligned": 2, "no_answer": 1, "kept": 2}
    assert kept["id"] == ["ok", "none"]
    with pytest.raises(DataError, match=r"^1 training rows have no answer .*--allow-no-answer"):
        validate_examples(ds)
    with pytest.raises(DataError, match="answer_start"):
        validate_examples(datasets.Dataset.from_list(rows[1:3]))
    same, report = validate_examples(datasets.Dataset.from_list(rows[:1]))
    assert report == {"misaligned": 0, "no_answer": 0, "kept": 1} and len(same) == 1


def test_answer_helpers() -> None:
    assert answer_status("a Hess b", {"text": [" Hess"], "answer_start": [1]}) == ("ok", (2, 6))
    assert answer_status("x", {"text": ["x", "y"], "answer_start": [0]})[0] == "misaligned"
    with pytest.raises(DataError, match="SQuAD layout"):
        answer_status("x", "x")
    flat = answers_from_flat({"a": ["Hess", None], "s": [3, None]}, "a", "s")
    assert flat == {"answers": [{"text": ["Hess"], "answer_start": [3]}, {"text": [], "answer_start": []}]}


def test_example_ids_are_added_or_must_be_unique() -> None:
    import datasets

    assert ensure_example_ids(datasets.Dataset.from_dict({"x": [1, 2]}))["id"] == ["0", "1"]
    with pytest.raises(DataError, match="unique"):
        ensure_example_ids(datasets.Dataset.from_dict({"id": ["a", "a"]}))


def test_slow_tokenizer_is_refused(tmp_path, tok) -> None:
    try:  # transformers 5 made BertTokenizer fast; the pure-Python one was renamed
        from transformers.models.bert import BertTokenizerLegacy as SlowBert
    except ImportError:
        from transformers import BertTokenizer as SlowBert
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "town"]) + "\n")
    with pytest.raises(ModelError, match="fast tokenizer") as err:
        check_tokenizer(SlowBert(str(vocab)))
    assert "\n" not in str(err.value)
    check_tokenizer(tok)
    assert QATask.columns.required == ("question", "context", "answers")
    assert QATask.auto_class == "AutoModelForQuestionAnswering"
