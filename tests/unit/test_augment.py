"""The classification transfer set (llmtune/data/augment.py) and its KL-only rows in the distillation loss."""

import math
import random

import pytest

from llmtune.data.augment import mask_token_of, mask_words, transfer_rows, transfer_texts

TEXT = "the battery lasts all day and the screen is bright"  # 10 words


def test_mask_words_masks_the_words_the_seeded_draws_pick():
    reference = random.Random(7)  # the same draws, one per word in order: a word is masked when its draw < p
    picked = [reference.random() < 0.3 for _ in TEXT.split()]
    masked = mask_words(TEXT, random.Random(7), 0.3, "[MASK]").split()
    assert picked == [False, True, False, True, False, False, True, False, True, False]  # 4 of 10 draws < 0.3
    assert " ".join(masked) == "the [MASK] lasts [MASK] day and [MASK] screen [MASK] bright"
    assert [w == "[MASK]" for w in masked] == picked
    assert [w for w, p in zip(masked, picked) if not p] == [w for w, p in zip(TEXT.split(), picked) if not p]


def test_mask_words_extremes_and_whitespace():
    assert mask_words("a  b\tc", random.Random(0), 1.0, "<unk>") == "<unk> <unk> <unk>"
    assert mask_words("a  b\tc", random.Random(0), 0.0, "<unk>") == "a b c"


def test_masked_share_is_close_to_the_probability():
    # 2,000 copies of a 10-word row at p=0.2: 20,000 Bernoulli(0.2) draws, sd of the share 0.0028
    copies = transfer_texts([TEXT], 2000, 0.2, "[MASK]", seed=0)
    share = sum(w == "[MASK]" for c in copies for w in c.split()) / 20_000
    assert share == pytest.approx(0.2, abs=0.012)


def test_transfer_texts_are_deterministic_per_seed_and_row_major():
    texts = [TEXT, "great phone", "terrible support never again"]
    one, two = (transfer_texts(texts, 3, 0.5, "[MASK]", seed=1) for _ in range(2))
    assert one == two and len(one) == 9
    assert transfer_texts(texts, 3, 0.5, "[MASK]", seed=2) != one
    # copies 3..5 belong to row 1 ("great phone"): every word is the original or the mask
    assert all(w in ("great", "phone", "[MASK]") for c in one[3:6] for w in c.split())
    # a row's copies depend on its index and the seed alone, not on the rows after it
    assert transfer_texts([TEXT], 3, 0.5, "[MASK]", seed=1) == one[:3]


def test_transfer_rows_keep_labels_and_mask_pairs_separately():
    datasets = pytest.importorskip("datasets")
    rows = datasets.Dataset.from_dict({"text": ["a b c d", "e f"], "text_pair": ["g h", "i j k"], "label": [1, 0]})
    out = transfer_rows(rows, 2, 0.5, "[MASK]", seed=3)
    assert out.column_names == rows.column_names and len(out) == 4
    assert out["label"] == [1, 1, 0, 0]
    assert out["text"] == transfer_texts(["a b c d", "e f"], 2, 0.5, "[MASK]", seed=3)
    assert out["text_pair"] == transfer_texts(["g h", "i j k"], 2, 0.5, "[MASK]", seed=4)
    assert rows["text"] == ["a b c d", "e f"]  # the original rows are untouched


def test_mask_token_falls_back_to_unknown():
    class Tok:
        mask_token, unk_token = None, "<unk>"

    assert mask_token_of(Tok()) == "<unk>"
    Tok.mask_token = "[MASK]"
    assert mask_token_of(Tok()) == "[MASK]"
    Tok.mask_token = Tok.unk_token = None
    assert mask_token_of(Tok()) is None


def test_kd_only_rows_count_in_the_kl_term_only():
    torch = pytest.importorskip("torch")
    from llmtune.engine.distill import KD_ONLY, DistillLoss, task_labels

    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits, self.dummy = torch.tensor(logits), torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids=None, attention_mask=None):
            return {"logits": self.logits + 0 * self.dummy}

    def kl(p, q):
        return sum(a * math.log(a / b) for a, b in zip(p, q))

    teacher = Fixed([[math.log(3), 0.0], [0.0, math.log(3)]])
    student = Fixed([[0.0, 0.0], [0.0, 0.0]])
    student.train()
    labels = torch.tensor([0, KD_ONLY])  # row 1 is a transfer-set copy
    assert task_labels(labels).tolist() == [0, -100]
    loss = DistillLoss(student, teacher, temperature=1.0, alpha=0.5)
    # the Trainer counts labels != -100: both rows; KL over both rows, cross-entropy (ln 2) over row 0 only
    value = loss(student(input_ids=torch.zeros(2, 1)), labels, num_items_in_batch=torch.tensor(2))
    both_kl = (kl([0.75, 0.25], [0.5, 0.5]) + kl([0.25, 0.75], [0.5, 0.5])) / 2
    assert value.item() == pytest.approx(0.5 * both_kl + 0.5 * math.log(2) / 2, abs=1e-6)
    # alpha 0 (labels alone): a batch of transfer-set rows only adds nothing
    plain = DistillLoss(student, teacher, temperature=1.0, alpha=0.0)
    only_copies = torch.tensor([KD_ONLY, KD_ONLY])
    assert plain(student(input_ids=torch.zeros(2, 1)), only_copies, torch.tensor(2)).item() == 0.0


def test_unlabelled_rows_read_the_text_skip_blanks_and_carry_a_placeholder_label(tmp_path):
    from datasets import ClassLabel, Dataset, Features, Value

    from llmtune.data.augment import unlabelled_rows

    like = Dataset.from_dict({"text": ["a", "b"], "label": [2, 0]},
                             features=Features({"text": Value("string"), "label": ClassLabel(names=["x", "y", "z"])}))
    path = tmp_path / "extra.jsonl"
    path.write_text('{"sentence": "one two", "stars": 5}\n{"sentence": "  "}\n{"sentence": "three"}\n')
    rows = unlabelled_rows(str(path), None, like)  # 'sentence' is an alias of text; the blank row is skipped
    assert rows["text"] == ["one two", "three"]
    assert rows["label"] == [2, 2] and rows.features["label"] == like.features["label"]
    assert rows.column_names == ["text", "label"]
    assert unlabelled_rows(str(path), "sentence", like)["text"] == ["one two", "three"]


def test_unlabelled_rows_refuse_a_missing_column_or_no_text(tmp_path):
    from datasets import Dataset

    from llmtune.data.augment import unlabelled_rows
    from llmtune.errors import DataError

    like = Dataset.from_dict({"text": ["a"], "text_pair": ["b"], "label": [0]})
    path = tmp_path / "extra.csv"
    path.write_text("question,answer\nwhat is it,a cat\n")
    with pytest.raises(DataError, match="distill.transfer_column"):
        unlabelled_rows(str(path), None, like.remove_columns("text_pair"))
    with pytest.raises(DataError, match="'text_pair'"):  # a pair task needs pairs
        unlabelled_rows(str(path), "question", like)
    empty = tmp_path / "empty.csv"
    empty.write_text("text\n\"  \"\n")
    with pytest.raises(DataError, match="no row with text"):
        unlabelled_rows(str(empty), None, like.remove_columns("text_pair"))
