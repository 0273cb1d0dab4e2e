"""Hostile data files: duplicate ids, BOM and CRLF, non-UTF-8 bytes, huge or truncated CSV, size limits.

Every case goes through the real loaders; three go through the command line, which must answer with
one line on stderr, exit code 2 and nothing written.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kdeval.datafiles import MAX_FILE_ENV, MAX_LINE_ENV, read_csv
from kdeval.efficiency.prompts import from_file
from kdeval.errors import UserError
from kdeval.tasks import Message, Task
from kdeval_suites.common import data_dir
from kdeval_suites.conversation.tasks import ChatSynth, MtBench
from kdeval_suites.math.tasks import Aime, Gsm8k, Math500, MathSynth
from kdeval_suites.nli.tasks import Anli, Mnli, NliSynth, Snli
from kdeval_suites.qa.tasks import NqOpen, QaSynth, Squad
from kdeval_suites.summarization.tasks import DialogSum, SciTldr, SummSynth, XSum


def jsonl(*records: object) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def squad(*qa_ids: str) -> str:
    """A SQuAD v1.1 file with one paragraph per question id, pretty-printed over many lines."""
    paragraphs = [
        {
            "context": "Ann lives in Oslo.",
            "qas": [{"id": q, "question": "Where?", "answers": [{"text": "Oslo"}]}],
        }
        for q in qa_ids
    ]
    return json.dumps({"data": [{"title": "t", "paragraphs": paragraphs}]}, indent=1) + "\n"


def anli(*uids: str) -> str:
    return "uid,context,statement,gold_label\n" + "".join(
        f'{u},"Ann, a cat.",Ann is a cat.,e\n' for u in uids
    )


def shipped(task: Task) -> list[dict[str, object]]:
    """The first two records of an offline task's shipped test file."""
    lines = (
        (data_dir(sys.modules[type(task).__module__].__file__ or "") / "test.jsonl").read_text().splitlines()
    )
    return [json.loads(x) for x in lines[:2]]


def snli(pid: str) -> dict[str, str]:
    return {
        "pairID": pid,
        "sentence1": "A dog runs.",
        "sentence2": "An animal moves.",
        "gold_label": "entailment",
    }


#: task, file name, body whose records 1 and 3 share an id (at the given places), and that id.
DUPLICATES = [
    (Anli(), "a.csv", anli("u1", "u2", "u1"), "u1", ("a.csv:2", "a.csv:4")),
    (Snli(), "s.jsonl", jsonl(snli("p1"), snli("p2"), snli("p1")), "p1", ("s.jsonl:1", "s.jsonl:3")),
    (Mnli(), "m.jsonl", jsonl(snli("p1"), snli("p2"), snli("p1")), "p1", ("m.jsonl:1", "m.jsonl:3")),
    (
        Squad(),
        "q.json",
        squad("q1", "q2", "q1"),
        "q1",
        ("q.json: data[0].paragraphs[0]", "paragraphs[2].qas[0]"),
    ),
    (
        XSum(),
        "x.jsonl",
        jsonl(*({"id": i, "document": "d", "summary": "s"} for i in ("x", "y", "x"))),
        "x",
        ("x.jsonl:1", "x.jsonl:3"),
    ),
    (
        DialogSum(),
        "d.jsonl",
        jsonl(*({"fname": i, "dialogue": "d", "summary": "s"} for i in ("f", "g", "f"))),
        "f",
        ("d.jsonl:1", "d.jsonl:3"),
    ),
    (
        SciTldr(),
        "t.jsonl",
        jsonl(*({"paper_id": i, "source": ["s"], "target": ["t"]} for i in ("p", "r", "p"))),
        "p",
        ("t.jsonl:1", "t.jsonl:3"),
    ),
    (
        MtBench(),
        "question.jsonl",
        jsonl(*({"question_id": i, "turns": ["a", "b"]} for i in (1, 2, 1))),
        "1",
        ("question.jsonl:1", "question.jsonl:3"),
    ),
    (
        Math500(),
        "m5.jsonl",
        jsonl(*({"unique_id": i, "problem": "1+1", "answer": "2"} for i in ("a", "b", "a"))),
        "a",
        ("m5.jsonl:1", "m5.jsonl:3"),
    ),
    (
        Aime(),
        "ai.jsonl",
        jsonl(*({"ID": i, "problem": "1+1", "answer": 2} for i in (7, 8, 7))),
        "7",
        ("ai.jsonl:1", "ai.jsonl:3"),
    ),
]
SYNTH = [NliSynth(), QaSynth(), MathSynth(), SummSynth(), ChatSynth()]


