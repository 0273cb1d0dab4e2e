"""The report's "Fidelity to the teacher" section (kdeval.fidelity): per student, overall, per
family and per task, every measure with its 95% bootstrap interval."""

from __future__ import annotations

from kdeval.fidelity.measures import ECE_BINS, MEASURES
from kdeval.results import FidelityRow, RunResult

#: decimals shown per measure: enough that an interval's ends differ where the values do
DECIMALS = {"kl": 3, "rkl": 3, "jsd": 3, "nll": 3, "top1": 1, "ece": 1, "ppl": 1}


def render_section(r: RunResult, models: list[str]) -> str:
    if not r.fidelity:
        return ""
    teacher = r.fidelity[0].reference
    students = [m for m in models if any(f.model == m for f in r.fidelity)]
    sources = sorted({f.source for f in r.fidelity if f.note is None})
    head = ["model", "scope", *(_label(m) for m in MEASURES)]
    rows = [head, ["---"] * len(head)]
    notes: list[str] = []
    for m in students:
        mine = [f for f in r.fidelity if f.model == m]
        note = next((f.note for f in mine if f.note), None)
        if note is not None:
            if note not in notes:
                notes.append(note)
            mark = f"—: {note} [{notes.index(note) + 1}]"
            rows.append([m, "overall", *([mark] + ["—"] * (len(MEASURES) - 1))])
            continue
        for scope, name in _scopes(mine, r):
            cells = {f.measure: f for f in mine if (f.scope, f.name) == (scope, name)}
            label = "**overall**" if scope == "overall" else f"*{name}*" if scope == "family" else name
            rows.append([m, label, *(_cell(cells.get(k)) for k in MEASURES)])
    lines = [
        "## Fidelity to the teacher",
        "",
        f"Each student teacher-forced on {teacher}'s own outputs for the evaluation prompts "
        "(its generations; for multiple choice, the continuation it chose): per teacher token, "
        "KL(T‖S), KL(S‖T) and JSD in "
        "nats, top-1 agreement (the student's most likely token is the teacher's), the student's NLL and "
        f"perplexity of the teacher's tokens, and ECE of the student's next-token confidence ({ECE_BINS} "
        "equal-width bins; correct = its top-1 is the teacher's token). Tasks weigh every token equally; a "
        "family is the mean of its tasks, overall the mean of the families. 95% bootstrap intervals over "
        "examples (stratified by task for families and overall).",
        "",
        _source_line(sources),
        "",
        "\n".join("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]
    lines += [f"[{i + 1}] {_explain(n)}" for i, n in enumerate(notes)]
    return "\n".join(lines + ([""] if notes else []))


def _label(measure: str) -> str:
    m = MEASURES[measure]
    return f"{m.label} ({m.unit})" if m.unit and m.unit != "%" else f"{m.label} %" if m.unit else m.label


def _scopes(rows: list[FidelityRow], r: RunResult) -> list[tuple[str, str]]:
    seen = dict.fromkeys((f.scope, f.name) for f in rows)
    families = [t.family for t in r.tasks]
    several = [f for f in dict.fromkeys(families) if families.count(f) > 1]  # else the family is its task
    order = [("overall", "overall")] + [("family", f) for f in several] + [("task", t.name) for t in r.tasks]
    return [s for s in dict.fromkeys(order) if s in seen]


def _cell(f: FidelityRow | None) -> str:
    if f is None or f.value is None:
        return "—"
    d = DECIMALS.get(f.measure, 3)
    if f.ci_low is None or f.ci_high is None:
        return _fixed(f.value, d)
    return f"{_fixed(f.value, d)} [{_fixed(f.ci_low, d)}, {_fixed(f.ci_high, d)}]"


def _fixed(x: float, decimals: int) -> str:
    """x with `decimals` decimals, never "-0.000" (rounding noise of a zero divergence).

    >>> _fixed(-1e-9, 3), _fixed(2.5, 1)
    ('0.000', '2.5')
    """
    return f"{round(x, decimals) + 0.0:.{decimals}f}"


def _source_line(sources: list[str]) -> str:
    if not sources or sources == ["dense"]:
        return "Teacher distribution: the full vocabulary (dense logits)."
    k = ", ".join(s for s in sources if s != "dense")
    return (
        f"Teacher distribution: its {k} tokens plus one bucket for the rest of the mass (the student is "
        "folded to the same buckets). By the data-processing inequality KL, reverse KL and JSD on these "
        "buckets are lower bounds of the full-vocabulary values; top-1, NLL and ECE are exact."
    )


def _explain(note: str) -> str:
    if note == "tokenizers differ":
        return (
            "the student's tokenizer is not the teacher's, so their next-token distributions are over "
            "different tokens and no per-token divergence is defined; compare answers instead"
        )
    return note
