"""Question answering: extractive (our synthetic set, SQuAD v1.1) and closed-book (NQ-Open).

The model generates one short line; it is scored with the official SQuAD v1.1 exact match and
token F1, best over the references.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdeval.datafiles import id_of, read_json, read_jsonl, require
from kdeval.errors import UserError
from kdeval.metrics import get_metric, normalize_answer
from kdeval.tasks import Example, GenerateRequest, Message, Output, Request, Scored, Task, user_turn
from kdeval_suites.common import (
    data_dir,
    load_records,
    need_file,
    output_text,
    require_str,
    require_str_list,
    unique_examples,
)

READING_PROMPT = "Context: {context}\nQuestion: {question}\nAnswer:"
CLOSED_BOOK_PROMPT = "Question: {question}\nAnswer:"
STOP = ("\n",)


class QaTask(Task):
    """Request and scoring shared by all QA sources; data holds question, answers and maybe context."""

    family = "qa"
    task_type = "generate"
    metrics = ("exact_match", "f1")
    primary_metric = "f1"
    max_tokens = 16

    def request(self, example: Example, history: Sequence[Output]) -> Request:
        data = example.data
        if data.get("context") is None:
            text = CLOSED_BOOK_PROMPT.format(question=data["question"])
        else:
            text = READING_PROMPT.format(context=data["context"], question=data["question"])
        return GenerateRequest(messages=user_turn(text), max_tokens=self.max_tokens, stop=STOP)

    def score(self, example: Example, outputs: Sequence[Output], teacher: Sequence[Output] | None) -> Scored:
        prediction = output_text(outputs, STOP)
        refs = list(example.data["answers"])
        stats = {name: get_metric(name).stats(prediction, refs) for name in self.metrics}
        return Scored(answer=normalize_answer(prediction), references=refs, stats=stats)

    def training_pair(self, example: Example, stage: int = 0) -> tuple[tuple[Message, ...], str]:
        # The first reference is the canonical span; the space continues "Answer:" as text would.
        return self.request(example, []).messages, " " + example.data["answers"][0]


class QaSynth(QaTask):
    name = "qa_synth"
    description = "Synthetic reading comprehension: 2-4 facts about invented people and places, span answers."
    data_source = "shipped: suites/qa/data/test.jsonl (python -m kdeval_suites.qa.make_data)"
    offline = True
    train_path = data_dir(__file__) / "train.jsonl"

    def load(self, path: Path | None) -> list[Example]:
        def parse(obj: dict[str, Any], where: str) -> dict[str, Any]:
            return {
                "context": require_str(obj, "context", where),
                "question": require_str(obj, "question", where),
                "answers": require_str_list(obj, "answers", where),
            }

        return load_records(
            path or data_dir(__file__) / "test.jsonl", ["context", "question", "answers"], parse
        )


def _squad_error(what: str, where: str) -> UserError:
    return UserError(what, where=where, fix="expected SQuAD v1.1 JSON: {'data': [{'paragraphs': [...]}]}")


def _items(obj: Any, key: str, where: str) -> list[Any]:
    """obj[key] as a list of objects, or a UserError naming the JSON path."""
    if not isinstance(obj, dict):
        raise _squad_error(f"expected a JSON object, got {type(obj).__name__}", where)
    require(obj, [key], where)
    value = obj[key]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _squad_error(f"'{key}' must be a list of objects", where)
    return value


class Squad(QaTask):
    name = "squad"
    description = "SQuAD v1.1 (Rajpurkar et al., 2016): reading comprehension, span answers."
    data_source = "SQuAD v1.1 JSON, e.g. dev-v1.1.json from https://rajpurkar.github.io/SQuAD-explorer/"
    url = "https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v1.1.json"

    def load(self, path: Path | None) -> list[Example]:
        path = need_file(self.name, self.data_source, path)
        located = []
        for i, article in enumerate(_items(read_json(path), "data", str(path))):
            for j, paragraph in enumerate(_items(article, "paragraphs", f"{path}: data[{i}]")):
                where = f"{path}: data[{i}].paragraphs[{j}]"
                require(paragraph, ["context", "qas"], where)
                context = require_str(paragraph, "context", where)
                for k, qa in enumerate(_items(paragraph, "qas", where)):
                    qa_where = f"{where}.qas[{k}]"  # JSON has no line per record: the path says where
                    located.append((self._example(qa, context, qa_where), qa_where))
        return unique_examples(located)

    def _example(self, qa: dict[str, Any], context: str, where: str) -> Example:
        require(qa, ["id", "question", "answers"], where)
        answers = _items(qa, "answers", where)
        for n, answer in enumerate(answers):
            require(answer, ["text"], f"{where}.answers[{n}]")
            require_str(answer, "text", f"{where}.answers[{n}]")
        # Duplicates do not change a max over references; dropping them keeps the records short.
        refs = list(dict.fromkeys(str(a["text"]) for a in answers))
        if not refs:
            raise _squad_error("question has no answers", where)
        data = {"context": context, "question": require_str(qa, "question", where), "answers": refs}
        return Example(id_of(qa["id"], where), data)


class NqOpen(QaTask):
    name = "nq_open"
    description = "NQ-Open (Lee et al., 2019): closed-book questions from Natural Questions."
    data_source = (
        "NQ-Open JSONL (question, answer list), e.g. NQ-open.dev.jsonl from "
        "github.com/google-research-datasets/natural-questions nq_open/"
    )
    url = (
        "https://raw.githubusercontent.com/google-research-datasets/natural-questions/"
        "fb26a3073b1fe636c97302890a27b491d6530130/nq_open/NQ-open.dev.jsonl"
    )
    primary_metric = "exact_match"  # the metric NQ-Open results are reported in

    def load(self, path: Path | None) -> list[Example]:
        path = need_file(self.name, self.data_source, path)
        examples = []
        for lineno, obj in read_jsonl(path):
            where = f"{path}:{lineno}"
            require(obj, ["question", "answer"], where)
            question = require_str(obj, "question", where).strip()
            # NQ questions are lower-case search queries without a question mark.
            if not question.endswith("?"):
                question += "?"
            answers = require_str_list(obj, "answer", where)
            # The file has no ids; the line number is stable for a given file and never repeats,
            # so there are no duplicates to check.
            examples.append(
                Example(f"L{lineno}", {"context": None, "question": question, "answers": answers})
            )
        return examples
