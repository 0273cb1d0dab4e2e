"""The nli suite: shipped synthetic data, the ANLI / SNLI / MultiNLI loaders, requests and scoring."""

from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path

import pytest

from kdeval.datafiles import read_jsonl
from kdeval.errors import UserError
from kdeval.tasks import ChoiceRequest, Example, Output
from kdeval_suites.nli import SUITE
from kdeval_suites.nli.make_data import split_key
from kdeval_suites.nli.tasks import CHOICES, LABELS, PROMPT, Anli, Mnli, NliSynth, Snli
from tests.shared_data import SHARED, needs_shared

DATA = Path(__file__).parent / "data"
SHIPPED = Path(__file__).parents[1] / "suites" / "nli" / "data"


def prompt_of(task: NliSynth, ex: Example) -> str:
    return task.request(ex, []).messages[-1].content


# --- suite ---------------------------------------------------------------------------------------


def test_suite_lists_the_tasks_and_only_synth_is_offline() -> None:
    assert SUITE.name == SUITE.family == "nli"
    assert [t.name for t in SUITE.tasks] == ["nli_synth", "anli", "snli", "mnli"]
    assert [t.name for t in SUITE.tasks if t.offline] == ["nli_synth"]
    assert all(t.family == "nli" and t.task_type == "multiple_choice" for t in SUITE.tasks)
    assert Anli.url is not None and Anli.url.endswith("ANLI_analysis_r1_dev.csv")


@pytest.mark.parametrize("task", [Anli(), Snli(), Mnli()], ids=lambda t: t.name)
def test_public_task_without_file_asks_for_data(task: NliSynth) -> None:
    with pytest.raises(UserError, match=f"--data {task.name}=FILE"):
        task.load(None)
    assert task.size() is None


# --- shipped synthetic data ----------------------------------------------------------------------


