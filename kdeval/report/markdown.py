"""The comparison report as markdown: quality per task with 95% intervals, then retention,
gap closed and agreement of the distilled student against the teacher."""

from __future__ import annotations

from kdeval.report.answers import render_section as answers_section
from kdeval.report.cost import render_section as cost_section
from kdeval.report.fidelity import render_section as fidelity_section
from kdeval.report.formats import portable_path
from kdeval.report.similarity import render_section as similarity_section
from kdeval.results import Comparison, ModelRow, RunResult, TaskRow

FOOTNOTES = {
    "no-teacher": "no teacher in this run, so retention and gap closed cannot be computed",
    "no-distilled": "no distilled student in this run",
    "teacher-unscored": "the teacher has no score here: without references, students are scored against "
    "the teacher's own answers",
    "no-baseline": "no baseline in this run, so the gap closed cannot be computed",
    "zero-gap": "teacher and baseline score the same here (zero gap), so the gap closed is undefined",
    "zero-teacher": "the teacher scores 0 here, so retention is undefined",
    "teacher-near-zero": "not meaningful: the teacher's score is within its interval of zero",
    "gap-near-zero": "not meaningful: the teacher−baseline gap is within its interval of zero "
    "(the two scores' intervals combined)",
    "no-agreement": "agreement needs both a teacher and a distilled student",
}
ROLE_ORDER = {"teacher": 0, "baseline": 1, "distilled": 2}


def render(r: RunResult) -> str:
    models = ordered_models(r)
    used: list[str] = []
    lines = [
        "# kdeval comparison report",
        "",
        _run_line(r),
        "",
        "## Quality",
        "",
        "Each cell: score (0–100) and its 95% bootstrap confidence interval over examples. "
        "Retention = distilled ÷ teacher; gap closed = (distilled − baseline) ÷ (teacher − baseline); "
        "agreement = share of examples where the distilled student's normalized answer equals the teacher's.",
        "",
        _quality_table(r, models, used),
        "",
    ]
    if used:
        lines += [f"[{i + 1}] {FOOTNOTES[k]}" for i, k in enumerate(used)] + [""]
    lines += _dropped_lines(r)
    lines += [similarity_section(r, models)]
    lines += [fidelity_section(r, models), answers_section(r, models), cost_section(r)]
    lines += ["## Models", "", _models_table(r), "", "## Tasks", "", _tasks_table(r), ""]
    return "\n".join(lines)


def ordered_models(r: RunResult) -> list[str]:
    ms = sorted(enumerate(r.models), key=lambda im: (ROLE_ORDER.get(im[1].role, 3), im[0]))
    return [m.name for _, m in ms]


def _run_line(r: RunResult) -> str:
    s = r.settings
    decoding = "greedy" if s.temperature == 0 else f"temperature {s.temperature}, top-p {s.top_p}"
    limit = f", first {s.limit} examples per task" if s.limit else ""
    samples = f" · {s.samples} samples per example" if s.samples > 1 else ""
    budgets = s.max_tokens
    budget = (
        " · max tokens " + ", ".join(f"{v}" if k == "*" else f"{k}={v}" for k, v in budgets.items())
        if budgets
        else ""
    )
    return (
        f"Run {r.created_at} · backend `{s.backend}` · {decoding}{samples}{budget} · "
        f"seed {s.seed} · dtype {s.dtype}{limit} · kdeval {r.kdeval_version}"
    )


