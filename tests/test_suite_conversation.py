"""The conversation suite: shipped two-turn dialogues, the MT-Bench loader, requests and scoring."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from kdeval.errors import UserError
from kdeval.metrics import METRICS
from kdeval.tasks import Example, GenerateRequest, Message, Output
from kdeval_suites.conversation import SUITE
from kdeval_suites.conversation.dialogues import BUILDERS
from kdeval_suites.conversation.tasks import ChatSynth, MtBench, TwoTurnTask, combine, reference_answers
from tests.shared_data import SHARED, needs_shared

MT_BENCH = SHARED / "mt_bench" / "question.jsonl"
SHIPPED = Path(__file__).parents[1] / "suites" / "conversation" / "data"


def outputs(*texts: str) -> list[Output]:
    return [Output(prompt="p", text=t) for t in texts]


def corpus(metric: str, row: list[float]) -> float:
    # Rounded: sacrebleu's BLEU of a perfect match comes out as 100.00000000000004.
    return round(METRICS[metric].corpus(np.array([row])), 6)


def chat(refs: list[list[str]]) -> Example:
    return Example("x", {"turns": ["List a, b and c.", "What was the second item?"], "references": refs})


def write(path: Path, records: Sequence[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# --- suite ---------------------------------------------------------------------------------------


def test_suite_lists_the_tasks_and_only_synth_is_offline() -> None:
    assert SUITE.name == SUITE.family == "conversation"
    assert [t.name for t in SUITE.tasks] == ["chat_synth", "mt_bench"]
    assert [t.name for t in SUITE.tasks if t.offline] == ["chat_synth"]
    for task in SUITE.tasks:
        assert task.family == "conversation" and task.task_type == "generate" and task.stages == 2
        assert task.metrics == ("bleu", "chrf", "rougeL") and task.primary_metric == "chrf"
    assert MtBench.needs_teacher and not ChatSynth.needs_teacher
    assert MtBench.url is not None and MtBench.url.endswith("llm_judge/data/mt_bench/question.jsonl")
    with pytest.raises(UserError, match="--data mt_bench=FILE"):
        MtBench().load(None)


# --- shipped synthetic data ----------------------------------------------------------------------


def records(split: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in (SHIPPED / f"{split}.jsonl").read_text().splitlines()]


def test_shipped_sizes_ids_and_kinds() -> None:
    test, train = ChatSynth().load(None), ChatSynth().load(ChatSynth.train_path)
    assert (len(test), len(train)) == (400, 2400) and ChatSynth().size() == 400
    ids = [ex.id for ex in test + train]
    assert len(set(ids)) == len(ids)
    assert all(len(ex.data["turns"]) == 2 and len(ex.data["references"]) == 2 for ex in test + train)
    for split in ("test", "train"):
        assert {r["kind"] for r in records(split)} == {b.__name__ for b in BUILDERS}


def test_train_and_test_share_no_dialogue_and_no_entity_combination() -> None:
    test, train = records("test"), records("train")
    assert not {json.dumps(r["turns"]) for r in test} & {json.dumps(r["turns"]) for r in train}
    assert not {r["key"] for r in test} & {r["key"] for r in train}


def test_make_data_regenerates_identical_files(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "kdeval_suites.conversation.make_data", "--out", str(tmp_path)]
    subprocess.run(cmd, check=True, capture_output=True)
    for split in ("test", "train"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (SHIPPED / f"{split}.jsonl").read_bytes()


# --- requests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", [ChatSynth(), MtBench()], ids=lambda t: t.name)
def test_stage_1_request_holds_the_models_own_first_answer(task: TwoTurnTask) -> None:
    ex = chat([["a, b, c"], ["b"]])
    first = task.request(ex, [])
    assert isinstance(first, GenerateRequest)
    assert first.messages == (Message("user", "List a, b and c."),)
    second = task.request(ex, outputs("x, y, z"))
    assert isinstance(second, GenerateRequest)
    assert second.messages == (
        Message("user", "List a, b and c."),
        Message("assistant", "x, y, z"),
        Message("user", "What was the second item?"),
    )
    assert second.max_tokens == first.max_tokens == (48 if task.name == "chat_synth" else 1024)


# --- scoring -------------------------------------------------------------------------------------


def test_both_turns_are_scored_as_one_segment() -> None:
    result = ChatSynth().score(chat([["a, b, c"], ["b"]]), outputs(" a, b, c ", "b"), None)
    assert result.references == ["a, b, c\nb"]
    assert result.answer == "a, b, c b"
    assert {m: corpus(m, row) for m, row in result.stats.items()} == {
        "bleu": 100.0,
        "chrf": 100.0,
        "rougeL": 100.0,
    }
    wrong_second = ChatSynth().score(chat([["a, b, c"], ["b"]]), outputs("a, b, c", "c"), None)
    assert 0.0 < corpus("chrf", wrong_second.stats["chrf"]) < 100.0


def test_combine_pairs_references_across_turns() -> None:
    assert combine([["a", "b"], ["c"]]) == ["a\nc", "b\nc"]
    ex = chat([["one", "uno"], ["two"]])
    result = MtBench().score(ex, outputs("uno", "two"), None)
    assert result.references == ["one\ntwo", "uno\ntwo"]
    assert corpus("rougeL", result.stats["rougeL"]) == 100.0


def test_mt_bench_without_references_uses_the_teacher_or_scores_nothing() -> None:
    ex = chat([[], []])
    with_teacher = MtBench().score(ex, outputs("x y", "z"), outputs("x y", " z\n"))
    assert with_teacher.references == ["x y\nz"]
    assert corpus("chrf", with_teacher.stats["chrf"]) == 100.0
    # The teacher itself is scored with teacher=None: nothing to compare with, so no rows.
    alone = MtBench().score(ex, outputs("x y", "z"), None)
    assert alone.stats == {} and alone.references == [] and alone.answer == "x y z"
    assert MtBench().score(ex, outputs("x", "z"), outputs("x", "")).stats == {}


def test_mt_bench_fills_only_the_missing_turn_from_the_teacher() -> None:
    result = MtBench().score(chat([["gold"], []]), outputs("gold", "t"), outputs("other", "t"))
    assert result.references == ["gold\nt"]
    assert MtBench().score(chat([["gold"], []]), outputs("gold", "t"), None).stats == {}


# --- MT-Bench files ------------------------------------------------------------------------------


@needs_shared
def test_mt_bench_parses_80_questions_and_30_gpt4_reference_answers() -> None:
    assert len(reference_answers(MT_BENCH.parent / "reference_answer" / "gpt-4.jsonl")) == 30
    examples = MtBench().load(MT_BENCH)
    assert len(examples) == 80 and [ex.id for ex in examples] == [str(i) for i in range(81, 161)]
    assert examples[0].data["category"] == "writing"
    assert (
        examples[0].data["turns"][1]
        == "Rewrite your previous response. Start every sentence with the letter A."
    )
    refs = {ex.id: ex.data["references"] for ex in examples}
    # 101: GPT-4's answer plus the item's own short reference, for both turns.
    assert refs["101"][0][0].startswith("If you have just overtaken the second person")
    assert refs["101"][0][1] == "You are in second place." and len(refs["101"][1]) == 2
    assert refs["103"][1] and len(refs["103"][1]) == 1  # the item's turn-2 reference is empty
    both = [i for i, r in refs.items() if r[0] and r[1]]
    assert len(both) == 35  # 30 with GPT-4 answers + 5 whose own references cover both turns
    assert sum(1 for r in refs.values() if not r[0] and not r[1]) == 40


@needs_shared
def test_mt_bench_without_the_reference_file_keeps_item_references(tmp_path: Path) -> None:
    shutil.copy(MT_BENCH, tmp_path / "question.jsonl")
    refs = [ex.data["references"] for ex in MtBench().load(tmp_path / "question.jsonl")]
    assert sum(1 for r in refs if r[0] or r[1]) == 39
    assert sum(1 for r in refs if r[0] and r[1]) == 31  # 8 items leave one turn empty


def test_mt_bench_format_errors_name_file_line_and_field(tmp_path: Path) -> None:
    good = {"question_id": 1, "category": "c", "turns": ["q1", "q2"]}
    one_turn = write(tmp_path / "one.jsonl", [good, {"question_id": 2, "turns": ["only one"]}])
    with pytest.raises(UserError, match=r"one\.jsonl:2: field 'turns' must hold 2 entries"):
        MtBench().load(one_turn)
    no_id = write(tmp_path / "noid.jsonl", [{"turns": ["a", "b"]}])
    with pytest.raises(UserError, match=r"noid\.jsonl:1: missing field 'question_id'"):
        MtBench().load(no_id)
    dup = write(tmp_path / "dup.jsonl", [good, good])
    with pytest.raises(UserError, match=r"dup\.jsonl:2: duplicate id '1' \(first at .*dup\.jsonl:1\)"):
        MtBench().load(dup)
    folder = tmp_path / "fc"
    (folder / "reference_answer").mkdir(parents=True)
    write(folder / "question.jsonl", [good])
    answers = [{"question_id": 1, "choices": [{"turns": ["a", "b"]}]}, {"question_id": 2, "choices": [{}]}]
    write(folder / "reference_answer" / "gpt-4.jsonl", answers)
    with pytest.raises(UserError, match=r"gpt-4\.jsonl:2: missing field 'turns'"):
        MtBench().load(folder / "question.jsonl")


def test_chat_synth_format_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "turns": ["x", "y"], "references": ["1", "2"]}\n{"id": \n')
    with pytest.raises(UserError, match=r"bad\.jsonl:2: malformed JSON"):
        ChatSynth().load(bad)
    no_refs = write(tmp_path / "norefs.jsonl", [{"id": "a", "turns": ["x", "y"]}])
    with pytest.raises(UserError, match=r"norefs\.jsonl:1: missing field 'references'"):
        ChatSynth().load(no_refs)
