"""Tests of llmtune.metrics: hand-computed cases, sklearn cross-checks and the evaluate wrappers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from llmtune.errors import ConfigError
from llmtune.metrics import METRIC_NAMES, load_metric, metric_path
from llmtune.metrics.core import (
    classification_metrics,
    exact_match_score,
    f1_score,
    lm_metrics,
    normalize_answer,
    squad_metrics,
)
from llmtune.metrics.overlap import bleu, rouge_scores

REPO_ROOT = Path(__file__).resolve().parents[2]


def _assert_plain_json(value: object) -> None:
    """Every leaf is a builtin type and the whole value survives a JSON round trip."""
    assert json.loads(json.dumps(value)) == value
    if isinstance(value, dict):
        for item in value.values():
            _assert_plain_json(item)
    elif isinstance(value, list):
        for item in value:
            _assert_plain_json(item)
    else:
        assert type(value) in (int, float, str, bool)


# --------------------------------------------------------------------------------------------------
# Classification: hand-computed
# --------------------------------------------------------------------------------------------------


def test_single_label_hand_computed() -> None:
    refs = [0, 0, 0, 1, 1, 2]
    preds = [0, 0, 1, 1, 2, 2]
    # Confusion (rows gold, cols predicted):
    #   gold 0 -> [2, 1, 0]; gold 1 -> [0, 1, 1]; gold 2 -> [0, 0, 1].
    # class 0: tp 2, predicted 2, support 3 -> P 1,   R 2/3, F1 2*2/(2+3) = 4/5
    # class 1: tp 1, predicted 2, support 2 -> P 1/2, R 1/2, F1 2*1/(2+2) = 1/2
    # class 2: tp 1, predicted 2, support 1 -> P 1/2, R 1,   F1 2*1/(2+1) = 2/3
    m = classification_metrics(preds, refs, label_names=["neg", "neu", "pos"])
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)  # diagonal 2 + 1 + 1 over 6
    # Single-label micro P = R = F1 = accuracy.
    for key in ("precision_micro", "recall_micro", "f1_micro"):
        assert m[key] == pytest.approx(4 / 6)
    assert m["precision_macro"] == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)  # 2/3
    assert m["recall_macro"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)  # 13/18
    assert m["f1_macro"] == pytest.approx((4 / 5 + 1 / 2 + 2 / 3) / 3)  # 59/90
    # Weighted by support 3, 2, 1 (total 6).
    assert m["precision_weighted"] == pytest.approx((3 * 1 + 2 * 0.5 + 1 * 0.5) / 6)  # 0.75
    assert m["recall_weighted"] == pytest.approx((3 * 2 / 3 + 2 * 0.5 + 1 * 1) / 6)  # 2/3
    assert m["f1_weighted"] == pytest.approx((3 * 4 / 5 + 2 * 0.5 + 1 * 2 / 3) / 6)  # 61/90
    assert m["per_class"][0] == {
        "label": "neg",
        "precision": 1.0,
        "recall": pytest.approx(2 / 3),
        "f1": pytest.approx(0.8),
        "support": 3,
    }
    assert [row["label"] for row in m["per_class"]] == ["neg", "neu", "pos"]
    assert [row["support"] for row in m["per_class"]] == [3, 2, 1]
    _assert_plain_json(m)


def test_single_label_zero_division_and_absent_class() -> None:
    # Gold [0, 1], predicted [0, 0]; four classes declared, classes 2 and 3 never occur.
    # class 0: tp 1, predicted 2, support 1 -> P 1/2, R 1, F1 2/3
    # class 1: tp 0, predicted 0, support 1 -> P 0/0 -> 0.0, R 0, F1 0
    m = classification_metrics([0, 0], [0, 1], num_labels=4)
    assert m["per_class"][1] == {
        "label": "1",
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 1,
    }
    assert m["per_class"][3]["support"] == 0
    assert m["confusion_matrix"] == [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    # Macro averages over the classes that occur (0 and 1), as sklearn's default does.
    assert m["precision_macro"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["recall_macro"] == pytest.approx((1 + 0) / 2)
    assert m["f1_macro"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["accuracy"] == 0.5


def test_multi_label_hand_computed() -> None:
    refs = [[1, 0, 1], [0, 1, 0], [1, 1, 0]]
    preds = [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    # Subset accuracy: only row 1 matches exactly -> 1/3.
    # col 0: tp 2, predicted 2, support 2 -> P 1, R 1,   F1 1
    # col 1: tp 1, predicted 1, support 2 -> P 1, R 1/2, F1 2/3
    # col 2: tp 0, predicted 1, support 1 -> P 0, R 0,   F1 0
    # micro: tp 3, predicted 4, support 5 -> P 3/4, R 3/5, F1 2*3/(4+5) = 2/3
    m = classification_metrics(preds, refs)
    assert "confusion_matrix" not in m
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["precision_micro"] == pytest.approx(3 / 4)
    assert m["recall_micro"] == pytest.approx(3 / 5)
    assert m["f1_micro"] == pytest.approx(2 / 3)
    assert m["precision_macro"] == pytest.approx(2 / 3)  # (1 + 1 + 0) / 3
    assert m["recall_macro"] == pytest.approx(1 / 2)  # (1 + 1/2 + 0) / 3
    assert m["f1_macro"] == pytest.approx(5 / 9)  # (1 + 2/3 + 0) / 3
    # Weighted by support 2, 2, 1 (total 5).
    assert m["precision_weighted"] == pytest.approx(4 / 5)  # (2 + 2 + 0) / 5
    assert m["recall_weighted"] == pytest.approx(3 / 5)  # (2 + 1 + 0) / 5
    assert m["f1_weighted"] == pytest.approx(2 / 3)  # (2 + 4/3 + 0) / 5
    assert [row["support"] for row in m["per_class"]] == [2, 2, 1]
    _assert_plain_json(m)


@pytest.mark.parametrize(
    ("preds", "refs", "kwargs"),
    [
        ([0, 1], [0], {}),  # shape mismatch
        ([], [], {}),  # nothing to score
        ([0, -100], [0, 1], {}),  # ignore index left in
        ([0.5, 1], [0, 1], {}),  # not class ids
        ([0, 3], [0, 1], {"num_labels": 3}),  # id beyond num_labels
        ([0, 1], [0, 1], {"label_names": ["a", "b", "c"], "num_labels": 2}),
        ([[0, 2]], [[0, 1]], {}),  # multi-label values must be 0/1
        ([[0, 1]], [[0, 1]], {"num_labels": 3}),  # wrong column count
    ],
)
def test_classification_rejects_bad_input(preds: list, refs: list, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        classification_metrics(preds, refs, **kwargs)


# --------------------------------------------------------------------------------------------------
# Classification: agreement with scikit-learn
# --------------------------------------------------------------------------------------------------


def _check_against_sklearn(m: dict, refs: np.ndarray, preds: np.ndarray, k: int) -> None:
    """Averages against sklearn's defaults, per-class rows against an explicit label list."""
    assert m["accuracy"] == pytest.approx(accuracy_score(refs, preds))
    for average in ("macro", "micro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(refs, preds, average=average, zero_division=0)
        assert m[f"precision_{average}"] == pytest.approx(p)
        assert m[f"recall_{average}"] == pytest.approx(r)
        assert m[f"f1_{average}"] == pytest.approx(f)
    p, r, f, s = precision_recall_fscore_support(
        refs, preds, labels=list(range(k)), average=None, zero_division=0
    )
    assert [row["precision"] for row in m["per_class"]] == pytest.approx(p.tolist())
    assert [row["recall"] for row in m["per_class"]] == pytest.approx(r.tolist())
    assert [row["f1"] for row in m["per_class"]] == pytest.approx(f.tolist())
    assert [row["support"] for row in m["per_class"]] == s.tolist()


def test_single_label_matches_sklearn() -> None:
    rng = np.random.default_rng(1234)
    # Class 3 of 6 never occurs, so the "average over present labels" rule is exercised too.
    choices = np.array([0, 1, 2, 4, 5])
    refs = rng.choice(choices, size=300)
    # Mostly right, sometimes a random guess, so every class has errors both ways.
    preds = np.where(rng.random(300) < 0.6, refs, rng.choice(choices, size=300))
    m = classification_metrics(preds.tolist(), refs.tolist(), num_labels=6)
    _check_against_sklearn(m, refs, preds, 6)
    assert m["confusion_matrix"] == confusion_matrix(refs, preds, labels=list(range(6))).tolist()


def test_multi_label_matches_sklearn() -> None:
    rng = np.random.default_rng(99)
    refs = (rng.random((200, 5)) < 0.3).astype(int)
    flips = rng.random((200, 5)) < 0.25
    preds = np.where(flips, 1 - refs, refs)
    preds[:, 4] = 0  # a never-predicted label: precision 0/0 must become 0.0
    m = classification_metrics(preds, refs)  # numpy input is accepted as well as lists
    _check_against_sklearn(m, refs, preds, 5)
    _assert_plain_json(m)


# --------------------------------------------------------------------------------------------------
# SQuAD
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The Cat", "cat"),  # case and a leading article
        ("an apple and the pear", "apple and pear"),  # every article goes, "and" stays
        ("theater another a", "theater another"),  # articles only as whole words
        ("  A   quick,  brown fox!! ", "quick brown fox"),  # punctuation and whitespace
        ("Anna's \t\n U.S.A.", "annas usa"),  # punctuation is deleted, not replaced by space
        ("the-cat", "thecat"),  # punctuation goes first, so "the" is no longer a word
        ("1\u20132", "1\u20132"),  # en dash is not in string.punctuation
        ("", ""),
        ("The.", ""),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_exact_match_and_f1_scores() -> None:
    assert exact_match_score("The Denver Broncos", "denver broncos!") == 1.0
    assert exact_match_score("Denver", "Denver Broncos") == 0.0
    # pred [denver, broncos, won], gold [denver, broncos]: overlap 2 -> P 2/3, R 1, F1 4/5.
    assert f1_score("Denver Broncos won", "the Denver Broncos") == pytest.approx(0.8)
    # pred [cat, cat, cat], gold [cat, sat]: overlap min(3, 1) = 1 -> P 1/3, R 1/2, F1 2/5.
    assert f1_score("the cat cat cat", "cat sat") == pytest.approx(0.4)
    assert f1_score("red", "blue") == 0.0
    # v2 no-answer rule: empty against empty is a match, otherwise a miss.
    assert f1_score("", "") == 1.0
    assert f1_score("the", "") == 1.0  # "the" normalises to nothing
    assert f1_score("Broncos", "") == 0.0
    assert f1_score("", "Broncos") == 0.0


def test_squad_metrics_v2_with_no_answer() -> None:
    references = {
        "q1": ["Denver Broncos", "Broncos"],
        "q2": ["Santa Clara, California"],
        "q3": [],
        "q4": [],
        "q5": ["Gold"],
    }
    predictions = {
        "q1": "the Broncos",  # EM 1 against "Broncos"; F1 1
        # EM 0; [santa, clara] vs [santa, clara, california]: P 1, R 2/3, F1 0.8
        "q2": "Santa Clara",
        "q3": "",  # correct abstention: EM 1, F1 1
        "q4": "Levi's Stadium",  # answered an unanswerable question: 0, 0
        # q5 missing: scored as "", which misses "Gold": 0, 0
        "extra": "ignored",
    }
    m = squad_metrics(predictions, references)
    assert m["total"] == 5
    assert m["exact_match"] == pytest.approx(100 * 2 / 5)  # q1, q3
    assert m["f1"] == pytest.approx(100 * (1 + 0.8 + 1) / 5)  # 56.0
    assert m["HasAns_total"] == 3  # q1, q2, q5
    assert m["HasAns_exact"] == pytest.approx(100 / 3)
    assert m["HasAns_f1"] == pytest.approx(100 * 1.8 / 3)  # 60.0
    assert m["NoAns_total"] == 2  # q3, q4
    assert m["NoAns_exact"] == pytest.approx(50.0)
    assert m["NoAns_f1"] == pytest.approx(50.0)
    _assert_plain_json(m)


def test_squad_metrics_v1_takes_best_gold_and_has_no_breakdown() -> None:
    # F1 of "x y" against "a b c" is 0; against "x" overlap 1 -> P 1/2, R 1, F1 2/3. The max wins.
    m = squad_metrics({"q": "x y"}, {"q": ["a b c", "x"]})
    assert m == {"exact_match": 0.0, "f1": pytest.approx(100 * 2 / 3), "total": 1}
    with pytest.raises(ValueError):
        squad_metrics({}, {})


# --------------------------------------------------------------------------------------------------
# Language modelling
# --------------------------------------------------------------------------------------------------


def test_lm_metrics_known_numbers() -> None:
    # NLL 10 ln2 nats over 5 tokens: loss 2 ln2 nats = 2 bits per token, perplexity e^(2 ln2) = 4.
    # Over 10 characters: 10 ln2 / (ln2 * 10) = 1 bit per char; over 20 bytes: 0.5 bit per byte.
    m = lm_metrics(10 * math.log(2), 5, num_chars=10, num_bytes=20)
    assert m["loss"] == pytest.approx(2 * math.log(2))
    assert m["perplexity"] == pytest.approx(4.0)
    assert m["bits_per_token"] == pytest.approx(2.0)
    assert m["bits_per_char"] == pytest.approx(1.0)
    assert m["bits_per_byte"] == pytest.approx(0.5)


def test_lm_metrics_optional_keys_overflow_and_errors() -> None:
    assert set(lm_metrics(1.0, 1)) == {"loss", "perplexity", "bits_per_token"}
    assert "bits_per_char" not in lm_metrics(1.0, 1, num_chars=0)
    # exp(1e6) overflows a float: perplexity is inf, nothing raises.
    assert lm_metrics(1e6, 1)["perplexity"] == float("inf")
    for bad in (
        lambda: lm_metrics(1.0, 0),
        lambda: lm_metrics(1.0, -3),
        lambda: lm_metrics(1.0, 1, num_chars=-1),
        lambda: lm_metrics(float("nan"), 1),
        lambda: lm_metrics(-1.0, 1),
    ):
        with pytest.raises(ValueError):
            bad()


# --------------------------------------------------------------------------------------------------
# Package: names, paths, lazy imports, evaluate wrappers
# --------------------------------------------------------------------------------------------------


def test_metric_path_and_unknown_name() -> None:
    for name in METRIC_NAMES:
        path = Path(metric_path(name))
        assert path.is_absolute()
        assert (path / f"{name}.py").is_file()
    with pytest.raises(ConfigError, match="classification, squad, lm, rouge, bleu"):
        metric_path("meteor")
    with pytest.raises(ConfigError):
        load_metric("meteor")  # rejected before evaluate is imported


def test_package_import_is_light() -> None:
    # A fresh interpreter, because this test session may already have imported numpy or evaluate.
    code = "import sys, llmtune.metrics; print('evaluate' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"]


