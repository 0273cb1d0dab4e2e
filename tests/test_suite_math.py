"""The math suite: shipped synthetic problems, the GSM8K loader, requests and answer parsing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kdeval.errors import UserError
from kdeval.tasks import Example, GenerateRequest, Output
from kdeval_suites.math import SUITE
from kdeval_suites.math.make_data import split_key
from kdeval_suites.math.tasks import Gsm8k, MathSynth
from tests.shared_data import SHARED, needs_shared

SHIPPED = Path(__file__).parents[1] / "suites" / "math" / "data"


def problem(gold: str) -> Example:
    return Example("x", {"question": "q", "answer": f"#### {gold}", "gold": gold})


def test_suite_lists_the_tasks_and_only_synth_is_offline() -> None:
    assert SUITE.name == SUITE.family == "math"
    assert [t.name for t in SUITE.tasks] == ["math_synth", "gsm8k", "math500", "aime"]
    assert [t.name for t in SUITE.tasks if t.offline] == ["math_synth"]
    with pytest.raises(UserError, match="--data gsm8k=FILE"):
        Gsm8k().load(None)


# --- shipped synthetic data ----------------------------------------------------------------------


def test_shipped_sizes_ids_and_solutions() -> None:
    test, train = MathSynth().load(None), MathSynth().load(SHIPPED / "train.jsonl")
    assert (len(test), len(train)) == (500, 3000)
    ids = [ex.id for ex in test + train]
    assert len(set(ids)) == len(ids)
    for ex in test + train:
        *steps, last = ex.data["answer"].split("\n")
        assert last == f"#### {ex.data['gold']}" and 1 <= len(steps) <= 2
        assert int(ex.data["gold"]) >= 2
    two_step = sum(ex.data["answer"].count("\n") == 2 for ex in test)
    assert 0.3 < two_step / len(test) < 0.7


def test_train_and_test_share_no_prompt_and_no_number_combination() -> None:
    task = MathSynth()
    test, train = task.load(None), task.load(SHIPPED / "train.jsonl")
    prompts = [{task.request(ex, []).messages[-1].content for ex in split} for split in (test, train)]
    assert not prompts[0] & prompts[1]
    test_keys = {split_key(ex.data) for ex in test}
    assert len(test_keys) > 300
    assert not test_keys & {split_key(ex.data) for ex in train}


def test_make_data_regenerates_identical_files(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "kdeval_suites.math.make_data", "--out", str(tmp_path)]
    subprocess.run(cmd, check=True, capture_output=True)
    for split in ("test", "train"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (SHIPPED / f"{split}.jsonl").read_bytes()


# --- requests and scoring ------------------------------------------------------------------------


def test_request_renders_question_then_answer() -> None:
    ex = Example("x", {"question": "Sam has 5 apples. How many?", "answer": "#### 5", "gold": "5"})
    req = MathSynth().request(ex, [])
    assert isinstance(req, GenerateRequest)
    assert req.messages[-1].content == "Question: Sam has 5 apples. How many?\nAnswer:"
    assert req.max_tokens == 128 and req.stop == ("Question:",)
    assert Gsm8k().request(ex, []).max_tokens == 256


@pytest.mark.parametrize(
    ("text", "answer", "correct"),
    [
        (" She has 5 + 3 = 8 apples. #### 8", "8", 1.0),
        (" She has 5 + 3 = 8 apples.\n#### 8\n\nQuestion: Tom has 2 pears.\n#### 2", "8", 1.0),
        (" 5 + 3 = 8\n#### 8\n#### 9", "8", 1.0),  # the first final answer counts
        (" She has 5 + 3 = 8 apples.", "8", 1.0),  # no marker: the last number
        (" The answer is $8.00.", "8", 1.0),
        (" She has 5 + 3 = 9 apples. #### 9", "9", 0.0),
        (" #### 80", "80", 0.0),
        (" I do not know.", "", 0.0),
        ("", "", 0.0),
    ],
)
def test_score_parses_the_final_number(text: str, answer: str, correct: float) -> None:
    scored = MathSynth().score(problem("8"), [Output(prompt="p", text=text)], None)
    assert scored.answer == answer
    assert scored.references == ["8"]
    assert scored.stats == {"accuracy": [correct, 1.0]}


def test_score_never_evaluates_the_text() -> None:
    text = " #### __import__('os').getcwd() or 2 + 6"
    assert MathSynth().score(problem("8"), [Output(prompt="p", text=text)], None).answer == "2"


# --- GSM8K ---------------------------------------------------------------------------------------


@needs_shared
def test_gsm8k_test_file_parses_with_gold_numbers() -> None:
    examples = Gsm8k().load(SHARED / "gsm8k" / "test.jsonl")
    assert len(examples) == 1319
    first = examples[0]
    assert first.id == "L1"
    assert first.data["question"].startswith("Janet\u2019s ducks lay 16 eggs per day.")
    assert first.data["answer"].endswith("#### 18")
    assert first.data["gold"] == "18"
    golds = {ex.data["gold"] for ex in examples}
    assert {"2125", "-10", "1450000"} <= golds  # commas removed, signs kept
    assert not any("," in g for g in golds)


def test_gsm8k_malformed_line_missing_field_and_no_final_answer(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n\n{"question": "q" "answer": 2}\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:3: malformed JSON"):
        Gsm8k().load(bad)
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"question": "q"}\n')
    with pytest.raises(UserError, match=r"missing\.jsonl:1: missing field 'answer'"):
        Gsm8k().load(missing)
    no_marker = tmp_path / "nomarker.jsonl"
    no_marker.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "q", "answer": "It is 4."}\n')
    with pytest.raises(UserError, match=r"nomarker\.jsonl:2: answer has no final '#### N' line"):
        Gsm8k().load(no_marker)
    not_str = tmp_path / "notstr.jsonl"
    not_str.write_text('{"question": "q", "answer": 4}\n')
    with pytest.raises(UserError, match=r"notstr\.jsonl:1: field 'answer' must be a string"):
        Gsm8k().load(not_str)


def test_synth_missing_id_names_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:1: missing field 'id'"):
        MathSynth().load(bad)
