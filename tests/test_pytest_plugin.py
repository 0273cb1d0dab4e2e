"""The pytest plugin: fixtures that load results and assert gate rules in a team's own tests."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kdeval.pytest_plugin import GateFailed, assert_gate
from tests.fakes_gate import checkpoint, run_compare

pytest_plugins = ["pytester"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plugin")
    teacher = checkpoint(root, "teacher", 0.0)
    student = checkpoint(root, "student", 0.2, seed=2)
    for name, ckpt in (("main", student), ("rerun", student), ("worse", checkpoint(root, "w", 0.5, seed=3))):
        run_compare(root / name, {"teacher": teacher, "distilled": ckpt})
    return {name: root / name / "results.json" for name in ("main", "rerun", "worse")}


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    # Load the plugin explicitly whether or not its entry point is installed in this environment.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    return pytester


def test_rules_pass_and_fail_like_the_gate(inner: pytest.Pytester, runs: dict[str, Path]) -> None:
    inner.makepyfile(
        f"""
        def test_rerun_holds(kdeval_gate):
            kdeval_gate("qa.f1:-1pt", "overall:-1pt", "retention>=0.7")

        def test_worse_student_fails(kdeval_gate):
            kdeval_gate("qa.f1:-1pt", "math.accuracy:-2%", candidate={str(runs["worse"])!r})

        def test_results_fixture(kdeval_results):
            assert kdeval_results.candidate.value("teacher", "gate_qa", "f1") == 100.0
            assert kdeval_results.load({str(runs["worse"])!r}).role("distilled") == "distilled"
        """
    )
    result = inner.runpytest(
        "-p",
        "kdeval.pytest_plugin",
        "--kdeval-baseline",
        str(runs["main"]),
        "--kdeval-candidate",
        str(runs["rerun"]),
    )
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*FAIL    qa.f1:-1pt: * -> *, effect -* pt [[]-*, -*[]], p = * (paired bootstrap, n = 300): *",
            "*FAIL    math.accuracy:-2%: * (McNemar exact, * worse / * better, n = 400): *",
            "*kdeval gate: regression: 2 of 2 rules failed (model distilled; *",
        ]
    )
    assert "Traceback" not in result.stdout.str() and "def test_" not in result.stdout.str()


def test_ini_keys_and_unusable_input(inner: pytest.Pytester, runs: dict[str, Path]) -> None:
    inner.makeini(f"[pytest]\nkdeval_baseline = {runs['main']}\nkdeval_candidate = {runs['rerun']}\n")
    inner.makepyfile(
        """
        def test_configured(kdeval_gate):
            kdeval_gate("overall:-1pt")

        def test_bad_rule(kdeval_gate):
            kdeval_gate("overall:+1pt")

        def test_missing_file(kdeval_gate):
            kdeval_gate("overall:-1pt", baseline="nope/results.json")
        """
    )
    result = inner.runpytest("-p", "kdeval.pytest_plugin")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*kdeval: error: rule 'overall:+1pt': '+' means higher*",
            "*kdeval: error: nope/results.json: results file not found*",
        ]
    )


def test_unconfigured_runs_fail_with_a_hint(inner: pytest.Pytester) -> None:
    inner.makepyfile("def test_x(kdeval_gate):\n    kdeval_gate('overall:-1pt')\n")
    result = inner.runpytest("-p", "kdeval.pytest_plugin")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*kdeval: no baseline results; pass --kdeval-baseline or set kdeval_baseline*"]
    )


def test_assert_gate_outside_fixtures(runs: dict[str, Path]) -> None:
    assert assert_gate(runs["main"], runs["rerun"], "overall:-1pt").exit_code == 0
    with pytest.raises(GateFailed, match=r"FAIL    overall:-1pt: .*significant at alpha = 0.05"):
        assert_gate(runs["main"], runs["worse"], "overall:-1pt")


# --- latency through pytest-benchmark (tiny real models, hf backend) ---------------------------


def _latency_test(model: Path) -> str:
    return f"""
        def test_student_latency(kdeval_latency):
            latency = kdeval_latency({str(model)!r}, backend="hf", output_len=8, rounds=5, warmup_rounds=1)
            assert latency.rounds == 5 and latency.output_tokens == 8 and latency.prompt_tokens > 10
            assert 0 < latency.min_ms <= latency.median_ms <= latency.max_ms
        """


def test_latency_of_a_missing_model_fails_in_one_line(inner: pytest.Pytester) -> None:
    inner.makepyfile("def test_x(kdeval_latency):\n    kdeval_latency('./no/such/model', backend='hf')\n")
    result = inner.runpytest("-p", "kdeval.pytest_plugin", "-p", "pytest_benchmark.plugin")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*kdeval: error: model directory for 'model' does not exist: ./no/such/model*"]
    )
    assert "Traceback" not in result.stdout.str()


@pytest.mark.slow
def test_latency_fixture_works_with_benchmark_compare_fail(
    inner: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model_dir: Path,
) -> None:
    import torch

    from kdeval.tinymodels import build_tiny_model

    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same for the subprocess below
    root = tmp_path_factory.mktemp("latency")
    # Several times the tiny model's batch-1 latency on one CPU thread: far beyond a 10% threshold,
    # even on a loaded machine (at ~3.5x, one run under load timed the two within 10%).
    bigger = build_tiny_model(root / "bigger", hidden=512, layers=8, heads=16)
    store = ["-p", "kdeval.pytest_plugin", "-p", "pytest_benchmark.plugin", f"--benchmark-storage={root}"]

    inner.makepyfile(test_latency=_latency_test(tiny_model_dir))
    inner.runpytest(*store, "--benchmark-autosave").assert_outcomes(passed=1)
    (saved,) = root.rglob("0001_*.json")
    bench = json.loads(saved.read_text())["benchmarks"][0]
    assert bench["group"] == "kdeval latency" and bench["stats"]["rounds"] == 5
    assert bench["extra_info"] == {
        "model": str(tiny_model_dir),
        "backend": "hf",
        "dtype": "float32",
        "prompt_tokens": bench["extra_info"]["prompt_tokens"],
        "output_tokens": 8,
    }

    # The same test timing a slower checkpoint: pytest-benchmark's comparison fails the session
    # (it raises from its terminal summary, so it runs in a subprocess, as in CI).
    inner.makepyfile(test_latency=_latency_test(bigger))
    compare = ["--benchmark-compare=0001", "--benchmark-compare-fail=median:10%"]
    slower = inner.runpytest_subprocess(*store, *compare)
    assert slower.ret != 0
    output = slower.stdout.str() + slower.stderr.str()
    assert re.search(r"test_student_latency \(0001_\w*\) - Field 'median' has failed", output), output