def test_evaluate_modules_match_core(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The only test that imports evaluate (slow): every module loads offline and delegates."""
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    load_kwargs = {"cache_dir": str(tmp_path / "metric_cache")}

    classification = load_metric("classification", **load_kwargs)
    preds, refs = [0, 2, 1, 1, 0], [0, 1, 1, 2, 0]
    assert classification.compute(
        predictions=preds, references=refs, label_names=["a", "b", "c"]
    ) == classification_metrics(preds, refs, label_names=["a", "b", "c"])
    multi_preds, multi_refs = [[1, 0], [1, 1], [0, 0]], [[1, 1], [1, 0], [0, 0]]
    assert classification.compute(
        predictions=multi_preds, references=multi_refs
    ) == classification_metrics(multi_preds, multi_refs)

    squad = load_metric("squad", **load_kwargs)
    result = squad.compute(
        predictions=[
            {"id": "1", "prediction_text": "the Broncos"},
            {"id": "2", "prediction_text": "Levi's"},
        ],
        references=[
            {"id": "1", "answers": {"text": ["Denver Broncos", "Broncos"], "answer_start": [0, 7]}},
            {"id": "2", "answers": {"text": [], "answer_start": []}},
        ],
    )
    expected = squad_metrics(
        {"1": "the Broncos", "2": "Levi's"}, {"1": ["Denver Broncos", "Broncos"], "2": []}
    )
    assert result == expected
    with pytest.raises(ValueError, match="duplicate"):
        squad.compute(
            predictions=[{"id": "1", "prediction_text": "x"}] * 2,
            references=[{"id": "1", "answers": {"text": ["x"], "answer_start": [0]}}] * 2,
        )

    rouge, bleu_metric = load_metric("rouge", **load_kwargs), load_metric("bleu", **load_kwargs)
    preds, one_ref = ["the cat sat on the mat", "a b"], ["the cat is on the mat", "b a"]
    several = [["the cat is on the mat"], ["b a", "a b"]]
    assert rouge.compute(predictions=preds, references=one_ref) == rouge_scores(preds, one_ref)
    assert bleu_metric.compute(predictions=preds, references=several) == bleu(preds, several)

    lm = load_metric("lm", **load_kwargs)
    # Rows are summed: NLL 12.5 + 7.0 nats over 10 + 6 tokens and 64 characters in all.
    assert lm.compute(predictions=[12.5, 7.0], references=[10, 6], num_chars=64) == pytest.approx(
        lm_metrics(19.5, 16, num_chars=64)
    )
