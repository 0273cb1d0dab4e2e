"""Metrics come from one registry (built-ins + the `kdeval.metrics` entry-point group), and a suite
plugin whose tasks name an unknown metric is refused when it loads, in one line, before any model runs.

The plugins are written into a temporary folder with a hand-made `.dist-info` (what pip leaves
behind), so `importlib.metadata` finds their entry points without building or installing anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kdeval import metrics
from kdeval.errors import UserError
from kdeval.plugins import load_catalog

SUITE = """
from kdeval.metrics import get_metric
from kdeval.tasks import Example, GenerateRequest, Scored, Suite, Task, user_turn


class Word(Task):
    name, family, task_type = "{task}", "{suite}", "generate"
    metrics, primary_metric = {metrics!r}, {primary!r}
    description, data_source, offline = "repeat a word", "built in", True

    def load(self, path):
        return [Example("w0", {{"word": "apple"}})]

    def request(self, example, history):
        return GenerateRequest(user_turn("Repeat: apple"), max_tokens=2)

    def score(self, example, outputs, teacher):
        hyp = outputs[0].text.strip()
        return Scored(hyp, ["apple"], {{m: get_metric(m).stats(hyp, ["apple"]) for m in self.metrics}})


SUITE = Suite("{suite}", "{suite}", "a test suite", [Word()])
"""

LENGTH_METRIC = """
from kdeval.metrics import Metric, finalize_mean, mean_row

METRIC = Metric("length_ratio", "hypothesis length / reference length (x100)",
                lambda h, r: mean_row(len(h) / max(1, len(r[0]))), finalize_mean)
"""


def _plugin(site: Path, module: str, source: str, groups: dict[str, dict[str, str]]) -> None:
    """A package `module` in `site`, as pip would leave it: the code and a .dist-info."""
    (site / module).mkdir(parents=True)
    (site / module / "__init__.py").write_text(textwrap.dedent(source))
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    eps = "".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()) + "\n"
        for group, entries in groups.items()
    )
    (info / "entry_points.txt").write_text(eps)


def _suite(site: Path, suite: str, metric_names: tuple[str, ...], primary: str) -> None:
    src = SUITE.format(task=f"{suite}_word", suite=suite, metrics=metric_names, primary=primary)
    _plugin(site, f"kd_{suite}", src, {"kdeval.suites": {suite: f"kd_{suite}:SUITE"}})


def _kdeval(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "kdeval.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_builtins_are_registrations_and_computed_names_stay_computed() -> None:
    assert metrics.names()[:8] == [
        "accuracy",
        "exact_match",
        "f1",
        "bleu",
        "chrf",
        "rouge1",
        "rouge2",
        "rougeL",
    ]
    assert metrics.get_metric("pass@4").binary and metrics.is_known("maj@8")
    assert "pass@4" not in metrics.METRICS and "bleu" in metrics.METRICS
    with pytest.raises(ValueError, match="unknown metric 'chrF'"):
        metrics.get_metric("chrF")
    assert metrics.close_matches("chrF")[0] == "chrf"


def test_unknown_metric_in_a_plugin_suite_is_one_line_exit_2(tmp_path: Path) -> None:
    _suite(tmp_path, "typo", ("exact_match", "chrF"), "exact_match")
    for what in (["--suite", "typo"], ["--task", "typo_word"]):
        proc = _kdeval(tmp_path, "compare", "--model", f"m={tmp_path}", *what, "--no-efficiency")
        assert proc.returncode == 2, proc.stderr
        lines = [x for x in proc.stderr.strip().splitlines() if "warning" not in x]
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "suite plugin 'typo' (kd_typo:SUITE)" in lines[0]
        assert "unknown metric 'chrF'" in lines[0] and "did you mean chrf" in lines[0]
    # Not asked for, the broken plugin takes nothing else down: a warning, and the rest works.
    proc = _kdeval(tmp_path, "suites")
    assert proc.returncode == 0 and "math_synth" in proc.stdout and "typo_word" not in proc.stdout
    assert "warning" in proc.stderr and "unknown metric 'chrF'" in proc.stderr


def test_primary_metric_outside_the_metrics_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _suite(tmp_path, "prim", ("exact_match",), "f1")
    monkeypatch.syspath_prepend(str(tmp_path))
    catalog = load_catalog()
    assert "prim" not in catalog.suites
    with pytest.raises(UserError) as err:
        catalog.select(["prim"], [], [])
    msg = str(err.value)
    assert "suite plugin 'prim' (kd_prim:SUITE)" in msg and "primary_metric 'f1'" in msg
    assert "(exact_match)" in msg and "\n" not in msg


def test_a_metric_plugin_registers_through_the_entry_point_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _plugin(tmp_path, "kd_length", LENGTH_METRIC, {"kdeval.metrics": {"length_ratio": "kd_length:METRIC"}})
    _suite(tmp_path, "lengthy", ("length_ratio", "chrf"), "length_ratio")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(metrics, "_LOADED", {})
    assert "length_ratio" in metrics.names() and metrics.is_known("length_ratio")
    m = metrics.get_metric("length_ratio")
    assert m.example(m.stats("ab", ["abcd"])) == 50.0
    assert "lengthy" in load_catalog().suites  # the suite's metric resolves through the plugin
    proc = _kdeval(tmp_path, "suites")
    assert proc.returncode == 0 and "lengthy_word" in proc.stdout, proc.stderr


def test_a_metric_plugin_that_is_not_a_metric_is_a_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _plugin(tmp_path, "kd_bad", "METRIC = 3\n", {"kdeval.metrics": {"bad": "kd_bad:METRIC"}})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(metrics, "_LOADED", {})
    with pytest.raises(
        UserError, match=r"metric plugin 'bad' \(kd_bad:METRIC\) is not a kdeval.metrics.Metric"
    ):
        metrics.get_metric("bad")
