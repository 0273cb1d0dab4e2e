"""The gate's outputs: one text line per rule (terminal, pytest), a markdown summary for a
pull-request comment, and JUnit XML with one test case per rule.

Everything here formats numbers the same way, so the three outputs agree digit for digit.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from kdeval.gate.run import GateResult, Outcome

_MARK = {"pass": "✅", "fail": "❌", "no data": "⚠️"}
_WORD = {"pass": "pass", "fail": "FAIL", "no data": "NO DATA"}
_DECIMALS = {"pt": 1, "%": 1, "": 3, "ms": 1, "MiB": 0, "/s": 1}


def number(x: float | None, unit: str, signed: bool = False) -> str:
    """A value in its unit's fixed precision; '—' when missing or undefined.

    >>> number(71.25, "pt"), number(-0.5, "%", signed=True), number(0.9, ""), number(None, "pt")
    ('71.2', '-0.5', '0.900', '—')
    """
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:{'+' if signed else ''}.{_DECIMALS.get(unit, 2)}f}"


def p_value(p: float | None) -> str:
    """Two significant digits, or '—' when the rule has no test.

    >>> p_value(0.000412), p_value(0.65625), p_value(None)
    ('0.00041', '0.66', '—')
    """
    return "—" if p is None or not math.isfinite(p) else f"{p:.2g}"


def effect(o: Outcome) -> str:
    """Effect with its interval, e.g. '-6.2 pt [-9.1, -3.3]' (floors: margin above the bound)."""
    if o.effect is None:
        return "—"
    from kdeval.report.formats import signed, signed_interval

    unit = "" if o.unit == "" else (o.unit if o.unit == "%" else f" {o.unit}")
    decimals = _DECIMALS.get(o.unit, 2)
    text = f"{signed(o.effect, decimals)}{unit}"
    if o.low is not None and o.high is not None and math.isfinite(o.low):
        # as many digits as it takes to see whether the interval holds 0
        text += f" {signed_interval(o.low, o.high, decimals)}"
    return text


def _base_unit(o: Outcome) -> str:
    return o.rule.value_unit  # values stay in the metric's unit even when the rule is in %


def line(o: Outcome) -> str:
    """One rule as one line, the form the terminal, pytest and JUnit messages share."""
    head = f"{_WORD[o.status]:<7} {o.rule.text}"
    if o.status == "no data":
        return f"{head}: {o.reason}"
    values = o.rule.values(o)  # each rule kind renders its own values and baseline cell
    detail = ", ".join(x for x in (o.test, f"n = {o.n}" if o.n else "") if x)
    return f"{head}: {values}, effect {effect(o)}, p = {p_value(o.p_value)} ({detail}): {o.reason}"


def verdict(r: GateResult) -> str:
    counts = {s: sum(o.status == s for o in r.outcomes) for s in _WORD}
    total = len(r.outcomes)
    if r.exit_code == 1:
        return f"regression: {counts['fail']} of {total} rules failed"
    if r.exit_code == 2:
        return f"unusable: {counts['no data']} of {total} rules had no data"
    return f"passed: all {total} rules hold"


def _mode(r: GateResult) -> str:
    if r.options.strict:
        return (
            f"--strict: a drop beyond tolerance fails even when not significant (alpha = {r.options.alpha:g})"
        )
    return f"a drop fails when beyond tolerance and significant at alpha = {r.options.alpha:g}"


def text(r: GateResult) -> str:
    """Terminal output: one line per rule, then the verdict."""
    lines = [line(o) for o in r.outcomes]
    lines.append(f"kdeval gate: {verdict(r)} (model {r.model}; {_mode(r)})")
    return "\n".join(lines)


def markdown(r: GateResult) -> str:
    """A summary fit for a pull-request comment."""
    title = {0: "✅ passed", 1: "❌ regression", 2: "⚠️ unusable"}[r.exit_code]
    rows = [
        "| | rule | baseline | candidate | effect [95% CI] | p-value | test | n | why |",
        "| --- | --- | ---: | ---: | --- | ---: | --- | ---: | --- |",
    ]
    for o in r.outcomes:
        n = str(o.n) if o.n else "—"
        test = o.test or "—"
        rows.append(
            f"| {_MARK[o.status]} | `{o.rule.text}` | {o.rule.baseline_cell(o)} | "
            f"{number(o.candidate, _base_unit(o))} | {effect(o)} | {p_value(o.p_value)} | {test} | {n} | "
            f"{o.reason} |"
        )
    return "\n".join(
        [
            f"### kdeval gate: {title}",
            "",
            f"**{verdict(r)}** · model `{r.model}` · {_mode(r)}",
            "",
            *rows,
            "",
            f"Baseline `{r.baseline.path}` ({r.baseline.result.created_at}) · "
            f"candidate `{r.candidate.path}` ({r.candidate.result.created_at}). "
            "Effects are candidate − baseline (floors: value − bound) with paired 95% bootstrap "
            "intervals; p-values are one-sided, for a drop.",
            "",
        ]
    )


def markdown_unusable(message: str) -> str:
    """The PR comment when the gate could not run (missing file, incomparable runs, bad rule)."""
    return f"### kdeval gate: ⚠️ unusable input\n\n{message}\n"


def junit(r: GateResult) -> str:
    """JUnit XML: one test case per rule; failures for regressions, errors for missing data."""
    cases = [(o.rule.text, o.status, o.reason, line(o)) for o in r.outcomes]
    return _junit(f"kdeval.gate.{r.model}", cases)


def junit_unusable(message: str) -> str:
    """JUnit XML with one erroring test case, when the gate could not run."""
    return _junit("kdeval.gate", [("inputs", "no data", message, message)])


def _junit(classname: str, cases: Sequence[tuple[str, str, str, str]]) -> str:
    failures = sum(status == "fail" for _, status, _, _ in cases)
    errors = sum(status == "no data" for _, status, _, _ in cases)
    root = ET.Element("testsuites", name="kdeval gate", tests=str(len(cases)))
    suite = ET.SubElement(root, "testsuite", name="kdeval.gate", tests=str(len(cases)))
    suite.attrib.update(failures=str(failures), errors=str(errors), skipped="0", time="0")
    for name, status, reason, text in cases:
        case = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0")
        if status == "fail":
            ET.SubElement(case, "failure", message=reason, type="regression").text = text
        elif status == "no data":
            ET.SubElement(case, "error", message=reason, type="no data").text = text
        else:
            ET.SubElement(case, "system-out").text = text
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
