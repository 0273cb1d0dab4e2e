"""`kdeval demo`: no test example in its training data, fair pairing, caching, the verdict."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from kdeval.distill.cli import add_parsers, run
from kdeval.distill.demo import QUICK, DemoConfig, init_models, run_demo, splits, student_jobs
from kdeval.distill.demo_report import Delta
from kdeval.plugins import load_catalog
from kdeval.report.formats import signed

REPO = Path(__file__).resolve().parents[1]


def _prompts(path: Path) -> dict[str, str]:
    """prompt (as JSON) -> record id, for every record of a trainer JSONL."""
    out = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        out[json.dumps([(m["role"], m["content"]) for m in rec["messages"]])] = rec["id"]
    return out


def test_demo_training_data_never_overlaps_evaluation_data(tmp_path: Path) -> None:
    """Every record any demo model trains on, against every prompt compare sends on the test
    splits and every validation example the experiment scores."""
    cfg = DemoConfig()
    data = splits(cfg, tmp_path)
    trained = _prompts(data.teacher) | _prompts(data.gold) | _prompts(data.pool)
    train_ids = {i.split("/")[1] for i in trained.values()}
    catalog = load_catalog()
    for name in cfg.tasks:
        task = catalog.tasks[name]
        for ex in task.load(None):  # what compare evaluates (all of it: the demo's limit is None)
            prompt = json.dumps([(m.role, m.content) for m in task.request(ex, []).messages])
            assert prompt not in trained, (name, ex.id)
            assert ex.id not in train_ids
        held_out = task.load(data.valid[name])
        assert len(held_out) == cfg.valid_per_task
        assert not {ex.id for ex in held_out} & train_ids
    assert len(_prompts(data.teacher)) > 10_000  # the training splits but validation, chat per turn


def test_demo_regime_sizes(tmp_path: Path) -> None:
    """A small gold set, a larger pool without answers, the teacher on everything but validation."""
    cfg = DemoConfig()
    data = splits(cfg, tmp_path)
    gold, pool = data.gold.read_text().splitlines(), data.pool.read_text().splitlines()
    # one record per stage: chat_synth has two turns
    assert len(gold) == cfg.gold_per_task * (len(cfg.tasks) + 1)
    assert len(pool) == cfg.pool_per_task * (len(cfg.tasks) + 1)
    assert all("response" not in json.loads(line) for line in pool)
    assert all(json.loads(line)["response"] for line in gold)
    ids = {k: {json.loads(line)["id"] for line in f.read_text().splitlines()} for k, f in (
        ("teacher", data.teacher), ("gold", data.gold), ("pool", data.pool))}  # fmt: skip
    assert ids["gold"] <= ids["teacher"] and ids["pool"] <= ids["teacher"]
    assert not ids["gold"] & ids["pool"]
    assert cfg.pool_per_task >= 10 * cfg.gold_per_task


def test_baseline_and_distilled_share_init_seed_and_steps(tmp_path: Path) -> None:
    gold, distilled = tmp_path / "gold.jsonl", tmp_path / "distilled.jsonl"
    gold.write_text('{"prompt": "a", "response": "b"}\n' * 40)
    distilled.write_text('{"prompt": "a", "response": "b"}\n' * 400)
    same = {"student", "seed", "max_steps", "lr", "batch_size", "max_len", "warmup_ratio"}
    for method in ("seqkd", "kd"):
        cfg = DemoConfig(method=method)
        j = student_jobs(cfg, gold, distilled, tmp_path / "s", "TEACHER", tmp_path)
        base, dist = j["baseline"], j["distilled"]
        assert {k for k in same if getattr(base, k) != getattr(dist, k)} == set()
        assert base.max_steps == -(-400 // cfg.batch_size) * cfg.student_epochs
        assert base.epochs * -(-40 // cfg.batch_size) >= base.max_steps  # cycles over the gold set
        assert (base.train, dist.train, base.method, base.teacher) == (str(gold), str(distilled), "sft", None)
    assert (dist.method, dist.teacher) == ("kd", "TEACHER")  # kd adds the logits
    seqkd = student_jobs(DemoConfig(method="seqkd"), gold, distilled, tmp_path / "s", "TEACHER", tmp_path)[
        "distilled"
    ]
    assert (seqkd.method, seqkd.teacher) == ("sft", None)  # the answers are in the file already


def test_demo_config_rejects_unknown_settings() -> None:
    with pytest.raises(ValueError, match="extra"):
        DemoConfig.model_validate({"epochs": 3})


def test_delta_calls_a_difference_only_beyond_its_interval() -> None:
    assert Delta("overall", 30.0, 33.0, 1.0, 5.0).call == "better"
    assert Delta("overall", 30.0, 28.0, -4.0, -0.5).call == "worse"
    assert Delta("overall", 30.0, 31.0, -0.5, 2.5).call == "no clear difference"
    assert Delta("x", 30.0, 31.0, -0.5, 2.5).text() == "+1.0 points, 95% CI [-0.5, +2.5]"
    # the call and the interval agree on the page: no "+0.0" lower bound beside "no clear difference"
    assert Delta("x", 30.0, 31.7, 0.0, 3.4).text() == "+1.7 points, 95% CI [0.0, +3.4]"
    assert Delta("x", 30.0, 31.7, 0.02, 3.4).text() == "+1.7 points, 95% CI [+0.02, +3.4]"
    assert signed(-0.004) == "-0.004"


def test_init_models_share_one_tokenizer_and_are_cached(tmp_path: Path) -> None:
    data = splits(QUICK, tmp_path).teacher
    paths = init_models(QUICK, data, tmp_path)
    vocab = [json.loads((p / "tokenizer.json").read_text())["model"]["vocab"] for p in paths.values()]
    assert vocab[0] == vocab[1]
    stamp = (paths["student"] / "model.safetensors").stat().st_mtime_ns
    assert init_models(QUICK, data, tmp_path) == paths
    assert (paths["student"] / "model.safetensors").stat().st_mtime_ns == stamp


def _tracked_state() -> dict[str, int]:
    """Modification time of every file git tracks in this checkout (a rewrite changes it)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True)
    files = [REPO / name for name in listed.stdout.split("\0") if name]
    return {str(f): f.stat().st_mtime_ns for f in files if f.is_file()}


