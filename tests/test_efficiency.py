"""Cost measurement: statistics, the probes on a scripted engine, the PSS sampler on a real child
process, the cost table and plot from a hand-made RunResult, and `kdeval bench` on tiny models."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kdeval.backends import vllm_available
from kdeval.backends.base import GenerationSettings
from kdeval.backends.registry import ResolvedModel
from kdeval.derive import derive
from kdeval.efficiency import bench
from kdeval.efficiency import prompts as prompt_io
from kdeval.efficiency.machine import describe, device_label, versions
from kdeval.efficiency.memory import PeakSampler, memory_figures, param_count, process_tree, weight_bytes
from kdeval.efficiency.probes import (
    Batch,
    ProbeConfig,
    Timing,
    noisy_warnings,
    percentile,
    relative_spread,
    run_probes,
    spread,
    summary_ms,
    tpot_s,
)
from kdeval.errors import UserError
from kdeval.report import cost
from kdeval.results import RunResult, ScoreRow
from kdeval.runs import read_results
from kdeval.tasks import Message

needs_vllm = pytest.mark.skipif(not vllm_available(), reason="vllm is not installed")

# -- statistics --------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 7, 30, 101])
def test_percentile_matches_numpy(n: int) -> None:
    xs = [random.Random(n).uniform(0, 100) for _ in range(n)]
    for q in (0, 10, 50, 90, 99, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


def test_summary_is_in_ms_and_ordered() -> None:
    s = summary_ms([0.010, 0.020, 0.030, 0.040, 0.500])
    assert s["p50"] == 30.0 and s["mean"] == pytest.approx(120.0)
    assert s["p50"] <= s["p90"] <= s["p99"] <= 500.0


def test_spread_and_noisy_warning() -> None:
    assert spread([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0}
    assert relative_spread([96.0, 100.0, 104.0]) == pytest.approx(0.08)
    assert noisy_warnings({"latency p50": [100.0, 104.0, 108.0]}, 0.10) == []
    (w,) = noisy_warnings({"latency p50": [100.0, 105.0, 125.0], "tok/s": [50.0, 51.0]}, 0.10)
    assert w.startswith("latency p50 varied by 24% across 3 repeats")
    assert noisy_warnings({"one repeat": [5.0]}, 0.0) == []


def test_tpot_is_decode_time_per_token_after_the_first() -> None:
    assert tpot_s(Timing(e2e_s=1.0, ttft_s=0.1, output_tokens=10)) == pytest.approx(0.1)
    assert tpot_s(Timing(1.0, None, 10)) is None and tpot_s(Timing(1.0, 0.1, 1)) is None


# -- the probes on a scripted engine -----------------------------------------------------------


class ScriptedEngine:
    """Latency grows with the prompt; TTFT only from first_token_s when `metrics` is False."""

    def __init__(self, metrics: bool = True, slow_repeat: int | None = None, short: bool = False) -> None:
        self.metrics, self.slow_repeat, self.short = metrics, slow_repeat, short
        self.ttft_method = "scripted"
        self.calls: list[str] = []
        self.batches = 0

    def one(self, prompt: list[int], output_len: int) -> Timing:
        self.calls.append("one")
        slow = 2.0 if self.slow_repeat is not None and self.batches == self.slow_repeat + 1 else 1.0
        e2e = slow * (0.01 * len(prompt) + 0.001 * output_len)
        return Timing(e2e, 0.01 * len(prompt) if self.metrics else None, output_len)

    def first_token_s(self, prompt: list[int]) -> float:
        self.calls.append("first")
        return 0.01 * len(prompt)

    def all(self, prompts: list[list[int]], output_len: int) -> Batch:
        self.calls.append("all")
        self.batches += 1
        n = output_len - 1 if self.short else output_len
        return Batch(2.0, len(prompts), sum(map(len, prompts)), n * len(prompts), n, n)


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []

    def pause(self) -> None:
        self.events.append("pause")

    def resume(self) -> None:
        self.events.append("resume")


PROMPTS = [[1] * n for n in (1, 2, 3, 4)]


def test_probes_figures_from_a_scripted_engine() -> None:
    eng, rec = ScriptedEngine(), Recorder()
    fig = run_probes(eng, PROMPTS, PROMPTS * 2, ProbeConfig(output_len=10, warmup=2, repeats=3), rec)
    assert eng.calls[:3] == ["one", "one", "all"]  # warm-up: batch-1 requests, then the full batch
    assert fig["latency_ms"]["p50"] == pytest.approx(35.0) and fig["latency_ms"]["p99"] <= 50.0
    assert fig["ttft_ms"]["p50"] == pytest.approx(25.0)
    assert fig["tpot_ms"]["mean"] == pytest.approx(10 / 9, abs=1e-3)  # (e2e - ttft) / (10 - 1) = 10 ms / 9
    # 8 requests, 20 prompt + 80 output tokens in 2 s; "tokens_per_s" is the total, as in vLLM
    assert fig["throughput"] == {
        "requests_per_s": 4.0,
        "tokens_per_s": 50.0,
        "output_tokens_per_s": 40.0,
        "total_tokens_per_s": 50.0,
        "elapsed_s": 2.0,
    }
    assert fig["output_tokens"] == {"min": 10, "max": 10, "requested": 10}
    assert fig["repeats"]["n"] == 3 and not fig["noisy"] and fig["warnings"] == []
    assert rec.events == ["pause", "resume"]  # no /proc sampling while anything is timed
    assert eng.batches == 4  # the warm-up's full batch (what the sampler sees), then 3 timed


def test_ttft_falls_back_to_a_separate_first_token_request() -> None:
    eng = ScriptedEngine(metrics=False)
    fig = run_probes(eng, PROMPTS, PROMPTS, ProbeConfig(output_len=5, warmup=0, repeats=1))
    assert eng.calls.count("first") == len(PROMPTS)
    assert fig["ttft_ms"]["p50"] == pytest.approx(25.0)


def test_a_slow_repeat_flags_the_run_as_noisy() -> None:
    fig = run_probes(ScriptedEngine(slow_repeat=1), PROMPTS, PROMPTS, ProbeConfig(10, warmup=0, repeats=3))
    assert fig["noisy"] and "latency p50 varied" in fig["warnings"][0]
    assert fig["repeats"]["latency_p50_ms"]["max"] == pytest.approx(
        2 * fig["repeats"]["latency_p50_ms"]["min"]
    )


def test_short_outputs_are_warned_about() -> None:
    fig = run_probes(ScriptedEngine(short=True), PROMPTS, PROMPTS, ProbeConfig(10, warmup=0, repeats=1))
    assert fig["output_tokens"]["min"] == 9 and "not 10" in fig["warnings"][-1]


# -- memory ------------------------------------------------------------------------------------

_ALLOC = "import sys, time; b = b'x' * (200 << 20); print('ready', flush=True); time.sleep(60)"


@pytest.fixture
def hungry_child() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", _ALLOC], stdout=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux /proc")
def test_pss_sampler_sees_a_child_process_allocate(hungry_child: subprocess.Popen[str]) -> None:
    with PeakSampler(interval_s=0.01, gpu=False) as sampler:
        assert hungry_child.stdout is not None and hungry_child.stdout.readline().strip() == "ready"
        assert hungry_child.pid in process_tree(__import__("os").getpid())
        sampler.sample()
    peak = sampler.peak
    assert peak.host_before is not None and peak.host_peak is not None
    assert peak.host_peak - peak.host_before > 180 << 20  # the child's 200 MiB, touched
    memory, source, notes = memory_figures(peak, weights_loaded=4 << 20, kv_cache=None, kv_note="")
    assert source == "pss" and memory["peak"] == memory["host_peak"] and memory["weights"] == 4.0
    assert any("no GPU" in n for n in notes)


class FakeNVML:
    """NVML's calls as a stand-in device whose memory in use rises: tests the bookkeeping only."""

    def __init__(self) -> None:
        self.used = [1000 << 20, 5000 << 20, 3000 << 20]

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        used = self.used.pop(0) if len(self.used) > 1 else self.used[0]
        return type("Info", (), {"used": used, "total": 80 << 30})()

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return b"Fake GPU"

    def nvmlSystemGetDriverVersion(self) -> str:
        return "999.1"

    def nvmlDeviceGetCount(self) -> int:
        return 1


