"""Stage 8: decontamination: drop training documents sharing a long word n-gram with evaluation data.

The evaluation files are read through the data layer (any source ``--dataset`` accepts); every string
column counts. N-grams are the shared lower-cased words of ``normalize.words``, so punctuation and case
differences do not hide an overlap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

from llmtune.data.clean.normalize import words
from llmtune.errors import DataError


def ngrams(tokens: list[str], n: int) -> Iterable[str]:
    """The word n-grams of ``tokens`` as space-joined strings."""
    return (" ".join(tokens[i: i + n]) for i in range(len(tokens) - n + 1))


def load_eval_ngrams(files: list[str], n: int) -> frozenset[str]:
    """Every word n-gram of every string column of the evaluation ``files``.

    Raises:
        DataError: A file does not exist (or cannot be read by the data layer).
    """
    from llmtune.data.sources import load_source, looks_like_path

    grams: set[str] = set()
    for spec in files:
        if looks_like_path(spec) and not any(ch in spec for ch in "*?[") and not Path(spec).expanduser().exists():
            raise DataError(f"decontamination file not found: {spec}; check the path passed to --decontaminate")
        for split in load_source(spec).values():
            columns = [name for name, feature in split.features.items() if getattr(feature, "dtype", "") in ("string", "large_string")]
            for batch in split.iter(batch_size=1000):
                for column in columns:
                    for text in batch[column]:
                        if text:
                            grams.update(ngrams(words(text), n))
    return frozenset(grams)


def contaminated(text: str, eval_ngrams: frozenset[str], n: int) -> Optional[str]:
    """The first n-gram ``text`` shares with the evaluation data, or None."""
    if not eval_ngrams:
        return None
    return next((gram for gram in ngrams(words(text), n) if gram in eval_ngrams), None)