@pytest.mark.parametrize("task, name, body, dup, places", DUPLICATES, ids=lambda x: getattr(x, "name", None))
def test_duplicate_ids_are_refused_naming_both_places(
    tmp_path: Path, task: Task, name: str, body: str, dup: str, places: tuple[str, str]
) -> None:
    f = tmp_path / name
    f.write_text(body)
    with pytest.raises(UserError, match=rf"duplicate id '{dup}' \(first at ") as info:
        task.load(f)
    first, second = str(info.value).split(" (first at ")
    assert places[1] in first and places[0] in second


@pytest.mark.parametrize("task", SYNTH, ids=lambda t: t.name)
def test_duplicate_ids_in_a_synthetic_file_are_refused(tmp_path: Path, task: Task) -> None:
    first, _ = shipped(task)
    f = tmp_path / "dup.jsonl"
    f.write_text(jsonl(first, first))
    with pytest.raises(UserError, match=r"dup\.jsonl:2: duplicate id '.*' \(first at .*dup\.jsonl:1\)"):
        task.load(f)


def test_duplicate_reference_answers_are_refused(tmp_path: Path) -> None:
    (tmp_path / "reference_answer").mkdir()
    answer = {"question_id": 1, "choices": [{"turns": ["a", "b"]}]}
    (tmp_path / "reference_answer" / "gpt-4.jsonl").write_text(jsonl(answer, answer))
    (tmp_path / "question.jsonl").write_text(jsonl({"question_id": 1, "turns": ["a", "b"]}))
    with pytest.raises(UserError, match=r"gpt-4\.jsonl:2: duplicate id '1' \(first at .*gpt-4\.jsonl:1\)"):
        MtBench().load(tmp_path / "question.jsonl")


@pytest.mark.parametrize("task", [Gsm8k(), NqOpen()], ids=lambda t: t.name)
def test_formats_without_ids_number_their_lines(tmp_path: Path, task: Task) -> None:
    record = (
        {"question": "1+1?", "answer": "#### 2"}
        if task.name == "gsm8k"
        else {"question": "q", "answer": ["a"]}
    )
    f = tmp_path / "same.jsonl"
    f.write_text(jsonl(record, record))
    assert [ex.id for ex in task.load(f)] == ["L1", "L2"]


# --- BOM and CRLF ---------------------------------------------------------------------------------

#: task, file name, a valid body (LF, no BOM) with several records.
BODIES = [
    (Anli(), "a.csv", anli("u1", "u2") + 'u3,"two\nlines",s,n\n'),
    (Snli(), "s.jsonl", jsonl(snli("p1"), snli("p2"))),
    (Squad(), "q.json", squad("q1", "q2")),
    (NqOpen(), "n.jsonl", jsonl({"question": "q", "answer": ["a"]}, {"question": "r", "answer": ["b"]})),
    (
        Gsm8k(),
        "g.jsonl",
        jsonl({"question": "1+1?", "answer": "#### 2"}, {"question": "2+2?", "answer": "#### 4"}),
    ),
    (Aime(), "ai.jsonl", jsonl({"problem": "1+1", "answer": 2}, {"problem": "1+2", "answer": 3})),
    (XSum(), "x.jsonl", jsonl({"document": "d", "summary": "s"}, {"document": "e", "summary": "t"})),
    (MtBench(), "question.jsonl", jsonl({"question_id": 1, "turns": ["a", "b"]})),
    *((t, "synth.jsonl", jsonl(*shipped(t))) for t in SYNTH),
]


