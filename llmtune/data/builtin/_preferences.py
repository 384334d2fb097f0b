"""``builtin:preferences``: preference pairs with a checkable preference, built from the instruction rows.

Each instruction row (``_tasks.instruction_rows``) becomes one pair in TRL's standard layout: the
prompt is the row's Alpaca prompt (as ``finetune -t generation`` trains on ``builtin:instructions``),
``chosen`` is the correct answer, and ``rejected`` is, by ``kind``:

* ``wrong``: a wrong answer of the same shape (a number off by a little, the other parity, the answer
  to another row of the same instruction);
* ``ramble``: the correct answer that does not stop (it goes on repeating itself), the failure a
  model shows when it never learned to end with eos.

So a model that learned the preference scores the correct, stopping answer above the rejected one,
and that can be checked on the validation pairs, whose instructions training never saw.
"""

from __future__ import annotations

import random
from typing import Any

from llmtune.tasks.chat_formats import alpaca_prompt


def _wrong(rng: random.Random, row: dict[str, str], same_task: list[dict[str, str]]) -> str:
    """A wrong answer shaped like the right one."""
    answer = row["output"]
    if answer.isdigit():
        return str(max(0, int(answer) + rng.choice([-3, -2, -1, 1, 2, 3, 10])) if answer != "0" else rng.randint(1, 9))
    if answer in ("even", "odd"):
        return "odd" if answer == "even" else "even"
    others = [r["output"] for r in same_task if r["output"] != answer]
    return rng.choice(others) if others else f"{answer} {answer}"


def _ramble(rng: random.Random, answer: str) -> str:
    """The right answer, then it keeps talking."""
    repeats = rng.randint(2, 4)
    tail = rng.choice([" " + answer, "\n" + answer, " and " + answer])
    return answer + tail * repeats


def preference_rows(rng: random.Random, rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """One pair per instruction row (``prompt``, ``chosen``, ``rejected``, ``kind``), half of each kind."""
    by_task: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_task.setdefault(row["instruction"], []).append(row)
    pairs = []
    for row in rows:
        kind = rng.choice(["wrong", "ramble"])
        rejected = _wrong(rng, row, by_task[row["instruction"]]) if kind == "wrong" else _ramble(rng, row["output"])
        if rejected.strip() == row["output"].strip():  # the shape allowed no other answer
            kind, rejected = "ramble", _ramble(rng, row["output"])
        pairs.append({"prompt": alpaca_prompt(row["instruction"], row["input"]), "chosen": row["output"],
                      "rejected": rejected, "kind": kind})
    return pairs