def test_gpu_peak_is_device_memory_above_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from kdeval.efficiency import machine, memory

    monkeypatch.setattr(memory, "nvml", FakeNVML)
    monkeypatch.setattr(machine, "nvml", FakeNVML)
    with PeakSampler(interval_s=10) as sampler:
        sampler.sample()
    memory_mib, source, notes = memory_figures(
        sampler.peak, weights_loaded=500 << 20, kv_cache=2048 << 20, kv_note="kv"
    )
    assert source == "nvml" and memory_mib["peak"] == 4000.0  # 5000 at most, 1000 before the start
    assert memory_mib["kv_cache"] == 2048.0 and memory_mib["weights"] == 500.0 and "kv" in notes
    gpu = describe()["gpu"]
    assert gpu == {"name": "Fake GPU", "driver": "999.1", "memory_mib": 81920.0, "count": 1}
    assert device_label(describe(), on_gpu=True) == "Fake GPU"


def test_checkpoint_parameters_and_bytes(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert param_count(tiny_model_dir) == sum(p.numel() for p in model.parameters())
    size = weight_bytes(tiny_model_dir)
    assert size is not None and size >= 4 * sum(p.numel() for p in model.parameters())
    assert param_count(tiny_model_dir / "missing") is None and weight_bytes(Path("org/name")) is None


def test_machine_description() -> None:
    m = describe()
    assert m["cores"] >= 1 and m["cpu"]
    assert device_label({**m, "gpu": None}, on_gpu=False).startswith("cpu: ")
    assert (
        device_label({"gpu": {"name": "NVIDIA H100"}, "cpu": "x", "cores": 1}, on_gpu=True) == "NVIDIA H100"
    )
    assert versions()["kdeval"] and versions()["torch"]


# -- prompts -----------------------------------------------------------------------------------


def test_prompt_files(tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text(
        '{"prompt_token_ids": [1, 2, 3]}\n{"prompt": "hi"}\n'
        '{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}\n'
    )
    got = prompt_io.from_file(f)
    assert got == [[1, 2, 3], (Message("user", "hi"),), (Message("system", "s"), Message("user", "u"))]
    prompt_io.write(got, tmp_path / "back.jsonl")
    assert prompt_io.from_file(tmp_path / "back.jsonl") == [got[0], (Message("user", "hi"),), got[2]]
    (tmp_path / "p.txt").write_text("one\n\ntwo\n")
    assert prompt_io.load(str(tmp_path / "p.txt"), 5) == [
        (Message("user", "one"),),
        (Message("user", "two"),),
    ]
    (tmp_path / "bad.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:1"):
        prompt_io.from_file(tmp_path / "bad.jsonl")
    with pytest.raises(UserError, match="no such file, suite or task"):
        prompt_io.load("no_such_suite", 4)


def test_suite_sample_is_fixed_and_spread_over_tasks() -> None:
    from tests.fakes import ToyChat, ToyChoice

    tasks = [(t, t.load(None)) for t in (ToyChoice(), ToyChat())]
    a = prompt_io.sample_tasks(tasks, 6, seed=0)
    assert a == prompt_io.sample_tasks(tasks, 6, seed=0) and len(a) == 6
    assert [p[0].content.split()[0] for p in a if isinstance(p, tuple)] == ["is", "say"] * 3


def test_encode_truncates_to_fit_the_output(codec_dir: Path) -> None:
    from kdeval.backends.prompting import PromptCodec

    c = PromptCodec.from_pretrained(str(codec_dir))
    ids = prompt_io.encode([list(range(50)), (Message("user", "hello there"),)], c, 40, 30)
    assert ids[0] == list(range(40, 50)) and ids[1][0] == c.tokenizer.bos_token_id
    with pytest.raises(UserError, match="no room"):
        prompt_io.encode([[1]], c, 10, 10)
    assert prompt_io.cycle([[1], [2]], 5) == [[1], [2], [1], [2], [1]]


@pytest.fixture
def codec_dir(tiny_model_dir: Path) -> Path:
    return tiny_model_dir


# -- the cost table and plot from results.json ------------------------------------------------


def _fig(p50: float, peak: float, weights: float, tps: float, **extra: Any) -> dict[str, Any]:
    return {
        "device": "cpu: test (2 cores)",
        "backend": "vllm",
        "startup_s": 20.0,
        "latency_ms": {"mean": p50, "p50": p50, "p90": p50 * 1.2, "p99": p50 * 1.5},
        "ttft_ms": {"mean": 3.0, "p50": 3.0, "p90": 4.0, "p99": 5.0},
        "tpot_ms": {"mean": 1.0, "p50": 1.0, "p90": 1.1, "p99": 1.2},
        "throughput": {
            "requests_per_s": tps / 100,
            "tokens_per_s": tps * 2,
            "output_tokens_per_s": tps,
            "total_tokens_per_s": tps * 2,
        },  # fmt: skip
        "memory_mib": {"weights": weights, "kv_cache": 1024.0, "peak": peak},
        "n_params": 1000,
        "repeats": {"n": 3, "latency_p50_ms": {"min": p50 * 0.95, "median": p50, "max": p50 * 1.05}},
        "workload": {"latency_requests": 16, "throughput_requests": 64, "output_len": 128, "warmup": 3},
        "warnings": [],
        "notes": ["no GPU: peak is the PSS of the process tree; GPU device memory not measured"],
        **extra,
    }


SETTINGS = {
    "backend": "hf", "temperature": 0.0, "top_p": 1.0, "seed": 0, "dtype": "auto", "max_model_len": 2048,
    "batch_size": 16, "use_chat_template": None, "limit": None, "bootstrap_resamples": 1000,
    "settings_hash": "0",
}  # fmt: skip
MODEL = {
    "reused": 0, "computed": 1, "backend": "hf", "dtype": "float32", "remote": False, "max_model_len": 2048,
    "options": {}, "output_options": {}, "settings_hash": "0",
}  # fmt: skip
TASK = {
    "name": "t", "suite": "s", "family": "f", "version": "1", "task_type": "generate",
    "metrics": ["accuracy"], "primary_metric": "accuracy", "n_examples": 100, "data_file": None,
    "data_hash": "0", "prompt_hash": "0",
}  # fmt: skip


def _result(roles: dict[str, float], efficiency: dict[str, dict[str, Any]]) -> RunResult:
    r = RunResult.model_validate(
        {
            "kdeval_version": "0",
            "created_at": "2026-01-01T00:00:00+00:00",
            "command": [],
            "settings": SETTINGS,
            "models": [{**MODEL, "name": n, "role": n, "path": n, "fingerprint": n} for n in roles],
            "tasks": [TASK],
            "scores": [
                ScoreRow(model=n, task="t", metric="accuracy", value=v, ci_low=v - 2, ci_high=v + 2, n=100)
                for n, v in roles.items()
            ],
            "agreement": [],
            "efficiency": efficiency,
        }
    )
    derive(r)
    return r


def test_cost_table_ratios_and_case_study_line() -> None:
    eff = {
        "teacher": _fig(100.0, 1000.0, 800.0, 50.0),
        "baseline": _fig(16.0, 60.0, 40.0, 240.0),
        "distilled": _fig(15.0, 50.0, 40.0, 250.0),
    }
    r = _result({"teacher": 50.0, "baseline": 40.0, "distilled": 46.0}, eff)
    x = cost.ratios(r, "teacher", "distilled")
    assert x.speedup == pytest.approx(100 / 15) and x.latency_reduction == pytest.approx(0.85)
    assert x.memory_reduction == pytest.approx(0.95) and x.weights_reduction == pytest.approx(0.95)
    assert x.throughput_x == pytest.approx(5.0) and x.quality_retention == pytest.approx(0.92)
    assert cost.case_study(x) == "85% less latency, 95% less memory, 92% of the teacher's quality"
    text = cost.render_section(r)
    assert (
        "**The distilled student: 85% less latency, 95% less memory, 92% of the teacher's quality.**" in text
    )
    assert "| teacher | 6.67× | 85.0% | 95.0% | 95.0% | 5.00× | 92.0% |" in text
    assert "| baseline | 1.07× | 6.2% | 16.7% | 0.0% | 1.04× | 115.0% |" in text
    assert "| distilled | 1,000 | 40.0 | 50.0 | 1024.0 | 20.0 | 15.0 / 18.0 / 22.5 | 10% / — |" in text
    assert f"![quality vs latency]({cost.PLOT_NAME})" in text


def test_cost_table_without_teacher_or_baseline_shows_dashes() -> None:
    r = _result({"distilled": 46.0}, {"distilled": _fig(15.0, 50.0, 40.0, 250.0)})
    text = cost.render_section(r)
    assert "| teacher (not in this run) | — | — | — | — | — | — |" in text
    assert "| baseline (not in this run) | — | — | — | — | — | — |" in text
    assert "The distilled student:" not in text


def test_models_without_figures_errors_and_worse_students() -> None:
    eff = {"teacher": {"error": "engine died"}, "distilled": _fig(15.0, 50.0, 40.0, 250.0)}
    r = _result({"teacher": 50.0, "baseline": 40.0, "distilled": 46.0}, eff)
    text = cost.render_section(r)
    assert "| teacher | error: engine died | — |" in text and "| baseline | not measured | — |" in text
    assert "| teacher | — | — | — | — | — | 92.0% |" in text
    worse = cost.Ratios("teacher", 0.5, -1.0, -0.2, None, 0.5, 0.9)
    assert cost.case_study(worse) == "100% more latency, 20% more memory, 90% of the teacher's quality"


def test_no_efficiency_says_so() -> None:
    r = _result({"teacher": 50.0, "distilled": 46.0}, {})
    assert "Not measured in this run (this run had no cost phase)" in cost.render_section(
        r
    )  # no flag claimed
    r.command = ["kdeval", "compare", "--no-efficiency"]
    assert "Not measured in this run (`--no-efficiency`)" in cost.render_section(r)
    assert not cost.has_plot(r)


def test_report_renders_stored_figures_and_plot(tmp_path: Path) -> None:
    eff = {
        "teacher": _fig(100.0, 1000.0, 800.0, 50.0),
        "distilled": _fig(15.0, 50.0, 40.0, 250.0, noisy=True),
    }
    eff["distilled"]["warnings"] = ["latency p50 varied by 30% across 3 repeats"]
    eff["distilled"]["machine"] = {"load_average": [3.5, 3.0, 2.0], "cores": 2}
    _result({"teacher": 50.0, "distilled": 46.0}, eff).write(tmp_path / "results.json")
    r = read_results(tmp_path / "results.json")  # what `kdeval report` starts from
    text = cost.render_section(r)
    assert "10% / — ⚠" in text and "⚠ distilled: latency p50 varied by 30%" in text
    assert "load average 3.5 on 2 cores" in text
    png = cost.write_plot(r, tmp_path)
    assert png == tmp_path / cost.PLOT_NAME and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cost.quality_interval(r, "teacher") == (48.0, 52.0)


def test_bench_markdown_has_no_quality_column() -> None:
    text = cost.bench_markdown("tiny", _fig(15.0, 50.0, 40.0, 250.0))
    assert text.startswith("# kdeval bench") and "quality" not in text.split("\n")[4]


# -- kdeval bench on tiny real models ----------------------------------------------------------

OUT_LEN = 8


def _check_figures(fig: dict[str, Any], backend: str) -> None:
    assert fig["backend"] == backend and fig["device"].startswith(("cpu: ", "NVIDIA"))
    lat = fig["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    assert 0 < fig["ttft_ms"]["p50"] < lat["p99"] and fig["tpot_ms"]["p50"] > 0
    assert fig["output_tokens"] == {"min": OUT_LEN, "max": OUT_LEN, "requested": OUT_LEN}
    tp = fig["throughput"]
    assert tp["requests_per_s"] > 0 and tp["output_tokens_per_s"] > 0
    assert tp["total_tokens_per_s"] > tp["output_tokens_per_s"]
    assert fig["startup_s"] > 0 and fig["n_params"] > 0 and fig["weight_bytes"] > 0
    mem = fig["memory_mib"]
    assert mem["peak"] >= mem["host_before"] > 0 and mem["weights"] > 0
    assert fig["repeats"]["n"] == 2 and fig["versions"]["torch"]


@pytest.mark.slow
def test_kdeval_bench_on_hf(tiny_model_dir: Path, tmp_path: Path) -> None:
    argv = [
        "--model",
        str(tiny_model_dir),
        "--backend",
        "hf",
        "--prompts",
        "nli",
        "--output-len",
        str(OUT_LEN),
    ]
    argv += ["--num-prompts", "3", "--throughput-prompts", "6", "--warmup", "1", "--repeats", "2"]
    assert bench.main([*argv, "--out", str(tmp_path), "--quiet"]) == 0
    fig = json.loads((tmp_path / "bench.json").read_text())["efficiency"]["model"]
    _check_figures(fig, "hf")
    assert fig["memory_mib"]["kv_cache"] is None and "streamer" in fig["ttft_method"]
    assert "| model |" in (tmp_path / "bench.md").read_text()


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
def test_kdeval_bench_on_vllm_in_its_own_process(tiny_model_dir: Path) -> None:
    """The way `compare` measures: measure_models runs `kdeval bench` in a fresh process."""
    logged: list[str] = []
    figs = bench.measure_models(
        [_resolved("tiny", str(tiny_model_dir), "vllm", GenerationSettings(max_model_len=512))],
        [(Message("user", "The quick brown fox"),), [1, 5, 9, 13]],
        bench.BenchConfig(num_prompts=3, throughput_prompts=6, output_len=OUT_LEN, warmup=1, repeats=2),
        log=logged.append,
    )
    fig = figs["tiny"]
    assert "error" not in fig, fig.get("error")
    _check_figures(fig, "vllm")
    assert fig["ttft_method"].startswith("vLLM request metrics")
    assert fig["memory_mib"]["kv_cache"] > 0 and fig["memory_source"] in ("pss", "nvml")
    assert logged[0].startswith("tiny: measuring")


def test_a_failing_model_is_recorded_not_raised(tmp_path: Path) -> None:
    logged: list[str] = []
    broken = _resolved("broken", str(tmp_path / "nope"), "hf", GenerationSettings())
    figs = bench.measure_models([broken], [[1, 2]], bench.BenchConfig(), log=logged.append)
    assert "kdeval bench exited" in figs["broken"]["error"] and "efficiency not measured" in logged[-1]


def _resolved(name: str, path: str, backend: str, settings: GenerationSettings) -> ResolvedModel:
    """A model as `compare` hands it to the cost phase (already checked by its backend)."""
    return ResolvedModel(name, "other", backend, path, "fp", settings)


@pytest.mark.slow
def test_compare_records_efficiency_and_report_rerenders_it(
    tiny_model_dir: Path, tiny_model_dir_b: Path, tmp_path: Path
) -> None:
    import inspect

    from kdeval.compare import compare, rerender
    from kdeval.config import ModelSpec, RunSpec
    from kdeval.plugins import load_catalog

    if "efficiency" not in inspect.signature(compare).parameters:
        pytest.skip("kdeval.compare has no efficiency phase wired in yet")
    spec = RunSpec(
        models=[
            ModelSpec(name="teacher", path=str(tiny_model_dir), role="teacher"),
            ModelSpec(name="distilled", path=str(tiny_model_dir_b), role="distilled"),
        ],
        tasks=["nli_synth"],
        backend="hf",
        limit=4,
        out=tmp_path / "run",
    )
    cfg = bench.BenchConfig(num_prompts=2, throughput_prompts=4, output_len=OUT_LEN, warmup=1, repeats=2)
    run: Any = compare  # typed loosely until the efficiency parameter lands in compare()
    result = run(spec, load_catalog(), argv=["kdeval"], log=lambda _: None, efficiency=cfg)
    assert set(result.efficiency) == {"teacher", "distilled"}
    for fig in result.efficiency.values():
        _check_figures(fig.model_dump(), "hf")
    report = (spec.out / "report.md").read_text()
    assert "## Cost" in report and "The distilled student:" in report
    assert (spec.out / cost.PLOT_NAME).is_file()
    (spec.out / cost.PLOT_NAME).unlink()
    assert rerender(spec.out / "results.json") == report  # stored figures, nothing re-measured
    assert (spec.out / cost.PLOT_NAME).is_file()