def bom_crlf(body: str) -> bytes:
    return codecs.BOM_UTF8 + body.replace("\n", "\r\n").encode("utf-8")


@pytest.mark.parametrize("task, name, body", BODIES, ids=lambda x: getattr(x, "name", None))
def test_bom_and_crlf_load_like_plain_files(tmp_path: Path, task: Task, name: str, body: str) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "dos").mkdir()
    (tmp_path / "plain" / name).write_text(body)
    (tmp_path / "dos" / name).write_bytes(bom_crlf(body))
    plain = [(ex.id, ex.data) for ex in task.load(tmp_path / "plain" / name)]
    assert plain and [(ex.id, ex.data) for ex in task.load(tmp_path / "dos" / name)] == plain


def test_bom_and_crlf_in_a_text_prompts_file(tmp_path: Path) -> None:
    f = tmp_path / "p.txt"
    f.write_bytes(bom_crlf("first prompt\n\nsecond prompt\n"))
    assert from_file(f) == [(Message("user", "first prompt"),), (Message("user", "second prompt"),)]


def test_crlf_inside_a_quoted_csv_field_reads_as_lf(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_bytes(bom_crlf('uid,context\n1,"two\nlines"\n'))
    assert list(read_csv(f)) == [(2, {"uid": "1", "context": "two\nlines"})]


# --- non-UTF-8 bytes ------------------------------------------------------------------------------

NOT_UTF8 = [
    (
        Gsm8k(),
        "g.jsonl",
        '{"question": "1+1?", "answer": "#### 2"}\n{"question": "\xff", "answer": "#### 4"}\n',
    ),
    (Squad(), "q.json", squad("q1").replace("Oslo.", "Oslo\xff")),
    (Anli(), "a.csv", anli("u1").replace("a cat.,", "a cat\xff,")),
]


@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("task, name, body", NOT_UTF8, ids=lambda x: getattr(x, "name", None))
def test_non_utf8_byte_names_file_line_and_offset(
    tmp_path: Path, task: Task, name: str, body: str, bom: bool
) -> None:
    raw = (codecs.BOM_UTF8 if bom else b"") + body.encode("utf-8").replace("\xff".encode(), b"\xff")
    offset = raw.index(b"\xff")
    line = raw[:offset].count(b"\n") + 1
    f = tmp_path / name
    f.write_bytes(raw)
    with pytest.raises(UserError) as info:
        task.load(f)
    assert str(info.value) == f"{f}:{line}: byte {offset} is not UTF-8 (0xff); save the file as UTF-8"


def test_non_utf8_byte_in_a_text_prompts_file(tmp_path: Path) -> None:
    f = tmp_path / "p.txt"
    f.write_bytes(b"ok\nbad \xe9 latin-1\n")
    with pytest.raises(UserError, match=r"p\.txt:2: byte 7 is not UTF-8 \(0xe9\); save the file as UTF-8"):
        from_file(f)


# --- CSV ------------------------------------------------------------------------------------------


def test_csv_fields_over_128_kib_load(tmp_path: Path) -> None:
    context = "word " * 60_000  # 300 KB, over the csv module's default 128 KiB field limit
    f = tmp_path / "a.csv"
    f.write_text(f"uid,context,statement,gold_label\nu1,{context},s,c\nu2,short,s,n\n")
    examples = Anli().load(f)
    assert [ex.id for ex in examples] == ["u1", "u2"] and examples[0].data["premise"] == context


def test_truncated_last_csv_row_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_text(anli("u1", "u2") + "u3,cut short")
    with pytest.raises(UserError, match=r"a\.csv:4: row has 2 fields, the header has 4"):
        Anli().load(f)


# --- size limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("task, name, body", BODIES[:4], ids=lambda x: getattr(x, "name", None))
def test_file_over_the_size_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, task: Task, name: str, body: str
) -> None:
    f = tmp_path / name
    f.write_text(body + "\n" * 2000)
    monkeypatch.setenv(MAX_FILE_ENV, "0.001")  # 1048 bytes
    with pytest.raises(UserError) as info:
        task.load(f)
    assert str(info.value) == (
        f"{f}: the file is over the 0.001 MB limit; set {MAX_FILE_ENV} to a larger number of MB to raise it"
    )
    monkeypatch.setenv(MAX_FILE_ENV, "1")
    assert task.load(f)


