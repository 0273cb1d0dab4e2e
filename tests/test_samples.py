"""`--samples N`: per-sample seeds and store rows, mean@N / pass@k / maj@N, budgets, bad input.

A scripted backend answers from each request's own seed, so the tests know every sample's answer
without a model; the real backends' seeding is tested end to end in test_thinking_e2e.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from kdeval.backends.base import ModelInfo
from kdeval.backends.registry import ResolvedModel
from kdeval.compare import compare
from kdeval.config import ModelSpec, RunSpec
from kdeval.errors import UserError
from kdeval.metrics import mean_row
from kdeval.plugins import Catalog
from kdeval.results import RunResult
from kdeval.runner import sample_seed
from kdeval.sampling import majority, pass_at_k
from kdeval.tasks import Example, GenerateRequest, Output, Request, Scored, Suite, Task, user_turn
from tests.fakes import fake_checkpoint

N_EX = 6


class ToyMath(Task):
    name, family, task_type = "toy_math", "toy", "generate"
    metrics, primary_metric, offline = ("accuracy",), "accuracy", True

    def __init__(self, n: int = N_EX) -> None:
        self.n = n

    def load(self, path: Path | None) -> list[Example]:
        return [Example(f"m{i}", {"q": f"what is {i} {i}", "gold": str(2 * i)}) for i in range(self.n)]

    def request(self, example: Example, history: Sequence[Output]) -> Request:
        return GenerateRequest(user_turn(example.data["q"]), max_tokens=16, stop=("\n",))

    def score(self, example: Example, outputs: Sequence[Output], teacher: Sequence[Output] | None) -> Scored:
        answer = outputs[-1].text.strip()
        gold = example.data["gold"]
        return Scored(answer, [gold], {"accuracy": mean_row(float(answer == gold))})


def _answer(seed: int | None, gold: int, good: bool) -> str:
    """Right for 3 of 4 seeds (good) or 1 of 4 (bad); wrong answers vary with the seed."""
    s = seed or 0
    right = s % 4 != 0 if good else s % 4 == 0
    return str(gold) if right else str(gold + 1 + s % 2)


class SeededBackend:
    name = "fake"
    served: list[tuple[str, int | None, int]] = []

    def __init__(self, path: str, fail_after: int | None = None) -> None:
        self.path, self.good, self.fail_after = path, "good" in path, fail_after
        self.info = ModelInfo(chat_template=False, n_params=1, dtype="float32")

    def run(self, requests: Sequence[Request], on_done: Callable[[int, Output], None]) -> None:
        for i, req in enumerate(requests):
            assert isinstance(req, GenerateRequest)
            if self.fail_after is not None and len(SeededBackend.served) >= self.fail_after:
                raise KeyboardInterrupt  # a crash part-way through
            SeededBackend.served.append((self.path, req.seed, req.max_tokens))
            gold = 2 * int(req.messages[-1].content.split()[-1])
            text = _answer(req.seed, gold, self.good)
            on_done(i, Output(prompt="", text=text, output_tokens=len(text) + 1))

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def _reset() -> None:
    SeededBackend.served = []


def _catalog(n: int = N_EX) -> Catalog:
    return Catalog({"toy": Suite("toy", "toy", "toy", [ToyMath(n)])})


def _model_dir(tmp: Path, name: str) -> str:
    return fake_checkpoint(tmp / name, name)


def _spec(tmp: Path, distilled: str = "good_d", **kw: object) -> RunSpec:
    roles = {"teacher": "good_t", "baseline": "bad_b", "distilled": distilled}
    models = [ModelSpec(name=r, path=_model_dir(tmp, p), role=r) for r, p in roles.items()]  # type: ignore[arg-type]
    return RunSpec(models=models, out=tmp / "out", temperature=0.6, top_p=0.95, **kw)  # type: ignore[arg-type]


def _run(spec: RunSpec, fail_after: int | None = None, n: int = N_EX) -> RunResult:
    def factory(s: RunSpec, m: ResolvedModel) -> SeededBackend:
        return SeededBackend(m.path, fail_after)

    return compare(spec, _catalog(n), argv=["t"], log=lambda m: None, make_backend=factory)  # type: ignore[arg-type]


def test_each_sample_has_its_own_seed_and_store_row(tmp_path: Path) -> None:
    _run(_spec(tmp_path, samples=4))
    assert len(SeededBackend.served) == 3 * N_EX * 4
    seeds = [s for p, s, _ in SeededBackend.served if p.endswith("good_d")]
    expected = {sample_seed(0, "toy_math", f"m{i}", k) for i in range(N_EX) for k in range(4)}
    assert set(seeds) == expected and len(expected) == N_EX * 4  # distinct, and a function of the sample
    _run(_spec(tmp_path, samples=4))  # everything is reused
    assert len(SeededBackend.served) == 3 * N_EX * 4


def test_mean_pass_at_k_and_majority_from_the_samples(tmp_path: Path) -> None:
    n = 4
    result = _run(_spec(tmp_path, samples=n))
    task = next(t for t in result.tasks if t.name == "toy_math")
    assert task.metrics == ["accuracy", "pass@2", "pass@4", "maj@4"] and task.samples == n
    for model, good in (("distilled", True), ("baseline", False)):
        right, maj = [], []
        for i in range(N_EX):
            answers = [_answer(sample_seed(0, "toy_math", f"m{i}", k), 2 * i, good) for k in range(n)]
            c = sum(a == str(2 * i) for a in answers)
            right.append(c)
            maj.append(majority(answers)[0] == str(2 * i))
        assert result.value(model, "toy_math", "accuracy") == pytest.approx(100 * sum(right) / (n * N_EX))
        for k in (2, 4):
            want = 100 * sum(pass_at_k(n, c, k) for c in right) / N_EX
            assert result.value(model, "toy_math", f"pass@{k}") == pytest.approx(want)
        assert result.value(model, "toy_math", f"maj@{n}") == pytest.approx(100 * sum(maj) / N_EX)
    records = [
        json.loads(x) for x in (tmp_path / "out/samples/distilled/toy_math.jsonl").read_text().splitlines()
    ]
    assert all(len(r["samples"]) == n for r in records)
    assert all(r["answer"] == majority([s["answer"] for s in r["samples"]])[0] for r in records)
    gen = result.gen("distilled", "toy_math")
    assert gen is not None and gen.n == n * N_EX and gen.unfinished == 0


def test_resume_after_a_crash_recomputes_no_sample(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        _run(_spec(tmp_path, samples=4), fail_after=30)
    done = list(SeededBackend.served)
    SeededBackend.served = []
    result = _run(_spec(tmp_path, samples=4))
    assert len(done) == 30 and len(SeededBackend.served) == 3 * N_EX * 4 - 30
    assert not set(done) & set(SeededBackend.served)  # no (model, seed) served twice
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    again = _run(_spec(fresh, samples=4))
    assert [s.value for s in again.scores] == [s.value for s in result.scores]


def test_token_budget_overrides_the_tasks(tmp_path: Path) -> None:
    result = _run(_spec(tmp_path, max_tokens={"toy_math": 40}))
    assert {b for _, _, b in SeededBackend.served} == {40}
    task = next(t for t in result.tasks if t.name == "toy_math")
    assert task.max_tokens == 40 and result.settings.max_tokens == {"toy_math": 40}


def test_sampling_settings_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="identical greedy answers"):
        RunSpec(models=[], samples=4)
    with pytest.raises(ValueError):
        RunSpec(models=[], samples=0, temperature=0.6)


def test_unknown_budget_task_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a generation task of this run"):
        _run(_spec(tmp_path, max_tokens={"nli_synth": 40}))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--samples", "0"], "samples"),
        (["--samples", "4"], "identical greedy answers"),
        (["--max-tokens", "0"], "--max-tokens expects N or TASK=N"),
        (["--max-tokens", "math_synth=lots"], "--max-tokens expects N or TASK=N"),
        (["--thinking", "m=<think>"], "thinking"),
        (["--max-tokens", "100000", "--task", "math_synth"], "does not fit model 'm'"),
    ],
)
def test_cli_refuses_bad_sampling_flags(
    tiny_model_dir: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kdeval.cli", "compare", "--model", f"m={tiny_model_dir}", "--backend", "hf"]
        + ["--no-efficiency", "--out", str(tmp_path / "o"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()


def test_delimiters_that_never_appear_get_a_warning(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    models = [m.model_copy(update={"thinking": "<x>,</x>"}) for m in spec.models]
    spec = spec.model_copy(update={"models": models})
    logged: list[str] = []

    def factory(s: RunSpec, m: ResolvedModel) -> SeededBackend:
        return SeededBackend(m.path)

    compare(spec, _catalog(), argv=["t"], log=logged.append, make_backend=factory)  # type: ignore[arg-type]
    warnings = [x for x in logged if x.startswith("warning:") and "appear in none of" in x]
    assert len(warnings) == 3 and "--thinking teacher=off" in warnings[0]


def test_the_gate_runs_paired_tests_on_the_sampled_metrics(tmp_path: Path) -> None:
    from kdeval.gate.rules import parse_rule
    from kdeval.gate.run import Options, gate

    runs = {}
    for name, distilled in (("base", "good_d"), ("same", "good_d"), ("worse", "bad_d")):
        (tmp_path / name).mkdir()
        _run(_spec(tmp_path / name, distilled, samples=4), n=60)
        runs[name] = tmp_path / name / "out" / "results.json"
    rules = [parse_rule(r) for r in ("toy_math.pass@2:-1pt", "toy_math.maj@4:-1pt", "toy_math:-1pt")]
    worse = gate(runs["base"], runs["worse"], rules, Options(model="distilled"))
    assert [o.status for o in worse.outcomes] == ["fail"] * 3, [o.reason for o in worse.outcomes]
    assert all(o.n == 60 and o.p_value is not None and o.p_value < 0.05 for o in worse.outcomes)
    same = gate(runs["base"], runs["same"], rules, Options(model="distilled"))
    assert [o.status for o in same.outcomes] == ["pass"] * 3
