"""Pieces of ``llmtune eval``: label mapping, sliding windows, the fixed MLM mask, NLL sums, progress."""

import io
import math
from types import SimpleNamespace

import pytest

from llmtune.tasks.scoring import fixed_mask, sliding_windows, token_nll, token_stream, window_features
from llmtune.tasks.base import longest_first, unsort
from llmtune.tasks.labels import model_label_space


class CharTokenizer:
    """One token per character (its code point), eos 0, mask 1, specials 0-2."""

    eos_token_id, mask_token_id, bos_token_id = 0, 1, None
    all_special_ids = [0, 1, 2]

    def __call__(self, texts, add_special_tokens=False):
        if isinstance(texts, str):
            return {"input_ids": [ord(c) for c in texts]}
        return {"input_ids": [[ord(c) for c in t] for t in texts]}

    def __len__(self):
        return 300


def _config(names, problem_type=None):
    return SimpleNamespace(id2label=dict(enumerate(names)), num_labels=len(names), problem_type=problem_type)


def test_label_space_from_the_model():
    by_name = model_label_space(_config(["neg", "pos"]), ["pos", "neg"])
    assert by_name.encode("pos") == 1 and by_name.names == ["neg", "pos"]
    stars = model_label_space(_config(["1", "2", "5"]), [5, 1])  # numeric class names: map the numbers
    assert stars.encode(5) == 2 and stars.encode(1) == 0
    ids = model_label_space(_config(["neg", "pos"]), [0, 1])  # named classes, integer data: ids
    assert ids.encode(1) == 1 and ids.names == ["neg", "pos"]
    feature = SimpleNamespace(names=["pos", "neg"])  # a ClassLabel column numbering the names the other way
    swapped = model_label_space(_config(["neg", "pos"]), [0, 1], feature)
    assert swapped.encode(0) == 1 and swapped.encode(1) == 0
    multi = model_label_space(_config(["a", "b", "c"], "multi_label_classification"), [["a"], ["c", "b"]])
    assert multi.multi_label and multi.encode(["c", "a"]) == [1.0, 0.0, 1.0]


def test_sort_longest_first_and_back():
    from datasets import Dataset

    rows = Dataset.from_dict({"x": ["a", "bbb", "cc", "dddd"]})
    ordered, order = longest_first(rows, [1, 3, 2, 4])
    assert ordered["x"] == ["dddd", "bbb", "cc", "a"] and order == [3, 1, 2, 0]
    assert unsort(["D", "B", "C", "A"], order) == ["A", "B", "C", "D"]


def test_sliding_windows_score_every_token_once():
    spans = sliding_windows(10, window=4, stride=2)
    assert spans == [(0, 4, 1), (2, 6, 4), (4, 8, 6), (6, 10, 8)]
    scored = [t for _, end, first in spans for t in range(first, end)]
    assert scored == list(range(1, 10))
    assert sliding_windows(3, window=8, stride=4) == [(0, 3, 1)]  # a short stream: one window
    features = window_features(list(range(10, 20)), window=4, stride=2)
    assert features["input_ids"][1] == [12, 13, 14, 15] and features["labels"][1] == [-100, -100, 14, 15]
    assert features["labels"][0] == [-100, 11, 12, 13]  # nothing predicts the stream's first token


def test_token_stream_counts_characters_and_bytes():
    stream, chars, nbytes = token_stream(["ab", "  ", "é"], CharTokenizer())
    assert stream == [0, 97, 98, 0, 233, 0]  # leading eos, blank document skipped
    assert chars == 3 + 2 and nbytes == 3 + 3  # each document + 1 for its separator; "é" is 2 bytes


def test_fixed_mask_is_seeded_per_block():
    tok = CharTokenizer()
    blocks = [[2] + [100 + (i % 50) for i in range(500)] + [0] for _ in range(20)]
    a = fixed_mask({"input_ids": blocks[:3]}, [0, 1, 2], tok, 0.15, seed=7)
    b = fixed_mask({"input_ids": blocks[2:3]}, [2], tok, 0.15, seed=7)
    assert a["input_ids"][2] == b["input_ids"][0] and a["labels"][2] == b["labels"][0]  # batching does not matter
    assert a["labels"][0] != a["labels"][1]  # another block, another mask
    every = fixed_mask({"input_ids": blocks}, list(range(20)), tok, 0.15, seed=7)
    chosen = [(lab, tok_in, orig) for labs, ins, row in zip(every["labels"], every["input_ids"], blocks)
              for lab, tok_in, orig in zip(labs, ins, row) if lab != -100]
    assert 0.13 < len(chosen) / (500 * 20) < 0.17
    assert all(row[0] == 2 and labs[0] == -100 and labs[-1] == -100 for row, labs in zip(blocks, every["labels"]))
    masked = sum(t == tok.mask_token_id for _, t, _ in chosen) / len(chosen)
    kept = sum(t == orig for _, t, orig in chosen) / len(chosen)
    assert 0.75 < masked < 0.85 and 0.07 < kept < 0.15  # 80 % [MASK], 10 % random, 10 % unchanged (+ lucky draws)


def test_token_nll_by_hand():
    import torch

    logits = torch.tensor([[[0.0, 1.0], [2.0, 0.0], [5.0, 5.0]]])
    labels = torch.tensor([[-100, 0, 1]])
    # Shifted: position 0 predicts label 0 (log-softmax of [0, 1] at 0), position 1 predicts 1 ([2, 0] at 1).
    expected = (math.log(1 + math.e) - 0.0) + (math.log(math.exp(2) + 1) - 0.0)
    got = token_nll(logits, labels).tolist()[0]
    assert got[0] == pytest.approx(expected, rel=1e-6) and got[1] == 2
    unshifted = token_nll(logits, labels, shift=False).tolist()[0]  # positions 1 and 2 score themselves
    assert unshifted == pytest.approx([(math.log(math.exp(2) + 1) - 2) + math.log(2), 2])


def test_prediction_progress_plain_lines():
    from llmtune.engine.progress import PredictionProgress

    ticks = iter(range(100))
    out = io.StringIO()
    progress = PredictionProgress(stream=out, clock=lambda: float(next(ticks)))
    args, state = SimpleNamespace(eval_batch_size=4), SimpleNamespace(is_world_process_zero=True)
    for _ in range(10):
        progress.on_prediction_step(args, state, None, eval_dataloader=[None] * 10)
    lines = out.getvalue().splitlines()
    assert lines[0] == "eval batch 1/10"  # no rate from a single (warm-up) batch
    # batch k ends at clock k - 1: k - 1 batches of 4 in the k - 1 s since the first ended = 4 examples/s
    assert lines[-1] == "eval batch 10/10 | 4.0 examples/s | eta 0:00" and len(lines) == 10
    progress.on_predict(args, state, None)
    progress.on_prediction_step(args, state, None, eval_dataloader=[None] * 2)
    assert out.getvalue().splitlines()[-1] == "eval batch 1/2"  # a new prediction starts over
