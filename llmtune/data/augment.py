"""A transfer set for classification distillation: masked copies of the training texts, or unlabelled text.

On its own training rows a fine-tuned teacher is nearly 100 % sure of the gold label (it fitted them), so
its soft targets there add little beyond the labels. Tang et al. 2019 ("Distilling task-specific knowledge
from BERT into simple neural networks") and TinyBERT distil on a *transfer set* instead: perturbed copies
of the training texts that the teacher labels with its (now uncertain) distribution. Here each copy
replaces every whitespace-separated word with the tokenizer's mask token (``[MASK]``; the unknown token
where there is none) with probability ``mask_prob``. The copies are fixed at preparation (seeded by the row's
index and the run's seed), so the teacher's logits for them are computed once and cached like the
originals'. Evaluation rows are never augmented; the runner marks the copies' labels so only the KL term
sees them (their gold label may no longer hold once words are masked). ``unlabelled_rows`` reads the other
kind, real unlabelled text (``distill.transfer_data``), into rows of the same shape.
"""

from __future__ import annotations

import random
from typing import Any, Optional

from llmtune.errors import DataError

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


def unlabelled_rows(spec: str, column: Optional[str], like: Any) -> Any:
    """The texts of ``spec`` (its train split, or its only split) as rows shaped like the training rows ``like``.

    ``text`` comes from ``column`` when given, else from ``text`` or one of its usual aliases (``text_pair``
    likewise when ``like`` has one); rows with an empty text are skipped; every label is a placeholder (the
    first training label), since the runner marks these rows for the KL term only.

    Raises:
        DataError: No such split or column, or no row with text.
    """
    from datasets import Dataset

    from llmtune.data.columns import ALIASES
    from llmtune.data.sources import load_source

    source = load_source(spec)
    split = "train" if "train" in source else (next(iter(source)) if len(source) == 1 else None)
    if split is None:
        raise DataError(f"the transfer data {spec} has splits {', '.join(source)} and none is 'train'; "
                        "pass one file or folder of text")
    rows, where = source[split], f"the transfer data {spec}"
    wanted = [name for name in TEXT_COLUMNS if name in like.column_names]
    columns: dict[str, list[Any]] = {}
    for name in wanted:
        names = [column] if (column and name == "text") else [name, *ALIASES.get(name, ())]
        found = next((n for n in names if n in rows.column_names), None)
        if found is None:
            raise DataError(f"{where} has no column {' / '.join(repr(n) for n in names)} (its columns: "
                            f"{', '.join(rows.column_names)}); pass --set distill.transfer_column=NAME")
        columns[name] = list(rows[found])
    keep = [i for i in range(len(rows)) if all(isinstance(columns[n][i], str) and columns[n][i].strip() for n in wanted)]
    if not keep:
        raise DataError(f"{where} has no row with text")
    data = {name: [columns[name][i] for i in keep] for name in wanted}
    data["label"] = [like[0]["label"]] * len(keep)
    return Dataset.from_dict(data, features=like.select_columns([*wanted, "label"]).features)
