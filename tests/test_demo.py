"""`kdeval demo`: no test example in its training data, fair pairing, caching, the verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdeval.distill.cli import add_parsers, run
from kdeval.distill.demo import QUICK, DemoConfig, init_models, jobs, run_demo, training_data
from kdeval.distill.demo_report import Delta
from kdeval.plugins import load_catalog


def test_demo_training_data_never_overlaps_evaluation_data(tmp_path: Path) -> None:
    """Every demo training prompt and response, against every prompt compare sends on the test splits."""
    cfg = DemoConfig()
    data = training_data(cfg, tmp_path)
    train_prompts, train_ids = set(), set()
    for line in data.read_text().splitlines():
        rec = json.loads(line)
        train_prompts.add(json.dumps([(m["role"], m["content"]) for m in rec["messages"]]))
        train_ids.add(rec["id"].split("/")[1])
    catalog = load_catalog()
    for name in cfg.tasks:
        task = catalog.tasks[name]
        for ex in task.load(None):  # what compare evaluates (all of it: the demo's limit is None)
            prompt = json.dumps([(m.role, m.content) for m in task.request(ex, []).messages])
            assert prompt not in train_prompts, (name, ex.id)
            assert ex.id not in train_ids
    assert len(train_prompts) > 10_000  # the full training splits, chat with one record per turn


def test_baseline_and_distilled_differ_only_in_the_teacher(tmp_path: Path) -> None:
    init = {"teacher": tmp_path / "t", "student": tmp_path / "s"}
    teacher_settings = {"teacher", "teacher_backend", "teacher_max_tokens", "teacher_responses"}
    for method in ("seqkd", "kd"):
        cfg = DemoConfig(method=method)
        j = jobs(cfg, tmp_path / "data.jsonl", init, tmp_path, "hf")
        base, dist = j["baseline"].model_dump(), j["distilled"].model_dump()
        assert {k for k in base if base[k] != dist[k]} <= {"method", "out", *teacher_settings}
        assert dist["teacher"] == j["teacher"].out and dist["method"] == method
        assert j["teacher"].epochs > j["baseline"].epochs
    assert DemoConfig().method == "seqkd"  # chosen by benchmarks/experiment_methods.py
    assert j["distilled"].teacher_responses is None  # kd: no answer file
    seqkd = jobs(DemoConfig(), tmp_path / "d", init, tmp_path, "vllm")["distilled"]
    assert seqkd.teacher_backend == "vllm" and seqkd.teacher_responses is not None


def test_demo_config_rejects_unknown_settings() -> None:
    with pytest.raises(ValueError, match="extra"):
        DemoConfig.model_validate({"epochs": 3})


def test_delta_calls_a_difference_only_beyond_its_interval() -> None:
    assert Delta("overall", 30.0, 33.0, 1.0, 5.0).call == "better"
    assert Delta("overall", 30.0, 28.0, -4.0, -0.5).call == "worse"
    assert Delta("overall", 30.0, 31.0, -0.5, 2.5).call == "no clear difference"
    assert Delta("x", 30.0, 31.0, -0.5, 2.5).text() == "+1.0 points, 95% CI [-0.5, +2.5]"


def test_init_models_share_one_tokenizer_and_are_cached(tmp_path: Path) -> None:
    data = training_data(QUICK, tmp_path)
    paths = init_models(QUICK, data, tmp_path)
    vocab = [json.loads((p / "tokenizer.json").read_text())["model"]["vocab"] for p in paths.values()]
    assert vocab[0] == vocab[1]
    stamp = (paths["student"] / "model.safetensors").stat().st_mtime_ns
    assert init_models(QUICK, data, tmp_path) == paths
    assert (paths["student"] / "model.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_quick_demo_runs_then_reuses_everything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    first = run_demo(
        QUICK, workdir=tmp_path / "work", out=out, backend="hf", progress=False, log=lambda _: None
    )
    report = (out / "report.md").read_text()
    assert "## Did distillation help?" in report and "## The demo" in report
    assert first.verdict.startswith("verdict: distillation ")
    assert set(first.models) == {"teacher", "baseline", "distilled"} and not first.cached
    results = json.loads((out / "results.json").read_text())
    assert [m["role"] for m in results["models"]] == ["teacher", "baseline", "distilled"]

    # Through the CLI, a second time: nothing is trained or generated again.
    import argparse

    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command", required=True))
    argv = [
        "demo",
        "--quick",
        "--backend",
        "hf",
        "--quiet",
        "--workdir",
        str(tmp_path / "work"),
        "--out",
        str(out),
    ]
    assert run(parser.parse_args(argv)) == 0
    printed = capsys.readouterr().out
    assert printed.rstrip().splitlines()[-1] == first.verdict and printed.count("verdict: ") == 1  # once
    again = json.loads((out / "results.json").read_text())
    assert all(m["computed"] == 0 for m in again["models"])
    assert "teacher cached, baseline cached, distilled cached" in (out / "report.md").read_text()

    # Another method: only the distilled student is trained and evaluated again.
    kd = run_demo(
        QUICK.model_copy(update={"method": "kd"}),
        workdir=tmp_path / "work", out=out, backend="hf", progress=False, log=lambda _: None,
    )  # fmt: skip
    assert kd.cached == ["teacher", "baseline"]
    computed = {m["name"]: m["computed"] for m in json.loads((out / "results.json").read_text())["models"]}
    assert computed["teacher"] == computed["baseline"] == 0 < computed["distilled"]
