"""A second sweep of hostile inputs (beyond the issue's list): each is one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdeval.config import RunSpec
from kdeval.datafiles import id_of, read_csv, read_jsonl
from kdeval.errors import UserError
from kdeval.yamlfile import read_yaml


def test_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "data.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file"):
        list(read_jsonl(fifo))


def test_a_csv_header_naming_a_column_twice_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_text("uid,context,context,gold_label\n1,a,b,e\n")
    with pytest.raises(UserError, match="'context' twice"):
        list(read_csv(f))


@pytest.mark.parametrize("bad", [{"x": 1}, [1], None, True, "", "  "])
def test_ids_are_strings_or_integers(bad: object) -> None:
    with pytest.raises(UserError, match="must be a non-empty string or an integer"):
        id_of(bad, "f:1")
    assert id_of(7, "f:1") == "7" and id_of("q1", "f:1") == "q1"


def test_empty_text_fields_are_refused(tmp_path: Path) -> None:
    from kdeval_suites.qa.tasks import Squad

    f = tmp_path / "squad.json"
    qa = {"id": "q", "question": "who?", "answers": [{"text": ""}]}
    f.write_text(json.dumps({"data": [{"paragraphs": [{"context": "c", "qas": [qa]}]}]}))
    with pytest.raises(UserError, match="field 'text' is empty"):
        Squad().load(f)


def test_a_yaml_key_given_twice_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "run.yaml"
    f.write_text("models:\n  teacher: /a\n  teacher: /b\n")
    with pytest.raises(UserError, match="key 'teacher' is given twice") as err:
        read_yaml(f, missing="x", fix="y")
    assert err.value.where == f"{f}:3"


def test_samples_are_bounded_and_limit_is_no_boolean(tmp_path: Path) -> None:
    from kdeval.runconfig import RunConfig

    with pytest.raises(ValueError):
        RunSpec(models=[], samples=10**9, temperature=1.0)
    with pytest.raises(ValueError):
        RunConfig.model_validate({"models": {"m": "/x"}, "limit": True})


def _kdeval(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kdeval.cli", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compare", "--model", "m=/x", "--thinking", "m=a,b,c"], "thinking delimiters"),
        (["compare", "--limit", "abc"], "invalid int value"),
        (["bench", "--model", "/x", "--min-repeats", "5", "--max-repeats", "2"], "more than --max-repeats"),
    ],
)
def test_cli_one_line(args: list[str], message: str) -> None:
    proc = _kdeval(*args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr


def test_distill_out_that_is_a_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "a_file"
    out.write_text("x")
    proc = _kdeval(
        "distill", "--student", str(tiny_model_dir), "--train", "math_synth", "--method", "sft",
        "--max-steps", "1", "--out", str(out),
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "is a file" in lines[0], proc.stderr
    assert out.read_text() == "x"
