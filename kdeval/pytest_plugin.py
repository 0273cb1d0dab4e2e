"""pytest plugin: assert kdeval gate rules inside a team's own test suite.

Installed through the ``pytest11`` entry point, so any project with kdeval installed has it.
Point it at two runs with ``--kdeval-baseline`` / ``--kdeval-candidate`` (or the ini keys
``kdeval_baseline`` / ``kdeval_candidate``, relative to the rootdir), then::

    def test_student_did_not_regress(kdeval_gate):
        kdeval_gate("qa.f1:-1pt", "math.accuracy:-2%", "retention>=0.90")

    def test_teacher_is_strong(kdeval_results):
        assert kdeval_results.candidate.value("teacher", "qa_synth", "f1") > 50

A failing rule fails the test with the lines `kdeval gate` prints (no traceback); a rule without
data or an unusable input fails it with kdeval's one-line error. `assert_gate` does the same
outside fixtures and raises `GateFailed`, an AssertionError.

Model latency goes through pytest-benchmark's `benchmark` fixture (pytest-benchmark must be
installed), so its storage and comparison work on it: ``pytest --benchmark-autosave``, then
``pytest --benchmark-compare --benchmark-compare-fail=median:10%`` fails when a checkpoint got
slower::

    def test_student_latency(kdeval_latency):
        latency = kdeval_latency("checkpoints/student", backend="hf", output_len=32)
        assert latency.median_ms < 200      # an absolute ceiling too, if wanted

Each round is one batch-1 request generating exactly `output_len` tokens (EOS ignored) through
kdeval's engine, as `kdeval bench` measures latency; the model is loaded once per session and
its start-up is never timed. One model per test (pytest-benchmark times one thing per test):
parametrize to time several.

The module imports nothing heavy at import time: pytest loads it in every session.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from kdeval.efficiency.probes import Engine
    from kdeval.efficiency.prompts import Prompt
    from kdeval.gate.run import GateResult
    from kdeval.results import RunResult
    from kdeval.tasks import Message

#: A short prompt every tokenizer handles; pass your own for a realistic prompt length.
DEFAULT_PROMPT = (
    "Premise: A man is playing a guitar.\nHypothesis: A person makes music.\n"
    "Does the premise entail the hypothesis? Answer yes, maybe or no.\nAnswer:"
)


class GateFailed(AssertionError):
    """The gate found a regression (or could not check a rule); the message is its output."""


def assert_gate(
    baseline: Path | str,
    candidate: Path | str,
    *rules: str,
    alpha: float = 0.05,
    strict: bool = False,
    model: str | None = None,
) -> GateResult:
    """Run the gate on two results files; raise GateFailed unless every rule passes."""
    from kdeval.gate import render
    from kdeval.gate.rules import parse_rule
    from kdeval.gate.run import Options, gate

    parsed = [parse_rule(r) for r in rules]
    result = gate(Path(baseline), Path(candidate), parsed, Options(alpha, strict, model))
    if result.exit_code != 0:
        raise GateFailed(render.text(result))
    return result


class KdevalResults:
    """Loads results files (cached); `baseline` and `candidate` are the configured ones."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        self._cache: dict[Path, RunResult] = {}

    def path(self, which: str) -> Path:
        value = self._config.getoption(f"kdeval_{which}") or self._config.getini(f"kdeval_{which}")
        if not value:
            pytest.fail(
                f"kdeval: no {which} results; pass --kdeval-{which} or set kdeval_{which}", pytrace=False
            )
        path = Path(str(value))
        return path if path.is_absolute() else self._config.rootpath / path

    def load(self, path: Path | str) -> RunResult:
        from kdeval.errors import UserError
        from kdeval.runs import load_run

        key = Path(path).resolve()
        if key not in self._cache:
            try:
                self._cache[key] = load_run(key).result
            except UserError as exc:
                pytest.fail(f"kdeval: error: {exc}", pytrace=False)
        return self._cache[key]

    @property
    def baseline(self) -> RunResult:
        return self.load(self.path("baseline"))

    @property
    def candidate(self) -> RunResult:
        return self.load(self.path("candidate"))


class KdevalGate:
    """`kdeval_gate(*rules, ...)`: the configured runs unless baseline/candidate are given."""

    def __init__(self, results: KdevalResults) -> None:
        self._results = results

    def __call__(
        self,
        *rules: str,
        baseline: Path | str | None = None,
        candidate: Path | str | None = None,
        alpha: float = 0.05,
        strict: bool = False,
        model: str | None = None,
    ) -> GateResult:
        from kdeval.errors import UserError

        base = baseline if baseline is not None else self._results.path("baseline")
        cand = candidate if candidate is not None else self._results.path("candidate")
        try:
            return assert_gate(base, cand, *rules, alpha=alpha, strict=strict, model=model)
        except GateFailed as exc:
            pytest.fail(str(exc), pytrace=False)
        except UserError as exc:
            pytest.fail(f"kdeval: error: {exc}", pytrace=False)


@dataclass(frozen=True)
class Latency:
    """Batch-1 end-to-end latency of one model over the timed rounds (warm-up excluded)."""

    median_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    rounds: int
    prompt_tokens: int
    output_tokens: int


