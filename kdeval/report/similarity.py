"""The report's "Agreement with the teacher on free text" section: beside exact answer agreement,
chrF and ROUGE-L of each student's answers against the teacher's (kdeval.similarity)."""

from __future__ import annotations

from kdeval.results import RunResult, SimilarityRow


def _cell(value: float | None, low: float | None, high: float | None) -> str:
    from kdeval.report.markdown import _cell as cell  # the quality table's cell format

    return cell(value, low, high)


def render_section(r: RunResult, models: list[str]) -> str:
    if not r.similarity:
        return ""
    teacher = r.similarity[0].reference
    cell = {(s.model, s.scope, s.name, s.metric): s for s in r.similarity}
    exact = {(a.model, a.task): a for a in r.agreement}
    lines = [
        "## Agreement with the teacher on free text",
        "",
        f"Generation tasks: exact agreement (normalized answers equal to {teacher}'s) beside chrF and "
        f"ROUGE-L of each student's answer against {teacher}'s answer (0–100, 95% bootstrap intervals "
        "over examples; families and overall: means of tasks and of families).",
        "",
        "| model | task | exact agreement | chrF | ROUGE-L |",
        "| --- | --- | --- | --- | --- |",
    ]
    tasks = [t for t in r.tasks if t.task_type == "generate"]
    for m in (m for m in models if any(s.model == m for s in r.similarity)):
        for t in tasks:
            a = exact.get((m, t.name))
            agree = _cell(a.value, a.ci_low, a.ci_high) if a else "—"
            rows = [cell.get((m, "task", t.name, k)) for k in ("chrf", "rougeL")]
            lines.append(f"| {m} | {t.name} | {agree} | {' | '.join(_row(x) for x in rows)} |")
        overall = [cell.get((m, "overall", "overall", k)) for k in ("chrf", "rougeL")]
        lines.append(f"| {m} | **overall** | | {' | '.join(_row(x) for x in overall)} |")
    return "\n".join([*lines, ""])


def _row(s: SimilarityRow | None) -> str:
    return _cell(s.value, s.ci_low, s.ci_high) if s else "—"
