"""Competition math: answers checked by math-verify, the MATH-500 and AIME loaders, scoring."""

from __future__ import annotations

import doctest
import json
import threading
from pathlib import Path
from typing import Any

import pytest

import kdeval_suites.math.verify
from kdeval.errors import UserError
from kdeval.tasks import Example, GenerateRequest, Output, Scored
from kdeval_suites.math import SUITE
from kdeval_suites.math.tasks import Aime, Math500
from kdeval_suites.math.verify import canonical, equivalent, extract_answer, last_boxed

# --- equivalence ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "gold"),
    [
        ("\\frac{1}{2}", "0.5"),
        ("0.5", "\\frac{1}{2}"),
        ("\\frac12", "\\frac{1}{2}"),
        ("\\dfrac{1}{2}", "\\frac{1}{2}"),
        ("1/3", "\\frac{1}{3}"),
        ("2\\sqrt{2}", "\\sqrt{8}"),
        ("\\sqrt{8}", "2\\sqrt{2}"),
        ("\\dfrac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}"),
        ("x=3", "3"),
        ("3", "x=3"),
        ("042", "42"),
        ("42", "42"),
        ("p-q", "p - q"),
        ("x^2+2x+1", "(x+1)^2"),
        ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("[1,2)", "[1, 2)"),
        ("(-\\infty,-3)\\cup(3,\\infty)", "(-\\infty, -3) \\cup (3, \\infty)"),
        ("\\{2, 1\\}", "\\{1,2\\}"),
        ("12^\\circ", "12"),
        ("\\text{(C)}", "\\text{(C)}"),
        ("\\text{Evelyn}", "\\text{Evelyn}"),
        ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
    ],
)
def test_equivalent_pairs(answer: str, gold: str) -> None:
    assert equivalent(answer, gold)


@pytest.mark.parametrize(
    ("answer", "gold"),
    [
        ("1/3", "0.33"),  # 0.33 is not a third
        ("0.33", "\\frac{1}{3}"),
        ("41", "42"),  # a wrong answer
        ("4.67", "\\frac{14}{3}"),
        ("q-p", "p - q"),
        ("(1,2)", "[1,2]"),  # open vs closed interval
        ("[1,2]", "[1,2)"),
        ("\\{1,3\\}", "\\{1,2\\}"),
        ("", "3"),  # no answer
        ("   ", "3"),
        ("9^{9^{9^{9}}}", "3"),  # too large to compare: wrong, and fast
    ],
)
def test_not_equivalent_pairs(answer: str, gold: str) -> None:
    assert not equivalent(answer, gold)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("So the total is $6 \\cdot 7 = 42$.\n\n\\boxed{42}", "42"),
        ("First \\boxed{1}, no wait: \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces do not close the box
        ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),
        ("\\boxed {5}", "5"),
        ("\\fbox{6}", "6"),
        ("\\boxed{3} and then \\boxed{4", "3"),  # the last complete box
        ("The final answer is $\\frac{3}{4}$.", "\\frac{3}{4}"),  # no box: math-verify's extraction
        ("So x = 7.", "7"),
        ("I do not know.", ""),
        ("", ""),
    ],
)
def test_extract_answer(text: str, answer: str) -> None:
    assert extract_answer(text) == answer


def test_last_boxed_none_without_a_complete_box() -> None:
    assert last_boxed("\\boxed{4") is None and last_boxed("4") is None


@pytest.mark.parametrize(
    ("answer", "form"),
    [
        ("\\frac12", "1/2"),
        ("0.5", "1/2"),
        ("2 \\sqrt{2}", "2*sqrt(2)"),
        ("", ""),
        ("\\binom{20000}{10000}", None),
    ],
)
def test_canonical_forms(answer: str, form: str | None) -> None:
    got = canonical(answer)
    if form is None:  # too long for str(int): the text without spaces
        assert got == "\\binom{20000}{10000}"
    else:
        assert got == form


def test_verify_doctests() -> None:
    result = doctest.testmod(kdeval_suites.math.verify)
    assert result.attempted > 0 and result.failed == 0


# --- loaders -------------------------------------------------------------------------------------


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


MATH500 = [
    {
        "problem": "What is $1 + 1$?",
        "solution": "It is $\\boxed{2}$.",
        "answer": "2",
        "subject": "Prealgebra",
        "level": 1,
        "unique_id": "test/prealgebra/1.json",
    },
    {
        "problem": "Half of one?",
        "solution": "$\\boxed{\\frac{1}{2}}$",
        "answer": "\\frac{1}{2}",
        "subject": "Algebra",
        "level": 2,
        "unique_id": "test/algebra/7.json",
    },
]


def test_suite_registers_the_competition_tasks() -> None:
    tasks = {t.name: t for t in SUITE.tasks}
    assert {"math500", "aime"} <= set(tasks)
    assert not tasks["math500"].offline and not tasks["aime"].offline
    for name in ("math500", "aime"):
        with pytest.raises(UserError, match=f"--data {name}=FILE"):
            tasks[name].load(None)


def test_math500_loads_ids_and_fields(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "test.jsonl", MATH500)
    examples = Math500().load(path)
    assert [ex.id for ex in examples] == ["test/prealgebra/1.json", "test/algebra/7.json"]
    assert examples[1].data == {
        "problem": "Half of one?",
        "gold": "\\frac{1}{2}",
        "subject": "Algebra",
        "level": 2,
    }
    no_ids = write_jsonl(
        tmp_path / "noid.jsonl", [{"problem": "p", "answer": "1"}, {"problem": "q", "answer": "2"}]
    )
    assert [ex.id for ex in Math500().load(no_ids)] == ["L1", "L2"]