def test_shipped_sizes_ids_and_balance() -> None:
    test = NliSynth().load(None)
    train = NliSynth().load(SHIPPED / "train.jsonl")
    assert (len(test), len(train)) == (600, 3000)
    assert NliSynth().size() == 600
    for split in (test, train):
        counts = collections.Counter(ex.data["label"] for ex in split)
        assert counts == {label: len(split) // 3 for label in LABELS}
    # Labels cycle, so any --limit prefix is balanced too.
    assert collections.Counter(ex.data["label"] for ex in test[:30]) == {label: 10 for label in LABELS}
    ids = [ex.id for ex in test + train]
    assert len(set(ids)) == len(ids)


def test_train_and_test_share_no_prompt_and_no_subject_object_pair() -> None:
    task = NliSynth()
    test, train = task.load(None), task.load(SHIPPED / "train.jsonl")
    assert not {prompt_of(task, ex) for ex in test} & {prompt_of(task, ex) for ex in train}
    test_keys = {split_key(ex.data) for ex in test}
    assert len(test_keys) > 200
    assert not test_keys & {split_key(ex.data) for ex in train}


def test_make_data_regenerates_identical_files(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "kdeval_suites.nli.make_data", "--out", str(tmp_path)]
    subprocess.run(cmd, check=True, capture_output=True)
    for split in ("test", "train"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (SHIPPED / f"{split}.jsonl").read_bytes()


# --- requests and scoring ------------------------------------------------------------------------


def test_request_renders_prompt_and_choices() -> None:
    ex = Example(
        "x", {"premise": "Anna saw a robin.", "hypothesis": "Anna saw a bird.", "label": "entailment"}
    )
    req = NliSynth().request(ex, [])
    assert isinstance(req, ChoiceRequest)
    assert req.choices == (" yes", " maybe", " no") == CHOICES
    assert len(req.messages) == 1 and req.messages[0].role == "user"
    assert req.messages[0].content == (
        "Premise: Anna saw a robin.\nHypothesis: Anna saw a bird.\n"
        "Does the premise entail the hypothesis? Answer yes, maybe or no.\nAnswer:"
    )
    assert PROMPT.endswith("Answer:")


@pytest.mark.parametrize(
    ("logprobs", "answer", "correct"),
    [
        ([-0.1, -2.0, -3.0], "entailment", 1.0),
        ([-2.0, -0.5, -3.0], "neutral", 0.0),
        ([-2.0, -3.0, -0.2], "contradiction", 0.0),
        ([-1.0, -1.0, -2.0], "entailment", 1.0),  # ties go to the first choice
    ],
)
def test_score_picks_the_most_likely_choice(logprobs: list[float], answer: str, correct: float) -> None:
    ex = Example("x", {"premise": "p", "hypothesis": "h", "label": "entailment"})
    scored = NliSynth().score(ex, [Output(prompt="p", choice_logprobs=logprobs)], None)
    assert scored.answer == answer
    assert scored.references == ["entailment"]
    assert scored.stats == {"accuracy": [correct, 1.0]}


# --- public formats ------------------------------------------------------------------------------


@needs_shared
@pytest.mark.parametrize(("rnd", "count"), [(1, 1000), (2, 1000), (3, 1198)])
def test_anli_real_files_parse_with_exact_counts(rnd: int, count: int) -> None:
    examples = Anli().load(SHARED / "anli" / f"ANLI_analysis_r{rnd}_dev.csv")
    assert len(examples) == count
    assert len({ex.id for ex in examples}) == count
    assert set(collections.Counter(ex.data["label"] for ex in examples)) == set(LABELS)


@needs_shared
def test_anli_first_record_fields() -> None:
    first = Anli().load(SHARED / "anli" / "ANLI_analysis_r1_dev.csv")[0]
    assert first.id == "bf628cf5-6948-4595-a6d0-daf99beb47b9"
    assert first.data["premise"].startswith("Linguistics is the scientific study of language")
    assert (
        first.data["hypothesis"]
        == "Form and meaning are the only aspects of language linguistics is concerned with."
    )
    assert first.data["label"] == "contradiction"


def test_snli_and_mnli_skip_dash_labels_and_use_pair_ids() -> None:
    snli = Snli().load(DATA / "snli_sample.jsonl")
    assert [ex.id for ex in snli] == ["1000001.jpg#0r1e", "1000001.jpg#0r1c", "1000002.jpg#3r1n"]
    assert [ex.data["label"] for ex in snli] == ["entailment", "contradiction", "neutral"]
    assert snli[0].data["premise"] == "A man in a red jacket rides a bicycle down a snowy street."
    assert snli[0].data["hypothesis"] == "A person is riding a bike outdoors."
    mnli = Mnli().load(DATA / "mnli_sample.jsonl")
    assert [ex.id for ex in mnli] == ["90001n", "90002c", "90004e", "90005e"]


def test_anli_bad_label_and_missing_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("uid,context,statement,gold_label\nu1,A cat sat.,A cat sat.,e\nu2,A dog ran.,It ran.,x\n")
    with pytest.raises(UserError, match=r"bad\.csv:3: unknown gold_label 'x'"):
        Anli().load(bad)
    missing = tmp_path / "missing.csv"
    missing.write_text("uid,context,gold_label\nu1,A cat sat.,e\n")
    with pytest.raises(UserError, match=r"missing\.csv:2: missing field 'statement'"):
        Anli().load(missing)


def test_snli_malformed_line_and_missing_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sentence1": "a", "sentence2": "b", "gold_label": "neutral"}\n{"sentence1": \n')
    with pytest.raises(UserError, match=r"bad\.jsonl:2: malformed JSON"):
        Snli().load(bad)
    missing = tmp_path / "missing.jsonl"
    missing.write_text('\n{"sentence1": "a", "gold_label": "neutral"}\n')
    with pytest.raises(UserError, match=r"missing\.jsonl:2: missing field 'sentence2'"):
        Mnli().load(missing)


def test_synth_format_errors_name_the_line(tmp_path: Path) -> None:
    dup = tmp_path / "dup.jsonl"
    rec = '{"id": "a", "premise": "p", "hypothesis": "h", "label": "neutral"}\n'
    dup.write_text(rec + rec)
    with pytest.raises(UserError, match=r"dup\.jsonl:2: duplicate id 'a' \(first at .*dup\.jsonl:1\)"):
        NliSynth().load(dup)
    no_label = tmp_path / "nolabel.jsonl"
    no_label.write_text('{"id": "a", "premise": "p", "hypothesis": "h"}\n')
    with pytest.raises(UserError, match=r"nolabel\.jsonl:1: missing field 'label'"):
        NliSynth().load(no_label)
    assert next(read_jsonl(SHIPPED / "test.jsonl"))[1]["id"] == "nli-test-00000"
