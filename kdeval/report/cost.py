"""The cost side of the report: each model's measured figures, the distilled student's ratios
against the teacher and the baseline, the case-study sentence, and a quality-vs-latency plot.

Everything comes from `RunResult.efficiency` and the quality summary, so `kdeval report`
re-renders stored figures without measuring anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdeval.results import Figures, ModelRow, RunResult, Workload

PLOT_NAME = "quality_vs_latency.png"
_ROLE_ORDER = {"teacher": 0, "baseline": 1, "distilled": 2}

Efficiency = Mapping[str, Figures]


def _get(fig: Figures | None, group: str, key: str) -> float | None:
    return fig.number(group, key) if fig else None


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "—" if x is None else format(x, spec)


def _ordered(r: RunResult) -> list[ModelRow]:
    return sorted(r.models, key=lambda m: _ROLE_ORDER.get(m.role, 3))


def overall_quality(r: RunResult, model: str) -> float | None:
    return next((s.value for s in r.summary if (s.model, s.scope) == (model, "overall")), None)


def quality_interval(r: RunResult, model: str) -> tuple[float, float] | None:
    """The 95% interval of the overall quality when it is one task's score; a mean over tasks has
    no interval in results.json, and an invented one would mislead."""
    if len(r.tasks) != 1:
        return None
    t = r.tasks[0]
    row = next(
        (s for s in r.scores if (s.model, s.task, s.metric) == (model, t.name, t.primary_metric)), None
    )
    if row is None or row.ci_low is None or row.ci_high is None:
        return None
    return row.ci_low, row.ci_high


# -- ratios ------------------------------------------------------------------------------------


@dataclass
class Ratios:
    """The distilled student against one reference model; None where a figure is missing."""

    reference: str
    speedup: float | None  # reference p50 / distilled p50
    latency_reduction: float | None  # 1 - distilled p50 / reference p50
    memory_reduction: float | None  # on peak memory
    weights_reduction: float | None
    throughput_x: float | None  # output tokens/s, distilled / reference
    quality_retention: float | None  # overall quality, distilled / reference
    latency_what: str = "latency"  # "latency per answer" when full answers were timed


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _less(a: float | None, b: float | None) -> float | None:
    q = _div(a, b)
    return None if q is None else 1 - q


def latency_key(r: RunResult) -> tuple[str, str]:
    """Which latency the ratios and the plot compare: the mean latency of a full answer when
    every measured model has it (a model that thinks longer pays for it), else the p50 of a
    fixed number of output tokens."""
    figs = [f for f in r.efficiency.values() if f.error is None]
    if figs and all(f.answer_latency_ms for f in figs):
        return "answer_latency_ms", "mean"
    return "latency_ms", "p50"


def ratios(r: RunResult, reference: str, distilled: str) -> Ratios:
    d, ref = r.efficiency.get(distilled), r.efficiency.get(reference)
    group, key = latency_key(r)
    lat = (_get(d, group, key), _get(ref, group, key))
    return Ratios(
        reference=reference,
        speedup=_div(lat[1], lat[0]),
        latency_reduction=_less(*lat),
        memory_reduction=_less(_get(d, "memory_mib", "peak"), _get(ref, "memory_mib", "peak")),
        weights_reduction=_less(_get(d, "memory_mib", "weights"), _get(ref, "memory_mib", "weights")),
        throughput_x=_div(
            _get(d, "throughput", "output_tokens_per_s"), _get(ref, "throughput", "output_tokens_per_s")
        ),
        quality_retention=_div(overall_quality(r, distilled), overall_quality(r, reference)),
        latency_what="latency per answer" if group == "answer_latency_ms" else "latency",
    )


def case_study(x: Ratios) -> str | None:
    """The seed's line, computed: '85% less latency, 95% less memory, 92% of the teacher's quality'."""

    def change(v: float | None, what: str) -> str | None:
        if v is None:
            return None
        return f"{abs(100 * v):.0f}% {'less' if v >= 0 else 'more'} {what}"

    parts = [change(x.latency_reduction, x.latency_what), change(x.memory_reduction, "memory")]
    if x.quality_retention is not None:
        parts.append(f"{100 * x.quality_retention:.0f}% of the {x.reference}'s quality")
    known = [p for p in parts if p]
    return ", ".join(known) if known else None


# -- tables ------------------------------------------------------------------------------------

_MODEL_HEAD = [
    "model", "parameters", "weights (MiB)", "peak memory (MiB)", "KV cache (MiB)", "start-up (s)",
    "latency p50 / p90 / p99 (ms)", "spread over repeats (p50 / tok/s)", "TTFT p50 (ms)", "TPOT p50 (ms)",
    "requests/s", "output tok/s", "total tok/s", "full answer: latency mean (ms) / tokens", "quality",
]  # fmt: skip


def _spread(fig: Figures) -> str:
    """(max - min) / median over repeats of latency p50 and output tokens/s; ⚠ when noisy."""
    cells = []
    for key in ("latency_p50_ms", "output_tokens_per_s"):
        s = (getattr(fig.repeats, key) if fig.repeats else None) or {}
        low, median, high = s.get("min"), s.get("median"), s.get("max")
        if low is None or high is None or not median:
            cells.append("—")
        else:
            cells.append(f"{100 * (high - low) / median:.0f}%")
    return " / ".join(cells) + (" ⚠" if fig.noisy else "")


def _model_row(name: str, fig: Figures | None, quality: float | None) -> list[str]:
    q = _fmt(quality)
    error = fig.error if fig else None
    if fig is None or error is not None:
        cells = [f"error: {error[:80]}" if error is not None else "not measured"] + ["—"] * 12
        return [name, *cells, q]
    lat = (
        "—"
        if _get(fig, "latency_ms", "p50") is None
        else " / ".join(_fmt(_get(fig, "latency_ms", k)) for k in ("p50", "p90", "p99"))
    )
    params = fig.n_params
    unknown = "remote" if fig.remote else "—"  # a server's memory is not measurable here

    def cell(x: float | None, spec: str = ".1f") -> str:
        return unknown if x is None else format(x, spec)

    return [
        name,
        f"{params:,}" if isinstance(params, int) else unknown,
        cell(_get(fig, "memory_mib", "weights")),
        cell(_get(fig, "memory_mib", "peak")),
        cell(_get(fig, "memory_mib", "kv_cache")),
        cell(None if fig.startup_s is None else float(fig.startup_s)),
        lat,
        _spread(fig),
        _fmt(_get(fig, "ttft_ms", "p50"), ".2f"),
        _fmt(_get(fig, "tpot_ms", "p50"), ".2f"),
        _fmt(_get(fig, "throughput", "requests_per_s"), ".2f"),
        _fmt(_get(fig, "throughput", "output_tokens_per_s")),
        _fmt(_get(fig, "throughput", "total_tokens_per_s")),
        _answer_cell(fig),
        q,
    ]


def _answer_cell(fig: Figures) -> str:
    mean = _get(fig, "answer_latency_ms", "mean")
    return "—" if mean is None else f"{mean:.1f} / {_fmt(_get(fig, 'answer_tokens', 'mean'))}"


def _table(rows: list[list[str]]) -> str:
    return "\n".join("| " + " | ".join(row) + " |" for row in [rows[0], ["---"] * len(rows[0]), *rows[1:]])


def model_table(r: RunResult) -> str:
    """One row per model with its figures and overall quality."""
    models = [(m.name, r.efficiency.get(m.name), overall_quality(r, m.name)) for m in _ordered(r)]
    return _model_table(models)


def _model_table(models: list[tuple[str, Figures | None, float | None]], quality: bool = True) -> str:
    """`quality` adds the overall score (absent from `kdeval bench`)."""
    rows = [_MODEL_HEAD, *(_model_row(name, fig, q) for name, fig, q in models)]
    return _table(rows if quality else [row[:-1] for row in rows])


def _pct(x: float | None) -> str:
    return _fmt(None if x is None else 100 * x) + ("%" if x is not None else "")


def _times(x: float | None) -> str:
    return _fmt(x, ".2f") + ("×" if x is not None else "")


def ratio_table(r: RunResult, distilled: str) -> str:
    rows = [
        [
            "distilled vs", "speed-up", "latency reduction", "memory reduction (peak)",
            "weights reduction", "throughput × (output tok/s)", "quality (distilled ÷ reference)",
        ]
    ]  # fmt: skip
    for role in ("teacher", "baseline"):
        ref = r.role(role)
        x = ratios(r, ref, distilled) if ref else None
        if x is None:
            rows.append([f"{role} (not in this run)", *["—"] * 6])
            continue
        rows.append(
            [
                f"{role} ({ref})" if ref != role else role,
                _times(x.speedup),
                _pct(x.latency_reduction),
                _pct(x.memory_reduction),
                _pct(x.weights_reduction),
                _times(x.throughput_x),
                _pct(x.quality_retention),
            ]
        )
    return _table(rows)


# -- the section -------------------------------------------------------------------------------


def has_plot(r: RunResult) -> bool:
    """Whether `write_plot` draws anything (the markdown links the PNG only then)."""
    import importlib.util

    return bool(_points(r)) and importlib.util.find_spec("matplotlib") is not None


def render_section(r: RunResult) -> str:
    """'## Cost' for report.md."""
    lines = ["## Cost", ""]
    if not r.efficiency:
        why = "`--no-efficiency`" if "--no-efficiency" in r.command else "this run had no cost phase"
        return "\n".join(lines + [f"Not measured in this run ({why}).", ""])
    method = _method_line(r.efficiency) + " Quality = overall score from the quality table."
    lines += [method, "", model_table(r), ""]
    d = r.role("distilled")
    if d and d in r.efficiency:
        teacher = r.role("teacher")
        line = case_study(ratios(r, teacher, d)) if teacher else None
        lines += [ratio_table(r, d), ""]
        lines += [f"**The distilled student: {line}.**", ""] if line else []
    if has_plot(r):
        lines += [
            f"![quality vs latency]({PLOT_NAME})",
            "",
            f"Quality against {_x_label(r)}, one point per model. Horizontal bars: latency p50 min–max "
            "over repeats (fixed-length requests only); vertical bars: the 95% interval, shown when "
            "the run has a single task.",
            "",
        ]
    notes = _notes(r.efficiency)
    return "\n".join(lines + [f"- {n}" for n in notes] + ([""] if notes else []))


def _method_line(efficiency: Efficiency) -> str:
    fig = next((f for f in efficiency.values() if f.error is None), Figures())
    w, v = fig.workload or Workload(), fig.versions or {}

    def known(x: object) -> object:
        return "?" if x is None else x

    adaptive = fig.repeats is not None and fig.repeats.stopped not in (None, "fixed")
    times = "" if adaptive else f" × {known(fig.repeats and fig.repeats.n)} repeats"
    return (
        f"Measured on {known(fig.device)} with `{known(fig.backend)}` in its own phase: "
        f"{known(w.latency_requests)} batch-1 requests{times} after {known(w.warmup)} warm-up for "
        f"latency, {known(w.throughput_requests)} requests at once for throughput, "
        f"{known(w.output_len)} output tokens per request (EOS ignored){_repeats_method(efficiency)}"
        f"{_answers_method(fig)}. vllm {v.get('vllm') or '—'}, torch {v.get('torch')}, "
        f"transformers {v.get('transformers')}."
    )


_STOPPED = {"stable": "stable", "budget": "budget spent", "max_repeats": "at the most repeats"}


def _repeats_method(efficiency: Efficiency) -> str:
    """How long the adaptive cost phase ran per model and why it stopped; "" for fixed repeats."""
    reps = {n: f.repeats for n, f in efficiency.items() if f.error is None and f.repeats is not None}
    adaptive = {n: r for n, r in reps.items() if r.stopped not in (None, "fixed")}
    if not adaptive:
        return ""
    first = next(iter(adaptive.values()))
    threshold = f"{100 * first.threshold:.0f}%" if first.threshold is not None else "the threshold"
    budget = f"{first.budget_s:g} s" if first.budget_s is not None else "the time budget"
    each = "; ".join(
        f"{name} {r.n} ({_STOPPED.get(str(r.stopped), str(r.stopped))}, figures from the last {r.used})"
        for name, r in adaptive.items()
    )
    return (
        f"; both passes repeated until the latency p50 and output tokens/s agreed within {threshold} over "
        f"the last repeats, or {budget} of timed passes per model were spent — repeats: {each}"
    )


def _answers_method(fig: Figures) -> str:
    n = _get(fig, "answer_tokens", "n")
    if n is None:
        return ""
    return (
        f"; then {n:.0f} of the run's own generation prompts answered in full, batch 1, to EOS or a stop "
        "string within each task's budget (a model that thinks pays for its thinking); the speed-up, "
        "latency reduction and plot compare that latency per answer"
    )


def _x_label(r: RunResult) -> str:
    if latency_key(r)[0] == "answer_latency_ms":
        return "the mean latency of a full answer (ms, batch 1)"
    return "latency p50 per request (ms, batch 1)"


def _notes(efficiency: Efficiency) -> list[str]:
    notes: list[str] = []
    devices = {f.device for f in efficiency.values() if f.error is None}
    if len(devices) > 1:
        notes.append(f"⚠ models were measured on different devices ({', '.join(map(str, devices))})")
    for name, fig in efficiency.items():
        notes += [f"⚠ {name}: {w}" for w in fig.warnings]
        notes += [n for n in fig.notes if n not in notes]
        load = fig.machine.load_average if fig.machine else None
        if fig.noisy and load and fig.machine:
            notes.append(f"{name}: load average {load[0]} on {fig.machine.cores} cores when measured")
    return list(dict.fromkeys(notes))


def bench_markdown(name: str, figures: dict[str, Any]) -> str:
    """`kdeval bench`'s report: one model's row and the notes."""
    efficiency = {name: Figures.model_validate(figures)}
    notes = [f"- {n}" for n in _notes(efficiency)]
    table = _model_table([(name, efficiency[name], None)], quality=False)
    return "\n".join(["# kdeval bench", "", _method_line(efficiency), "", table, "", *notes, ""])


# -- the plot ----------------------------------------------------------------------------------


def _points(r: RunResult) -> list[tuple[str, float, float, tuple[float, float], tuple[float, float] | None]]:
    """(name, latency p50, quality, latency error (below, above), quality interval) per model."""
    out = []
    for m in _ordered(r):
        fig, q = r.efficiency.get(m.name), overall_quality(r, m.name)
        group, key = latency_key(r)
        p50 = _get(fig, group, key)
        if p50 is None or q is None:
            continue
        spread = fig.repeats.latency_p50_ms if fig and fig.repeats and group == "latency_ms" else None
        low, high = (spread or {}).get("min"), (spread or {}).get("max")
        low, high = p50 if low is None else float(low), p50 if high is None else float(high)
        out.append((m.name, p50, q, (max(0.0, p50 - low), max(0.0, high - p50)), quality_interval(r, m.name)))
    return out


def write_plot(r: RunResult, out_dir: Path) -> Path | None:
    """DIR/quality_vs_latency.png: one point per model; horizontal bars = latency p50 min–max over
    repeats, vertical bars = 95% interval of the quality (when results.json has one)."""
    points = _points(r)
    if not has_plot(r):
        return None
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.subplots()
    for name, x, y, xerr, ci in points:
        yerr = [[y - ci[0]], [ci[1] - y]] if ci else None
        ax.errorbar([x], [y], xerr=[[xerr[0]], [xerr[1]]], yerr=yerr, fmt="o", capsize=4, label=name)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 6))
    ax.set_xlabel(_x_label(r))
    ax.set_ylabel("quality (overall, 0–100)")
    ax.set_title("Quality vs latency")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path, tmp = out_dir / PLOT_NAME, out_dir / f".{PLOT_NAME}.tmp"
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(tmp, format="png")
    tmp.replace(path)  # atomic, like every file kdeval writes
    return path
