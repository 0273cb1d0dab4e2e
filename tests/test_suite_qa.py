"""The qa suite: shipped synthetic data, the SQuAD v1.1 and NQ-Open loaders, requests and scoring."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kdeval.errors import UserError
from kdeval.tasks import Example, GenerateRequest, Output
from kdeval_suites.qa import SUITE
from kdeval_suites.qa.tasks import NqOpen, QaSynth, Squad
from tests.shared_data import SHARED, needs_shared

SHIPPED = Path(__file__).parents[1] / "suites" / "qa" / "data"


def prompt_of(task: QaSynth, ex: Example) -> str:
    return task.request(ex, []).messages[-1].content


def test_suite_lists_the_tasks_and_only_synth_is_offline() -> None:
    assert SUITE.name == SUITE.family == "qa"
    assert [t.name for t in SUITE.tasks] == ["qa_synth", "squad", "nq_open"]
    assert [t.name for t in SUITE.tasks if t.offline] == ["qa_synth"]
    assert all(t.task_type == "generate" and t.metrics == ("exact_match", "f1") for t in SUITE.tasks)


@pytest.mark.parametrize("task", [Squad(), NqOpen()], ids=lambda t: t.name)
def test_public_task_without_file_asks_for_data(task: QaSynth) -> None:
    with pytest.raises(UserError, match=f"--data {task.name}=FILE"):
        task.load(None)
    assert task.url is not None and task.url.startswith("https://")


# --- shipped synthetic data ----------------------------------------------------------------------


def test_shipped_sizes_ids_and_answers_are_spans() -> None:
    test, train = QaSynth().load(None), QaSynth().load(SHIPPED / "train.jsonl")
    assert (len(test), len(train)) == (500, 3000)
    ids = [ex.id for ex in test + train]
    assert len(set(ids)) == len(ids)
    for ex in test + train:
        assert 2 <= ex.data["context"].count(". ") + 1 <= 4
        assert all(answer in ex.data["context"] for answer in ex.data["answers"])
    # Some questions accept more than one answer, as SQuAD's do.
    assert any(len(ex.data["answers"]) > 1 for ex in test)


def _sentence_subjects(examples: list[Example]) -> set[str]:
    """People and towns: every context sentence starts with one."""
    return {s.split()[0] for ex in examples for s in re.split(r"(?<=\.) ", ex.data["context"])}


def test_train_and_test_share_no_prompt_and_no_person_or_town() -> None:
    task = QaSynth()
    test, train = task.load(None), task.load(SHIPPED / "train.jsonl")
    assert not {prompt_of(task, ex) for ex in test} & {prompt_of(task, ex) for ex in train}
    assert len(_sentence_subjects(test)) > 40
    assert not _sentence_subjects(test) & _sentence_subjects(train)


def test_make_data_regenerates_identical_files(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "kdeval_suites.qa.make_data", "--out", str(tmp_path)]
    subprocess.run(cmd, check=True, capture_output=True)
    for split in ("test", "train"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (SHIPPED / f"{split}.jsonl").read_bytes()


# --- requests and scoring ------------------------------------------------------------------------


def test_requests_render_reading_and_closed_book_prompts() -> None:
    ex = Example(
        "x", {"context": "Kalo lives in Renby.", "question": "Where does Kalo live?", "answers": ["Renby"]}
    )
    req = QaSynth().request(ex, [])
    assert isinstance(req, GenerateRequest)
    assert (
        req.messages[-1].content == "Context: Kalo lives in Renby.\nQuestion: Where does Kalo live?\nAnswer:"
    )
    assert req.stop == ("\n",) and req.max_tokens == 16
    closed = Example("y", {"context": None, "question": "who wrote hamlet?", "answers": ["Shakespeare"]})
    assert NqOpen().request(closed, []).messages[-1].content == "Question: who wrote hamlet?\nAnswer:"


@pytest.mark.parametrize(
    ("text", "answer", "em", "f1"),
    [
        (" Denver Broncos", "denver broncos", 1.0, 1.0),
        (" The Broncos!", "broncos", 1.0, 1.0),  # second reference, after normalization
        (" Denver", "denver", 0.0, 2 / 3),  # best F1 is against "Denver Broncos"
        (" Carolina Panthers", "carolina panthers", 0.0, 0.0),
        (" Denver Broncos\nQuestion: next?", "denver broncos", 1.0, 1.0),  # cut at the stop string
        ("", "", 0.0, 0.0),
    ],
)
def test_score_em_and_f1_best_over_references(text: str, answer: str, em: float, f1: float) -> None:
    refs = ["Denver Broncos", "Broncos", "the Broncos"]
    ex = Example("x", {"context": "c", "question": "q", "answers": refs})
    scored = QaSynth().score(ex, [Output(prompt="p", text=text)], None)
    assert scored.answer == answer
    assert scored.references == refs
    assert scored.stats["exact_match"] == [em, 1.0]
    assert scored.stats["f1"] == [pytest.approx(f1), 1.0]


# --- public formats ------------------------------------------------------------------------------


@needs_shared
def test_squad_dev_parses_every_question() -> None:
    examples = Squad().load(SHARED / "squad_v1.1" / "dev-v1.1.json")
    assert len(examples) == 10570
    assert len({ex.id for ex in examples}) == 10570
    first = examples[0]
    assert first.id == "56be4db0acb8001400a502ec"
    assert first.data["question"] == "Which NFL team represented the AFC at Super Bowl 50?"
    assert first.data["answers"] == ["Denver Broncos"]  # three identical human answers
    assert first.data["context"].startswith("Super Bowl 50 was an American football game")
    assert max(len(ex.data["answers"]) for ex in examples) > 1


@needs_shared
def test_nq_open_dev_parses_every_question() -> None:
    examples = NqOpen().load(SHARED / "nq_open" / "NQ-open.dev.jsonl")
    assert len(examples) == 3610
    first = examples[0]
    assert first.id == "L1"
    assert first.data["question"] == "when was the last time anyone was on the moon?"
    assert first.data["answers"] == ["14 December 1972 UTC", "December 1972"]
    assert first.data["context"] is None


def test_squad_wrong_shape_and_missing_fields(tmp_path: Path) -> None:
    no_data = tmp_path / "nodata.json"
    no_data.write_text(json.dumps({"version": "1.1", "articles": []}))
    with pytest.raises(UserError, match=r"nodata\.json: missing field 'data'"):
        Squad().load(no_data)
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    with pytest.raises(UserError, match="expected a JSON object, got list"):
        Squad().load(listed)
    qa = {"id": "q1", "question": "Who?", "answers": [{"answer_start": 0}]}
    no_text = tmp_path / "notext.json"
    no_text.write_text(json.dumps({"data": [{"paragraphs": [{"context": "c", "qas": [qa]}]}]}))
    with pytest.raises(
        UserError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[0\]\.answers\[0\]: missing field 'text'"
    ):
        Squad().load(no_text)
    broken = tmp_path / "broken.json"
    broken.write_text('{"data": [\n{"paragraphs": \n')
    with pytest.raises(UserError, match=r"broken\.json:3: malformed JSON"):
        Squad().load(broken)


def test_nq_open_malformed_line_missing_field_and_bad_answer(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": ["a"]}\n{"question": "q", "answer": [}\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:2: malformed JSON"):
        NqOpen().load(bad)
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"question": "q", "answer": ["a"]}\n{"question": "q"}\n')
    with pytest.raises(UserError, match=r"missing\.jsonl:2: missing field 'answer'"):
        NqOpen().load(missing)
    scalar = tmp_path / "scalar.jsonl"
    scalar.write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(UserError, match=r"scalar\.jsonl:1: field 'answer' must be a non-empty list"):
        NqOpen().load(scalar)


def test_synth_missing_field_names_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "a", "context": "c", "question": "q", "answers": ["x"]}\n{"id": "b", "context": "c"}\n'
    )
    with pytest.raises(UserError, match=r"bad\.jsonl:2: missing field 'question'"):
        QaSynth().load(bad)
