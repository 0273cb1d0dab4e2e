"""The report's "Answers and thinking" section: what each model's answers cost in tokens.

Per model and task: how many answers thought, how many traces never closed (no answer, scored
wrong), how many ran out of the token budget, mean thinking and answer tokens, tokens per right
answer, and how many tokens that is against the teacher's; then, per task, the distilled
student's retention beside how much longer it writes than the teacher.
"""

from __future__ import annotations

from kdeval.results import GenerationRow, RunResult


def render_section(r: RunResult, models: list[str]) -> str:
    if not r.generation:
        return ""
    teacher = r.role("teacher")
    lines = [
        "## Answers and thinking",
        "",
        "Per generation (every sample and turn): *unfinished* traces never closed, so they have no "
        "answer and count as wrong; *hit budget* answers ran out of tokens (raise `--max-tokens`). "
        "Tokens per right answer = all output tokens ÷ right answers; × teacher compares it with the "
        "teacher's on the same task (output tokens per answer when either has no right answer).",
        "",
        "| model | task | answers | thinking | unfinished | hit budget | thinking tok | answer tok "
        "| tok per right answer | × teacher |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in r.tasks:
        for m in models:
            g = r.gen(m, t.name)
            if g is None:
                continue
            ref = r.gen(teacher, t.name) if teacher and m != teacher else None
            lines.append(
                f"| {m} | {t.name} | {g.n} | {_of(g.thinks, g.n)} | {_of(g.unfinished, g.n)} | "
                f"{_of(g.truncated, g.n)} | {_num(g.thinking_tokens)} | {_num(g.answer_tokens)} | "
                f"{_num(g.tokens_per_correct)} | {_times(g, ref)} |"
            )
    lines += ["", *_retention_lines(r), ""]
    return "\n".join(lines)


def cost_ratio(g: GenerationRow | None, ref: GenerationRow | None) -> float | None:
    """Tokens per right answer against the reference's (output tokens per answer when either
    has no right answer to divide by)."""
    if g is None or ref is None:
        return None
    if g.tokens_per_correct and ref.tokens_per_correct:
        return g.tokens_per_correct / ref.tokens_per_correct
    if g.output_tokens and ref.output_tokens:
        return g.output_tokens / ref.output_tokens
    return None


def _retention_lines(r: RunResult) -> list[str]:
    teacher, distilled = r.role("teacher"), r.role("distilled")
    if not teacher or not distilled:
        return []
    comp = {(c.name, c.metric): c for c in r.comparisons if c.scope == "task"}
    out = []
    for t in r.tasks:
        c = comp.get((t.name, t.primary_metric))
        ratio = cost_ratio(r.gen(distilled, t.name), r.gen(teacher, t.name))
        if c is None or c.retention is None or ratio is None:
            continue
        think = _thinks(r.gen(distilled, t.name), r.gen(teacher, t.name))
        out.append(
            f"- {t.name}: {distilled} keeps {100 * c.retention:.1f}% of the teacher's "
            f"{t.primary_metric} and spends {ratio:.2f}× the teacher's tokens per right answer{think}."
        )
    return out


def _thinks(g: GenerationRow | None, ref: GenerationRow | None) -> str:
    if g is None or ref is None or not g.thinking_tokens:
        return ""
    if not ref.thinking_tokens:
        return f" (it thinks {g.thinking_tokens:.0f} tokens per answer; the teacher does not think)"
    return f" (it thinks {g.thinking_tokens / ref.thinking_tokens:.2f}× as long as the teacher)"


def _times(g: GenerationRow, ref: GenerationRow | None) -> str:
    ratio = cost_ratio(g, ref)
    return f"{ratio:.2f}×" if ratio is not None else "—"


def _of(k: int, n: int) -> str:
    return f"{k} of {n}" if k else "0"


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"
