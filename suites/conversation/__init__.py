"""Conversation suite: our synthetic two-turn dialogues plus a loader for MT-Bench."""

from __future__ import annotations

from kdeval.tasks import Suite
from kdeval_suites.conversation.tasks import ChatSynth, MtBench

SUITE = Suite(
    name="conversation",
    family="conversation",
    description="Two-turn chats; both answers scored together with chrF, BLEU and ROUGE-L.",
    tasks=[ChatSynth(), MtBench()],
)
