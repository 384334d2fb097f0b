"""Classification task pieces on hand-checkable inputs: labels, multi-hot, truncation, loss, plots."""

import math

import pytest

from llmtune.config.schema import TokenizerConfig
from llmtune.errors import ConfigError, DataError
from llmtune.tasks.classification import PadCollator, WeightedLoss, score, shrink_logits, tokenize_batch, usable_rows
from llmtune.tasks.labels import LabelSpace, build_label_space, check_eval_labels, class_counts, class_weights, label_kind, with_class_names


@pytest.fixture(scope="module")
def tok():
    from llmtune.tokenizer import train_tokenizer

    words = "alpha beta gamma delta epsilon zeta eta theta"
    return train_tokenizer([words] * 20, TokenizerConfig(type="wordpiece", vocab_size=120, min_frequency=1),
                           family="masked")


@pytest.mark.parametrize(("value", "kind"), [
    (3, "int"), (True, "int"), (2.0, "int"), (2.5, "bad"), (float("nan"), "missing"), (None, "missing"),
    ("pos", "str"), ("  ", "missing"), (["a"], "list"), ({"a": 1}, "bad"),
])
def test_label_kind(value, kind):
    assert label_kind(value) == kind


def test_string_labels_sorted_to_ids():
    space = build_label_space(["pos", "neg", "neutral", "pos", None])
    assert space.names == ["neg", "neutral", "pos"] and not space.multi_label
    assert space.id2label == {0: "neg", 1: "neutral", 2: "pos"} and space.label2id["pos"] == 2
    assert [space.encode(v) for v in ["pos", "neg"]] == [2, 0]


def test_integer_labels_keep_their_order():
    assert build_label_space([1, 0, 1]).names == ["0", "1"]
    stars = build_label_space([5, 1, 3, 2, 4, 5.0])
    assert stars.names == ["1", "2", "3", "4", "5"] and stars.encode(5) == 4 and stars.encode(1.0) == 0


@pytest.mark.parametrize(("labels", "words"), [
    ([0.5, 1.5], ["float", "integer ids or string names"]),
    ([{"a": 1}, {"a": 2}], ["dict"]),
    (["a", "a", None], ["single class", "'a'"]),
    ([1, "a"], ["inconsistent label types"]),
    ([["a", 1], ["b"]], ["multi-label lists", "inconsistent label types"]),
    (["a", ["a", "b"]], ["mixes lists", "'a'"]),
    ([None, None], ["no labels"]),
])
def test_bad_labels(labels, words):
    with pytest.raises(DataError) as err:
        build_label_space(labels)
    for word in words:
        assert word in str(err.value)


def test_class_label_names_are_used():
    from datasets import ClassLabel, List

    space = build_label_space([1, 0, 1])
    named = with_class_names(space, ClassLabel(names=["neg", "pos"]))
    assert named.names == ["neg", "pos"] and named.encode(1) == 1 and named.label2id == {"neg": 0, "pos": 1}
    multi = with_class_names(build_label_space([[2], [0]]), List(ClassLabel(names=["a", "b", "c"])))
    assert multi.names == ["a", "c"] and multi.encode([2]) == [0.0, 1.0]
    assert with_class_names(space, None).names == ["0", "1"]


def test_multi_label_multi_hot():
    space = build_label_space([["sport", "news"], ["tech"], []])
    assert space.multi_label and space.names == ["news", "sport", "tech"]
    assert space.encode(["tech", "news"]) == [1.0, 0.0, 1.0] and space.encode([]) == [0.0, 0.0, 0.0]
    assert class_counts(space, [space.encode(["news"]), space.encode(["news", "tech"])]) == [2, 0, 1]


def test_unseen_eval_labels_are_named_with_counts():
    space = build_label_space(["a", "b"])
    check_eval_labels(space, ["b", "a", None])
    with pytest.raises(DataError, match=r"'c' \(2 rows\), 'd' \(1 rows\)"):
        check_eval_labels(space, ["a", "c", "c", "d"], "val.csv")
    with pytest.raises(DataError, match="lists of labels"):
        check_eval_labels(space, [["a"]])


def test_class_weights():
    space = LabelSpace(("a", "b"))
    assert class_weights(None, space, [3, 1], 4) is None
    assert class_weights("balanced", space, [3, 1], 4) == pytest.approx([4 / 6, 2.0])
    assert class_weights([1, 2], space, [3, 1], 4) == [1.0, 2.0]
    assert class_weights({"b": 5}, space, [3, 1], 4) == [1.0, 5.0]
    assert class_weights("balanced", LabelSpace(("x", "y"), True), [1, 4], 5) == pytest.approx([4.0, 0.25])
    for bad, word in (([1], "2 classes"), ({"z": 1}, "unknown classes"), ("heavy", "balanced"), ([1, 0], "positive")):
        with pytest.raises(ConfigError, match=word):
            class_weights(bad, space, [3, 1], 4)


