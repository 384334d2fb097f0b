"""Regenerate the builtin datasets: ``python -m llmtune.data.builtin.generate [--check]``.

All text comes from our own templates (``_world``, ``_prose``, ``_reviews``, ``_tasks``) and one fixed
seed, so the output is identical on every run and machine. ``--check`` regenerates in memory and
exits 1 if the committed files differ (use it in CI after editing a template).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

from llmtune.data.builtin._preferences import preference_rows
from llmtune.data.builtin._prose import corpus
from llmtune.data.builtin._reviews import reviews
from llmtune.data.builtin._tasks import chat_rows, instruction_rows, qa_rows
from llmtune.data.builtin._world import NameMaker, make_countries, make_towns

SEED = 20240611
OUT = Path(__file__).resolve().parent
#: Rows (paragraphs for text) per split.
SIZES = {
    "text": {"train": 2400, "validation": 126},
    "classification": {"train": 3000, "validation": 300},
    "qa": {"train": 1500, "validation": 200},
    "instructions": {"train": 1000, "validation": 100},
    "chat": {"train": 300, "validation": 50},
    "preferences": {"train": 1000, "validation": 100},  # one pair per instruction row
}


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def build() -> dict[str, str]:
    """Every builtin file's content, keyed by its path relative to this folder."""
    rng = random.Random(SEED)
    names = NameMaker(rng)
    towns = make_towns(rng, names, 900)
    countries = make_countries(rng, names, 40)
    files: dict[str, str] = {}

    # Held-out QA contexts describe towns the training contexts never mention as the subject.
    qa_train_towns, qa_valid_towns = towns[:700], towns[700:]
    paragraphs = corpus(random.Random(SEED + 1), towns, names, sum(SIZES["text"].values()))
    cut = SIZES["text"]["train"]
    files["text/train.txt"] = "\n".join(paragraphs[:cut]) + "\n"
    files["text/validation.txt"] = "\n".join(paragraphs[cut:]) + "\n"

    review_rng, seen_reviews = random.Random(SEED + 2), set()
    for split, count in SIZES["classification"].items():
        files[f"classification/{split}.jsonl"] = _jsonl(reviews(review_rng, count, seen_reviews))

    qa_rng = random.Random(SEED + 3)
    files["qa/train.jsonl"] = _jsonl(qa_rows(qa_rng, qa_train_towns, towns, SIZES["qa"]["train"], "train"))
    files["qa/validation.jsonl"] = _jsonl(
        qa_rows(qa_rng, qa_valid_towns, towns, SIZES["qa"]["validation"], "validation")
    )

    task_rng, seen = random.Random(SEED + 4), set()
    chat_rng = random.Random(SEED + 5)
    preference_rng = random.Random(SEED + 6)
    for split in ("train", "validation"):
        rows = instruction_rows(task_rng, towns[:40], countries, SIZES["instructions"][split], seen)
        files[f"instructions/{split}.jsonl"] = _jsonl(rows)
        files[f"chat/{split}.jsonl"] = _jsonl(chat_rows(chat_rng, rows, SIZES["chat"][split]))
        files[f"preferences/{split}.jsonl"] = _jsonl(preference_rows(preference_rng, rows))
    return files


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) the builtin files; print their sizes."""
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    stale = []
    for relative, content in build().items():
        path = OUT / relative
        if check:
            if not path.is_file() or path.read_text(encoding="utf-8") != content:
                stale.append(relative)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8", newline="\n")
        print(f"{relative:32s} {content.count(chr(10)):6d} rows {len(content.encode()) / 1024:8.1f} KB")
    if stale:
        print("out of date (run python -m llmtune.data.builtin.generate):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
