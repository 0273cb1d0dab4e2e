"""Generate the shipped qa_synth data: `python -m kdeval_suites.qa.make_data [--out DIR]`.

A context states 2-4 facts about invented people and towns (often the same kind of fact for two
people, so the answer needs the right person, not just the right slot); the question asks for
one of them and its answer is a span of the context. People and towns are made-up names, and
each name belongs to one split only, so no test context mentions anyone seen in training.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kdeval_suites.common import Draw, article, draw_split, is_test_key, make_data_main

SEED = 20240612
SIZES = {"test": 500, "train": 3000}

SYLLABLES = (
    "ka", "lo", "mi", "ren", "tor", "sa", "vel", "no", "bri", "dan", "el", "fi", "gar", "jo", "mar", "pel",
)  # fmt: skip
TOWN_ENDINGS = ("ton", "ford", "holt", "by", "wick", "mere", "dale", "burg")
JOBS = ("baker", "nurse", "pilot", "farmer", "teacher", "painter", "tailor", "miner", "sailor", "chemist")
COLORS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple", "grey", "brown")
THINGS = ("kite", "bicycle", "umbrella", "scarf", "boat", "lamp", "clock", "backpack", "guitar", "teapot")
ANIMALS = ("dog", "cat", "parrot", "rabbit", "horse", "goat", "turtle", "hamster")
INSTRUMENTS = ("violin", "flute", "drums", "cello", "piano", "harp", "trumpet", "banjo")
PET_NAMES = (
    "Biscuit", "Pepper", "Shadow", "Ziggy", "Mochi", "Noodle", "Waffles", "Pickles", "Rocket", "Clover",
)  # fmt: skip
FEATURES = (
    "old bridges", "cheese market", "tall lighthouse", "apple orchards", "stone castle", "hot springs",
)  # fmt: skip

PEOPLE = tuple(f"{a}{b}".capitalize() for a in SYLLABLES for b in SYLLABLES if a != b)
TOWNS = tuple(f"{a}{e}".capitalize() for a in SYLLABLES for e in TOWN_ENDINGS)


@dataclass(frozen=True)
class Fact:
    """One sentence of the context, the questions it can answer and their answers."""

    sentence: str
    questions: tuple[str, ...]
    answers: tuple[str, ...]


FactMaker = Callable[[random.Random, str, str], Fact]


def _lives(r: random.Random, person: str, town: str) -> Fact:
    return Fact(
        f"{person} lives in {town}.",
        (f"Where does {person} live?", f"In which town does {person} live?"),
        (town,),
    )


def _job(r: random.Random, person: str, town: str) -> Fact:
    job = r.choice(JOBS)
    return Fact(
        f"{person} works as {article(job)} {job}.",
        (f"What is {person}'s job?", f"What does {person} work as?"),
        (job,),
    )


def _owns(r: random.Random, person: str, town: str) -> Fact:
    color, thing = r.choice(COLORS), r.choice(THINGS)
    sentence = f"{person} owns {article(color)} {color} {thing}."
    if r.random() < 0.5:
        return Fact(sentence, (f"What color is {person}'s {thing}?",), (color,))
    # A shorter span is also a right answer here, as a second SQuAD annotator would mark it.
    return Fact(sentence, (f"What does {person} own?",), (f"{color} {thing}", thing))


def _born(r: random.Random, person: str, town: str) -> Fact:
    year = str(r.randint(1920, 2015))
    return Fact(
        f"{person} was born in {year}.",
        (f"In what year was {person} born?", f"When was {person} born?"),
        (year,),
    )


def _pet(r: random.Random, person: str, town: str) -> Fact:
    animal, pet = r.choice(ANIMALS), r.choice(PET_NAMES)
    return Fact(
        f"{person} has {article(animal)} {animal} named {pet}.",
        (f"What is the name of {person}'s {animal}?", f"What is {person}'s {animal} called?"),
        (pet,),
    )


def _plays(r: random.Random, person: str, town: str) -> Fact:
    instrument = r.choice(INSTRUMENTS)
    return Fact(
        f"{person} plays the {instrument}.",
        (f"Which instrument does {person} play?", f"What does {person} play?"),
        (instrument,),
    )


def _town(r: random.Random, person: str, town: str) -> Fact:
    feature = r.choice(FEATURES)
    return Fact(
        f"{town} is famous for its {feature}.", (f"What is {town} famous for?",), (feature, f"its {feature}")
    )


FACTS: tuple[FactMaker, ...] = (_lives, _job, _owns, _born, _pet, _plays, _town)


def _names(r: random.Random, pool: tuple[str, ...], k: int, test: bool) -> list[str]:
    """k distinct names of the wanted split."""
    names: list[str] = []
    while len(names) < k:
        name = r.choice(pool)
        if is_test_key(name) == test and name not in names:
            names.append(name)
    return names


def _context_facts(r: random.Random, people: list[str], towns: list[str]) -> list[Fact]:
    """1-3 facts about the first person (and town) plus one about the second."""
    kinds = r.sample(FACTS, r.randint(1, 3))
    facts = [kind(r, people[0], towns[0]) for kind in kinds]
    # The distractor is often the same kind of fact, so the question's name decides the answer.
    facts.append(r.choice((kinds[0], r.choice(FACTS)))(r, people[1], towns[1]))
    return facts


def make_split_example(test: bool) -> Callable[[random.Random, int], Draw]:
    """A `make` for `draw_split` drawing people and towns from the split's own names only."""

    def make(r: random.Random, index: int) -> Draw:
        people, towns = _names(r, PEOPLE, 2, test), _names(r, TOWNS, 2, test)
        facts = _context_facts(r, people, towns)
        target = r.choice(facts)
        r.shuffle(facts)
        record: dict[str, Any] = {
            "context": " ".join(f.sentence for f in facts),
            "question": r.choice(target.questions),
            "answers": list(target.answers),
        }
        return people[0], record

    return make


def build() -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(SEED)
    return {
        split: draw_split(rng, n, split == "test", make_split_example(split == "test"), f"qa-{split}")
        for split, n in SIZES.items()
    }


if __name__ == "__main__":
    make_data_main(__file__, build)
