"""Generate the shipped nli_synth data: `python -m kdeval_suites.nli.make_data [--out DIR]`.

Each example is "someone did something to an object" with one lexical rule deciding the label:
a hypernym or a dropped detail keeps entailment, a negation turns it into contradiction, and a
hyponym, another person or another object leaves it neutral. Labels cycle e/n/c so every
prefix of a file (--limit) stays balanced. The split key is (subject, specific object), read
back from the text by `split_key`, so train and test never share that combination.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kdeval_suites.common import Draw, article, draw_split, make_data_main

SEED = 20240611
SIZES = {"test": 600, "train": 3000}

CATEGORIES = {
    "bird": ("robin", "sparrow", "eagle", "owl", "parrot", "pigeon"),
    "fish": ("salmon", "trout", "tuna", "carp", "cod"),
    "fruit": ("apple", "pear", "mango", "plum", "cherry", "peach"),
    "vegetable": ("carrot", "onion", "potato", "cabbage", "leek"),
    "vehicle": ("car", "truck", "bus", "bicycle", "van", "tractor"),
    "instrument": ("violin", "guitar", "flute", "drum", "piano", "trumpet"),
    "flower": ("rose", "tulip", "daisy", "lily", "orchid"),
    "tree": ("oak", "pine", "maple", "birch", "willow"),
    "tool": ("hammer", "wrench", "shovel", "drill", "chisel"),
    "insect": ("ant", "bee", "beetle", "moth", "wasp"),
}
NAMES = (
    "Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas",
    "Kira", "Leo", "Maya", "Nils", "Olga", "Pablo", "Quinn", "Rosa", "Sam", "Tara",
    "Umar", "Vera", "Wes", "Xenia", "Yusuf", "Zoe", "Amir", "Bella", "Chen", "Dora",
    "Emil", "Fiona", "Gil", "Hana", "Ivan", "Jade", "Karl", "Lina", "Marco", "Nora",
)  # fmt: skip
#: (past tense, base form after "did not")
VERBS = (
    ("saw", "see"), ("drew", "draw"), ("photographed", "photograph"), ("painted", "paint"),
    ("found", "find"), ("bought", "buy"), ("noticed", "notice"), ("described", "describe"),
)  # fmt: skip
PLACES = ("at the market", "in the park", "near the river", "in the garden", "at school", "on the farm")


@dataclass(frozen=True)
class Scene:
    """The facts one example is built from."""

    name: str
    other: str
    past: str
    base: str
    category: str
    member: str
    unrelated: str
    place: str

    def np(self, noun: str) -> str:
        return f"{article(noun)} {noun}"

    def did(self, subject: str, noun: str, where: str = "") -> str:
        return " ".join(x for x in (subject, self.past, self.np(noun), where) if x) + "."

    def did_not(self, subject: str, noun: str, where: str = "") -> str:
        return " ".join(x for x in (subject, "did not", self.base, self.np(noun), where) if x) + "."


def _scene(rng: random.Random) -> Scene:
    name, other = rng.sample(NAMES, 2)
    past, base = rng.choice(VERBS)
    category, other_category = rng.sample(sorted(CATEGORIES), 2)
    return Scene(
        name=name,
        other=other,
        past=past,
        base=base,
        category=category,
        member=rng.choice(CATEGORIES[category]),
        unrelated=rng.choice(CATEGORIES[other_category]),
        place=rng.choice(PLACES),
    )


def _maybe_place(rng: random.Random, s: Scene) -> str:
    return s.place if rng.random() < 0.5 else ""


# Each pattern returns (premise, hypothesis) for a scene; the premise always says where it happened.
Pattern = Callable[[random.Random, Scene], tuple[str, str]]

ENTAILMENT: tuple[Pattern, ...] = (
    lambda r, s: (s.did(s.name, s.member, s.place), s.did(s.name, s.category, _maybe_place(r, s))),
    lambda r, s: (s.did(s.name, s.member, s.place), s.did(s.name, s.member)),
    lambda r, s: (s.did(s.name, s.member, s.place), s.did("Someone", r.choice((s.member, s.category)))),
)
CONTRADICTION: tuple[Pattern, ...] = (
    lambda r, s: (s.did(s.name, s.member, s.place), s.did_not(s.name, r.choice((s.member, s.category)))),
    lambda r, s: (s.did(s.name, s.member, s.place), s.did("Nobody", r.choice((s.member, s.category)))),
    # The negated premise is scoped to the same place as the hypothesis, so the clash is real.
    lambda r, s: (s.did_not(s.name, s.category, s.place), s.did(s.name, s.member, s.place)),
)
NEUTRAL: tuple[Pattern, ...] = (
    lambda r, s: (s.did(s.name, s.category, s.place), s.did(s.name, s.member, _maybe_place(r, s))),
    lambda r, s: (s.did(s.name, s.member, s.place), s.did(s.other, r.choice((s.member, s.category)))),
    lambda r, s: (s.did(s.name, s.member, s.place), s.did(s.name, s.unrelated, _maybe_place(r, s))),
    lambda r, s: (s.did_not(s.name, s.member, s.place), s.did(s.name, s.category, s.place)),
)
PATTERNS = {"entailment": ENTAILMENT, "neutral": NEUTRAL, "contradiction": CONTRADICTION}
LABEL_CYCLE = ("entailment", "neutral", "contradiction")


MEMBERS = frozenset(m for members in CATEGORIES.values() for m in members)


def split_key(record: dict[str, Any]) -> str:
    """The premise's subject and the first specific object named (premise first, then hypothesis)."""
    words = f"{record['premise']} {record['hypothesis']}".replace(".", "").split()
    return f"{words[0]}|{next(w for w in words if w in MEMBERS)}"


def make_example(rng: random.Random, index: int) -> Draw:
    label = LABEL_CYCLE[index % len(LABEL_CYCLE)]
    premise, hypothesis = rng.choice(PATTERNS[label])(rng, _scene(rng))
    record: dict[str, Any] = {"premise": premise, "hypothesis": hypothesis, "label": label}
    return split_key(record), record


def build() -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(SEED)
    return {
        split: draw_split(rng, n, split == "test", make_example, f"nli-{split}") for split, n in SIZES.items()
    }


if __name__ == "__main__":
    make_data_main(__file__, build)
