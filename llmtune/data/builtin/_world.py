"""An invented world (towns, people, rivers, countries) shared by every builtin dataset.

The prose corpus and the QA set describe the same towns, so a model pretrained on ``builtin:text``
has seen the facts that ``builtin:qa`` asks about. Names are built from syllables with a seeded RNG.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_ONSETS = ["br", "d", "k", "m", "t", "h", "w", "s", "l", "g", "f", "v", "c", "th", "st", "r", "n", "p", "gr", "sh"]
_VOWELS = ["a", "e", "i", "o", "u", "ea", "o", "a", "e"]
_CODAS = ["ll", "n", "r", "m", "sk", "th", "rn", "ck", "nd", "l", "ss", "x"]
_TOWN_ENDS = ["ow", "ford", "mere", "wick", "ton", "by", "ham", "dale", "holt", "stead", "moor", "well"]
_SURNAME_ENDS = ["", "er", "by", "son", "ley", "wood", "er", ""]
_COUNTRY_ENDS = ["ia", "and", "ora", "ar", "eth", "onia", "ica", "ay"]

FIRST_NAMES = {
    "she": ["Mara", "Elsie", "Ida", "Wren", "Lena", "Nell", "Alma", "Sina", "Tilda", "Rosa", "Agna", "Bet",
            "Cora", "Edda", "Fenna", "Greta", "Hanna", "Isla", "Juna", "Kirsa"],
    "he": ["Tomas", "Orrin", "Bram", "Joss", "Hugo", "Piet", "Corin", "Ruben", "Aldo", "Bastian", "Cal",
           "Dorran", "Emrik", "Fenn", "Gil", "Hal", "Ivo", "Jory", "Kell", "Lorn"],
}
#: trade -> (plural, what they make or do with it: goods)
TRADES = {
    "baker": ("bakers", "bread"),
    "smith": ("smiths", "iron tools"),
    "weaver": ("weavers", "cloth"),
    "potter": ("potters", "bowls"),
    "cooper": ("coopers", "barrels"),
    "miller": ("millers", "flour"),
    "fisher": ("fishers", "smoked fish"),
    "carpenter": ("carpenters", "chairs"),
    "rope maker": ("rope makers", "ropes"),
    "beekeeper": ("beekeepers", "honey"),
    "shepherd": ("shepherds", "wool"),
    "brewer": ("brewers", "cider"),
}
REGION_KINDS = ["the hills of {}", "the plain of {}", "the {} valley", "the marshes of {}", "the forest of {}"]
LANDMARKS = ["stone bridge", "old mill", "bell tower", "town hall", "grain store", "chapel", "watch tower",
             "covered market", "lighthouse", "harbour wall"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MARKET_GOODS = ["apples", "cheese", "wool", "eggs", "honey", "onions", "pears", "butter", "turnips", "plums",
                "cabbages", "walnuts"]


@dataclass(frozen=True)
class Person:
    """A named person with the pronoun the prose uses for them."""

    first: str
    last: str
    pronoun: str  # "he" or "she"

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"


@dataclass(frozen=True)
class Town:
    """One invented town and the facts every dataset tells about it."""

    name: str
    river: str
    region: str
    founded: int
    founder: Person
    founder_trade: str
    population: int
    trade: str
    market_day: str
    goods: tuple[str, str, str]
    landmark: str
    landmark_built: int


class NameMaker:
    """Unique pronounceable names from syllables (no name is handed out twice)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def syllable(self) -> str:
        return self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + self.rng.choice(_CODAS)

    def _unique(self, make) -> str:  # noqa: ANN001 - a zero-argument callable
        for _ in range(1000):
            name = make().capitalize()
            tripled = any(a == b == c for a, b, c in zip(name, name[1:], name[2:], strict=False))
            if name not in self.used and 4 <= len(name) <= 11 and not tripled:
                self.used.add(name)
                return name
        raise RuntimeError("name space exhausted")

    def town(self) -> str:
        return self._unique(lambda: self.syllable() + self.rng.choice(_TOWN_ENDS))

    def word(self) -> str:
        return self._unique(self.syllable)

    def surname(self) -> str:
        # Surnames may repeat (families do); only places must be unique.
        return (self.syllable() + self.rng.choice(_SURNAME_ENDS)).capitalize()

    def country(self) -> str:
        return self._unique(lambda: self.syllable() + self.rng.choice(_COUNTRY_ENDS))


def person(rng: random.Random, names: NameMaker) -> Person:
    """A random person with a fresh surname."""
    pronoun = rng.choice(["he", "she"])
    return Person(rng.choice(FIRST_NAMES[pronoun]), names.surname(), pronoun)


def make_towns(rng: random.Random, names: NameMaker, count: int) -> list[Town]:
    """``count`` towns with consistent facts (a landmark is always younger than its town)."""
    rivers = [names.word() for _ in range(count // 4 + 1)]
    regions = [rng.choice(REGION_KINDS).format(names.word()) for _ in range(count // 6 + 1)]
    towns = []
    for _ in range(count):
        founded = rng.randint(1150, 1850)
        towns.append(
            Town(
                name=names.town(),
                river=rng.choice(rivers),
                region=rng.choice(regions),
                founded=founded,
                founder=person(rng, names),
                founder_trade=rng.choice(list(TRADES)),
                population=rng.randint(3, 900) * 100 + rng.choice([0, 50]),
                trade=rng.choice(list(TRADES)),
                market_day=rng.choice(WEEKDAYS),
                goods=tuple(rng.sample(MARKET_GOODS, 3)),  # type: ignore[arg-type]
                landmark=rng.choice(LANDMARKS),
                landmark_built=rng.randint(founded + 5, 1950),
            )
        )
    return towns


def make_countries(rng: random.Random, names: NameMaker, count: int) -> list[tuple[str, str]]:
    """``count`` (country, capital) pairs."""
    return [(names.country(), names.town()) for _ in range(count)]


def article(word: str) -> str:
    """``a`` or ``an`` for ``word`` (by its first letter; our vocabulary has no silent h)."""
    return "an" if word[0].lower() in "aeiou" else "a"


def join_list(items: list[str] | tuple[str, ...]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
