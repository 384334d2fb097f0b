"""ROUGE, BLEU and exact match of generated text (llmtune.metrics.overlap), on hand-computed pairs."""

import math

import pytest

from llmtune.metrics.overlap import bleu, bleu_tokens, exact_match, lcs_length, rouge_scores, rouge_tokens

CAT = "the cat sat on the mat"
REF = "the cat is on the mat"


def test_tokenizers():
    assert rouge_tokens("The CAT, sat-on 2 mats!") == ["the", "cat", "sat", "on", "2", "mats"]
    assert bleu_tokens("The cat, sat.") == ["The", "cat", ",", "sat", "."]


def test_lcs():
    assert lcs_length("abcbdab", "bdcaba") == 4  # the textbook example: "bcba"
    assert lcs_length([], ["a"]) == 0


def test_rouge_hand_computed():
    # CAT vs REF, 6 tokens each: unigram overlap the x2, cat, on, mat = 5 -> F1 5/6; bigram overlap
    # "the cat", "on the", "the mat" = 3 of 5 -> 3/5; LCS the cat on the mat = 5 -> 5/6.
    # "a b c d" vs "d c b a": 4 shared unigrams -> 1, no shared bigram -> 0, LCS 1 -> 1/4.
    scores = rouge_scores([CAT, "A B C D"], [REF, "d c b a"])
    assert scores["rouge1"] == pytest.approx((5 / 6 + 1) / 2)
    assert scores["rouge2"] == pytest.approx((3 / 5 + 0) / 2)
    assert scores["rougeL"] == pytest.approx((5 / 6 + 1 / 4) / 2)


def test_rouge_takes_the_best_reference():
    assert rouge_scores([CAT], [["dogs bark", CAT]])["rougeL"] == pytest.approx(1.0)


def test_bleu_hand_computed():
    # Clipped matches of CAT against REF: 1-grams 5/6, 2-grams 3/5, 3-grams 1/4 ("on the mat"), 4-grams 0/3.
    result = bleu([CAT], [REF])
    assert result["precisions"] == pytest.approx([5 / 6, 3 / 5, 1 / 4, 0.0])
    assert result["bleu"] == 0.0  # no 4-gram match and no smoothing
    assert result["brevity_penalty"] == 1.0 and result["length_ratio"] == 1.0
    smoothed = bleu([CAT], [REF], smooth=True)  # (m + 1) / (p + 1) per order
    assert smoothed["bleu"] == pytest.approx((6 / 7 * 4 / 6 * 2 / 5 * 1 / 4) ** 0.25)


def test_bleu_brevity_penalty_and_identity():
    short = bleu(["the cat"], [REF], max_order=2)  # both orders match fully; 2 tokens against 6
    assert short["precisions"] == [1.0, 1.0]
    assert short["brevity_penalty"] == pytest.approx(math.exp(1 - 6 / 2))
    assert short["bleu"] == pytest.approx(math.exp(-2))
    assert bleu([REF, CAT], [REF, [CAT, "x"]])["bleu"] == pytest.approx(1.0)


def test_exact_match_ignores_spacing_only():
    assert exact_match(["  hello   world ", "x", "Y"], ["hello world", "y", ["z", "Y"]]) == pytest.approx(2 / 3)


def test_bad_inputs():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="zero predictions"):
        rouge_scores([], [])
    with pytest.raises(ValueError, match="at least one reference"):
        exact_match(["a"], [[]])
