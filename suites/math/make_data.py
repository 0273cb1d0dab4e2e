"""Generate the shipped math_synth data: `python -m kdeval_suites.math.make_data [--out DIR]`.

One- and two-step word problems with small numbers (+, -, x). Solutions follow GSM8K: one line
per step "a op b = c ..." and a last line "#### N", so the files read like GSM8K and the same
loader serves both. The split key (`split_key`) is (operations, numbers): a test problem never
shares its numbers and operations with a training problem, whatever the names and objects.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kdeval_suites.common import Draw, draw_split, make_data_main

SEED = 20240613
SIZES = {"test": 500, "train": 3000}

NAMES = (
    "Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas",
    "Kira", "Leo", "Maya", "Nils", "Olga", "Pablo", "Rosa", "Sam", "Tara", "Vera",
)  # fmt: skip
ITEMS = ("apples", "marbles", "stickers", "pencils", "cookies", "books", "shells", "cards", "stamps", "eggs")
CONTAINERS = ("boxes", "bags", "baskets", "jars", "trays")


@dataclass(frozen=True)
class Problem:
    question: str
    steps: tuple[str, ...]
    result: int

    def solution(self) -> str:
        return "\n".join((*self.steps, f"#### {self.result}"))


@dataclass(frozen=True)
class Words:
    """The names and objects a problem is told with."""

    name: str
    friend: str
    items: str
    boxes: str


# A template: (words, numbers) -> problem; TEMPLATES pairs each with the sampler of its numbers.
Template = Callable[[Words, tuple[int, ...]], Problem]


def _add(w: Words, n: tuple[int, ...]) -> Problem:
    a, b = n
    q = (
        f"{w.name} has {a} {w.items}. {w.friend} gives {w.name} {b} more. "
        f"How many {w.items} does {w.name} have now?"
    )
    return Problem(q, (f"{w.name} has {a} + {b} = {a + b} {w.items}.",), a + b)


def _sub(w: Words, n: tuple[int, ...]) -> Problem:
    a, b = n
    q = (
        f"{w.name} has {a} {w.items} and gives {b} of them to {w.friend}. "
        f"How many {w.items} does {w.name} have left?"
    )
    return Problem(q, (f"{w.name} has {a} - {b} = {a - b} {w.items} left.",), a - b)


def _mul(w: Words, n: tuple[int, ...]) -> Problem:
    a, b = n
    q = f"{w.name} has {a} {w.boxes} with {b} {w.items} in each. How many {w.items} does {w.name} have?"
    return Problem(q, (f"{w.name} has {a} * {b} = {a * b} {w.items}.",), a * b)


def _together(w: Words, n: tuple[int, ...]) -> Problem:
    a, b = n
    q = (
        f"{w.name} has {a} {w.items} and {w.friend} has {b} {w.items}. "
        f"How many {w.items} do they have together?"
    )
    return Problem(q, (f"They have {a} + {b} = {a + b} {w.items}.",), a + b)


def _mul_add(w: Words, n: tuple[int, ...]) -> Problem:
    a, b, c = n
    q = (
        f"{w.name} has {a} {w.boxes} with {b} {w.items} in each and {c} more {w.items} on the table. "
        f"How many {w.items} does {w.name} have in total?"
    )
    steps = (
        f"The {w.boxes} hold {a} * {b} = {a * b} {w.items}.",
        f"In total {a * b} + {c} = {a * b + c} {w.items}.",
    )
    return Problem(q, steps, a * b + c)


def _mul_sub(w: Words, n: tuple[int, ...]) -> Problem:
    a, b, c = n
    q = (
        f"{w.name} buys {a} {w.boxes} of {w.items} with {b} in each and gives {c} {w.items} to {w.friend}. "
        f"How many {w.items} does {w.name} have left?"
    )
    steps = (
        f"{w.name} buys {a} * {b} = {a * b} {w.items}.",
        f"{w.name} has {a * b} - {c} = {a * b - c} {w.items} left.",
    )
    return Problem(q, steps, a * b - c)


def _add_sub(w: Words, n: tuple[int, ...]) -> Problem:
    a, b, c = n
    q = (
        f"{w.name} has {a} {w.items}, finds {b} more and then loses {c}. "
        f"How many {w.items} does {w.name} have now?"
    )
    steps = (
        f"After finding, {w.name} has {a} + {b} = {a + b} {w.items}.",
        f"Now {w.name} has {a + b} - {c} = {a + b - c} {w.items}.",
    )
    return Problem(q, steps, a + b - c)


def _sub_mul(w: Words, n: tuple[int, ...]) -> Problem:
    a, b, c = n
    q = (
        f"{w.name} had {a} {w.items} and sold {b} of them. Each one left is worth {c} dollars. "
        f"How many dollars are the {w.items} that are left worth?"
    )
    steps = (
        f"{w.name} has {a} - {b} = {a - b} {w.items} left.",
        f"They are worth {a - b} * {c} = {(a - b) * c} dollars.",
    )
    return Problem(q, steps, (a - b) * c)


def _two(r: random.Random) -> tuple[int, ...]:
    return r.randint(2, 20), r.randint(2, 20)


def _minus(r: random.Random) -> tuple[int, ...]:
    a = r.randint(5, 30)
    return a, r.randint(1, a - 2)  # at least 2 left, so the solution never says "1 apples"


def _factors(r: random.Random) -> tuple[int, ...]:
    return r.randint(2, 9), r.randint(2, 9)


def _factors_plus(r: random.Random) -> tuple[int, ...]:
    return (*_factors(r), r.randint(2, 20))


def _factors_minus(r: random.Random) -> tuple[int, ...]:
    a, b = _factors(r)
    return a, b, r.randint(1, a * b - 2)


def _plus_minus(r: random.Random) -> tuple[int, ...]:
    a, b = _two(r)
    return a, b, r.randint(1, a + b - 2)


def _minus_times(r: random.Random) -> tuple[int, ...]:
    return (*_minus(r), r.randint(2, 9))


TEMPLATES: dict[str, tuple[Template, Callable[[random.Random], tuple[int, ...]]]] = {
    "add": (_add, _two),
    "sub": (_sub, _minus),
    "mul": (_mul, _factors),
    "together": (_together, _two),
    "mul_add": (_mul_add, _factors_plus),
    "mul_sub": (_mul_sub, _factors_minus),
    "add_sub": (_add_sub, _plus_minus),
    "sub_mul": (_sub_mul, _minus_times),
}


def make_example(r: random.Random, index: int) -> Draw:
    kind = r.choice(sorted(TEMPLATES))
    template, sampler = TEMPLATES[kind]
    numbers = sampler(r)
    name, friend = r.sample(NAMES, 2)
    problem = template(Words(name, friend, r.choice(ITEMS), r.choice(CONTAINERS)), numbers)
    record: dict[str, Any] = {"question": problem.question, "answer": problem.solution()}
    return split_key(record), record


def split_key(record: dict[str, Any]) -> str:
    """The question's numbers and the solution's operators, e.g. "*+|3,4,5", read from the text."""
    numbers = ",".join(re.findall(r"\d+", record["question"]))
    operators = "".join(re.findall(r" ([-+*]) ", record["answer"]))
    return f"{operators}|{numbers}"


def build() -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(SEED)
    return {
        split: draw_split(rng, n, split == "test", make_example, f"math-{split}")
        for split, n in SIZES.items()
    }


if __name__ == "__main__":
    make_data_main(__file__, build)
