"""Regenerate the shipped `summ_synth` data: `python -m kdeval_suites.summarization.make_data`.

Seeded, so the shipped files are reproducible byte for byte (a test checks it). Each record is
a 3-5 sentence document, two reference summaries and the split key of its entity combination;
train and test draw from disjoint key sets (`kdeval_suites.common.is_test_key`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from kdeval_suites.common import Draw, draw_split, make_data_main
from kdeval_suites.summarization.stories import Story, draw_story

SEED = 20250211
SIZES = {"test": 400, "train": 2400}


def document(rng: random.Random, story: Story) -> str:
    """The story's sentences in document order: a news lead first (inverted pyramid); a meeting's
    decision somewhere after the intro, so the model has to find it."""
    if not story.intro:
        details = rng.sample(story.details, rng.randint(2, 4))
        return " ".join([story.lead, *details])
    details = rng.sample(story.details, rng.randint(1, 3))
    details.insert(rng.randint(0, len(details)), story.lead)
    return " ".join([story.intro, *details])


def make(rng: random.Random, index: int) -> Draw:
    story = draw_story(rng)
    record: dict[str, Any] = {
        "kind": story.kind,
        "key": story.key,
        "document": document(rng, story),
        "references": list(story.references),
    }
    return story.key, record


def build() -> dict[str, list[dict[str, Any]]]:
    # One generator per split so changing one split's size leaves the other split unchanged.
    return {
        split: draw_split(random.Random(f"{SEED}-{split}"), size, split == "test", make, f"summ-{split}")
        for split, size in SIZES.items()
    }


def main(argv: Sequence[str] | None = None) -> None:
    make_data_main(__file__, build, argv)


if __name__ == "__main__":
    main()
