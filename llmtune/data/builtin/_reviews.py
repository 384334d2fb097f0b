"""Templates for ``builtin:classification``: product reviews labelled negative / neutral / positive.

The label follows fixed rules a model has to learn, not just which words appear:

* a clause is positive or negative by its adjective or phrase; ``not`` flips it
  ("not good" is negative, "not bad at all" is positive);
* in "A, but B" the clause after ``but`` decides;
* one positive and one negative clause joined by ``and`` (or in two sentences) make a mixed,
  neutral review, as do lukewarm words ("average", "it does the job").

So a bag-of-words model beats the majority class by far but cannot reach 100 %.
"""

from __future__ import annotations

import random

PRODUCTS = ["kettle", "lamp", "backpack", "chair", "blender", "umbrella", "jacket", "tent", "notebook",
            "frying pan", "desk fan", "teapot", "phone case", "bread knife", "alarm clock", "garden hose",
            "water bottle", "toaster", "rain coat", "torch", "suitcase", "doormat", "pillow", "coffee grinder"]
ASPECTS = ["handle", "design", "colour", "lid", "price", "strap", "finish", "material", "size", "switch"]
POSITIVE = ["good", "great", "excellent", "lovely", "sturdy", "wonderful", "comfortable", "reliable", "brilliant",
            "solid"]
NEGATIVE = ["bad", "poor", "awful", "terrible", "flimsy", "useless", "disappointing", "horrible", "shoddy",
            "fragile"]
NEUTRAL = ["okay", "average", "ordinary", "acceptable", "standard", "adequate", "unremarkable"]
POSITIVE_PHRASES = ["I love it", "I would buy it again", "it works perfectly", "I recommend it to everyone",
                    "it was worth every penny"]
NEGATIVE_PHRASES = ["I regret buying it", "it stopped working after a week", "I want my money back",
                    "I sent it back", "it was a waste of money"]
NEUTRAL_PHRASES = ["it does the job", "it is neither good nor bad", "it is what you would expect",
                   "nothing special, but nothing wrong either"]
FILLERS = ["I bought it {when} for my {what}.", "It arrived on a {day}.", "I have used it {n} times so far.",
           "It came in a {colour} box.", "My {who} chose it for me."]
_WHEN = ["last week", "in the spring", "a month ago", "for a trip", "in the sales"]
_WHO = ["brother", "sister", "mother", "father", "son", "daughter"]
_WHAT = _WHO + ["flat", "office", "kitchen"]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


def _subject(rng: random.Random, product: str) -> str:
    return rng.choice([f"the {product}", f"the {rng.choice(ASPECTS)}"])


def _clause(rng: random.Random, product: str, polarity: str) -> str:
    """A clause that reads as ``polarity`` (positive / negative / neutral), possibly through a negation."""
    subject = _subject(rng, product)
    verb = rng.choice(["is", "feels", "seems"])
    if polarity == "neutral":
        return rng.choice([f"{subject} {verb} {rng.choice(NEUTRAL)}", rng.choice(NEUTRAL_PHRASES)])
    same, opposite = (POSITIVE, NEGATIVE) if polarity == "positive" else (NEGATIVE, POSITIVE)
    phrases = POSITIVE_PHRASES if polarity == "positive" else NEGATIVE_PHRASES
    roll = rng.random()
    if roll < 0.45:
        return f"{subject} {verb} {rng.choice(['', 'really ', 'very ', 'quite '])}{rng.choice(same)}"
    if roll < 0.7:
        # Negating the opposite word gives this polarity ("not good" -> negative).
        tail = " at all" if polarity == "positive" else ""
        return f"{subject} is not {rng.choice(opposite)}{tail}"
    if roll < 0.85:
        return f"I found {subject} {rng.choice(same)}"
    return rng.choice(phrases)


def _sentence(clause: str) -> str:
    return clause[0].upper() + clause[1:] + "."


def _filler(rng: random.Random) -> str:
    return rng.choice(FILLERS).format(when=rng.choice(_WHEN), who=rng.choice(_WHO), what=rng.choice(_WHAT),
                                      day=rng.choice(_DAYS),
                                      n=rng.randint(2, 30), colour=rng.choice(["brown", "white", "green", "red"]))


def review(rng: random.Random, label: str) -> str:
    """One review whose label is ``label`` under the rules in the module docstring."""
    product = rng.choice(PRODUCTS)
    opposite = {"positive": "negative", "negative": "positive"}
    pattern = rng.random()
    if label == "neutral" and pattern < 0.5:
        first, second = rng.sample(["positive", "negative"], 2)
        joiner = rng.choice([", and ", ". "])
        body = _clause(rng, product, first) + joiner
        body += _clause(rng, product, second) if joiner == ", and " else _sentence(_clause(rng, product, second))[:-1]
        sentences = [_sentence(body)]
    elif label != "neutral" and pattern < 0.3:
        # "A, but B": B decides.
        sentences = [_sentence(f"{_clause(rng, product, opposite[label])}, but {_clause(rng, product, label)}")]
    else:
        sentences = [_sentence(_clause(rng, product, label))]
        if label != "neutral" and rng.random() < 0.3:
            sentences.append(_sentence(_clause(rng, product, label)))
    if rng.random() < 0.6:
        sentences.insert(rng.randint(0, len(sentences)), _filler(rng))
    return " ".join(sentences)


def reviews(rng: random.Random, count: int, exclude: set[str]) -> list[dict[str, str]]:
    """``count`` rows of ``{"text", "label"}``, roughly 40/25/35 % negative/neutral/positive.

    Texts in ``exclude`` are skipped and every new text is added to it, so validation rows never
    repeat a training row.
    """
    rows: list[dict[str, str]] = []
    while len(rows) < count:
        label = rng.choices(["negative", "neutral", "positive"], weights=[40, 25, 35])[0]
        text = review(rng, label)
        if text not in exclude:
            exclude.add(text)
            rows.append({"text": text, "label": label})
    return rows
