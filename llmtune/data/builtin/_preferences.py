"""``builtin:preferences``: preference pairs with a checkable preference, built from the instruction rows.

Each instruction row (``_tasks.instruction_rows``) becomes one pair in TRL's standard layout: the
prompt is the row's Alpaca prompt (as ``finetune -t generation`` trains on ``builtin:instructions``),
``chosen`` is the correct answer, and ``rejected`` is, by ``kind``:

* ``wrong``: a typical mistake that can be checked against the prompt: an operand copied as the sum,
  the sum for a difference, the smaller number, the other parity, the input left unsorted / unreversed /
  uncapitalised, the singular for the plural, the word for its opposite, a word count off by one, the
  last letter for the first, two repeats for three, another answer to the same question;
* ``ramble``: the correct answer that does not stop (it goes on repeating itself), the failure a
  model shows when it never learned to end with eos.

So a model that learned the preference scores the correct, stopping answer above the rejected one,
and that can be checked on the validation pairs, whose instructions training never saw.
"""

from __future__ import annotations

import random
import re
from typing import Any, Callable, Optional

from llmtune.tasks.chat_formats import alpaca_prompt


def _wrong(rng: random.Random, row: dict[str, str], same_task: list[dict[str, str]]) -> Optional[str]:
    """A typical wrong answer, checkable against the prompt: copying it, doing the wrong operation, off by one."""
    instruction, given, answer = row["instruction"], row["input"], row["output"]
    numbers = [int(n) for n in re.findall(r"\d+", instruction)]
    rules: list[tuple[str, Callable[[], str]]] = [
        ("Add ", lambda: str(rng.choice(numbers))),  # copies an operand
        ("Subtract ", lambda: str(sum(numbers))),  # adds instead
        ("Which number is larger", lambda: str(min(numbers))),
        ("Is ", lambda: "odd" if answer == "even" else "even"),
        ("Sort these numbers", lambda: given if given != answer else ", ".join(reversed(answer.split(", ")))),
        ("Reverse the order", lambda: given),  # the words as given
        ("Give the opposite", lambda: given),
        ("What is the opposite of ", lambda: instruction[len("What is the opposite of "):].rstrip("?")),
        ("Write the word in capital", lambda: given),
        ("What is the plural of ", lambda: instruction[len("What is the plural of "):].rstrip("?")),
        ("How many words", lambda: str(int(answer) + rng.choice([-1, 1]))),
        ("What is the first letter", lambda: given[-1]),
        ("Repeat the word three times", lambda: " ".join([given] * 2)),
    ]
    for start, make in rules:
        if instruction.startswith(start):
            return make()
    others = [r["output"] for r in same_task if r["output"] != answer]  # facts: another town's or country's
    return rng.choice(others) if others else None


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
        if rejected is None or rejected.strip() == row["output"].strip():  # no other answer of that shape
            kind, rejected = "ramble", _ramble(rng, row["output"])
        pairs.append({"prompt": alpaca_prompt(row["instruction"], row["input"]), "chosen": row["output"],
                      "rejected": rejected, "kind": kind})
    return pairs
