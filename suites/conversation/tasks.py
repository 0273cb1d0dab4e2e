"""Two-turn conversation tasks: the second request carries the model's own first answer.

Scoring choice: the two answers are joined with a newline into ONE hypothesis and compared with
references joined the same way, so each conversation is one segment for chrF/BLEU/ROUGE-L. Scoring
each turn as its own segment would need per-turn rows that the ROUGE mean cannot merge into one
example row; one segment per example keeps one row per metric, and a conversation whose second
answer goes wrong still keeps the credit of its first answer.

Each example's data is {"turns": [user 1, user 2], "references": [[turn-1 refs], [turn-2 refs]]}.
A turn without references is scored against the teacher's answer for that turn (`needs_teacher`);
with no teacher either, the example gets no metric rows at all. The teacher itself is never scored
against its own answer, so it has no rows where the data has no reference; the aggregator then
drops such an example for every model (retention compares the same examples), and counts why.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdeval.datafiles import id_of, read_jsonl, require, unique_ids
from kdeval.errors import UserError
from kdeval.metrics import get_metric, normalize_text
from kdeval.tasks import Example, GenerateRequest, Message, Output, Request, Scored, Task
from kdeval_suites.common import data_dir, load_records, need_file, require_str_list, unique_examples

#: Joins the two turns of a hypothesis or reference; chrF and ROUGE ignore it, BLEU splits on it.
JOIN = "\n"
TurnRefs = list[list[str]]
#: Why an example has no score: no reference turn (the teacher is never scored against itself),
#: or the teacher answered nothing where its answer is the reference.
NO_REFERENCE = "no reference answer"
EMPTY_TEACHER = "the teacher's answer (the reference here) is empty"


def combine(per_turn: TurnRefs) -> list[str]:
    """Whole-conversation references: the j-th joins every turn's j-th reference (a turn with
    fewer references reuses its last one), so each reference is one complete answer set.

    >>> combine([["a", "b"], ["c"]])
    ['a\\nc', 'b\\nc']
    """
    count = max(len(refs) for refs in per_turn)
    return [JOIN.join(refs[min(j, len(refs) - 1)] for refs in per_turn) for j in range(count)]


def teacher_turn(teacher: Sequence[Output] | None, stage: int) -> str | None:
    """The teacher's answer for one stage, or None when there is no usable one."""
    if teacher is None or len(teacher) <= stage or not teacher[stage].text.strip():
        return None
    return teacher[stage].text.strip()


def two_turns(obj: dict[str, Any], name: str, where: str) -> list[str]:
    """A field holding exactly two strings (both tasks have two stages)."""
    values = require_str_list(obj, name, where)
    if len(values) != 2:
        raise UserError(
            f"field '{name}' must hold 2 entries (one per turn), got {len(values)}",
            where=where,
            fix="check that the file has the expected format for this task",
        )
    return values


class TwoTurnTask(Task):
    """Requests and scoring shared by the two-turn tasks; subclasses only load."""

    family = "conversation"
    task_type = "generate"
    metrics = ("bleu", "chrf", "rougeL")
    primary_metric = "chrf"
    stages = 2
    max_tokens = 48

    def request(self, example: Example, history: Sequence[Output]) -> Request:
        first, second = example.data["turns"]
        messages = [Message("user", first)]
        if history:  # stage 1: the model continues its OWN conversation, not a reference one
            messages += [Message("assistant", history[0].text), Message("user", second)]
        return GenerateRequest(messages=tuple(messages), max_tokens=self.max_tokens)

    def training_pair(self, example: Example, stage: int = 0) -> tuple[tuple[Message, ...], str]:
        """Each turn is its own pair; the second sees the gold first answer as its history.

        Evaluation feeds the model its own first answer instead; teacher forcing with the gold
        one is the usual choice for training and needs no model in the loop. The history holds
        the first answer exactly as a student trained on stage 0 would write it, so the second
        prompt is the one evaluation sends after a perfect first answer.
        """
        refs = example.data["references"]
        if not 0 <= stage < self.stages or not all(refs[: stage + 1]):
            raise UserError(
                f"example '{example.id}' has no reference answer for turn {stage + 1}",
                fix="train on data with reference answers for every turn, or use --method seqkd",
            )
        answers = [" " + turn[0] for turn in refs[: stage + 1]]
        history = [Output(prompt="", text=a) for a in answers[:-1]]
        return self.request(example, history).messages, answers[-1]

    def turn_references(self, example: Example, teacher: Sequence[Output] | None) -> TurnRefs | None:
        """References per turn, the teacher's answer filling a turn the data leaves empty."""
        per_turn: TurnRefs = []
        for stage, refs in enumerate(example.data["references"]):
            if refs:
                per_turn.append(list(refs))
                continue
            fallback = teacher_turn(teacher, stage)
            if fallback is None:
                return None
            per_turn.append([fallback])
        return per_turn

    def score(self, example: Example, outputs: Sequence[Output], teacher: Sequence[Output] | None) -> Scored:
        hypothesis = JOIN.join(o.text.strip() for o in outputs)
        answer = normalize_text(hypothesis)
        per_turn = self.turn_references(example, teacher)
        if per_turn is None:  # nothing to compare with: the aggregator drops it for every model
            why = NO_REFERENCE if teacher is None else EMPTY_TEACHER
            return Scored(answer=answer, references=[], stats={}, why=why)
        refs = combine(per_turn)
        return Scored(answer, refs, {m: get_metric(m).stats(hypothesis, refs) for m in self.metrics})


