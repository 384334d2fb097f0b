"""Paragraph templates for the ``text`` corpus (and the contexts of ``qa``).

Five kinds of paragraph (town, animal, weather, trade, story) share a small vocabulary and a fixed
sentence structure, so a tiny language model can learn both the grammar and the recurring facts.
"""

from __future__ import annotations

import random
from typing import Union

from llmtune.data.builtin._world import TRADES, WEEKDAYS, Person, Town, article, join_list, person

Piece = Union[str, tuple[str, str]]


class Paragraph:
    """Builds a paragraph from pieces, remembering where each named fact starts (for QA spans)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.spans: dict[str, tuple[int, str]] = {}

    def sentence(self, *pieces: Piece) -> None:
        if self.parts:
            self._add(" ")
        for piece in pieces:
            if isinstance(piece, tuple):
                key, value = piece
                self.spans.setdefault(key, (self.length, value))
                piece = value
            self._add(piece)

    def _add(self, text: str) -> None:
        self.parts.append(text)
        self.length += len(text)

    @property
    def text(self) -> str:
        return "".join(self.parts)


_FLOWERS = ["poppies", "daisies", "clover", "bluebells"]


def _fact_sentences(rng: random.Random, town: Town, other: Town) -> list[list[Piece]]:
    t, f = town, town.founder
    trade_plural, goods = TRADES[t.trade]
    return [
        rng.choice([
            ["About ", ("population", f"{t.population:,}"), " people live in ", t.name, " today."],
            ["The town is home to about ", ("population", f"{t.population:,}"), " people."],
        ]),
        rng.choice([
            ["Most of the people there work as ", ("trade", trade_plural),
             f", and people far away buy the {goods} made in {t.name}."],
            ["Many of its people are ", ("trade", trade_plural), f", and they are proud of their {goods}."],
        ]),
        rng.choice([
            ["The market is held every ", ("market_day", t.market_day),
             f", when farmers bring {join_list(t.goods)} to the square."],
            ["Every ", ("market_day", t.market_day), f" there is a market, and farmers sell {join_list(t.goods)}."],
        ]),
        rng.choice([
            ["The oldest building in ", t.name, " is the ", ("landmark", t.landmark), ", which was built in ",
             ("landmark_built", str(t.landmark_built)), "."],
            ["The ", ("landmark", t.landmark), " was built in ", ("landmark_built", str(t.landmark_built)),
             " and is now the oldest building in the town."],
        ]),
        [rng.choice([
            f"A road runs from {t.name} to {other.name}, which is {rng.randint(3, 40)} miles away.",
            f"In winter the river {t.river} sometimes freezes, and the children of {t.name} skate on it.",
            f"In spring the fields around {t.name} are full of {rng.choice(_FLOWERS)}.",
            f"Every autumn the people of {t.name} hold a fair with music and dancing.",
            f"{f.first} {f.last} is buried near the {t.landmark}, and people still leave flowers there.",
        ])],
    ]


def town_paragraph(rng: random.Random, town: Town, other: Town) -> Paragraph:
    """A paragraph of facts about ``town``; ``spans`` maps fact names to (start, answer text)."""
    t, f = town, town.founder
    para = Paragraph()
    para.sentence(*rng.choice([
        ["The town of ", ("name", t.name), " lies on the river ", ("river", t.river), ", in ",
         ("region", t.region), "."],
        [("name", t.name), f" is {rng.choice(['a small', 'a quiet', 'a busy', 'an old'])} town on the river ",
         ("river", t.river), ", in ", ("region", t.region), "."],
    ]))
    para.sentence(*rng.choice([
        ["It was founded in ", ("founded", str(t.founded)), f" by {article(t.founder_trade)} ",
         ("founder_trade", t.founder_trade), " named ", ("founder", f.name), "."],
        [("founder", f.name), f", {article(t.founder_trade)} ", ("founder_trade", t.founder_trade),
         ", founded the town in ", ("founded", str(t.founded)), "."],
    ]))
    facts = _fact_sentences(rng, town, other)
    for pieces in rng.sample(facts, rng.randint(3, len(facts))):
        para.sentence(*pieces)
    return para


_ANIMALS = {
    # name: (class, places, foods, size phrase)
    "fox": ("animal", ["reed beds", "woods", "hills"], ["frogs", "beetles", "eggs", "mice", "berries"],
            "about five kilograms"),
    "hare": ("animal", ["meadows", "fields", "hills"], ["grass", "clover", "bark", "herbs"], "about four kilograms"),
    "owl": ("bird", ["woods", "barns", "cliffs"], ["mice", "voles", "moths", "beetles"], "about half a kilogram"),
    "heron": ("bird", ["reed beds", "marshes", "river banks"], ["fish", "frogs", "eels", "snails"],
              "about two kilograms"),
    "toad": ("animal", ["marshes", "gardens", "ponds"], ["worms", "slugs", "flies", "beetles"], "about fifty grams"),
    "otter": ("animal", ["river banks", "lakes", "marshes"], ["fish", "crabs", "eels", "frogs"],
              "about eight kilograms"),
    "lark": ("bird", ["meadows", "fields", "moors"], ["seeds", "spiders", "beetles", "grass"], "about forty grams"),
    "beetle": ("insect", ["woods", "gardens", "fields"], ["leaves", "bark", "roots", "flowers"], "less than a gram"),
    "goose": ("bird", ["lakes", "marshes", "fields"], ["grass", "roots", "grain", "seeds"], "about three kilograms"),
    "vole": ("animal", ["meadows", "river banks", "gardens"], ["roots", "seeds", "grass", "bark"],
             "about thirty grams"),
    "moth": ("insect", ["woods", "gardens", "meadows"], ["nectar", "leaves", "flowers"], "less than a gram"),
    "deer": ("animal", ["woods", "hills", "moors"], ["grass", "leaves", "acorns", "bark"], "about sixty kilograms"),
}
_COLOURS = ["grey", "red", "brown", "pale", "spotted", "black", "golden", "striped"]
_SEASON_HABITS = {
    "animal": [
        "In winter its fur turns white, so that it is hard to see in the snow.",
        "In autumn it gathers food and hides it for the cold months.",
        "In spring it makes a den lined with {material}, where the young are born.",
        "In winter it sleeps for many weeks in a hole under the ground.",
    ],
    "bird": [
        "In autumn it flies south, and it comes back when the days grow long.",
        "In spring it builds a nest of {material}, where the young are born.",
        "In summer it is most active in the early morning, before the day grows hot.",
    ],
    "insect": [
        "In winter it sleeps under loose bark until the weather turns warm.",
        "In spring it lays its eggs on {material}.",
        "In summer it is most active in the early morning, before the day grows hot.",
    ],
}


def animal_paragraph(rng: random.Random, town: Town) -> str:
    """A short encyclopedia entry about an invented variety of a familiar animal."""
    animal = rng.choice(list(_ANIMALS))
    kind, places, foods, weight = _ANIMALS[animal]
    name = f"{rng.choice(_COLOURS)} {town.river.lower()} {animal}"
    time = rng.choice(["at night", "at dawn", "during the day", "in the evening"])
    sentences = [
        f"The {name} is a {rng.choice(['small', 'shy', 'common', 'rare'])} {kind} that lives in the "
        f"{rng.choice(places)} around {town.name}.",
        f"It looks for food {time} and eats {join_list(rng.sample(foods, 3))}.",
        f"An adult weighs {weight}.",
        rng.choice(_SEASON_HABITS[kind]).format(material=rng.choice(["grass", "moss", "twigs", "reeds"])),
        rng.choice([
            "People rarely see it, but its call can be heard from far away.",
            f"The {TRADES[town.trade][0]} of {town.name} say that it brings good luck.",
            f"Children in {town.name} learn its name before they learn to read.",
            "It is not dangerous, and it runs away when people come near.",
        ]),
    ]
    return " ".join(sentences[:3] + rng.sample(sentences[3:], 2))


_FORECASTS = ["dry and bright", "wet and windy", "cold and clear", "mild with some rain"]
_SKIES = ["grey", "clear", "cloudy", "bright", "dark"]
#: (what happened by noon, how the day ended, lowest and highest night temperature that fits)
_EVENTS = [
    ("it had started to rain", "The rain stopped in the evening", 2, 14),
    ("snow was falling on the roofs", "By evening the streets were white", -8, 0),
    ("the clouds had gone", "The afternoon was warm and still", 8, 19),
    ("a storm had come in from the hills", "The storm passed before midnight", 3, 15),
    ("thick fog covered the river", "The fog lifted in the late afternoon", 0, 10),
]


def _degrees(value: int) -> str:
    if value < 0:
        return f"{-value} degree{'s' if value != -1 else ''} below zero"
    return f"{value} degree{'s' if value != 1 else ''}"


def weather_paragraph(rng: random.Random, town: Town) -> str:
    """A weather report for one day in ``town``."""
    day = rng.choice(WEEKDAYS)
    event, evening, low, high = rng.choice(_EVENTS)
    return (
        f"On {day} morning the sky over {town.name} was {rng.choice(_SKIES)}, and a "
        f"{rng.choice(['cold', 'warm', 'strong', 'light'])} wind blew from the "
        f"{rng.choice(['north', 'south', 'east', 'west'])}. By noon {event}. {evening}, and the temperature "
        f"fell to {_degrees(rng.randint(low, high))}. Tomorrow will be {rng.choice(_FORECASTS)}."
    )


_PROCESSES = {
    "baker": ["mixes flour, water and salt", "leaves the dough to rise for two hours",
              "bakes the loaves in a hot oven"],
    "smith": ["heats the iron in the forge", "beats it into shape with a heavy hammer", "cools it in a tub of water"],
    "weaver": ["spins the wool into thread", "sets the thread on the loom", "weaves the cloth row by row"],
    "potter": ["digs clay from the river bank", "shapes each bowl on the wheel", "fires the bowls in a kiln"],
    "cooper": ["splits oak into staves", "bends the staves over a small fire", "fits iron hoops around them"],
    "miller": ["buys grain from the farmers", "grinds it between two heavy stones", "sifts the flour into sacks"],
    "fisher": ["mends the nets", "rows out before sunrise", "smokes the catch over a slow fire"],
    "carpenter": ["chooses dry wood", "cuts the parts with a saw", "joins them with wooden pegs"],
    "rope maker": ["combs the hemp", "twists it into long yarns", "lays three yarns together into a rope"],
    "beekeeper": ["checks the hives each week", "lifts out the full combs", "lets the honey drain into jars"],
    "shepherd": ["leads the sheep to the hills", "brings them down before winter", "shears them in early summer"],
    "brewer": ["presses the apples", "lets the juice stand in barrels", "bottles the cider in spring"],
}


def trade_paragraph(rng: random.Random, town: Town, worker: Person) -> str:
    """How a worker of one trade goes about the work, step by step."""
    trade = rng.choice(list(_PROCESSES))
    first, then, last = _PROCESSES[trade]
    pron, goods = worker.pronoun, TRADES[trade][1]
    return (
        f"{worker.name} is {article(trade)} {trade} in {town.name}. First {pron} {first}. Then {pron} {then}. "
        f"Finally {pron} {last}. {rng.choice(['It is slow work', 'It is hard work', 'The work takes patience'])}, "
        f"but people come from {rng.choice(['all over', 'across', 'far beyond'])} {town.region} "
        f"to buy {_possessive(worker)} {goods}."
    )


_PROBLEMS = [
    ("{pos} oven would not light", "cleaned the chimney", "the bread was in the oven"),
    ("the roof of {pos} shed was leaking", "mended the roof with new boards", "the shed was dry again"),
    ("{pos} goat had run away", "searched the hills", "the goat was back in its pen"),
    ("the well behind {pos} house was blocked", "pulled out the old leaves and stones", "the water was clear again"),
    ("{pos} cart had a broken wheel", "made a new spoke from ash wood", "the cart was ready for the market"),
]
_GIFTS = [("a loaf of warm bread", "smiled"), ("a jar of honey", "laughed"), ("a basket of pears", "thanked "),
          ("a new pair of gloves", "was very pleased")]


def story_paragraph(rng: random.Random, town: Town, hero: Person, helper: Person) -> str:
    """A short story: a problem, a neighbour's help and a thank-you."""
    pos = _possessive(hero)
    problem, fix, result = rng.choice(_PROBLEMS)
    gift, reaction = rng.choice(_GIFTS)
    if reaction == "thanked ":
        reaction = f"thanked {'him' if hero.pronoun == 'he' else 'her'} warmly"
    hero_trade, helper_trade = rng.sample(list(TRADES), 2)
    when = rng.choice(["morning", "evening", "day in autumn", "cold morning"])
    return (
        f"{hero.first} was a young {hero_trade} in the town of {town.name}. One {when} {hero.pronoun} found that "
        f"{problem.format(pos=pos)}. {hero.pronoun.capitalize()} asked {pos} neighbour, an old {helper_trade} named "
        f"{helper.first}, for help. Together they {fix}, and by {rng.choice(['noon', 'evening', 'nightfall'])} "
        f"{result}. That evening {hero.first} gave {helper.first} {gift}, and {helper.pronoun} {reaction}."
    )


def _possessive(someone: Person) -> str:
    return "his" if someone.pronoun == "he" else "her"


def corpus(rng: random.Random, towns: list[Town], names, count: int) -> list[str]:  # noqa: ANN001
    """``count`` paragraphs cycling through the five kinds in random order."""
    paragraphs = []
    for index in range(count):
        town, other = rng.sample(towns, 2)
        kind = index % 5
        if kind == 0:
            paragraphs.append(town_paragraph(rng, town, other).text)
        elif kind == 1:
            paragraphs.append(animal_paragraph(rng, town))
        elif kind == 2:
            paragraphs.append(weather_paragraph(rng, town))
        elif kind == 3:
            paragraphs.append(trade_paragraph(rng, town, person(rng, names)))
        else:
            paragraphs.append(story_paragraph(rng, town, person(rng, names), person(rng, names)))
    rng.shuffle(paragraphs)
    return paragraphs
