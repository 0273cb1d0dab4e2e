"""The markdown leaderboard a team keeps in its repository (`kdeval leaderboard`).

One row per model, deduplicated by model fingerprint: the newest run of a model wins
(`keep="last"`: the last file given wins instead). The output is built to diff well in git:
fixed column order (families alphabetically), fixed number formats, deterministic sorting with
ties broken by name and fingerprint, runs numbered oldest first, and no "generated at" stamp.

Columns: rank, model, checkpoint, parameters, one per family (mean of its tasks' primary
metrics), overall (mean of the families), retention (overall ÷ the same run's teacher overall),
the sort key when it is none of these, latency p50 and peak memory when a run measured them
(`efficiency`), the run's date and a reference to the run list below the table.

Only rows of comparable runs are ranked together: the newest run is the reference, and a run
whose settings or tasks differ from it (another limit, suite version, data, prompts, budget;
`kdeval.runs.run_differences`, the gate's notion) has its rows listed after the ranked ones,
unranked and marked ≠, with what differs under the table.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Literal

from kdeval.errors import UserError
from kdeval.metrics import METRICS, combine
from kdeval.report.formats import portable_path
from kdeval.results import EFFICIENCY, Figures
from kdeval.runs import LoadedRun, run_differences

Keep = Literal["newest", "last"]
#: fidelity columns shown when a run computed them: measure -> header
_FIDELITY = {"kl": "KL to teacher", "top1": "top-1 agree %"}
_NONE = "—"
_MARK = "≠"
_SHOWN = 6  # differences listed per run not ranked


@dataclass(frozen=True)
class Row:
    fingerprint: str
    name: str
    path: str
    n_params: int | None
    families: dict[str, float]
    overall: float | None
    retention: float | None
    scores: dict[tuple[str, str], float]  # (task, metric) -> score
    tasks: dict[str, tuple[str, str]]  # task -> (family, primary metric)
    efficiency: Figures | None
    run: LoadedRun
    order: int  # position of the run on the command line
    #: why this row's run is not comparable with the reference run (empty: it is, and is ranked)
    differs: tuple[str, ...] = ()
    #: overall token-level fidelity to the run's teacher by measure (kdeval.fidelity), when computed
    fidelity: dict[str, float] = field(default_factory=dict)

    @property
    def created(self) -> dt.datetime:
        return _when(self.run)


def _when(run: LoadedRun) -> dt.datetime:
    when = dt.datetime.fromisoformat(run.result.created_at)  # checked when the file was read
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def build(runs: list[LoadedRun], keep: Keep = "newest") -> list[Row]:
    """One row per fingerprint, in no particular order (`render` sorts); rows of runs not
    comparable with the newest run say why in `differs`."""
    rows: dict[str, Row] = {}
    for order, run in enumerate(runs):
        for row in _rows(run, order):
            old = rows.get(row.fingerprint)
            if old is None or keep == "last" or row.created >= old.created:
                rows[row.fingerprint] = row  # on equal dates the later file wins
    if not rows:
        return []
    reference = max(rows.values(), key=lambda r: (r.created, r.order)).run
    runs_shown = {id(r.run): r.run for r in rows.values()}
    differs = {
        key: tuple(run_differences(reference, run, labels=("newest run", "this run")))
        for key, run in runs_shown.items()
    }
    return [replace(r, differs=differs[id(r.run)]) for r in rows.values()]


def _rows(run: LoadedRun, order: int) -> list[Row]:
    r = run.result
    summary = {(s.model, s.scope, s.name): s.value for s in r.summary}
    teacher = r.role("teacher")
    t_overall = summary.get((teacher, "overall", "overall")) if teacher else None
    tasks = {t.name: (t.family, t.primary_metric) for t in r.tasks}
    out = []
    for m in r.models:
        name = m.name
        overall = summary.get((name, "overall", "overall"))
        retention = overall / t_overall if overall is not None and t_overall and name != teacher else None
        scores = {(s.task, s.metric): s.value for s in r.scores if s.model == name and s.value is not None}
        families = {k[2]: v for k, v in summary.items() if k[:2] == (name, "family")}
        out.append(
            Row(
                m.fingerprint,
                name,
                m.path,
                m.n_params,
                families,
                overall,
                retention,
                scores,
                tasks,
                r.efficiency.get(name),
                run,
                order,
                fidelity={
                    f.measure: f.value
                    for f in r.fidelity
                    if f.model == name and f.scope == "overall" and f.value is not None
                },
            )
        )
    return out


# --- sorting --------------------------------------------------------------------------------


def sort_value(row: Row, key: str) -> float | None:
    """The value `--sort KEY` ranks by (None when the row lacks it)."""
    if key == "overall":
        return row.overall
    if key == "retention":
        return row.retention
    if key in row.families:
        return row.families[key]
    group, _, stat = key.partition(".")
    if group in EFFICIENCY:
        return row.efficiency.figure(key) if row.efficiency else None
    if group == "fidelity":
        return row.fidelity.get(stat)
    if not stat:  # a bare name: a task's primary metric, or a metric over all tasks
        group, stat = ("overall", group) if group in METRICS else (group, "primary")
    scope, metric = group, stat
    picked = [
        (fam, row.scores.get((t, primary if metric == "primary" else metric)))
        for t, (fam, primary) in row.tasks.items()
        if scope in ("overall", t, fam)
    ]
    known = [(f, v) for f, v in picked if v is not None]
    return float(combine([v for _, v in known], [f for f, _ in known])) if known else None


def _check_key(rows: list[Row], key: str) -> None:
    if any(sort_value(r, key) is not None for r in rows) or not rows:
        return
    fams = sorted({f for r in rows for f in r.families})
    tasks = sorted({t for r in rows for t in r.tasks})
    raise UserError(
        f"nothing to sort by '{key}'",
        fix=f"use overall, retention, a family ({', '.join(fams)}), a task ({', '.join(tasks)}), "
        "SCOPE.METRIC (e.g. qa.f1), latency.p50 or fidelity.kl",
    )


def _lower_is_better(key: str) -> bool:
    group, _, stat = key.partition(".")
    if group == "fidelity":
        from kdeval.fidelity.measures import MEASURES

        return stat in MEASURES and not MEASURES[stat].higher_is_better
    return group in EFFICIENCY and not EFFICIENCY[group][3]


def ranked(rows: list[Row], key: str = "overall") -> list[tuple[int | None, Row]]:
    """Rows best first with competition ranks (1, 2, 2, 4); rows without the value come last,
    and after them, unranked, the rows of runs not comparable with the reference run."""
    _check_key(rows, key)
    sign = 1.0 if _lower_is_better(key) else -1.0

    def order(row: Row) -> tuple[bool, bool, float, str, str]:
        v = sort_value(row, key)
        return (bool(row.differs), v is None, sign * v if v is not None else 0.0, row.name, row.fingerprint)

    out: list[tuple[int | None, Row]] = []
    previous: float | None = None
    for i, row in enumerate(sorted(rows, key=order)):
        v = sort_value(row, key)
        if v is None or row.differs:
            out.append((None, row))
            continue
        rank = out[-1][0] if out and previous is not None and round(v, 9) == round(previous, 9) else i + 1
        out.append((rank, row))
        previous = v
    return out


# --- rendering ------------------------------------------------------------------------------


def _num(x: float | None, fmt: str) -> str:
    return _NONE if x is None else format(x, fmt)


def render(rows: list[Row], sort: str = "overall", keep: Keep = "newest") -> str:
    """The leaderboard as markdown; the same rows and key always give the same bytes."""
    ordered = ranked(rows, sort)
    runs = sorted({id(r.run): r.run for r in rows}.values(), key=lambda run: (_when(run), str(run.path)))
    ref = {id(run): i + 1 for i, run in enumerate(runs)}
    fams = sorted({f for r in rows for f in r.families})
    extra = sort not in ("overall", "retention", *fams)
    lat = any(sort_value(r, "latency.p50") is not None for r in rows)
    mem = any(sort_value(r, "memory.peak") is not None for r in rows)
    fid = [k for k in _FIDELITY if any(k in r.fidelity for r in rows)]
    extra = extra and sort not in (f"fidelity.{k}" for k in fid)  # already a column
    head = ["rank", "model", "checkpoint", "parameters", *fams, "overall", "retention"]
    head += [_FIDELITY[k] for k in fid]
    head += [sort] * extra + ["latency p50 (ms)"] * lat + ["peak memory (MiB)"] * mem
    head += ["date", "run", "fingerprint"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(_align(h) for h in head) + " |"]
    for rank, r in ordered:
        cells = [
            str(rank) if rank else _MARK if r.differs else _NONE,
            r.name,
            f"`{portable_path(r.path)}`" if r.path else _NONE,
        ]
        cells.append(f"{r.n_params:,}" if r.n_params else _NONE)
        cells += [_num(r.families.get(f), ".1f") for f in fams]
        cells += [_num(r.overall, ".1f"), _num(None if r.retention is None else 100 * r.retention, ".1f")]
        cells[-1] += "%" if r.retention is not None else ""
        cells += [_num(r.fidelity.get(k), ".3f" if k == "kl" else ".1f") for k in fid]
        cells += [_num(sort_value(r, sort), ".1f")] * extra
        cells += [_num(sort_value(r, "latency.p50"), ".1f")] * lat + [
            _num(sort_value(r, "memory.peak"), ".0f")
        ] * mem
        cells += [r.created.date().isoformat(), f"[{ref[id(r.run)]}]", f"`{r.fingerprint[:12]}`"]
        lines.append("| " + " | ".join(cells) + " |")
    apart = _apart(rows, ref)
    return "\n".join(
        [
            *_preamble(sort, keep),
            *lines,
            *apart,
            "",
            "Runs:",
            "",
            *(_run_line(ref[id(x)], x) for x in runs),
            "",
        ]
    )


def _apart(rows: list[Row], ref: dict[int, int]) -> list[str]:
    """Under the table: which runs were not ranked with the rest, and what differs."""
    differs = {id(r.run): r for r in rows if r.differs}
    if not differs:
        return []
    newest = next(ref[id(r.run)] for r in rows if not r.differs)
    lines = [
        "",
        f"{_MARK} not ranked: these runs are not comparable with run [{newest}], the newest "
        "(scores made under other settings or on other tasks do not rank together):",
        "",
    ]
    for r in sorted(differs.values(), key=lambda r: ref[id(r.run)]):
        shown, more = r.differs[:_SHOWN], len(r.differs) - _SHOWN
        lines.append(f"- [{ref[id(r.run)]}]: {'; '.join(shown)}" + (f"; and {more} more" if more > 0 else ""))
    return lines


def _align(column: str) -> str:
    return "---" if column in ("model", "checkpoint", "run", "fingerprint", "date") else "---:"


def _preamble(sort: str, keep: Keep) -> list[str]:
    direction = "lowest" if _lower_is_better(sort) else "highest"
    source = "the newest run of each model" if keep == "newest" else "the last file given with each model"
    return [
        "# kdeval leaderboard",
        "",
        f"Ranked by {sort} ({direction} first). Family columns: mean of the family's tasks' primary "
        "metrics (0–100); overall: mean of the families; retention: overall ÷ the same run's teacher. "
        f"One row per model fingerprint, from {source}. KL to teacher and top-1 agree: token-level fidelity "
        "(overall, teacher-forced on the teacher's outputs; — when not computed, e.g. tokenizers differ).",
        "",
    ]


def _run_line(i: int, run: LoadedRun) -> str:
    r = run.result
    commit = f" · commit `{r.commit}`" if r.commit else ""
    command = " ".join(r.command)
    return f"[{i}] {r.created_at} · kdeval {r.kdeval_version}{commit} · `{command}`"