def test_aime_loads_ids_and_int_or_str_answers(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "aime.jsonl",
        [
            {"id": 60, "problem": "Find N.", "answer": 204},
            {"id": 61, "problem": "Find M.", "answer": "025"},
        ],
    )
    examples = Aime().load(path)
    assert [ex.id for ex in examples] == ["60", "61"]
    assert [ex.data for ex in examples] == [
        {"problem": "Find N.", "gold": "204"},
        {"problem": "Find M.", "gold": "025"},
    ]
    upper = write_jsonl(tmp_path / "upper.jsonl", [{"ID": "2024-I-1", "Problem": "p", "Answer": 7}])
    assert [(ex.id, ex.data["gold"]) for ex in Aime().load(upper)] == [("2024-I-1", "7")]
    no_ids = write_jsonl(
        tmp_path / "noid.jsonl", [{"problem": "p", "answer": 1}, {"problem": "q", "answer": 2}]
    )
    assert [ex.id for ex in Aime().load(no_ids)] == ["L1", "L2"]


@pytest.mark.parametrize("task", [Math500(), Aime()], ids=["math500", "aime"])
def test_bad_files_name_file_and_line(tmp_path: Path, task: Math500 | Aime) -> None:
    key = "unique_id" if task.name == "math500" else "id"
    dup = write_jsonl(
        tmp_path / "dup.jsonl",
        [{key: "a", "problem": "p", "answer": "1"}, {key: "a", "problem": "q", "answer": "2"}],
    )
    with pytest.raises(UserError, match=r"dup\.jsonl:2: duplicate id 'a' \(first at .*dup\.jsonl:1\)"):
        task.load(dup)
    no_answer = write_jsonl(tmp_path / "noanswer.jsonl", [{"problem": "p", "answer": "1"}, {"problem": "q"}])
    with pytest.raises(UserError, match=r"noanswer\.jsonl:2: missing field 'answer'"):
        task.load(no_answer)
    no_problem = write_jsonl(tmp_path / "noproblem.jsonl", [{"answer": "1"}])
    with pytest.raises(UserError, match=r"noproblem\.jsonl:1: missing field 'problem'"):
        task.load(no_problem)
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"problem": "p", "answer": "1"}\n\n{"problem": "q" "answer": 2}\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:3: malformed JSON"):
        task.load(bad_json)
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"problem": "p", "answer": "  "}])
    with pytest.raises(UserError, match=r"empty\.jsonl:1: field 'answer' must be a non-empty string"):
        task.load(empty)
    as_list = write_jsonl(tmp_path / "list.jsonl", [{"problem": ["p"], "answer": "1"}])
    with pytest.raises(UserError, match=r"list\.jsonl:1: field 'problem' must be a non-empty string"):
        task.load(as_list)


# --- requests and scoring ------------------------------------------------------------------------


def problem(gold: str) -> Example:
    return Example("x", {"problem": "What is half of one?", "gold": gold})


def test_request_is_the_problem_then_the_r1_instruction() -> None:
    req = Math500().request(problem("1"), [])
    assert isinstance(req, GenerateRequest)
    assert len(req.messages) == 1 and req.messages[0].role == "user"
    assert req.messages[0].content == (
        "What is half of one?\nPlease reason step by step, and put your final answer within \\boxed{}."
    )
    assert req.max_tokens == 1024 and req.stop == ()
    assert Aime().request(problem("1"), []).max_tokens == 2048


def score(text: str, gold: str) -> Scored:
    return Math500().score(problem(gold), [Output(prompt="", text=text)], None)


@pytest.mark.parametrize(
    ("text", "gold", "answer", "correct"),
    [
        ("Half of one is a half. \\boxed{\\frac12}", "\\frac{1}{2}", "1/2", 1.0),
        ("\\boxed{0.5}", "\\frac{1}{2}", "1/2", 1.0),
        ("The answer is \\boxed{2\\sqrt{2}}.", "\\sqrt{8}", "2*sqrt(2)", 1.0),
        ("\\boxed{\\frac13}", "\\frac{1}{2}", "1/3", 0.0),
        ("Hmm, so it should be 42.", "42", "42", 1.0),  # no box: the last number
        ("\\boxed{042}", "42", "42", 1.0),
        ("I am not sure.", "42", "", 0.0),
        ("", "42", "", 0.0),
    ],
)
def test_score(text: str, gold: str, answer: str, correct: float) -> None:
    scored = score(text, gold)
    assert scored.answer == answer
    assert scored.references == [gold]
    assert scored.stats == {"accuracy": [correct, 1.0]}


def test_scoring_from_a_worker_thread() -> None:
    results: list[Scored] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(score("so \\boxed{\\frac12}", "\\frac{1}{2}"))
            results.append(score("so \\boxed{0.33}", "\\frac{1}{3}"))
            results.append(score("\\boxed{9^{9^{9^{9}}}}", "3"))  # would run forever without the size check
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive() and not errors
    assert [r.stats["accuracy"][0] for r in results] == [1.0, 0.0, 0.0]
    assert [r.answer for r in results] == [
        score("so \\boxed{\\frac12}", "\\frac{1}{2}").answer,  # the same verdicts in the main thread
        "0.330000000000000",
        "9**(9**(9**9))",
    ]
