"""The examples in core docstrings run (metrics and gate modules have their own)."""

import doctest

import pytest

import kdeval.backends.openai
import kdeval.config
import kdeval.derive
import kdeval.distill.methods
import kdeval.errors
import kdeval.fidelity.measures
import kdeval.gate.teacher_rules
import kdeval.modeldir
import kdeval.pooling
import kdeval.report.fidelity
import kdeval.report.formats
import kdeval.results
import kdeval.runs
import kdeval.similarity


@pytest.mark.parametrize(
    "module",
    [
        kdeval.errors,
        kdeval.results,
        kdeval.derive,
        kdeval.runs,
        kdeval.config,
        kdeval.backends.openai,
        kdeval.modeldir,
        kdeval.distill.methods,
        kdeval.fidelity.measures,
        kdeval.pooling,
        kdeval.similarity,
        kdeval.report.fidelity,
        kdeval.report.formats,
        kdeval.gate.teacher_rules,
    ],
)
def test_doctests(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0
