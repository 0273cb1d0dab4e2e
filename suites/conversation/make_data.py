"""Regenerate the shipped `chat_synth` data: `python -m kdeval_suites.conversation.make_data`.

Seeded, so the shipped files are reproducible byte for byte (a test checks it). Each record holds
two user turns and one reference answer per turn; train and test draw from disjoint split keys
(`kdeval_suites.common.is_test_key`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from kdeval_suites.common import Draw, draw_split, make_data_main
from kdeval_suites.conversation.dialogues import draw_dialogue

SEED = 20250212
SIZES = {"test": 400, "train": 2400}


def make(rng: random.Random, index: int) -> Draw:
    dialogue = draw_dialogue(rng)
    record: dict[str, Any] = {
        "kind": dialogue.kind,
        "key": dialogue.key,
        "turns": list(dialogue.turns),
        "references": list(dialogue.references),
    }
    return dialogue.key, record


def build() -> dict[str, list[dict[str, Any]]]:
    # One generator per split so changing one split's size leaves the other split unchanged.
    return {
        split: draw_split(random.Random(f"{SEED}-{split}"), size, split == "test", make, f"chat-{split}")
        for split, size in SIZES.items()
    }


def main(argv: Sequence[str] | None = None) -> None:
    make_data_main(__file__, build, argv)


if __name__ == "__main__":
    main()
