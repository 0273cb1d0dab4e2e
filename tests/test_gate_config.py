"""gate.yaml's compare: section: the gate runs the comparison itself (scripted backend, toy suite;
tests/test_gate_e2e.py does the same on real tiny models)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdeval.cli import build_parser, spec_from_args
from kdeval.errors import UserError
from kdeval.gate.cli import main
from kdeval.gate.config import CompareSection
from kdeval.gate.rules import load_config
from tests.fakes_gate import RateBackend, checkpoint, gate_catalog, run_compare


@pytest.fixture(autouse=True)
def scripted(monkeypatch: pytest.MonkeyPatch) -> None:
    # The compare: section loads suites and backends as `kdeval compare` does; here, the fakes.
    monkeypatch.setattr("kdeval.plugins.load_catalog", gate_catalog)
    monkeypatch.setattr("kdeval.runner.default_backend_factory", lambda spec, m: RateBackend(m.path))


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("gate_config")
    out = {
        "teacher": checkpoint(root, "teacher", 0.0),
        "good": checkpoint(root, "good", 0.2, seed=2),
        "worse": checkpoint(root, "worse", 0.45, seed=3),
    }
    run_compare(root / "main", {"teacher": out["teacher"], "distilled": out["good"]})
    return {**out, "main": str(root / "main" / "results.json")}


def _yaml(path: Path, ckpts: dict[str, str], student: str, *, baseline: bool = True, extra: str = "") -> Path:
    head = f"rules:\n  - overall:-1pt\n  - qa.f1:-1pt\nbaseline_results: {ckpts['main']}\n"
    path.write_text(
        (head if baseline else "")
        + f"compare:\n  models:\n    teacher: {ckpts['teacher']}\n    distilled: {ckpts[student]}\n"
        + f"  backend: hf\n  efficiency: false\n  out: {path.parent / 'current'}\n{extra}"
    )
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["gate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_compare_section_makes_the_candidate_run(
    ckpts: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    md = tmp_path / "gate.md"
    code, out, err = _run(capsys, "--config", str(_yaml(tmp_path / "g.yaml", ckpts, "good")))
    assert (
        code == 0 and "running the compare: of" in err and (tmp_path / "current" / "results.json").is_file()
    )
    code, out, _ = _run(
        capsys, "--config", str(_yaml(tmp_path / "g.yaml", ckpts, "worse")), "--summary-md", str(md)
    )
    assert code == 1 and out.count("FAIL ") == 2 and "❌ regression" in md.read_text()


def test_compare_only_stores_a_run_without_gating(
    ckpts: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _yaml(tmp_path / "g.yaml", ckpts, "good", baseline=False)
    assert _run(capsys, "--config", str(cfg), "--compare-only")[0] == 0
    assert (tmp_path / "current" / "results.json").is_file() and (tmp_path / "current" / "samples").is_dir()


def test_candidate_flag_wins_over_the_compare_section(
    ckpts: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _yaml(tmp_path / "g.yaml", ckpts, "worse")
    code, _, err = _run(capsys, "--config", str(cfg), "--candidate", ckpts["main"])
    assert code == 0 and "compare: section is not run" in err and not (tmp_path / "current").exists()


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, _, err = _run(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("kdeval: error: "), err
    return err


def test_a_run_the_gate_would_refuse_is_refused_before_it_starts(
    ckpts: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _yaml(tmp_path / "g.yaml", ckpts, "good", extra="  limit: 100\n  temperature: 0.5\n")
    err = _error(capsys, "--config", str(cfg))
    assert f"{cfg}:5: compare: would make a run the baseline cannot be compared with" in err
    assert "setting limit None (baseline) vs 100 (compare:)" in err and "temperature 0.0" in err
    assert not (tmp_path / "current").exists()
    err = _error(capsys, "--config", str(_yaml(cfg, ckpts, "good")), "--model", "nobody")
    assert "model 'nobody' is not in compare.models (teacher, distilled)" in err


def test_missing_inputs_are_named(
    ckpts: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    no_base = _yaml(tmp_path / "g.yaml", ckpts, "good", baseline=False)
    assert "no baseline run" in _error(capsys, "--config", str(no_base), "--rule", "overall:-1pt")
    assert "no candidate run" in _error(capsys, "--baseline", ckpts["main"], "--rule", "overall:-1pt")
    assert "--compare-only needs a compare: section" in _error(capsys, "--compare-only")
    missing = _yaml(tmp_path / "m.yaml", {**ckpts, "main": str(tmp_path / "nope.json")}, "good")
    assert "nope.json: results file not found" in _error(capsys, "--config", str(missing))
    assert not (tmp_path / "current").exists()  # every check comes before the comparison


def test_a_crashing_compare_is_unusable_input_not_a_regression(
    ckpts: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(spec: object, path: str) -> RateBackend:
        raise RuntimeError("CUDA out of memory\nmore detail")

    monkeypatch.setattr("kdeval.runner.default_backend_factory", crash)
    md = tmp_path / "gate.md"
    code, _, err = _run(
        capsys, "--config", str(_yaml(tmp_path / "g.yaml", ckpts, "good")), "--summary-md", str(md)
    )
    last = err.strip().splitlines()[-1]
    assert code == 2 and last == "kdeval: error: the compare: run failed (RuntimeError: CUDA out of memory)"
    assert "Traceback" in err and "unusable input" in md.read_text()  # the cause is in the log


@pytest.mark.parametrize(
    ("body", "where", "message"),
    [
        ("compare:\n  models:\n    distilled: x\n  limt: 5\n", ":4", "unknown key 'compare.limt'"),
        ("compare:\n  models:\n    bad name: x\n", ":3", "model names may use letters"),
        ("compare:\n  models: {}\n", ":2", "compare.models: Dictionary should have at least 1 item"),
        ("compare:\n  models:\n    d: x\n  limit: 0\n", ":4", "compare.limit: Input should be greater"),
        ("rules: []\ncompare: [x]\n", ":2", "compare: Input should be a valid dictionary"),
        ("baseline_result: x\n", ":1", "unknown key 'baseline_result'"),
    ],
)
def test_config_errors_name_file_and_line(tmp_path: Path, body: str, where: str, message: str) -> None:
    f = tmp_path / "gate.yaml"
    f.write_text(body)
    with pytest.raises(UserError) as exc:
        load_config(f)
    assert str(exc.value).startswith(f"{f}{where}: ") and message in str(exc.value), str(exc.value)
    if "compare." in message:
        assert "compare: keys: models, suites, tasks, data, backend, limit, out, efficiency" in str(exc.value)


def test_the_section_builds_the_spec_the_cli_builds() -> None:
    section = CompareSection.model_validate(
        {
            "models": {"teacher": "t", "distilled": "d", "small-2": "s"},
            "tasks": ["nli_synth"],
            "data": {"qa_synth": "q.jsonl"},
            "backend": "hf",
            "limit": 5,
            "out": "o",
            "use_chat_template": False,
            "batch_size": 4,
        }
    )
    argv = ["compare", "--teacher", "t", "--distilled", "d", "--model", "small-2=s", "--task", "nli_synth"]
    argv += ["--data", "qa_synth=q.jsonl", "--backend", "hf", "--limit", "5", "--out", "o"]
    argv += ["--chat-template", "off", "--batch-size", "4"]
    assert section.run_spec() == spec_from_args(build_parser().parse_args(argv))
    assert [m.role for m in section.run_spec().models] == ["teacher", "distilled", "other"]


def test_the_ci_example_gate_yaml_is_valid(tmp_path: Path) -> None:
    doc = (Path(__file__).parent.parent / "docs" / "ci-example.yml").read_text().splitlines()
    start = doc.index("# The team's gate.yaml at the repository root, for example:") + 2
    block = doc[start : doc.index("#", start)]
    (tmp_path / "gate.yaml").write_text("\n".join(line.removeprefix("#   ") for line in block) + "\n")
    cfg = load_config(tmp_path / "gate.yaml").config
    assert cfg.compare is not None and cfg.baseline_results == Path("runs/main/results.json")
    assert [m.role for m in cfg.compare.run_spec().models] == ["teacher", "distilled"]
