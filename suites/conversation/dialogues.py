"""Two-turn dialogue templates for `chat_synth`.

Turn 1 asks for something answerable from what the user wrote (copy, reorder, rewrite); turn 2
asks a follow-up about the assistant's own first answer ("What was the second item?", "Now in
capital letters."), so a model that answered turn 1 badly is led astray in turn 2 as well. The
answers are short and fixed by the input, so a tiny model can learn them, and each builder
returns a split key naming its entity combination (train and test never share one).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from kdeval_suites.common import article

ITEMS = (
    "apples", "bread", "milk", "eggs", "rice", "butter", "cheese", "onions", "carrots", "coffee",
    "tea", "pasta", "lemons", "honey", "flour", "tomatoes", "yoghurt", "soap", "candles", "batteries",
    "a torch", "a towel", "sunscreen", "a charger", "socks", "a map", "stamps", "envelopes", "tape", "glue",
)  # fmt: skip

NAMES = (
    "Alice", "Bruno", "Chloe", "Dmitri", "Esther", "Felix", "Gina", "Hassan", "Irene", "Jamal",
    "Kira", "Lucas", "Mei", "Noah", "Oscar", "Priya", "Rafael", "Sofia", "Tomas", "Uma",
    "Victor", "Wanda", "Yara", "Zane", "Aiko", "Boris", "Carmen", "Diego", "Elif", "Femi",
)  # fmt: skip

SURNAMES = (
    "Hale", "Moreno", "Baker", "Chen", "Novak", "Osei", "Lind", "Patel", "Reyes", "Stone", "Weber", "Kato",
)  # fmt: skip

WORDS = (
    "garden", "window", "silver", "rocket", "planet", "candle", "forest", "basket", "pencil", "button",
    "dragon", "island", "ladder", "magnet", "orange", "pepper", "rabbit", "saddle", "ticket", "violin",
    "winter", "yellow", "anchor", "bridge", "castle", "engine", "falcon", "guitar", "helmet", "jacket",
    "kettle", "lemon", "marble", "needle", "pillow", "river", "summer", "tunnel", "velvet", "wagon",
    "cloud", "stone", "apple", "chair", "horse", "music", "paper", "train", "water", "zebra",
    "beach", "clock", "dance", "eagle", "flame", "grape", "heart", "juice", "knife", "light",
    "mango", "night", "ocean", "piano", "queen", "radio", "smile", "tiger", "uncle", "voice",
    "whale", "bottle", "camera", "doctor", "finger", "hammer", "insect", "jungle", "kitten", "letter",
    "mirror", "number", "office", "parrot", "rubber", "spider", "turtle", "wallet", "bucket", "carpet",
    "desert", "farmer", "goblin", "harbor", "lizard", "meadow", "noodle", "oyster", "puzzle", "salmon",
)  # fmt: skip

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TITLES = ("Dr.", "Ms.", "Mr.", "Professor")
EVENTS = ("meeting", "concert", "lecture", "party", "workshop", "match", "dinner", "rehearsal")
JOBS = ("teacher", "nurse", "engineer", "baker", "pilot", "architect", "chef", "editor", "farmer", "designer")
CITIES = (
    "Lisbon", "Oslo", "Nairobi", "Lima", "Hanoi", "Dublin", "Quito", "Riga", "Accra", "Seoul",
    "Kyoto", "Vienna", "Tunis", "Santiago", "Tallinn", "Manila", "Bogota", "Zagreb", "Perth", "Toronto",
)  # fmt: skip


@dataclass(frozen=True)
class Dialogue:
    key: str
    kind: str
    turns: tuple[str, str]
    references: tuple[str, str]


def _time(rng: random.Random) -> str:
    return f"{rng.randint(1, 12)}:{rng.choice(('00', '15', '30', '45'))} {rng.choice(('am', 'pm'))}"


def list_second(rng: random.Random) -> Dialogue:
    a, b, c = rng.sample(ITEMS, 3)
    ask = rng.choice(
        (
            f"I need to buy {a}, {b} and {c}. List them separated by commas.",
            f"My shopping list is {a}, {b} and {c}. Please write it as a comma-separated list.",
            f"Please list these items with commas: {a}, {b} and {c}.",
        )
    )
    follow = rng.choice(("What was the second item?", "Which item is second on the list?"))
    return Dialogue(f"list|{a}|{b}|{c}", "list_second", (ask, follow), (f"{a}, {b}, {c}", b))


def reverse_first(rng: random.Random) -> Dialogue:
    a, b, c = rng.sample(NAMES, 3)
    ask = rng.choice(
        (
            f"Put these names in reverse order: {a}, {b}, {c}.",
            f"Reverse the order of these names: {a}, {b}, {c}.",
        )
    )
    follow = rng.choice(("Which name is first now?", "What is the first name in your answer?"))
    return Dialogue(f"reverse|{a}|{b}|{c}", "reverse_first", (ask, follow), (f"{c}, {b}, {a}", c))


def sort_last(rng: random.Random) -> Dialogue:
    words = rng.sample(WORDS, 3)
    ask = rng.choice(
        (
            "Sort these words alphabetically: {}.".format(", ".join(words)),
            "Put these words in alphabetical order: {}.".format(", ".join(words)),
        )
    )
    follow = rng.choice(("What is the last word now?", "Which word comes last?"))
    ordered = sorted(words)
    return Dialogue("sort|" + "|".join(words), "sort_last", (ask, follow), (", ".join(ordered), ordered[-1]))


COUNTS = {2: "two", 3: "three", 4: "four"}


def repeat_upper(rng: random.Random) -> Dialogue:
    w, n = rng.choice(WORDS), rng.choice(sorted(COUNTS))
    times = COUNTS[n]
    ask = rng.choice(
        (f"Repeat the word '{w}' {times} times.", f"Say '{w}' {times} times.", f"Write {w} {times} times.")
    )
    follow = rng.choice(
        ("Now write that in capital letters.", "Now say it in uppercase.", "Same again, but in capitals.")
    )
    said = " ".join([w] * n)
    return Dialogue(f"repeat|{w}|{n}", "repeat_upper", (ask, follow), (said, said.upper()))


def spell_count(rng: random.Random) -> Dialogue:
    w = rng.choice(WORDS)
    ask = rng.choice(
        (
            f"Spell the word '{w}' letter by letter.",
            f"How do you spell '{w}'? Separate the letters with dashes.",
            f"Please spell {w} for me, one letter at a time.",
        )
    )
    follow = rng.choice(
        ("How many letters is that?", "Count the letters in that word.", "How long is that word?")
    )
    return Dialogue(f"spell|{w}", "spell_count", (ask, follow), ("-".join(w), str(len(w))))


def appointment_day(rng: random.Random) -> Dialogue:
    who = f"{rng.choice(TITLES)} {rng.choice(SURNAMES)}"
    day, time = rng.choice(DAYS), _time(rng)
    noun = rng.choice(("appointment", "meeting"))
    ask = rng.choice(
        (
            f"My {noun} with {who} is on {day} at {time}. When is my {noun}?",
            f"I have {article(noun)} {noun} with {who} on {day} at {time}. When is the {noun}?",
        )
    )
    follow = rng.choice(("Now say only the day, in one word.", "Which day is that, in one word?"))
    answer = f"Your {noun} is on {day} at {time}."
    return Dialogue(f"appointment|{who}|{day}", "appointment_day", (ask, follow), (answer, day))


def note_formal(rng: random.Random) -> Dialogue:
    name, event, time = rng.choice(NAMES), rng.choice(EVENTS), _time(rng)
    ask = rng.choice(
        (
            f"Write a short note to {name} saying that the {event} starts at {time}.",
            f"Tell {name} in a short note that the {event} starts at {time}.",
        )
    )
    follow = rng.choice(("Now make it more formal.", "Rewrite it in a formal tone."))
    casual = f"Hi {name}, the {event} starts at {time}."
    formal = f"Dear {name}, please note that the {event} starts at {time}."
    return Dialogue(f"note|{name}|{event}", "note_formal", (ask, follow), (casual, formal))


def intro_city(rng: random.Random) -> Dialogue:
    first, last = rng.choice(NAMES), rng.choice(SURNAMES)
    job, city = rng.choice(JOBS), rng.choice(CITIES)
    a_job = f"{article(job)} {job}"
    ask = rng.choice(
        (
            f"My name is {first} {last} and I work as {a_job} in {city}. Introduce me in one sentence.",
            f"I am {first} {last}, {a_job} living in {city}. Write a one-sentence introduction of me.",
        )
    )
    follow = rng.choice(("Now give only my city.", "Which city did you mention?"))
    answer = f"This is {first} {last}, {a_job} from {city}."
    return Dialogue(f"intro|{first}|{last}|{city}", "intro_city", (ask, follow), (answer, city))


BUILDERS: tuple[Callable[[random.Random], Dialogue], ...] = (
    list_second,
    reverse_first,
    sort_last,
    repeat_upper,
    spell_count,
    appointment_day,
    note_formal,
    intro_city,
)


def draw_dialogue(rng: random.Random) -> Dialogue:
    return rng.choice(BUILDERS)(rng)
