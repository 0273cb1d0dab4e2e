"""Training pairs from the suites: the exact evaluation prompt, gold responses, no test overlap."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from kdeval.distill.data import read_records
from kdeval.distill.suitedata import (
    build_records,
    looks_like_name,
    resolve_train,
    select,
    train_examples,
    write_training_file,
)
from kdeval.errors import UserError
from kdeval.plugins import Catalog, load_catalog
from kdeval.tasks import Example, Message, Output, Request, Scored, Task, user_turn


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def offline_tasks(catalog: Catalog) -> list[Task]:
    return [t for t in catalog.tasks.values() if t.offline]


def prompt_key(messages: Sequence[Message]) -> str:
    return json.dumps([(m.role, m.content) for m in messages])


def test_every_offline_task_has_a_training_split(catalog: Catalog) -> None:
    names = {t.name for t in offline_tasks(catalog)}
    assert names >= {"nli_synth", "qa_synth", "math_synth", "summ_synth", "chat_synth"}
    for task in offline_tasks(catalog):
        assert task.train_path is not None and task.train_path.is_file(), task.name


def test_train_and_test_prompts_never_overlap(catalog: Catalog) -> None:
    """Prompt-level: no training prompt (any stage) is a prompt the task evaluates with."""
    for task in offline_tasks(catalog):
        train = {
            prompt_key(task.training_pair(ex, s)[0])
            for ex in train_examples(task)
            for s in range(task.stages)
        }
        test = set()
        for ex in task.load(None):
            test.add(prompt_key(task.request(ex, []).messages))
            # later stages as evaluation would send them after a perfect earlier answer
            test.update(prompt_key(task.training_pair(ex, s)[0]) for s in range(1, task.stages))
        assert train and test
        assert not train & test, f"{task.name}: {len(train & test)} training prompts are test prompts"
        # the documents/questions themselves differ too, not only their full prompts
        first_turns = {prompt_key(task.request(ex, []).messages) for ex in train_examples(task)}
        assert not first_turns & test, task.name


@pytest.mark.parametrize("name", ["nli_synth", "qa_synth", "math_synth", "summ_synth", "chat_synth"])
def test_training_prompt_is_the_evaluation_request(catalog: Catalog, name: str) -> None:
    task = catalog.tasks[name]
    for ex in train_examples(task)[:5]:
        messages, response = task.training_pair(ex, 0)
        assert messages == task.request(ex, []).messages
        assert response.startswith(" ") and response.strip()


def test_gold_responses_score_perfectly(catalog: Catalog) -> None:
    """The gold response, given back as the model's output, gets full marks: right field, right form."""
    for name, metric in [("nli_synth", "accuracy"), ("qa_synth", "exact_match"), ("math_synth", "accuracy")]:
        task = catalog.tasks[name]
        for ex in train_examples(task)[:20]:
            _, response = task.training_pair(ex, 0)
            out = Output(prompt="", text=response)
            if name == "nli_synth":
                choices = task.request(ex, []).choices  # type: ignore[union-attr]
                out.choice_logprobs = [0.0 if c == response else -1.0 for c in choices]
            assert task.score(ex, [out], None).stats[metric][0] == 1.0, (name, ex.id)


def test_chat_second_turn_has_the_gold_first_answer_as_history(catalog: Catalog) -> None:
    task = catalog.tasks["chat_synth"]
    ex = train_examples(task)[0]
    first, answer = task.training_pair(ex, 0)
    second, _ = task.training_pair(ex, 1)
    assert second == task.request(ex, [Output(prompt="", text=answer)]).messages
    assert second[0] == first[0] and second[1] == Message("assistant", answer)
    with pytest.raises(UserError, match="no reference answer"):
        task.training_pair(Example("x", {"turns": ["a", "b"], "references": [["r"], []]}), 1)


def test_a_task_without_gold_responses_says_so() -> None:
    class NoGold(Task):
        name, family, task_type, metrics, primary_metric = "nogold", "x", "generate", ("f1",), "f1"

        def load(self, path: Path | None) -> list[Example]:
            return []

        def request(self, example: Example, history: Sequence[Output]) -> Request:
            raise NotImplementedError

        def score(
            self, example: Example, outputs: Sequence[Output], teacher: Sequence[Output] | None
        ) -> Scored:
            raise NotImplementedError

    with pytest.raises(NotImplementedError, match="nogold"):
        NoGold().training_pair(Example("1", {}))
    assert NoGold.train_path is None


def test_select_names_suites_and_counts(catalog: Catalog) -> None:
    assert [(t.name, n) for t, n in select("nli_synth:5,qa", catalog)] == [
        ("nli_synth", 5),
        ("qa_synth", None),
    ]
    with pytest.raises(UserError, match="neither a file nor a suite or task"):
        select("nli_synt", catalog)
    with pytest.raises(UserError, match="bad example count"):
        select("nli_synth:0", catalog)
    with pytest.raises(UserError, match="no shipped training split"):
        train_examples(catalog.tasks["squad"])


def test_records_are_trainer_jsonl(catalog: Catalog, tmp_path: Path) -> None:
    records = build_records("nli_synth:3,chat_synth:2", catalog)
    assert len(records) == 3 + 2 * 2  # chat: one record per turn
    assert len({r["id"] for r in records}) == len(records)
    path = write_training_file("nli_synth:3,chat_synth:2", catalog, tmp_path)
    assert (
        write_training_file("nli_synth:3,chat_synth:2", catalog, tmp_path) == path
    )  # same content, same path
    parsed = read_records(path)
    assert parsed[0].messages == user_turn(records[0]["messages"][0]["content"])
    assert parsed[0].response == records[0]["response"]


def test_resolve_train_passes_files_and_caches_names(
    catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KDEVAL_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "mine.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\n')
    assert resolve_train(str(data), catalog) == str(data)
    assert not looks_like_name("runs/x.jsonl") and not looks_like_name("missing.jsonl")
    path = Path(resolve_train("qa_synth:2", catalog))
    assert path.parent == tmp_path / "cache" / "train_data" and len(read_records(path)) == 2
