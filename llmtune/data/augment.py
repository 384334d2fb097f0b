"""A transfer set for classification distillation: masked copies of the training texts (pure functions).

On its own training rows a fine-tuned teacher is nearly 100 % sure of the gold label (it fitted them), so
its soft targets there add little beyond the labels. Tang et al. 2019 ("Distilling task-specific knowledge
from BERT into simple neural networks") and TinyBERT distil on a *transfer set* instead: perturbed copies
of the training texts that the teacher labels with its (now uncertain) distribution. Here each copy
replaces every whitespace-separated word with the tokenizer's mask token (``[MASK]``; the unknown token
where there is none) with probability ``mask_prob``. The copies are fixed at preparation (seeded by the row's
index and the run's seed), so the teacher's logits for them are computed once and cached like the
originals'. Evaluation rows are never augmented; the runner marks the copies' labels so only the KL term
sees them (their gold label may no longer hold once words are masked).
"""

from __future__ import annotations

import random
from typing import Any, Optional

TEXT_COLUMNS = ("text", "text_pair")


def mask_words(text: str, rng: random.Random, mask_prob: float, mask_token: str) -> str:
    """``text`` with each whitespace-separated word replaced by ``mask_token`` with probability ``mask_prob``.

    Words are split on any whitespace and re-joined with single spaces (the tokenizers llmtune trains on
    split on whitespace anyway).
    """
    return " ".join(mask_token if rng.random() < mask_prob else word for word in text.split())


def transfer_texts(texts: list[str], copies: int, mask_prob: float, mask_token: str, seed: int) -> list[str]:
    """``copies`` masked versions of every text, row-major (copies of row 0, then of row 1 ...).

    Each row has its own generator seeded by ``(seed, row index)``: a row's copies depend on its position
    and the seed alone, not on the other rows' texts.
    """
    out = []
    for index, text in enumerate(texts):
        rng = random.Random(f"{seed}:{index}")
        out += [mask_words(text, rng, mask_prob, mask_token) for _ in range(copies)]
    return out


def transfer_rows(rows: Any, copies: int, mask_prob: float, mask_token: str, seed: int) -> Any:
    """A ``datasets.Dataset`` of ``copies`` masked copies of each row of ``rows`` (labels and other columns kept).

    Args:
        rows: The training rows (a ``datasets.Dataset`` with ``text``, maybe ``text_pair``).
        copies: Copies per row (> 0).
        mask_prob: Probability that a word is masked (0..1).
        mask_token: The string that stands for a masked word (the tokenizer's mask or unknown token).
        seed: Seed of the masking (same seed, same copies).
    """
    from datasets import Dataset

    assert copies > 0, copies
    columns: dict[str, list[Any]] = {}
    for name in rows.column_names:
        values = list(rows[name])
        if name in TEXT_COLUMNS:
            # text and text_pair get different masks: offset the pair's seed.
            columns[name] = transfer_texts(values, copies, mask_prob, mask_token, seed + TEXT_COLUMNS.index(name))
        else:
            columns[name] = [value for value in values for _ in range(copies)]
    return Dataset.from_dict(columns, features=rows.features)


def mask_token_of(tokenizer: Any) -> Optional[str]:
    """The string a masked word becomes: the tokenizer's mask token, else its unknown token (None: neither)."""
    return getattr(tokenizer, "mask_token", None) or getattr(tokenizer, "unk_token", None)
