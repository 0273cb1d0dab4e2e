"""A minimal third-party kdeval suite: repeat a word (generation) and pick a colour (multiple choice)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kdeval.metrics import METRICS, mean_row, normalize_text
from kdeval.tasks import (
    ChoiceRequest,
    Example,
    GenerateRequest,
    Output,
    Request,
    Scored,
    Suite,
    Task,
    user_turn,
)

WORDS = ["apple", "river", "stone", "cloud", "lamp", "garden", "window", "tiger"]


class Echo(Task):
    name, family, task_type = "echo_word", "echo", "generate"
    metrics, primary_metric = ("exact_match", "chrf"), "exact_match"
    description, data_source, offline = "repeat the given word", "built into the plugin", True

    def load(self, path: Path | None) -> list[Example]:
        return [Example(f"w{i}", {"word": w}) for i, w in enumerate(WORDS)]

    def request(self, example: Example, history: Sequence[Output]) -> Request:
        return GenerateRequest(
            user_turn(f"Repeat: {example.data['word']}\nAnswer:"), max_tokens=4, stop=("\n",)
        )

    def score(self, example: Example, outputs: Sequence[Output], teacher: Sequence[Output] | None) -> Scored:
        hyp, ref = outputs[0].text.strip(), [example.data["word"]]
        stats = {m: METRICS[m].stats(hyp, ref) for m in self.metrics}
        return Scored(normalize_text(hyp), ref, stats)


class Colour(Task):
    name, family, task_type = "echo_colour", "echo", "multiple_choice"
    metrics, primary_metric = ("accuracy",), "accuracy"
    description, data_source, offline = "pick the named colour", "built into the plugin", True
    choices = (" red", " green", " blue")

    def load(self, path: Path | None) -> list[Example]:
        return [Example(f"c{i}", {"gold": i % 3}) for i in range(6)]

    def request(self, example: Example, history: Sequence[Output]) -> Request:
        return ChoiceRequest(
            user_turn(f"The colour is{self.choices[example.data['gold']]}. Colour:"), self.choices
        )

    def score(self, example: Example, outputs: Sequence[Output], teacher: Sequence[Output] | None) -> Scored:
        pick = outputs[0].choice
        return Scored(
            str(pick),
            [str(example.data["gold"])],
            {"accuracy": mean_row(float(pick == example.data["gold"]))},
        )


SUITE = Suite("echo", "echo", "a third-party example suite", [Echo(), Colour()])
