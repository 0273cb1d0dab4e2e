"""`kdeval run pipeline.yaml`: the file's schema, errors at file:line, and one slow run end to end."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from kdeval.distill.cli import COMMANDS, add_parsers, run
from kdeval.distill.pipeline import load_pipeline
from kdeval.errors import UserError

ROOT = Path(__file__).resolve().parents[1]

MINIMAL = """\
teacher: {teacher}
student: {student}
task_type: nli
data:
  train: nli_synth:16,qa_synth:16
distill:
  method: kd
  lr: 1.0e-3
  batch_size: 4
  grad_accum: 1
  epochs: 1
  max_steps: 3
  max_len: 256
compare:
  tasks: [nli_synth, qa_synth]
  baseline: sft
  limit: 8
  backend: hf
  efficiency: false
out: {out}
"""


def write(tmp_path: Path, text: str, **paths: str) -> Path:
    values = {"teacher": "t", "student": "s", "out": str(tmp_path / "out"), **paths}
    file = tmp_path / "pipeline.yaml"
    file.write_text(text.format(**values))
    return file


def test_the_example_file_is_valid() -> None:
    p, _ = load_pipeline(ROOT / "examples" / "pipeline.yaml")
    assert p.distill["lr"] == 2e-5 and p.distill["batch_size"] == 2 and p.distill["epochs"] == 3
    assert p.compare.baseline == "sft" and p.task_type == "nli"


def test_minimal_file_gets_the_common_defaults(tmp_path: Path) -> None:
    from kdeval.distill.pipeline import distill_config

    file = write(tmp_path, "teacher: t\nstudent: s\ndata:\n  train: x.jsonl\nout: o\n")
    p, lines = load_pipeline(file)
    cfg = distill_config(p, file, lines, "x.jsonl")
    assert (cfg.lr, cfg.batch_size, cfg.grad_accum, cfg.epochs, cfg.method) == (2e-5, 2, 8, 3, "kd")
    assert cfg.out == str(Path("o") / "distilled") and p.compare.baseline is None


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("teacher: t\nstudent: [unclosed\n", 3, "malformed YAML"),
        ("teacher: t\nstudent: s\nstudnt: x\ndata: {train: x}\nout: o\n", 3, "unknown key 'studnt'"),
        ("teacher: t\nstudent: s\ndata:\n  train: x\n  vaild: y\nout: o\n", 5, "unknown key 'data.vaild'"),
        ("teacher: t\nstudent: s\ndata: {train: x}\nout: o\ndistill:\n  lr: -1\n", 6, "distill.lr"),
        ("teacher: t\nstudent: s\ndata: {train: x}\nout: o\ndistill:\n  metod: kd\n", 6, "distill.metod"),
        ("teacher: t\nstudent: s\ndata: {train: x}\nout: o\ndistill:\n  out: d\n", 6, "top level"),
        ("teacher: t\nstudent: s\ndata: {train: x}\nout: o\ncompare:\n  limit: 0\n", 6, "compare.limit"),
        ("teacher: t\nstudent: s\ndata: {train: x}\nout: o\ntask_type: poetry\n", 5, "task_type"),
        ("teacher: t\ndata: {train: x}\nout: o\n", 1, "missing key 'student'"),
        ("- just\n- a list\n", 1, "expected a mapping"),
    ],
)
def test_problems_name_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    file = tmp_path / "p.yaml"
    file.write_text(text)
    with pytest.raises(UserError, match=message) as err:
        load_pipeline(file)
    assert err.value.where == f"{file}:{line}"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_pipeline(tmp_path / "nope.yaml")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kdeval")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_defines_its_commands() -> None:
    assert COMMANDS == ("distill", "run", "demo")
    assert parse(["run", "p.yaml"]).pipeline == Path("p.yaml")
    demo = parse(["demo", "--quick", "--backend", "hf"])
    assert demo.quick and demo.out is None  # the default: WORKDIR/report, never a tracked file


def test_distill_train_accepts_a_task_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kdeval.distill.cli import config_from_args

    monkeypatch.setenv("KDEVAL_CACHE", str(tmp_path))
    args = parse(["distill", "--student", "s", "--train", "qa_synth:3", "--method", "sft", "--out", "o"])
    train = Path(config_from_args(args).train)
    assert train.parent == tmp_path / "train_data" and len(train.read_text().splitlines()) == 3
    given = tmp_path / "mine.jsonl"
    given.write_text('{"prompt": "p", "response": "r"}\n')
    args = parse(["distill", "--student", "s", "--train", str(given), "--method", "sft", "--out", "o"])
    assert config_from_args(args).train == str(given)


@pytest.fixture
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared 2-core box: a second thread only waits
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_run_end_to_end(
    tmp_path: Path,
    tiny_model_dir: Path,
    tiny_model_dir_b: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    one_thread: None,
) -> None:
    """Distill (kd, 3 steps) and an sft baseline from suite names, then compare all three."""
    monkeypatch.setenv("KDEVAL_CACHE", str(tmp_path / "cache"))
    file = write(tmp_path, MINIMAL, teacher=str(tiny_model_dir), student=str(tiny_model_dir_b))
    assert run(parse(["run", str(file), "--quiet"])) == 0
    out = tmp_path / "out"
    results = json.loads((out / "compare" / "results.json").read_text())
    assert {m["role"]: m["name"] for m in results["models"]} == {
        "teacher": "teacher",
        "baseline": "baseline",
        "distilled": "distilled",
    }
    assert {t["name"] for t in results["tasks"]} == {"nli_synth", "qa_synth"}
    printed = capsys.readouterr().out
    assert "kdeval comparison report" in printed
    assert printed.rstrip().splitlines()[-1].startswith("verdict: distillation ")

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out / "distilled")
    tokenizer = AutoTokenizer.from_pretrained(out / "distilled")
    assert model.config.vocab_size >= len(tokenizer)
    summary = json.loads((out / "distilled" / "distill_summary.json").read_text())
    assert summary["method"] == "kd" and summary["steps"] == 3
    assert json.loads((out / "baseline" / "distill_summary.json").read_text())["method"] == "sft"

    # A second run trains nothing and reuses every stored output.
    assert run(parse(["run", str(file), "--quiet"])) == 0
    again = json.loads((out / "compare" / "results.json").read_text())
    assert all(m["computed"] == 0 for m in again["models"])


def test_the_teacher_can_be_a_server_as_in_a_run_file(tmp_path: Path) -> None:
    """pipeline.yaml's teacher takes a run file's model entry: the trainer and compare both use it."""
    from kdeval.distill.pipeline import compare_spec, distill_config

    text = MINIMAL.replace(
        "teacher: {teacher}",
        "teacher:\n  backend: openai\n  options:\n    base_url: http://127.0.0.1:9/v1\n    concurrency: 4",
    ).replace("method: kd", "method: seqkd")
    p, lines = load_pipeline(write(tmp_path, text))
    cfg = distill_config(p, tmp_path / "pipeline.yaml", lines, "train.jsonl")
    assert cfg.teacher == "http://127.0.0.1:9/v1" and cfg.teacher_backend == "openai"
    assert cfg.teacher_options["concurrency"] == 4
    spec = compare_spec(p, "d", "b", tmp_path / "pipeline.yaml", lines)
    teacher = spec.models[0]
    assert (
        teacher.backend == "openai"
        and teacher.where_of("options.concurrency") == f"{tmp_path / 'pipeline.yaml'}:5"
    )


def test_a_bad_teacher_entry_is_refused_before_training(tmp_path: Path) -> None:
    text = MINIMAL.replace("teacher: {teacher}", "teacher:\n  path: t\n  backend: vllm\n  dtype: fp12")
    text = text.replace("method: kd", "method: seqkd")
    with pytest.raises(UserError, match=r"pipeline.yaml:4: model 'teacher': dtype: unknown dtype 'fp12'"):
        load_pipeline(write(tmp_path, text))
