"""Math word problems with a worked solution ending in "#### N" (the GSM8K layout).

The model writes a solution; its final number is parsed (never evaluated) with
`extract_final_number` and compared with the gold number after "####".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdeval.datafiles import read_jsonl, require
from kdeval.errors import UserError
from kdeval.metrics import extract_final_number, get_metric
from kdeval.tasks import Example, GenerateRequest, Message, Output, Request, Scored, Task, user_turn
from kdeval_suites.common import data_dir, load_records, need_file, output_text, require_str

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
            # The file has no ids; the line number is stable for a given file.
            examples.append(Example(f"L{lineno}", parse_problem(obj, where)))
        return examples
