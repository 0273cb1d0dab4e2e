"""User errors: one clear line, exit code 2, no traceback, nothing half-written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kdeval.cli import main


@pytest.fixture
def fake_model(tmp_path: Path) -> Path:
    """Enough of a model directory to pass validation (errors are caught before any engine starts)."""
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text("{}")
    return d


def _err(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("kdeval: error: ")
    return err


def _compare(model: Path, out: Path, *extra: str) -> list[str]:
    return ["compare", "--baseline", str(model), "--backend", "hf", "--out", str(out), "--quiet", *extra]


def test_unknown_suite_lists_known(
    capsys: pytest.CaptureFixture[str], fake_model: Path, tmp_path: Path
) -> None:
    err = _err(capsys, _compare(fake_model, tmp_path / "o", "--suite", "nope"))
    assert "unknown suite 'nope'" in err and "nli" in err and "math" in err


def test_unknown_task_lists_known(
    capsys: pytest.CaptureFixture[str], fake_model: Path, tmp_path: Path
) -> None:
    err = _err(capsys, _compare(fake_model, tmp_path / "o", "--task", "nope"))
    assert "unknown task 'nope'" in err and "gsm8k" in err


def test_unknown_data_task(capsys: pytest.CaptureFixture[str], fake_model: Path, tmp_path: Path) -> None:
    f = tmp_path / "x.jsonl"
    f.write_text("{}\n")
    err = _err(capsys, _compare(fake_model, tmp_path / "o", "--data", f"nope={f}"))
    assert "unknown task 'nope'" in err


def test_missing_model_dir(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = _err(capsys, _compare(tmp_path / "absent", tmp_path / "o"))
    assert "does not exist" in err and "absent" in err


def test_directory_that_is_not_a_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    err = _err(capsys, _compare(tmp_path / "empty", tmp_path / "o"))
    assert "not a Hugging Face model directory" in err


def test_malformed_jsonl_names_file_and_line(
    capsys: pytest.CaptureFixture[str], fake_model: Path, tmp_path: Path
) -> None:
    f = tmp_path / "gsm.jsonl"
    f.write_text('{"question": "1+1?", "answer": "#### 2"}\n\n{"question": oops}\n')
    out = tmp_path / "o"
    err = _err(capsys, _compare(fake_model, out, "--data", f"gsm8k={f}"))
    assert f"{f}:3: malformed JSON" in err
    assert not out.exists()  # validation happens before anything is written


def test_missing_field_names_field_and_line(
    capsys: pytest.CaptureFixture[str], fake_model: Path, tmp_path: Path
) -> None:
    f = tmp_path / "gsm.jsonl"
    f.write_text('{"question": "1+1?", "answer": "#### 2"}\n{"question": "2+2?"}\n')
    err = _err(capsys, _compare(fake_model, tmp_path / "o", "--data", f"gsm8k={f}"))
    assert f"{f}:2" in err and "'answer'" in err


def test_bad_flag_values(capsys: pytest.CaptureFixture[str], fake_model: Path, tmp_path: Path) -> None:
    assert "NAME=VALUE" in _err(capsys, _compare(fake_model, tmp_path / "o", "--data", "gsm8k"))
    assert "--limit" in _err(capsys, _compare(fake_model, tmp_path / "o", "--limit", "0"))
    assert "bad --model name" in _err(
        capsys, [*_compare(fake_model, tmp_path / "o"), "--model", f"a b={fake_model}"]
    )


def test_report_on_a_file_that_is_not_results(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "results.json"
    f.write_text('{\n  "x": 1,\n  oops\n}')
    assert f"{f}:3" in _err(capsys, ["report", str(f)])
    f.write_text("{}")
    assert "not a kdeval results file" in _err(capsys, ["report", str(f)])


def test_error_through_the_real_entry_point_has_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kdeval.cli", *_compare(tmp_path / "absent", tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_suites_lists_every_family(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["suites"]) == 0
    out = capsys.readouterr().out
    for name in (
        "nli_synth",
        "anli",
        "qa_synth",
        "squad",
        "nq_open",
        "math_synth",
        "gsm8k",
        "summ_synth",
        "xsum",
        "dialogsum",
        "scitldr",
        "chat_synth",
        "mt_bench",
    ):
        assert f"| {name} |" in out
