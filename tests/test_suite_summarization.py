"""The summarization suite: shipped synthetic data, the XSum / DialogSum / SciTLDR loaders, scoring."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from kdeval.errors import UserError
from kdeval.metrics import METRICS
from kdeval.tasks import Example, GenerateRequest, Output
from kdeval_suites.summarization import SUITE
from kdeval_suites.summarization.tasks import DialogSum, SciTldr, SummarizationTask, SummSynth, XSum
from tests.shared_data import SHARED, needs_shared

SHIPPED = Path(__file__).parents[1] / "suites" / "summarization" / "data"


def corpus(metric: str, row: list[float]) -> float:
    # Rounded: sacrebleu's BLEU of a perfect match comes out as 100.00000000000004.
    return round(METRICS[metric].corpus(np.array([row])), 6)


def scored(task: SummarizationTask, text: str, refs: list[str]) -> dict[str, float]:
    ex = Example("x", {"document": "d", "references": refs})
    result = task.score(ex, [Output(prompt="p", text=text)], None)
    return {m: corpus(m, row) for m, row in result.stats.items()}


def write(path: Path, records: Sequence[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# --- suite ---------------------------------------------------------------------------------------


def test_suite_lists_the_tasks_and_only_synth_is_offline() -> None:
    assert SUITE.name == SUITE.family == "summarization"
    assert [t.name for t in SUITE.tasks] == ["summ_synth", "xsum", "dialogsum", "scitldr"]
    assert [t.name for t in SUITE.tasks if t.offline] == ["summ_synth"]
    for task in SUITE.tasks:
        assert task.family == "summarization" and task.task_type == "generate" and task.stages == 1
        assert (
            task.metrics == ("rouge1", "rouge2", "rougeL", "bleu", "chrf") and task.primary_metric == "rougeL"
        )
    assert DialogSum.url is not None and DialogSum.url.endswith("DialogSum_Data/dialogsum.test.jsonl")
    assert SciTldr.url is not None and SciTldr.url.endswith("SciTLDR-A/test.jsonl")


@pytest.mark.parametrize("task", [XSum(), DialogSum(), SciTldr()], ids=lambda t: t.name)
def test_public_task_without_file_asks_for_data(task: SummarizationTask) -> None:
    with pytest.raises(UserError, match=f"--data {task.name}=FILE"):
        task.load(None)
    assert task.size() is None


# --- shipped synthetic data ----------------------------------------------------------------------


def test_shipped_sizes_ids_references_and_lengths() -> None:
    test, train = SummSynth().load(None), SummSynth().load(SummSynth.train_path)
    assert (len(test), len(train)) == (400, 2400) and SummSynth().size() == 400
    ids = [ex.id for ex in test + train]
    assert len(set(ids)) == len(ids)
    for ex in test + train:
        refs = ex.data["references"]
        assert len(refs) == 2 and refs[0] != refs[1]
        assert 3 <= ex.data["document"].count(". ") + 1 <= 5


def test_shipped_data_has_both_kinds_in_both_splits() -> None:
    for path in (SHIPPED / "test.jsonl", SHIPPED / "train.jsonl"):
        kinds = collections.Counter(json.loads(line)["kind"] for line in path.read_text().splitlines())
        assert set(kinds) == {"news", "meeting"} and min(kinds.values()) > 100


def test_train_and_test_share_no_document_and_no_entity_combination() -> None:
    def records(split: str) -> list[dict[str, str]]:
        return [json.loads(line) for line in (SHIPPED / f"{split}.jsonl").read_text().splitlines()]

    test, train = records("test"), records("train")
    assert not {r["document"] for r in test} & {r["document"] for r in train}
    assert not {r["key"] for r in test} & {r["key"] for r in train}


def test_make_data_regenerates_identical_files(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "kdeval_suites.summarization.make_data", "--out", str(tmp_path)]
    subprocess.run(cmd, check=True, capture_output=True)
    for split in ("test", "train"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (SHIPPED / f"{split}.jsonl").read_bytes()


# --- requests and scoring ------------------------------------------------------------------------


def test_request_renders_the_prompt() -> None:
    ex = Example("x", {"document": "Rain fell. Roads closed. Shops shut.", "references": ["r"]})
    req = SummSynth().request(ex, [])
    assert isinstance(req, GenerateRequest)
    assert len(req.messages) == 1 and req.messages[0].role == "user"
    assert (
        req.messages[0].content
        == "Summarize in one sentence.\n\nRain fell. Roads closed. Shops shut.\n\nSummary:"
    )
    assert (req.max_tokens, req.stop) == (40, ("\n",))


def test_perfect_output_scores_100_on_every_metric() -> None:
    ref = "Heavy snow closed 12 roads around Leeds on Monday."
    assert scored(SummSynth(), ref, [ref]) == {m: 100.0 for m in SummSynth.metrics}


def test_multi_reference_takes_the_best_reference() -> None:
    refs = ["Leeds council approved plans for a new library.", "A new library will be built in Leeds."]
    second = scored(SummSynth(), refs[1], refs)
    assert second["rougeL"] == second["bleu"] == second["chrf"] == 100.0
    alone = scored(SummSynth(), refs[1], refs[:1])
    assert alone["rougeL"] < 100.0 and alone["chrf"] < 100.0


def test_output_is_cut_at_the_stop_and_normalized_for_agreement() -> None:
    ex = Example("x", {"document": "d", "references": ["The Leeds Museum opened."]})
    result = SummSynth().score(ex, [Output(prompt="p", text=" The Leeds  Museum opened.\nExtra line")], None)
    assert result.answer == "the leeds museum opened."
    assert result.references == ["The Leeds Museum opened."]
    assert corpus("rougeL", result.stats["rougeL"]) == 100.0
    assert scored(SummSynth(), "Something else entirely", ["The Leeds Museum opened."])["rougeL"] == 0.0


def test_xsum_lowercases_the_output_like_its_references() -> None:
    ref = "a council plans to employ its own staff ."
    assert scored(XSum(), "A council plans to employ its own staff.", [ref])["bleu"] == 100.0
    assert scored(SummSynth(), "A council plans to employ its own staff.", [ref])["bleu"] < 100.0


# --- public formats ------------------------------------------------------------------------------


@needs_shared
def test_xsum_sample_parses_50_documents() -> None:
    examples = XSum().load(SHARED / "xsum" / "xsum_test_sample50.jsonl")
    assert len(examples) == 50 and len({ex.id for ex in examples}) == 50
    first = examples[0]
    assert first.id == "35245474"
    assert first.data["document"].startswith(
        "West Berkshire Council is setting up an emotional health academy"
    )
    assert first.data["references"] == [
        "a council plans to employ its own staff to help young people with mental health problems ."
    ]


@needs_shared
def test_dialogsum_test_parses_500_dialogues_with_3_references() -> None:
    examples = DialogSum().load(SHARED / "dialogsum" / "dialogsum.test.jsonl")
    assert len(examples) == 500 and examples[0].id == "test_0"
    assert all(len(ex.data["references"]) == 3 for ex in examples)
    assert (
        examples[0]
        .data["document"]
        .startswith("#Person1#: Ms. Dawson, I need you to take a dictation for me.")
    )


@needs_shared
def test_scitldr_test_parses_618_papers_with_all_targets() -> None:
    examples = SciTldr().load(SHARED / "scitldr" / "test.jsonl")
    assert len(examples) == 618 and len({ex.id for ex in examples}) == 618
    assert sum(len(ex.data["references"]) for ex in examples) == 1967
    assert min(len(ex.data["references"]) for ex in examples) == 2
    first = examples[0]
    assert first.id == "SJ1Xmf-Rb"
    assert first.data["document"].startswith(
        "Incremental class learning involves sequentially learning classes"
    )
    assert first.data["references"][0].startswith("FearNet is a memory efficient neural-network")


def test_xsum_hf_layout_and_dialogsum_single_summary(tmp_path: Path) -> None:
    hf = write(tmp_path / "xsum.jsonl", [{"document": "A b c.", "summary": "Abc.", "id": "123"}])
    assert XSum().load(hf) == [Example("123", {"document": "A b c.", "references": ["Abc."]})]
    train = write(
        tmp_path / "dialog.jsonl", [{"fname": "train_1", "dialogue": "#P1#: hi", "summary": "A greeting."}]
    )
    assert DialogSum().load(train)[0].data["references"] == ["A greeting."]


def test_malformed_line_and_missing_fields_name_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"document": "a", "summary": "b"}\n{"document": \n')
    with pytest.raises(UserError, match=r"bad\.jsonl:2: malformed JSON"):
        XSum().load(bad)
    no_summary = write(
        tmp_path / "nosum.jsonl",
        [{"fname": "t", "dialogue": "d", "summary1": "s"}, {"fname": "u", "dialogue": "d"}],
    )
    with pytest.raises(UserError, match=r"nosum\.jsonl:2: missing field 'summary'"):
        DialogSum().load(no_summary)
    no_dialogue = write(tmp_path / "nodia.jsonl", [{"fname": "t", "summary": "s"}])
    with pytest.raises(UserError, match=r"nodia\.jsonl:1: missing field 'dialogue'"):
        DialogSum().load(no_dialogue)
    not_list = write(tmp_path / "src.jsonl", [{"paper_id": "p", "source": "one string", "target": ["t"]}])
    with pytest.raises(UserError, match=r"src\.jsonl:1: field 'source' must be a non-empty list of strings"):
        SciTldr().load(not_list)
    dup = write(tmp_path / "dup.jsonl", [{"paper_id": "p", "source": ["s"], "target": ["t"]}] * 2)
    with pytest.raises(UserError, match=r"duplicate id 'p'"):
        SciTldr().load(dup)
    no_refs = write(tmp_path / "synth.jsonl", [{"id": "a", "document": "d"}])
    with pytest.raises(UserError, match=r"synth\.jsonl:1: missing field 'references'"):
        SummSynth().load(no_refs)