@pytest.mark.slow
def test_quick_demo_runs_then_reuses_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KDEVAL_CACHE", str(tmp_path / "cache"))
    work = tmp_path / "cache" / "demo"
    tracked = _tracked_state()
    first = run_demo(QUICK, workdir=work, backend="hf", progress=False, log=lambda _: None)
    out = work / "report"
    assert first.out == out  # the default: inside the work folder, never a tracked file
    report = (out / "report.md").read_text()
    assert "## Did distillation help?" in report and "## The demo" in report
    assert "## Cost" in report and "Not measured" not in report
    assert "**The distilled student: " in report and "of the teacher's quality" in report  # case study
    assert "quality_vs_latency.png" in report and (out / "quality_vs_latency.png").is_file()
    assert str(tmp_path) not in report and "`<cache>/demo/teacher-" in report  # portable paths
    assert report.count("verdict: ") == 1 and report.rstrip().endswith(first.verdict)
    assert first.verdict.startswith("verdict: distillation ")
    assert set(first.models) == {"teacher", "baseline", "distilled"} and not first.cached
    assert first.sizes["pool"] > first.sizes["gold"]
    results = json.loads((out / "results.json").read_text())
    assert [m["role"] for m in results["models"]] == ["teacher", "baseline", "distilled"]

    # Through the CLI, a second time: nothing is trained or generated again; the verdict once.
    import argparse

    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command", required=True))
    argv = ["demo", "--quick", "--backend", "hf", "--quiet", "--workdir", str(work)]
    assert run(parser.parse_args(argv)) == 0
    printed = capsys.readouterr().out
    assert printed.rstrip().splitlines()[-1] == first.verdict and printed.count("verdict: ") == 1
    again = json.loads((out / "results.json").read_text())
    assert all(m["computed"] == 0 for m in again["models"])
    cached_report = (out / "report.md").read_text()
    assert "teacher cached, baseline cached, distilled cached" in cached_report
    assert "cost figures kept from the previous run" in cached_report  # no model changed: not re-measured
    assert "**The distilled student: " in cached_report and str(tmp_path) not in cached_report

    # Another method: only the distilled student is trained and evaluated again.
    other = run_demo(
        QUICK.model_copy(update={"method": "seqkd" if QUICK.method == "kd" else "kd"}),
        workdir=work,
        backend="hf",
        progress=False,
        log=lambda _: None,
    )
    assert other.cached == ["teacher", "baseline"]
    computed = {m["name"]: m["computed"] for m in json.loads((out / "results.json").read_text())["models"]}
    assert computed["teacher"] == computed["baseline"] == 0 < computed["distilled"]
    assert _tracked_state() == tracked  # no tracked file rewritten