@pytest.mark.parametrize(
    "task, name, long_line",
    [
        (Anli(), "a.csv", 3),
        (Snli(), "s.jsonl", 2),
        (NqOpen(), "n.jsonl", 2),
    ],
    ids=lambda x: getattr(x, "name", None),
)
def test_line_over_the_size_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, task: Task, name: str, long_line: int
) -> None:
    big = "x" * 3000
    bodies = {
        "a.csv": anli("u1") + f"u2,{big},s,e\n",
        "s.jsonl": jsonl(snli("p1"), {**snli("p2"), "sentence1": big}),
        "n.jsonl": jsonl({"question": "q", "answer": ["a"]}, {"question": big, "answer": ["a"]}),
    }
    f = tmp_path / name
    f.write_text(bodies[name])
    monkeypatch.setenv(MAX_LINE_ENV, "0.002")  # 2097 bytes
    with pytest.raises(
        UserError, match=rf"{re.escape(name)}:{long_line}: the line is over the 0.002 MB limit"
    ):
        task.load(f)
    monkeypatch.setenv(MAX_LINE_ENV, "0.01")
    assert len(task.load(f)) == 2


def test_csv_field_spanning_lines_over_the_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "a.csv"
    f.write_text(anli("u1") + 'u2,"' + "many short lines\n" * 200 + '",s,e\n')
    monkeypatch.setenv(MAX_LINE_ENV, "0.002")
    with pytest.raises(UserError, match=rf"a\.csv:3: a field is over the 0.002 MB limit; set {MAX_LINE_ENV}"):
        Anli().load(f)


def test_line_limit_applies_to_text_prompts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "p.txt"
    f.write_text("short\n" + "x" * 3000 + "\n")
    monkeypatch.setenv(MAX_LINE_ENV, "0.002")
    with pytest.raises(
        UserError, match=rf"p\.txt:2: the line is over the 0.002 MB limit; set {MAX_LINE_ENV}"
    ):
        from_file(f)


@pytest.mark.parametrize("value", ["lots", "0", "-1", "inf"])
def test_a_bad_limit_value_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    f = tmp_path / "s.jsonl"
    f.write_text(jsonl(snli("p1")))
    monkeypatch.setenv(MAX_FILE_ENV, value)
    with pytest.raises(UserError, match=rf"{MAX_FILE_ENV}='{value}' is not a positive number of megabytes"):
        Snli().load(f)


# --- through the command line ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, env, expected",
    [
        (squad("q1", "q2", "q1").encode(), {}, "duplicate id 'q1' (first at "),
        (
            squad("q1").encode().replace(b"Oslo.", b"Oslo\xff"),
            {},
            "is not UTF-8 (0xff); save the file as UTF-8",
        ),
        (squad("q1").encode(), {MAX_FILE_ENV: "0.0001"}, f"set {MAX_FILE_ENV} to a larger number"),
    ],
    ids=["duplicate", "not-utf8", "too-big"],
)
def test_cli_refuses_hostile_data_in_one_line(
    tmp_path: Path, tiny_model_dir: Path, raw: bytes, env: dict[str, str], expected: str
) -> None:
    data, out = tmp_path / "dev.json", tmp_path / "out"
    data.write_bytes(raw)
    argv = ["--model", f"m={tiny_model_dir}", "--backend", "hf", "--task", "squad", "--data", f"squad={data}"]
    proc = subprocess.run(
        [sys.executable, "-m", "kdeval.cli", "compare", *argv, "--no-efficiency", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert str(data) in proc.stderr and expected in proc.stderr
    assert not out.exists()
