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

The module imports nothing heavy at import time: pytest loads it in every session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from kdeval.gate import Results
    from kdeval.gate.run import GateResult


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
        self._cache: dict[Path, Results] = {}

    def path(self, which: str) -> Path:
        value = self._config.getoption(f"kdeval_{which}") or self._config.getini(f"kdeval_{which}")
        if not value:
            pytest.fail(
                f"kdeval: no {which} results; pass --kdeval-{which} or set kdeval_{which}", pytrace=False
            )
        path = Path(str(value))
        return path if path.is_absolute() else self._config.rootpath / path

    def load(self, path: Path | str) -> Results:
        from kdeval.errors import UserError
        from kdeval.gate import load_run

        key = Path(path).resolve()
        if key not in self._cache:
            try:
                self._cache[key] = load_run(key).result
            except UserError as exc:
                pytest.fail(f"kdeval: error: {exc}", pytrace=False)
        return self._cache[key]

    @property
    def baseline(self) -> Results:
        return self.load(self.path("baseline"))

    @property
    def candidate(self) -> Results:
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