def _cell(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "—"
    if low is None or high is None:
        return f"{value:.1f}"
    return f"{value:.1f} [{low:.1f}, {high:.1f}]"


def _pct(x: float | None, notes: list[str], used: list[str], keys: tuple[str, ...]) -> str:
    if x is not None:
        return f"{100 * x:.1f}%"
    marks = []
    for k in notes:
        if k in keys:
            if k not in used:
                used.append(k)
            marks.append(str(used.index(k) + 1))
    return "—" + (f" [{','.join(marks)}]" if marks else "")


_NO_TEACHER = ("no-teacher", "teacher-unscored", "no-distilled")


def _ratio_cells(c: Comparison, used: list[str]) -> list[str]:
    agree_notes = [] if c.agreement is not None else ["no-agreement"]
    return [
        _pct(c.retention, c.notes, used, (*_NO_TEACHER, "zero-teacher", "teacher-near-zero")),
        _pct(c.gap_closed, c.notes, used, (*_NO_TEACHER, "no-baseline", "zero-gap", "gap-near-zero")),
        _pct(c.agreement, agree_notes, used, ("no-agreement",)),
    ]


def _quality_table(r: RunResult, models: list[str], used: list[str]) -> str:
    head = ["family", "task", "metric", *models, "retention", "gap closed", "agreement"]
    rows = [head, ["---"] * len(head)]
    comp = {(c.scope, c.name, c.metric): c for c in r.comparisons}
    score = {(s.model, s.task, s.metric): s for s in r.scores}
    for t in r.tasks:
        for metric in t.metrics:
            found = [score.get((m, t.name, metric)) for m in models]
            cells = [_cell(s.value, s.ci_low, s.ci_high) if s else "—" for s in found]
            rows.append(
                [
                    t.family,
                    t.name,
                    _metric_label(t, metric),
                    *cells,
                    *_ratio_cells(comp[("task", t.name, metric)], used),
                ]
            )
    summary = {(s.model, s.scope, s.name): s.value for s in r.summary}
    for c in r.comparisons:
        if c.scope == "task":
            continue
        label = f"**{c.name}**"
        cells = [_cell(summary.get((m, c.scope, c.name)), None, None) for m in models]
        rows.append(
            [
                label,
                "*mean of tasks*" if c.scope == "family" else "*mean of families*",
                "primary",
                *cells,
                *_ratio_cells(c, used),
            ]
        )
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def _dropped_lines(r: RunResult) -> list[str]:
    """Tasks where some examples could not be scored for every model: all models are compared on
    the rest (every score's n), and why the others were dropped."""
    out = []
    for t in r.tasks:
        if not t.dropped:
            continue
        why = "; ".join(f"{reason} ({n})" for reason, n in t.dropped.items())
        out.append(
            f"- {t.name}: every model is scored on the same {t.compared} of {t.n_examples} examples; "
            f"{sum(t.dropped.values())} dropped for all models because some model could not be scored "
            f"on them: {why}."
        )
    return ["Examples compared:", "", *out, ""] if out else []


def _metric_label(task: TaskRow, metric: str) -> str:
    """A sampled task's own metrics are means over its samples: say so (mean@N)."""
    n = task.samples
    return f"{metric} (mean@{n})" if n > 1 and "@" not in metric else metric


def _models_table(r: RunResult) -> str:
    rows = [
        "| model | role | backend | path | dtype | parameters | chat template | requests run / reused "
        "| fingerprint |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in sorted(r.models, key=lambda m: ROLE_ORDER.get(m.role, 3)):
        params = f"{m.n_params:,}" if m.n_params else "remote" if m.remote else "—"
        chat = "—" if m.chat_template is None else "yes" if m.chat_template else "no"
        rows.append(
            f"| {m.name} | {m.role} | {_backend_cell(m)} | {_path_cell(m)} | {m.dtype or '—'} | "
            f"{params} | {chat} | {m.computed} / {m.reused} | `{m.fingerprint}` |"
        )
    return "\n".join(rows)


def _backend_cell(m: ModelRow) -> str:
    """The backend and the options that shape the run (the server's address is in the path)."""
    shown = {k: v for k, v in m.options.items() if k not in _QUIET_OPTIONS and v not in (None, {}, "")}
    extra = ", ".join(f"{k}={v}" for k, v in sorted(shown.items()))
    return f"`{m.backend}`" + (f" ({extra})" if extra else "")


#: Options not worth a report cell: the address is in the path; defaults of the openai backend.
_QUIET_OPTIONS = {"base_url", "server", "endpoint", "max_retries", "timeout"}


def _path_cell(m: ModelRow) -> str:
    if not m.remote:
        return f"`{portable_path(m.path)}`"
    served = (m.server or {}).get("model")
    return f"remote: `{m.path}`" + (f" serving `{served}`" if served else "")


def _tasks_table(r: RunResult) -> str:
    rows = [
        "| task | family | suite | version | type | examples | data |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in r.tasks:
        data = f"`{t.data_file}`" if t.data_file else "shipped"
        n = f"{t.n_examples} ({t.compared} compared)" if t.dropped else f"{t.n_examples}"
        rows.append(f"| {t.name} | {t.family} | {t.suite} | {t.version} | {t.task_type} | {n} | {data} |")
    return "\n".join(rows)