class _Engines:
    """Started engines by (path, backend, dtype, ...): each model loads once per session."""

    def __init__(self) -> None:
        self._started: dict[tuple[object, ...], tuple[Any, Engine]] = {}

    def get(self, path: str, kind: str, dtype: str, chat: bool | None, trust: bool) -> tuple[Any, Engine]:
        from kdeval.backends import resolve
        from kdeval.config import ModelSpec, RunSpec

        key = (str(Path(path).resolve()), kind, dtype, chat, trust)
        if key not in self._started:
            model = ModelSpec(name="model", path=path, backend=kind)
            spec = RunSpec(
                models=[model], backend=kind, dtype=dtype, batch_size=1, use_chat_template=chat,
                trust_remote_code=trust,
            )  # fmt: skip
            resolved = resolve(spec, model)
            backend = resolved.kind().start(resolved, measuring=True)
            self._started[key] = (backend, resolved.kind().cost_engine(backend))
        return self._started[key]

    def close(self) -> None:
        for backend, _ in self._started.values():
            backend.close()
        self._started.clear()


class KdevalLatency:
    """`kdeval_latency(model, ...)`: time batch-1 generation with pytest-benchmark's fixture."""

    def __init__(self, benchmark: Any, engines: _Engines) -> None:
        self._benchmark, self._engines = benchmark, engines

    def __call__(
        self,
        model: str | Path,
        *,
        backend: str | None = None,
        prompt: str | Sequence[Message] | list[int] = DEFAULT_PROMPT,
        output_len: int = 32,
        rounds: int = 10,
        warmup_rounds: int = 2,
        dtype: str = "float32",
        use_chat_template: bool | None = None,
        trust_remote_code: bool = False,
    ) -> Latency:
        """Time `rounds` requests after `warmup_rounds` untimed ones; backend: vllm | hf
        (default: vllm when it imports, as `kdeval compare`). Returns the timed figures."""
        from kdeval.efficiency import prompts as prompt_io
        from kdeval.errors import UserError
        from kdeval.modeldir import check_model

        kind = backend or _default_backend()
        try:
            check_model("model", str(model), trust_remote_code=trust_remote_code)
            started, engine = self._engines.get(str(model), kind, dtype, use_chat_template, trust_remote_code)
            codec, room = started.codec, started.settings.max_model_len
            (ids,) = prompt_io.encode([_as_prompt(prompt)], codec, room, output_len)
        except UserError as exc:
            pytest.fail(f"kdeval: error: {exc}", pytrace=False)
        bench = self._benchmark
        bench.group = bench.group or "kdeval latency"
        bench.extra_info.update(model=str(model), backend=kind, dtype=dtype, prompt_tokens=len(ids))
        timing = bench.pedantic(
            engine.one, args=(ids, output_len), rounds=rounds, warmup_rounds=warmup_rounds, iterations=1
        )
        bench.extra_info["output_tokens"] = timing.output_tokens
        return _latency(bench, timing.e2e_s, len(ids), timing.output_tokens)


def _latency(bench: Any, last_s: float, prompt_tokens: int, output_tokens: int) -> Latency:
    stats = bench.stats.stats if bench.stats is not None else None
    if stats is None:  # --benchmark-disable: the target ran once and no statistics were kept
        ms = last_s * 1e3
        return Latency(ms, ms, ms, ms, 1, prompt_tokens, output_tokens)
    median, mean, low, high = (float(x) * 1e3 for x in (stats.median, stats.mean, stats.min, stats.max))
    return Latency(median, mean, low, high, int(stats.rounds), prompt_tokens, output_tokens)


def _as_prompt(prompt: str | Sequence[Message] | list[int]) -> Prompt:
    """Text is one user turn (rendered with the model's chat template, if it has one)."""
    from kdeval.tasks import Message

    if isinstance(prompt, str):
        return (Message("user", prompt),)
    items: list[object] = list(prompt)
    ids = [t for t in items if isinstance(t, int)]
    if items and len(ids) == len(items):
        return ids  # token ids, used as they are
    messages = tuple(m for m in items if isinstance(m, Message))
    if not items or len(messages) != len(items):
        raise TypeError("prompt must be text, a sequence of kdeval.tasks.Message or token ids")
    return messages


def _default_backend() -> str:
    from kdeval.backends import default_backend

    return default_backend()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kdeval", "kdeval regression gate")
    for which in ("baseline", "candidate"):
        group.addoption(
            f"--kdeval-{which}",
            dest=f"kdeval_{which}",
            metavar="RUN/results.json",
            help=f"kdeval results file of the {which} run (for the kdeval_gate fixture)",
        )
        parser.addini(f"kdeval_{which}", f"kdeval results file of the {which} run, relative to the rootdir")


@pytest.fixture(scope="session")
def kdeval_results(pytestconfig: pytest.Config) -> Iterator[KdevalResults]:
    yield KdevalResults(pytestconfig)


@pytest.fixture
def kdeval_gate(kdeval_results: KdevalResults) -> KdevalGate:
    return KdevalGate(kdeval_results)


@pytest.fixture(scope="session")
def _kdeval_engines() -> Iterator[_Engines]:
    engines = _Engines()
    yield engines
    engines.close()


@pytest.fixture
def kdeval_latency(benchmark: Any, _kdeval_engines: _Engines) -> KdevalLatency:
    """Needs pytest-benchmark: it supplies `benchmark`, the storage and --benchmark-compare-fail."""
    return KdevalLatency(benchmark, _kdeval_engines)
