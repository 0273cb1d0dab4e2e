"""Reasoning students end to end: a tiny model trained in seconds to think (`<think>` opened by
its chat template, "Question:" and newlines inside its traces, two traces that never close) run
through `kdeval compare` on the math task, on transformers and vLLM."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from kdeval.backends import vllm_available
from kdeval.tasks import Output
from kdeval.tinymodels import THINK_CLOSE, build_memorizing_model
from tests.test_thinking_models import OPEN_ENDED, PAIRS

if TYPE_CHECKING:
    from tests.servers import VLLMServer

N = len(PAIRS)
needs_vllm = pytest.mark.skipif(not vllm_available(), reason="vllm is not installed")


@pytest.fixture(scope="module")
def thinker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_memorizing_model(tmp_path_factory.mktemp("thinker") / "model", [p[1:] for p in PAIRS])


def _compare(model: Path | str, out: Path, *extra: str, backend: str = "hf") -> tuple[dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "kdeval.cli", "compare", "--model", f"r={model}", "--backend", backend]
        + ["--task", "math_synth", "--limit", str(N), "--no-efficiency", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text()), proc.stderr


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / "samples/r/math_synth.jsonl").read_text().splitlines()]


def _accuracy(result: dict[str, Any]) -> float:
    return next(s["value"] for s in result["scores"] if s["metric"] == "accuracy")


def _answers_alone_accuracy() -> float:
    """The math task's own scoring of the answers after the traces (none for open traces)."""
    from kdeval_suites.math.tasks import MathSynth

    task = MathSynth()
    right = 0.0
    for ex, (_, _, completion) in zip(task.load(None)[:N], PAIRS, strict=True):
        answer = completion.split(THINK_CLOSE, 1)[1] if THINK_CLOSE in completion else ""
        right += task.score(ex, [Output(prompt="", text=answer)], None).stats["accuracy"][0]
    return 100 * right / N


@pytest.mark.slow
def test_scores_are_the_answers_alone_and_open_traces_are_counted(thinker: Path, tmp_path: Path) -> None:
    result, log = _compare(thinker, tmp_path / "hf")
    assert "thinks in <think> ... </think>" in log  # found in the tokenizer, nobody told it
    assert _accuracy(result) == pytest.approx(_answers_alone_accuracy()) and _accuracy(result) > 0
    gen = result["generation"][0]
    assert (gen["n"], gen["thinks"], gen["unfinished"], gen["truncated"]) == (N, N, len(OPEN_ENDED), 0)
    assert gen["thinking_tokens"] > gen["answer_tokens"] > 0
    records = _records(tmp_path / "hf")
    for i, r in enumerate(records):
        # the stop string "Question:" and the newlines inside the trace did not cut it
        assert "Question: what is asked?" in r["reasoning"][0]
        assert r["thinking"] == ["open" if i in OPEN_ENDED else "closed"]
        assert (r["output"] == [""]) == (i in OPEN_ENDED)
    report = (tmp_path / "hf" / "report.md").read_text()
    assert "## Answers and thinking" in report and f"| {len(OPEN_ENDED)} of {N} |" in report

    # Without its delimiters the old failure comes back: the task's stop cuts inside the trace.
    off, _ = _compare(thinker, tmp_path / "off", "--thinking", "r=off")
    assert _accuracy(off) == 0.0 and not off["generation"][0]["thinks"]

    # A budget the traces cannot fit in: every answer is unfinished and hit the budget.
    short, _ = _compare(thinker, tmp_path / "short", "--max-tokens", "12")
    gen = short["generation"][0]
    assert (gen["unfinished"], gen["truncated"], _accuracy(short)) == (N, N, 0.0)
    assert short["tasks"][0]["max_tokens"] == 12


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
def test_vllm_and_transformers_give_identical_results(thinker: Path, tmp_path: Path) -> None:
    hf, _ = _compare(thinker, tmp_path / "hf")
    vl, _ = _compare(thinker, tmp_path / "vllm", backend="vllm")
    assert hf["scores"] == vl["scores"] and hf["generation"] == vl["generation"]
    keys = ("output", "reasoning", "thinking", "answer")
    assert [[r.get(k) for k in keys] for r in _records(tmp_path / "hf")] == [
        [r.get(k) for k in keys] for r in _records(tmp_path / "vllm")
    ]


@pytest.fixture(scope="module")
def reasoning_server(thinker: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    """vLLM's server with its R1 reasoning parser on the thinking model (only this module uses it,
    so the session still starts it once)."""
    from tests.servers import VLLMServer

    folder = tmp_path_factory.mktemp("reasoning-server")
    server = VLLMServer(thinker, folder / "server.log", extra_args=["--reasoning-parser", "deepseek_r1"])
    yield server.start()
    server.stop()


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
def test_a_servers_separate_reasoning_scores_like_the_offline_split(
    thinker: Path, reasoning_server: VLLMServer, tmp_path: Path
) -> None:
    """The chat endpoint of a server with a reasoning parser returns the trace apart
    (`reasoning_content`): same answers, same scores, same unfinished count as kdeval's own split."""
    offline, _ = _compare(thinker, tmp_path / "hf")
    served, _ = _compare(
        reasoning_server.base_url, tmp_path / "served", "--option", "r.endpoint=chat", backend="openai"
    )
    assert _accuracy(served) == _accuracy(offline)
    g, h = served["generation"][0], offline["generation"][0]
    assert (g["n"], g["thinks"], g["unfinished"]) == (h["n"], h["thinks"], h["unfinished"])
    # the server does not count trace tokens: kdeval re-encodes the trace it returned
    assert g["thinking_tokens"] == pytest.approx(h["thinking_tokens"], rel=0.05)
    got, want = _records(tmp_path / "served"), _records(tmp_path / "hf")
    assert [r["answer"] for r in got] == [r["answer"] for r in want]
    assert [r["thinking"] for r in got] == [r["thinking"] for r in want]
    assert all("Question: what is asked?" in r["reasoning"][0] for r in got)


@pytest.mark.slow
def test_the_cost_phase_times_whole_answers(thinker: Path, tmp_path: Path) -> None:
    """The efficiency phase answers the run's own prompts in full: a thinking model pays for its
    trace (every token to EOS), not for a fixed count of tokens."""
    from transformers import AutoTokenizer

    from kdeval.config import ModelSpec, RunSpec
    from kdeval.efficiency.bench import BenchConfig, measure_run
    from kdeval.plugins import load_catalog
    from kdeval.runner import load_tasks, resolve_models

    spec = RunSpec(
        models=[ModelSpec(name="r", path=str(thinker), role="distilled")],
        tasks=["math_synth"],
        limit=N,
        backend="hf",
        out=tmp_path,
    )
    tasks = load_tasks(spec, load_catalog())
    models = resolve_models(spec, tasks, lambda m: None)
    cfg = BenchConfig(num_prompts=2, throughput_prompts=2, output_len=8, warmup=0, repeats=1, answers=N)
    fig = measure_run(spec, models, tasks, lambda m: None, cfg)["r"]
    tok = AutoTokenizer.from_pretrained(thinker)
    lengths = [len(tok.encode(c, add_special_tokens=False)) + 1 for _, _, c in PAIRS]  # + EOS
    assert fig["answer_tokens"] == {"mean": round(sum(lengths) / N, 1), "max": max(lengths), "n": N}
    assert fig["answer_latency_ms"]["mean"] > fig["latency_ms"]["mean"]  # 8 tokens vs whole answers
