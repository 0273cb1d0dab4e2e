"""Did distillation help? Paired differences between the demo's models, and the verdict line.

The numbers come from `results.json` and its per-example samples only (as every report does):
the paired bootstrap of `kdeval.gate.stats` resamples the same examples for both models, so a
difference is called real only when its 95% interval excludes zero.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kdeval.datafiles import write_atomic
from kdeval.distill.methods import get as get_method
from kdeval.gate.stats import bootstrap, interval, part_from_records
from kdeval.runs import load_run, scope_tasks

if TYPE_CHECKING:
    from kdeval.distill.demo import DemoConfig, DemoResult


@dataclass(frozen=True)
class Delta:
    """b − a on one scope (a task or 'overall'), in points of the primary metric, with its interval."""

    scope: str
    a: float
    b: float
    low: float
    high: float

    @property
    def diff(self) -> float:
        return self.b - self.a

    @property
    def call(self) -> str:
        """'better', 'worse' or 'no clear difference' at 95%."""
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "no clear difference"

    def text(self) -> str:
        """The difference and its interval, with the digits it takes to see whether 0 is inside."""
        from kdeval.report.formats import signed, signed_interval

        return f"{signed(self.diff)} points, 95% CI {signed_interval(self.low, self.high)}"


def paired_delta(results: Path, a: str, b: str, scope: str = "overall") -> Delta:
    """Paired bootstrap of model b minus model a on `scope`'s primary metrics (mean of families)."""
    run = load_run(results)
    parts = [
        part_from_records(t.name, t.family, m, run.records(a, t.name), run.records(b, t.name), "")
        for t, m in scope_tasks(run, scope, "primary")
    ]
    est = bootstrap(parts)
    low, high = interval(est.b_reps - est.a_reps)
    return Delta(scope, est.a, est.b, low, high)


def task_deltas(results: Path, a: str, b: str) -> list[Delta]:
    run = load_run(results)
    return [paired_delta(results, a, b, t.name) for t in run.result.tasks]


def verdict(results: Path) -> str:
    """One line: retention, gap closed, and whether distilled beats baseline beyond the interval."""
    gap = paired_delta(results, "baseline", "teacher")
    dist = paired_delta(results, "baseline", "distilled")
    teacher, baseline, distilled = gap.b, gap.a, dist.b
    retention = f"{distilled / teacher:.0%}" if teacher else "—"
    closed = f"{(distilled - baseline) / (teacher - baseline):.0%}" if teacher != baseline else "—"
    helped = {
        "better": "distillation HELPED",
        "worse": "distillation HURT",
        "no clear difference": "distillation made NO CLEAR DIFFERENCE",
    }[dist.call]
    premise = (
        "" if gap.call == "better" else " (caution: the teacher is not clearly better than the baseline)"
    )
    return (
        f"verdict: {helped}: distilled {distilled:.1f} vs baseline {baseline:.1f} overall "
        f"({dist.text()}); it keeps {retention} of the teacher's {teacher:.1f} and closes "
        f"{closed} of the teacher–baseline gap{premise}"
    )


def helped_section(results: Path) -> str:
    """Markdown: per task and overall, teacher − baseline and distilled − baseline, paired."""
    lines = [
        "## Did distillation help?",
        "",
        "Paired bootstrap over the same examples (2,000 resamples), primary metric of each task, "
        "in points; a difference counts only when its 95% interval excludes zero.",
        "",
        "| scope | teacher − baseline | distilled − baseline | call |",
        "| --- | --- | --- | --- |",
    ]
    gaps = [*task_deltas(results, "baseline", "teacher"), paired_delta(results, "baseline", "teacher")]
    dists = [*task_deltas(results, "baseline", "distilled"), paired_delta(results, "baseline", "distilled")]
    for gap, dist in zip(gaps, dists, strict=True):
        name = "**overall**" if dist.scope == "overall" else dist.scope
        lines.append(f"| {name} | {gap.text()} | {dist.text()} | {dist.call} |")
    return "\n".join([*lines, "", verdict(results), ""])


def write_report(cfg: DemoConfig, result: DemoResult, workdir: Path) -> str:
    """Append the demo's setup and the paired comparison to compare's report.md, with the work
    folder's paths written portably; returns the verdict line."""
    results = result.out / "results.json"
    report = result.out / "report.md"
    text = report.read_text(encoding="utf-8").rstrip("\n")
    prefix, where = portable_prefix(workdir)
    body = "\n\n".join([text, setup_section(cfg, result, where), helped_section(results)])
    for spelled in {str(workdir.resolve()), str(workdir.absolute())}:
        body = body.replace(f"{spelled}{os.sep}", prefix)
    write_atomic(report, body)
    return verdict(results)


def portable_prefix(workdir: Path) -> tuple[str, str]:
    """How the report writes a path in the work folder: relative to the kdeval cache when the
    work folder is in it (the default), else relative to the work folder; and a note saying so."""
    from kdeval.distill.suitedata import cache_root

    work, cache = workdir.resolve(), cache_root().resolve()
    if work.is_relative_to(cache):
        rel = work.relative_to(cache).as_posix()
        return f"{rel}/", "relative to the kdeval cache (`$KDEVAL_CACHE`, default `~/.cache/kdeval`)"
    return "", "relative to the demo's work folder (`--workdir`)"


def setup_section(cfg: DemoConfig, result: DemoResult, where: str) -> str:
    seconds, n = result.seconds, result.sizes
    timing = ", ".join(
        f"{k} {'cached' if k in result.cached else f'{seconds[k]:.0f} s'}"
        for k in ("teacher", "baseline", "distilled")
    )
    t, s = cfg.teacher, cfg.student
    how = f" (alpha {cfg.alpha}, temperature {cfg.temperature})" if get_method(cfg.method).token_level else ""
    logits = ", plus its logits on every token" if get_method(cfg.method).token_level else ""
    return "\n".join(
        [
            "## The demo",
            "",
            "The realistic distillation regime: gold answers are scarce, unlabelled prompts are not. "
            f"Everything is cut from the training splits of {', '.join(cfg.tasks)} "
            "(`kdeval.distill.demo_data`); no test example is among them, and the last "
            f"{cfg.valid_per_task} training examples of each task are held out from every model.",
            "",
            f"- Teacher: Llama, hidden {t.hidden}, {t.layers} layers, {cfg.teacher_epochs} epoch(s) on "
            f"the gold answers of {n['teacher']} training records (it stands in for a model that has "
            "seen far more labelled data than the student's owner).",
            f"- Baseline: Llama, hidden {s.hidden}, {s.layers} layers, fine-tuned on the gold set alone: "
            f"the first {cfg.gold_per_task} examples of each task ({n['gold']} records).",
            f"- Distilled: the baseline's initial weights, seed, rate and number of optimizer steps, "
            f"trained with `{cfg.method}`{how} on the gold set plus a pool of the next "
            f"{cfg.pool_per_task} prompts of each task ({n['pool']} records) answered by the teacher"
            f"{logits} ({n['distilled']} records in all).",
            "- Chosen on the held-out validation examples over paired seeds, never the test split: "
            "`benchmarks/experiment_demo_regime.py` (its table: `reports/demo/experiment.md`).",
            f"- Model paths are {where}.",
            f"- Time: {timing}, teacher answers {seconds.get('answers', 0):.0f} s, compare (quality and "
            f"cost) {seconds['compare']:.0f} s, total {seconds['total']:.0f} s"
            + (
                " (cost figures kept from the previous run: no model changed)." if result.cost_reused else "."
            ),
        ]
    )
