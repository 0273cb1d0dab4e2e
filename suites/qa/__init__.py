"""Question answering: our synthetic reading set plus loaders for SQuAD v1.1 and NQ-Open."""

from kdeval.tasks import Suite
from kdeval_suites.qa.tasks import NqOpen, QaSynth, Squad

SUITE = Suite(
    name="qa",
    family="qa",
    description="Short-answer QA scored with SQuAD exact match and token F1.",
    tasks=[QaSynth(), Squad(), NqOpen()],
)
