"""The Task contract: examples in, requests out, outputs scored per example.

A task is a small class (in the spirit of nanochat's tasks): how to load its examples, how to
turn one example into a request for the model, and how to score what the model answered.
Scoring returns per-example *sufficient statistics* for each metric (see `kdeval.metrics`),
so corpus-level metrics such as BLEU and their bootstrap intervals can be computed later
from the stored per-sample rows alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

TaskType = Literal["multiple_choice", "generate"]


@dataclass(frozen=True)
class Message:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class GenerateRequest:
    """Free-text generation; greedy unless the run's settings say otherwise."""

    messages: tuple[Message, ...]
    max_tokens: int
    stop: tuple[str, ...] = ()
    #: set by the runner, not by tasks: the model's thinking delimiters (stops then apply after
    #: the trace only, kdeval.thinking) and the seed of one sample (so it does not depend on batching)
    think: tuple[str, str] | None = None
    seed: int | None = None
    #: the prompt as text, already rendered (an lm-eval task's context): sent as is, no chat
    #: template; `messages` are then empty (kdeval.lmeval)
    prompt: str | None = None


@dataclass(frozen=True)
class ChoiceRequest:
    """Multiple choice by log-likelihood: each choice is scored as a continuation of the prompt."""

    messages: tuple[Message, ...]
    choices: tuple[str, ...]
    #: lm-eval's requests (kdeval.lmeval): choice k is scored after contexts[k], raw text with no
    #: chat template, tokenized as lm-eval does; `messages` are then empty
    contexts: tuple[str, ...] | None = None
    #: lm-eval's loglikelihood_rolling: each choice is a whole text, scored in rolling windows
    rolling: bool | None = None


Request = GenerateRequest | ChoiceRequest


@dataclass
class Output:
    """What a backend returned for one request (one stage of one example)."""

    prompt: str
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    choice_logprobs: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0
    #: the thinking trace (kdeval.thinking), or the one a server returned apart (`reasoning_content`)
    reasoning: str = ""
    #: output tokens spent on the trace, its closing delimiter included
    reasoning_tokens: int = 0
    #: "" (no trace), "closed", or "open": the trace never closed, so there is no answer
    thinking: str = ""
    #: the generation ran out of tokens (the budget) instead of ending on EOS or a stop string
    truncated: bool = False
    #: per choice: greedy decoding would produce it (lm-eval's is_greedy); raw requests only
    choice_greedy: list[bool] = field(default_factory=list)

    @property
    def choice(self) -> int:
        """Index of the most likely choice (first one on ties, as lm-eval does)."""
        best = max(self.choice_logprobs)
        return self.choice_logprobs.index(best)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "text": self.text,
            "token_ids": self.token_ids,
            "choice_logprobs": self.choice_logprobs,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            **({"reasoning": self.reasoning} if self.reasoning else {}),
            **({"reasoning_tokens": self.reasoning_tokens} if self.reasoning_tokens else {}),
            **({"thinking": self.thinking} if self.thinking else {}),
            **({"truncated": True} if self.truncated else {}),
            **({"choice_greedy": self.choice_greedy} if self.choice_greedy else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Output:
        return cls(**d)


@dataclass(frozen=True)
class Example:
    id: str
    data: dict[str, Any]


@dataclass
class Scored:
    """One example's score.

    answer:     the model's answer after the task's normalization; two models *agree* on an
                example when their answers are equal.
    references: what the answer was compared with (shown in the per-sample records).
    stats:      metric name -> sufficient statistics row for that metric (kdeval.metrics);
                empty when the example cannot be scored for this model.
    why:        with empty stats, why not (shown in the report's count of dropped examples).
    """

    answer: str
    references: list[str]
    stats: dict[str, list[float]]
    why: str | None = None


class Task(ABC):
    """One evaluation task. Subclasses set the class attributes and implement three methods."""

    name: str
    family: str
    version: str = "1"
    task_type: TaskType
    metrics: tuple[str, ...]
    primary_metric: str
    description: str = ""
    #: Human-readable origin of the data: the shipped file, or the public format and where to get it.
    data_source: str = ""
    #: True when the task ships its data and runs with no --data.
    offline: bool = False
    #: Where the public file can be downloaded when no --data is given (users with network).
    url: str | None = None
    #: Number of turns; stage k's request sees the model's outputs of stages < k.
    stages: int = 1
    #: True when an example without references is scored against the teacher's output.
    needs_teacher: bool = False
    #: The shipped training split (disjoint from the test data), for `kdeval distill --train NAME`.
    train_path: Path | None = None

    @abstractmethod
    def load(self, path: Path | None) -> list[Example]:
        """Examples from `path` (a file in the task's public format) or the shipped data when None.

        Bad files raise `kdeval.errors.UserError` naming file:line and the missing field.
        """

    @abstractmethod
    def request(self, example: Example, history: Sequence[Output]) -> Request:
        """The request for stage len(history) of this example."""

    @abstractmethod
    def score(self, example: Example, outputs: Sequence[Output], teacher: Sequence[Output] | None) -> Scored:
        """Score one example from the model's outputs (one per stage).

        `teacher` holds the teacher's outputs for the same example when a teacher is part of
        the run; tasks with `needs_teacher` use them as references where the data has none.
        """

    def training_pair(self, example: Example, stage: int = 0) -> tuple[tuple[Message, ...], str]:
        """(prompt messages, gold response) to train a student on stage `stage` of `example`.

        The messages must be exactly what `request` sends for that stage, so a student is trained
        on the prompt format it is scored with; earlier stages' answers come from the gold data
        (teacher forcing). The response continues the prompt as a model's output would (e.g. with
        a leading space after "Answer:"). Tasks without gold responses keep this default.
        """
        raise NotImplementedError(f"task '{self.name}' has no gold responses to train on")

    def size(self) -> int | None:
        """Number of shipped examples, or None when the data comes from the user."""
        return len(self.load(None)) if self.offline else None


@dataclass
class Suite:
    """A family of tasks, registered through the `kdeval.suites` entry-point group."""

    name: str
    family: str
    description: str
    tasks: list[Task]


def user_turn(text: str, system: str | None = None) -> tuple[Message, ...]:
    """A single-turn conversation."""
    head = (Message("system", system),) if system else ()
    return (*head, Message("user", text))
