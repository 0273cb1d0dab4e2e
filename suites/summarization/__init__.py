"""Summarization suite: our synthetic news/meeting notes plus loaders for XSum, DialogSum and SciTLDR."""

from __future__ import annotations

from kdeval.tasks import Suite
from kdeval_suites.summarization.tasks import DialogSum, SciTldr, SummSynth, XSum

SUITE = Suite(
    name="summarization",
    family="summarization",
    description="One-sentence summaries scored with ROUGE-1/2/L, BLEU and chrF against all references.",
    tasks=[SummSynth(), XSum(), DialogSum(), SciTldr()],
)
