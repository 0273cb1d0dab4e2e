"""Math problems: word problems in the GSM8K layout, and competition math (MATH-500, AIME).

Word problems (math_synth, gsm8k): the model writes a solution ending in "#### N"; its final
number is parsed (never evaluated) with `extract_final_number` and compared with the gold number.

Competition math (math500, aime): the model reasons and puts its final answer in \\boxed{}
(DeepSeek-R1's protocol); the answer is checked for mathematical equivalence with the gold
answer by math-verify (`kdeval_suites.math.verify`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdeval.datafiles import id_of, read_jsonl, require
from kdeval.errors import UserError
from kdeval.metrics import extract_final_number, get_metric
from kdeval.tasks import Example, GenerateRequest, Message, Output, Request, Scored, Task, user_turn
from kdeval_suites.common import data_dir, load_records, need_file, output_text, require_str, unique_examples
from kdeval_suites.math.verify import canonical, equivalent, extract_answer

PROMPT = "Question: {question}\nAnswer:"
# Not "\n\n": chat models put blank lines between steps, and cutting there would drop the answer.
# A model that goes on after its answer starts a new problem, hence "Question:".
STOP = ("Question:",)


def gold_number(solution: str, where: str) -> str:
    """The canonical number after the last "####" of a reference solution.

    >>> gold_number("2 * 3 = 6\\n#### 1,200", "x")
    '1200'
    """
    _, marker, tail = solution.rpartition("####")
    number = extract_final_number(tail) if marker else None
    if number is None:
        raise UserError(
            "answer has no final '#### N' line",
            where=where,
            fix="the 'answer' field must end with '#### <number>' as in GSM8K",
        )
    return number


def first_final_line(text: str) -> str:
    """The text up to the end of its first "####" line: a model's first final answer counts.

    >>> first_final_line("1 + 2 = 3\\n#### 3\\nQ: 4 + 4?\\n#### 8")
    '1 + 2 = 3\\n#### 3'
    """
    head, marker, tail = text.partition("####")
    return head + marker + tail.split("\n", 1)[0]


def parse_problem(obj: dict[str, Any], where: str) -> dict[str, Any]:
    """Example data from a checked GSM8K-layout record."""
    solution = require_str(obj, "answer", where)
    return {
        "question": require_str(obj, "question", where),
        "answer": solution,
        "gold": gold_number(solution, where),
    }


class MathTask(Task):
    """Request and scoring shared by all math sources; subclasses only load."""

    family = "math"
    task_type = "generate"
    metrics = ("accuracy",)
    primary_metric = "accuracy"
    # Our solutions are under 100 characters, but a chat teacher explains more before its answer;
    # a cap that cuts the teacher off would understate it, and a student that stops early pays nothing.
    max_tokens = 128

    def request(self, example: Example, history: Sequence[Output]) -> Request:
        text = PROMPT.format(question=example.data["question"])
        return GenerateRequest(messages=user_turn(text), max_tokens=self.max_tokens, stop=STOP)

    def score(self, example: Example, outputs: Sequence[Output], teacher: Sequence[Output] | None) -> Scored:
        answer = extract_final_number(first_final_line(output_text(outputs, STOP))) or ""
        gold = example.data["gold"]
        return Scored(
            answer=answer, references=[gold], stats={"accuracy": get_metric("accuracy").stats(answer, [gold])}
        )

    def training_pair(self, example: Example, stage: int = 0) -> tuple[tuple[Message, ...], str]:
        # The whole worked solution, "#### N" line included: the format the scorer parses.
        return self.request(example, []).messages, " " + example.data["answer"]


class MathSynth(MathTask):
    name = "math_synth"
    description = "Synthetic one- and two-step word problems (+, -, x) with small numbers."
    data_source = "shipped: suites/math/data/test.jsonl (python -m kdeval_suites.math.make_data)"
    offline = True
    train_path = data_dir(__file__) / "train.jsonl"

    def load(self, path: Path | None) -> list[Example]:
        return load_records(path or data_dir(__file__) / "test.jsonl", ["question", "answer"], parse_problem)


class Gsm8k(MathTask):
    name = "gsm8k"
    description = "GSM8K (Cobbe et al., 2021): grade-school math word problems, test split."
    data_source = "GSM8K JSONL (question, answer ending '#### N'), e.g. grade_school_math/data/test.jsonl"
    url = (
        "https://raw.githubusercontent.com/openai/grade-school-math/"
        "3101c7d5072418e28b9008a6636bde82a006892c/grade_school_math/data/test.jsonl"
    )
    # Real solutions run longer than our synthetic ones; 64 tokens would cut most of them off.
    max_tokens = 256

    def load(self, path: Path | None) -> list[Example]:
        path = need_file(self.name, self.data_source, path)
        examples = []
        for lineno, obj in read_jsonl(path):
            where = f"{path}:{lineno}"
            require(obj, ["question", "answer"], where)
            # The file has no ids; the line number is stable for a given file and never repeats,
            # so there are no duplicates to check.
            examples.append(Example(f"L{lineno}", parse_problem(obj, where)))
        return examples


# --- competition math: final answer in \boxed{}, checked by math-verify -----------------------------

#: DeepSeek-R1's instruction for math problems, after the problem in the one user turn.
BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def _field(obj: dict[str, Any], name: str, where: str, expected: Sequence[str]) -> Any:
    """A field by its name, or capitalized ("Problem", as some AIME files spell it)."""
    for key in (name, name.capitalize()):
        if obj.get(key) is not None:
            return obj[key]
    raise UserError(
        f"missing field '{name}' (expected fields: {', '.join(expected)})",
        where=where,
        fix="check that the file has the expected format for this task",
    )


def gold_answer(obj: dict[str, Any], where: str, expected: Sequence[str]) -> str:
    """The gold answer as text: a non-empty string, or an integer (AIME files store ints)."""
    value = _field(obj, "answer", where, expected)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise UserError(
            f"field 'answer' must be a non-empty string or an integer, got {value!r}",
            where=where,
            fix="check that the file has the expected format for this task",
        )
    return value.strip()


class BoxedMathTask(Task):
    """Competition math: one user turn, final answer in \\boxed{}, equivalence by math-verify.

    Subclasses set the id fields and the token budget; `load` reads `problem` and `answer`.
    """

    family = "math"
    task_type = "generate"
    metrics = ("accuracy",)
    primary_metric = "accuracy"
    max_tokens = 1024
    #: Fields tried in order for the example id; the line number "L<n>" when none is there.
    id_fields: tuple[str, ...] = ()
    #: Fields copied into the example data when present (for breakdowns by subject or level).
    extra_fields: tuple[str, ...] = ()

    def load(self, path: Path | None) -> list[Example]:
        path = need_file(self.name, self.data_source, path)
        expected = ["problem", "answer"]
        located = []
        for lineno, obj in read_jsonl(path):
            where = f"{path}:{lineno}"
            problem = _field(obj, "problem", where, expected)
            if not isinstance(problem, str) or not problem.strip():
                raise UserError(
                    "field 'problem' must be a non-empty string",
                    where=where,
                    fix="check that the file has the expected format for this task",
                )
            gold = gold_answer(obj, where, expected)
            key = next((k for k in self.id_fields if obj.get(k) is not None), None)
            ex_id = id_of(obj[key], where, key) if key else f"L{lineno}"
            extra = {k: obj[k] for k in self.extra_fields if obj.get(k) is not None}
            located.append((Example(ex_id, {"problem": problem, "gold": gold, **extra}), where))
        return unique_examples(located)

    def request(self, example: Example, history: Sequence[Output]) -> Request:
        text = f"{example.data['problem']}\n{BOXED_INSTRUCTION}"
        return GenerateRequest(messages=user_turn(text), max_tokens=self.max_tokens)

    def score(self, example: Example, outputs: Sequence[Output], teacher: Sequence[Output] | None) -> Scored:
        extracted = extract_answer(output_text(outputs))
        gold = example.data["gold"]
        right = equivalent(extracted, gold)
        # accuracy compares strings: hand it the gold itself when math-verify says the answer
        # equals it (an answer identical to the gold always does, so a wrong one never matches).
        hypothesis = gold if right else extracted
        return Scored(
            answer=canonical(extracted),
            references=[gold],
            stats={"accuracy": get_metric("accuracy").stats(hypothesis, [gold])},
        )


class Math500(BoxedMathTask):
    name = "math500"
    description = "MATH-500 (Lightman et al., 2023): 500 competition problems from MATH's test set."
    data_source = (
        "MATH-500 JSONL as published by HuggingFaceH4/MATH-500 (problem, answer, solution, subject, "
        "level, unique_id), e.g. test.jsonl"
    )
    url = "https://huggingface.co/datasets/HuggingFaceH4/MATH-500/resolve/main/test.jsonl"
    # Reasoning models think long; --max-tokens raises the budget.
    max_tokens = 1024
    id_fields = ("unique_id",)
    extra_fields = ("subject", "level")


class Aime(BoxedMathTask):
    name = "aime"
    description = "AIME (American Invitational Mathematics Examination) problems; answers are 0-999."
    data_source = "AIME JSONL (problem, answer as integer or string; optional id or ID), one year or several"
    max_tokens = 2048
    id_fields = ("id", "ID")
