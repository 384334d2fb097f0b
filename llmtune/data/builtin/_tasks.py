"""Templates for ``builtin:qa``, ``builtin:instructions`` and ``builtin:chat``."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from llmtune.data.builtin._prose import town_paragraph
from llmtune.data.builtin._world import Town

_QUESTIONS: dict[str, list[str]] = {
    "river": ["On which river does {T} lie?", "What river flows through {T}?"],
    "region": ["In which region is {T}?", "Where is the town of {T}?"],
    "founded": ["When was {T} founded?", "In what year was {T} founded?"],
    "founder": ["Who founded {T}?", "What was the name of the founder of {T}?"],
    "founder_trade": ["What was the trade of the person who founded {T}?"],
    "population": ["How many people live in {T}?", "What is the population of {T}?"],
    "trade": ["What do most people in {T} work as?", "What trade are many people in {T} known for?"],
    "market_day": ["On which day is the market held in {T}?", "When is market day in {T}?"],
    "landmark": ["What is the oldest building in {T}?"],
    "landmark_built": ["When was the oldest building in {T} built?"],
}


def qa_rows(rng: random.Random, towns: list[Town], others: list[Town], count: int, prefix: str) -> list[dict[str, Any]]:
    """SQuAD-format rows: 2-4 questions per town paragraph until ``count`` rows exist.

    Args:
        rng: Seeded random source.
        towns: Towns to write contexts about (one context each, in order).
        others: Towns that may be mentioned in passing (distractors).
        count: Rows to return.
        prefix: Start of each row id (``train`` / ``validation``).
    """
    rows: list[dict[str, Any]] = []
    for town in towns:
        para = town_paragraph(rng, town, rng.choice(others))
        context = para.text
        asked = [key for key in _QUESTIONS if key in para.spans and key != "name"]
        for key in rng.sample(asked, min(len(asked), rng.randint(2, 4))):
            start, answer = para.spans[key]
            # The whole point of this set: offsets that are right by construction, and checked.
            assert context[start : start + len(answer)] == answer, (key, context, start, answer)
            rows.append({
                "id": f"{prefix}-{len(rows):05d}",
                "title": town.name,
                "context": context,
                "question": rng.choice(_QUESTIONS[key]).format(T=town.name),
                "answers": {"text": [answer], "answer_start": [start]},
            })
            if len(rows) == count:
                return rows
    raise RuntimeError(f"not enough towns for {count} QA rows")


_OPPOSITES = [("hot", "cold"), ("big", "small"), ("fast", "slow"), ("up", "down"), ("early", "late"),
              ("light", "dark"), ("wet", "dry"), ("full", "empty"), ("old", "young"), ("open", "closed"),
              ("loud", "quiet"), ("hard", "soft"), ("high", "low"), ("long", "short"), ("heavy", "light"),
              ("rich", "poor"), ("thick", "thin"), ("happy", "sad"), ("near", "far"), ("clean", "dirty")]
_PLURALS = [("cat", "cats"), ("box", "boxes"), ("city", "cities"), ("mouse", "mice"), ("child", "children"),
            ("leaf", "leaves"), ("bus", "buses"), ("tooth", "teeth"), ("foot", "feet"), ("berry", "berries"),
            ("fox", "foxes"), ("knife", "knives"), ("goose", "geese"), ("sheep", "sheep"), ("dish", "dishes"),
            ("lamp", "lamps"), ("story", "stories"), ("wolf", "wolves"), ("man", "men"), ("church", "churches")]
_SENTENCE_WORDS = ["the", "small", "dog", "ran", "home", "quickly", "after", "dark", "rain"]
_WORDS = ["apple", "river", "stone", "lantern", "window", "garden", "bread", "candle", "hammer", "basket",
          "mountain", "pencil", "button", "ladder", "kettle", "meadow", "harbour", "feather", "rope", "cloud"]


def _number_tasks(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.randint(0, 60), rng.randint(0, 60)
    nums = rng.sample(range(1, 100), 4)
    return rng.choice([
        (f"Add {a} and {b}.", "", str(a + b)),
        (f"Subtract {min(a, b)} from {max(a, b)}.", "", str(max(a, b) - min(a, b))),
        (f"Which number is larger, {a} or {b}?", "", str(max(a, b)))
        if a != b else (f"Add {a} and {b}.", "", str(a + b)),
        (f"Is {a} an even or an odd number?", "", "even" if a % 2 == 0 else "odd"),
        ("Sort these numbers from smallest to largest.", ", ".join(map(str, nums)),
         ", ".join(map(str, sorted(nums)))),
    ])


def _word_tasks(rng: random.Random) -> tuple[str, str, str]:
    word = rng.choice(_WORDS)
    words = rng.sample(_WORDS, rng.randint(3, 5))
    pair = rng.choice(_OPPOSITES)
    pair = pair if rng.random() < 0.5 else (pair[1], pair[0])
    noun, plural = rng.choice(_PLURALS)
    sentence = " ".join(rng.sample(_SENTENCE_WORDS, rng.randint(3, 8)))
    return rng.choice([
        ("Reverse the order of the words.", " ".join(words), " ".join(reversed(words))),
        ("Give the opposite of the word.", pair[0], pair[1]),
        (f"What is the opposite of {pair[0]}?", "", pair[1]),
        ("Write the word in capital letters.", word, word.upper()),
        (f"What is the plural of {noun}?", "", plural),
        ("How many words are in this sentence?", sentence, str(len(sentence.split()))),
        ("What is the first letter of the word?", word, word[0]),
        ("Repeat the word three times.", word, " ".join([word] * 3)),
    ])


_CAPITAL_QUESTIONS = ["What is the capital of {}?", "Name the capital city of {}.", "Which city is the capital of {}?",
                      "Tell me the capital of {}."]
_RIVER_QUESTIONS = ["Which river does the town of {} lie on?", "On which river is {}?",
                    "Name the river that {} lies on."]
_FOUNDED_QUESTIONS = ["When was {} founded?", "In what year was {} founded?", "Tell me the year {} was founded."]


def _fact_tasks(rng: random.Random, towns: list[Town], countries: list[tuple[str, str]]) -> tuple[str, str, str]:
    # A small fixed set of facts asked in several phrasings: validation rows ask known facts in new words.
    country, capital = rng.choice(countries)
    town = rng.choice(towns)
    return rng.choice([
        (rng.choice(_CAPITAL_QUESTIONS).format(country), "", f"The capital of {country} is {capital}."),
        (rng.choice(_RIVER_QUESTIONS).format(town.name), "", f"{town.name} lies on the river {town.river}."),
        (rng.choice(_FOUNDED_QUESTIONS).format(town.name), "", f"{town.name} was founded in {town.founded}."),
    ])


def instruction_rows(
    rng: random.Random, towns: list[Town], countries: list[tuple[str, str]], count: int, seen: set[tuple[str, str]]
) -> list[dict[str, str]]:
    """``count`` distinct alpaca rows (``instruction``, ``input``, ``output``) not already in ``seen``.

    ``seen`` is updated, so calling this for train then validation keeps the two disjoint.
    """
    makers: list[Callable[[], tuple[str, str, str]]] = [
        lambda: _number_tasks(rng), lambda: _word_tasks(rng), lambda: _fact_tasks(rng, towns, countries),
    ]
    rows: list[dict[str, str]] = []
    while len(rows) < count:
        instruction, input_, output = rng.choices(makers, weights=[40, 45, 15])[0]()
        if (instruction, input_) in seen:
            continue
        seen.add((instruction, input_))
        rows.append({"instruction": instruction, "input": input_, "output": output})
    return rows


def _user_turn(row: dict[str, str]) -> str:
    return row["instruction"] if not row["input"] else f"{row['instruction']}\n\n{row['input']}"


def chat_rows(rng: random.Random, source: list[dict[str, str]], count: int) -> list[dict[str, Any]]:
    """``count`` conversations built from instruction rows: some with a system turn, some two exchanges."""
    rows = []
    pool = list(source)
    rng.shuffle(pool)
    while len(rows) < count:
        first = pool.pop()
        messages = []
        if rng.random() < 0.3:
            messages.append({"role": "system", "content": "You are a helpful assistant. Answer briefly."})
        messages += [{"role": "user", "content": _user_turn(first)}, {"role": "assistant", "content": first["output"]}]
        if rng.random() < 0.25:
            second = pool.pop()
            messages += [{"role": "user", "content": _user_turn(second)},
                         {"role": "assistant", "content": second["output"]}]
        rows.append({"messages": messages})
    return rows