def test_usable_rows_skip_empty_text_and_missing_labels():
    batch = {"text": ["ok", "  ", None, "ok", "ok"], "label": ["a", "a", "a", None, float("nan")]}
    assert usable_rows(batch) == [True, False, False, False, False]
    assert usable_rows({"text": ["a", "b"], "text_pair": ["x", ""], "label": [1, 1]}) == [True, False]


def test_truncation_counted_by_hand(tok):
    space = LabelSpace(("n", "p"))
    # [CLS] + words + [SEP]: 5 tokens fit max_length 5 exactly (not truncated), 6 words do not.
    batch = {"text": ["alpha beta gamma", "alpha beta gamma delta epsilon zeta", "alpha"], "label": ["p", "n", "p"]}
    out = tokenize_batch(batch, tok, 5, space)
    assert [len(ids) for ids in out["input_ids"]] == out["length"] == [5, 5, 3]
    assert out["truncated"] == [False, True, False]
    assert out["labels"] == [1, 0, 1]
    assert tok.convert_ids_to_tokens(out["input_ids"][1]) == ["[CLS]", "alpha", "beta", "gamma", "[SEP]"]


def test_text_pairs_get_segment_ids(tok):
    batch = {"text": ["alpha beta"], "text_pair": ["gamma"], "label": ["p"]}
    out = tokenize_batch(batch, tok, 32, LabelSpace(("p", "q")))
    assert tok.convert_ids_to_tokens(out["input_ids"][0]) == ["[CLS]", "alpha", "beta", "[SEP]", "gamma", "[SEP]"]
    assert out["token_type_ids"][0] == [0, 0, 0, 0, 1, 1]


def test_collator_pads_dynamically_and_drops_bookkeeping(tok):
    space = LabelSpace(("n", "p"))
    rows = tokenize_batch({"text": ["alpha", "alpha beta gamma"], "label": ["n", "p"]}, tok, 32, space)
    features = [{k: v[i] for k, v in rows.items()} for i in range(2)]
    batch = PadCollator(tok)(features)
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert tuple(batch["input_ids"].shape) == (2, 5) and batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0]
    assert batch["labels"].tolist() == [0, 1]


def test_shrink_and_score():
    import torch

    logits = torch.tensor([[2.0, -1.0], [0.1, 0.3], [-1.0, 0.5]])
    assert shrink_logits(logits, None).tolist() == [0, 1, 1]
    assert shrink_logits((logits,), None, multi_label=True).tolist() == [[1, 0], [1, 1], [0, 1]]
    single = score([0, 1, 1], [0, 1, 0], LabelSpace(("a", "b")))
    assert single["accuracy"] == pytest.approx(2 / 3) and single["confusion_matrix"] == [[1, 1], [0, 1]]
    multi = score([[1, 0], [1, 1]], [[1.0, 0.0], [0.0, 1.0]], LabelSpace(("a", "b"), True))
    assert multi["accuracy"] == 0.5 and [r["label"] for r in multi["per_class"]] == ["a", "b"]


def test_weighted_loss_matches_torch():
    import torch
    import torch.nn.functional as F

    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]])
    labels = torch.tensor([0, 1, 1])
    weights = [1.0, 3.0]
    per_row = F.cross_entropy(logits, labels, reduction="none") * torch.tensor([1.0, 3.0, 3.0])
    loss = WeightedLoss(weights, multi_label=False)
    assert loss({"logits": logits}, labels).item() == pytest.approx(per_row.sum().item() / 3)
    # With gradient accumulation the Trainer passes the label count of the whole accumulated batch.
    assert loss({"logits": logits}, labels, num_items_in_batch=6).item() == pytest.approx(per_row.sum().item() / 6)
    hot = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    bce = WeightedLoss([2.0, 1.0], multi_label=True)({"logits": logits}, hot).item()
    expected = F.binary_cross_entropy_with_logits(logits, hot, pos_weight=torch.tensor([2.0, 1.0]))
    assert math.isclose(bce, expected.item(), rel_tol=1e-6)


def test_plots_write_pngs(tmp_path):
    from llmtune.reports.plots import confusion_matrix_png, per_class_f1_png

    matrix = confusion_matrix_png([[5, 1], [0, 4]], ["neg", "pos"], tmp_path / "plots" / "cm.png")
    bars = per_class_f1_png([{"label": "neg", "f1": 0.9, "support": 6}, {"label": "pos", "f1": 0.8, "support": 4}],
                            tmp_path / "f1.png")
    for path in (matrix, bars):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