class ChatSynth(TwoTurnTask):
    name = "chat_synth"
    description = (
        "Synthetic two-turn requests (lists, spelling, rewrites) with follow-ups on the first answer."
    )
    data_source = (
        "shipped: suites/conversation/data/test.jsonl (python -m kdeval_suites.conversation.make_data)"
    )
    offline = True
    #: The training split for distilled students; never overlaps the test file.
    train_path = data_dir(__file__) / "train.jsonl"

    def load(self, path: Path | None) -> list[Example]:
        def parse(obj: dict[str, Any], where: str) -> dict[str, Any]:
            refs = two_turns(obj, "references", where)
            return {"turns": two_turns(obj, "turns", where), "references": [[refs[0]], [refs[1]]]}

        return load_records(path or data_dir(__file__) / "test.jsonl", ["turns", "references"], parse)


#: FastChat keeps the GPT-4 reference answers here, relative to the folder of question.jsonl.
REFERENCE_FILE = Path("reference_answer") / "gpt-4.jsonl"


def reference_answers(path: Path) -> dict[str, list[str]]:
    """question_id -> the two answer turns of `choices[0]` in a FastChat answer file."""
    answers: dict[str, list[str]] = {}
    located: list[tuple[str, str]] = []
    for lineno, obj in read_jsonl(path):
        where = f"{path}:{lineno}"
        require(obj, ["question_id", "choices"], where)
        choices = obj["choices"]
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise UserError(
                "field 'choices' must be a non-empty list of objects",
                where=where,
                fix="use FastChat's layout",
            )
        require(choices[0], ["turns"], where)
        qid = id_of(obj["question_id"], where, "question_id")
        located.append((qid, where))
        answers[qid] = two_turns(choices[0], "turns", where)
    unique_ids(located)  # a repeated answer would silently replace the first
    return answers


def mt_bench_example(obj: dict[str, Any], answers: dict[str, list[str]], where: str) -> Example:
    qid = id_of(obj["question_id"], where, "question_id")
    sources = [answers.get(qid, [])]
    if obj.get("reference") is not None:  # the item's own short answers, "" where a turn has none
        sources.append(require_str_list(obj, "reference", where))
    per_turn: TurnRefs = [[s[k] for s in sources if k < len(s) and s[k].strip()] for k in range(2)]
    data = {
        "turns": two_turns(obj, "turns", where),
        "references": per_turn,
        "category": obj.get("category", ""),
    }
    return Example(qid, data)


class MtBench(TwoTurnTask):
    name = "mt_bench"
    description = (
        "MT-Bench (Zheng et al., 2023): 80 two-turn questions. Scored against GPT-4 reference answers "
        "where FastChat has them, else against the teacher's answers (overlap, not a judge score)."
    )
    data_source = (
        "FastChat MT-Bench question.jsonl (question_id, category, turns, optional reference); reference "
        "answers are read from reference_answer/gpt-4.jsonl next to it when present"
    )
    url = (
        "https://raw.githubusercontent.com/lm-sys/FastChat/0e6d3e4beaab66f4d3f93db72541a4abab8af28d/"
        "fastchat/llm_judge/data/mt_bench/question.jsonl"
    )
    needs_teacher = True
    #: FastChat's own generation limit for MT-Bench answers.
    max_tokens = 1024

    def load(self, path: Path | None) -> list[Example]:
        path = need_file(self.name, self.data_source, path)
        ref_path = path.parent / REFERENCE_FILE
        answers = reference_answers(ref_path) if ref_path.exists() else {}
        located = []
        for lineno, obj in read_jsonl(path):
            where = f"{path}:{lineno}"
            require(obj, ["question_id", "turns"], where)
            located.append((mt_bench_example(obj, answers, where), where))
        return unique_examples(located)
