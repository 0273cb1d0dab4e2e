"""Natural language inference: our synthetic set plus loaders for ANLI, SNLI and MultiNLI."""

from kdeval.tasks import Suite
from kdeval_suites.nli.tasks import Anli, Mnli, NliSynth, Snli

SUITE = Suite(
    name="nli",
    family="nli",
    description="3-way entailment (yes / maybe / no) scored by log-likelihood.",
    tasks=[NliSynth(), Anli(), Snli(), Mnli()],
)
