"""What a new user following the README from a fresh clone runs into (issue 10): engine logs on
stdout, thread counts, the cost phase's length, and CLI help / README agreement."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdeval.backends.registry import vllm_available

ROOT = Path(__file__).resolve().parents[1]

# -- 1. engine logs stay off stdout ---------------------------------------------------------------


def test_engine_log_defaults_keep_what_the_user_set() -> None:
    from kdeval.backends.enginelogs import quiet_engine_logs

    env = {"VLLM_LOGGING_LEVEL": "DEBUG"}
    quiet_engine_logs(env)
    assert env["VLLM_LOGGING_LEVEL"] == "DEBUG"  # the user's choice wins
    assert env["VLLM_LOGGING_STREAM"] == "ext://sys.stderr"
    assert env["TRANSFORMERS_VERBOSITY"] == "warning"


def test_importing_the_vllm_backend_sets_the_log_stream_before_vllm_loads() -> None:
    code = (
        "import os, sys\n"
        "import kdeval.backends.vllm\n"
        "assert 'vllm' not in sys.modules, 'vllm imported eagerly'\n"
        "print(os.environ['VLLM_LOGGING_STREAM'], os.environ['VLLM_LOGGING_LEVEL'])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_LOGGING")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["ext://sys.stderr", "WARNING"]


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.skipif(not vllm_available(), reason="vllm is not installed")
def test_compare_stdout_is_only_the_report(tiny_model_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_LOGGING")}
    argv = ["compare", "--model", f"m={tiny_model_dir}", "--backend", "vllm", "--task", "nli_synth"]
    argv += ["--limit", "2", "--no-efficiency", "--quiet", "--out", str(tmp_path / "out")]
    proc = subprocess.run(
        [sys.executable, "-m", "kdeval.cli", *argv], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("# kdeval comparison report"), proc.stdout[:500]
    assert "INFO" not in proc.stdout and "vllm" not in proc.stdout.split("\n", 1)[0]


# -- 2. one thread rule ---------------------------------------------------------------------------


def test_thread_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    from kdeval import threads

    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    assert threads.torch_threads(1_000_000) == 1  # the demo's and the tests' tiny models
    assert threads.torch_threads(threads.SMALL_MODEL_PARAMS) == threads.available_cpus()
    assert threads.torch_threads(None) == threads.available_cpus()
    monkeypatch.setenv(threads.THREADS_ENV, "3")
    assert threads.torch_threads(1_000_000) == 3


def test_trainer_demo_and_tiny_models_use_the_one_rule() -> None:
    import inspect

    from kdeval import tinymodels
    from kdeval.distill import demo, trainer

    assert "using_torch_threads" in inspect.getsource(trainer.train)
    assert "using_torch_threads" in inspect.getsource(tinymodels)
    assert "set_num_threads" not in inspect.getsource(demo)  # the demo no longer picks its own


def test_using_torch_threads_restores() -> None:
    import torch

    from kdeval.threads import using_torch_threads

    before = torch.get_num_threads()
    with using_torch_threads(10) as n:
        assert n == torch.get_num_threads()
    assert torch.get_num_threads() == before


# -- 3. adaptive cost phase -----------------------------------------------------------------------


class FakeEngine:
    """Batch-1 latency and throughput from a script, one entry per repeat (warm-up not scripted)."""

    ttft_method = "fake"

    def __init__(self, p50_ms: list[float], tps: list[float]) -> None:
        self.p50_ms, self.tps = p50_ms, tps
        self.repeat = -1  # the warm-up's batch pass comes first

    def one(self, prompt: object, output_len: int) -> object:
        from kdeval.efficiency.probes import Timing

        ms = self.p50_ms[max(0, self.repeat)] if self.repeat < len(self.p50_ms) else self.p50_ms[-1]
        return Timing(ms / 1000, ms / 4000, output_len)

    def first_token_s(self, prompt: object) -> float:
        return 0.001

    def all(self, prompts: list[object], output_len: int) -> object:
        from kdeval.efficiency.probes import Batch

        self.repeat += 1
        tps = self.tps[min(max(0, self.repeat - 1), len(self.tps) - 1)]
        n = output_len * len(prompts)
        return Batch(n / tps, len(prompts), len(prompts), n, output_len, output_len)

    def answer(self, prompt: object, max_tokens: int, stop: object) -> object:
        raise NotImplementedError


class FakeClock:
    """Each reading advances by `step` seconds: a repeat costs what the test says, not real time."""

    def __init__(self, step: float) -> None:
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def _probe(p50: list[float], tps: list[float], step: float = 1.0, **cfg: object) -> dict:
    from kdeval.efficiency.probes import ProbeConfig, run_probes

    config = ProbeConfig(output_len=4, warmup=1, **cfg)  # type: ignore[arg-type]
    return run_probes(FakeEngine(p50, tps), [[1], [2]], [[1], [2]], config, clock=FakeClock(step))


def test_cost_phase_stops_when_stable() -> None:
    # repeat 1 is slow (the machine was busy); repeats 2-4 agree: the last 3 are within 10%
    fig = _probe([30, 10, 10.2, 10.1, 10.1, 10.1], [50, 100, 101, 100, 100, 100], min_repeats=2)
    reps = fig["repeats"]
    assert reps["stopped"] == "stable" and reps["n"] == 4 and reps["used"] == 3
    assert fig["repeats"]["latency_p50_ms"]["max"] < 11  # the slow first repeat is not in the figures
    assert not fig["noisy"]


def test_cost_phase_noisy_machine_stops_on_budget() -> None:
    noisy = [10.0, 20.0] * 20
    fig = _probe(noisy, [100.0, 50.0] * 20, step=1.0, budget_s=6, max_repeats=50)
    reps = fig["repeats"]
    assert reps["stopped"] == "budget" and 2 <= reps["n"] < 50 and reps["budget_s"] == 6
    assert fig["noisy"] and reps["used"] == 3


def test_cost_phase_max_repeats_and_fixed_count() -> None:
    fig = _probe([10.0, 20.0] * 20, [100.0, 50.0] * 20, budget_s=1e9, max_repeats=4)
    assert fig["repeats"]["stopped"] == "max_repeats" and fig["repeats"]["n"] == 4
    fixed = _probe([10.0] * 5, [100.0] * 5, repeats=5)
    assert fixed["repeats"]["stopped"] == "fixed" and fixed["repeats"]["n"] == 5
    assert fixed["repeats"]["used"] == 5 and fixed["repeats"]["budget_s"] is None


def test_stop_rule_needs_min_repeats() -> None:
    from kdeval.efficiency.probes import ProbeConfig, stop_reason

    cfg = ProbeConfig(min_repeats=3, budget_s=1.0)
    assert stop_reason([10.0, 10.0], [1.0, 1.0], 100.0, cfg) is None  # over budget, under the minimum
    assert stop_reason([10.0, 10.0, 10.0], [1.0, 1.0, 1.0], 100.0, cfg) == "stable"


def test_report_method_line_says_how_the_cost_phase_stopped() -> None:
    from kdeval.report.cost import _method_line
    from kdeval.results import Figures

    figs = {
        "teacher": Figures.model_validate(
            {"repeats": {"n": 3, "used": 3, "stopped": "stable", "budget_s": 30, "threshold": 0.1}}
        ),
        "distilled": Figures.model_validate(
            {"repeats": {"n": 7, "used": 3, "stopped": "budget", "budget_s": 30, "threshold": 0.1}}
        ),
    }
    line = _method_line(figs)
    assert "within 10%" in line and "30 s" in line
    assert "teacher 3 (stable" in line and "distilled 7 (budget spent" in line


def test_bench_cli_passes_the_adaptive_settings() -> None:
    from kdeval.efficiency.bench import BenchConfig, _cfg_argv

    argv = _cfg_argv(BenchConfig(budget_s=12.5))
    assert "--repeats" not in argv and argv[argv.index("--budget-s") + 1] == "12.5"
    assert _cfg_argv(BenchConfig(repeats=2))[-2:] == ["--repeats", "2"]


# -- 4. CLI help and README agree ----------------------------------------------------------------


def _help(*argv: str) -> str:
    from kdeval.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    return ""


def test_compare_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    _help("compare")
    out = " ".join(capsys.readouterr().out.split())
    for needle in ("(default 0)", "default 1.0", "auto (default)", "default: all", "default: runs/latest"):
        assert needle in out, needle


def test_distill_help_says_train_takes_suite_names(capsys: pytest.CaptureFixture[str]) -> None:
    _help("distill")
    out = " ".join(capsys.readouterr().out.split())
    assert "suite or task name" in out and "nli_synth" in out


def test_gate_without_rules_uses_the_documented_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from kdeval.gate.cli import DEFAULT_RULES, _plan, add_parsers

    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["gate", "--baseline", "a.json", "--candidate", "b.json"])
    plan = _plan(args)
    assert [r.text for r in plan.rules] == list(DEFAULT_RULES)  # said once the runs load (test_gate)
    readme = (ROOT / "README.md").read_text()
    assert all(f"`{r}`" in readme for r in DEFAULT_RULES)


def test_shared_data_skip_names_the_path() -> None:
    from tests.shared_data import SHARED, needs_shared

    assert str(SHARED) in needs_shared.kwargs["reason"]
    readme = (ROOT / "README.md").read_text()
    assert "KDEVAL_SHARED_DATA" in readme and "../shared/data" in readme


def test_docs_install_from_the_repository_and_quickstart_comment() -> None:
    ci = (ROOT / "docs" / "ci-example.yml").read_text()
    assert "pip install kdeval\n" not in ci and "git+https://" in ci
    quick = (ROOT / "examples" / "quickstart.sh").read_text()
    assert "The README's first command" not in quick


def test_docstring_examples_of_the_stop_rule_and_thread_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    import doctest

    from kdeval import threads
    from kdeval.efficiency import probes

    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    for module in (probes, threads):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0


# -- a CPU engine's KV cache --------------------------------------------------------------------


def test_cpu_kv_cache_is_sane_unless_the_user_chose_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from kdeval.backends.vllm import CPU_KV_CACHE_MAX_BYTES, cpu_kv_cache

    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    size = cpu_kv_cache({})["kv_cache_memory_bytes"]
    assert 256 << 20 <= size <= CPU_KV_CACHE_MAX_BYTES
    assert cpu_kv_cache({"kv_cache_memory_bytes": 1 << 30}) == {}  # a model's own option wins
    assert cpu_kv_cache({"gpu_memory_utilization": 0.3}) == {}
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")
    assert cpu_kv_cache({}) == {}  # vLLM's own variable wins


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.skipif(not vllm_available(), reason="vllm is not installed")
def test_compare_on_vllm_cpu_needs_no_kv_cache_variable(tiny_model_dir: Path, tmp_path: Path) -> None:
    """vLLM's CPU default reserves 92% of the RAM and refuses to start when less is free; the
    README's commands must work without VLLM_CPU_KVCACHE_SPACE."""
    env = {k: v for k, v in os.environ.items() if k != "VLLM_CPU_KVCACHE_SPACE"}
    proc = subprocess.run(
        [sys.executable, "-m", "kdeval.cli", "compare", "--model", f"m={tiny_model_dir}", "--backend", "vllm"]
        + ["--task", "qa_synth", "--limit", "2", "--no-efficiency", "--quiet", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
