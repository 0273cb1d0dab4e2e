"""Runs as pandas DataFrames, for notebooks, and their CSV/Parquet export (`kdeval export`).

    from kdeval.frames import leaderboard_frame, samples_frame, scores_frame

    scores_frame("runs/x")                      # one row per (model, task, metric)
    samples_frame("runs/x", model="distilled")  # one row per (model, task, example)
    leaderboard_frame(["runs/x", "runs/y"])     # one row per model, ranked as `kdeval leaderboard`

Runs are read through `kdeval.runs`, so a bad file is the same one-line UserError as elsewhere.
pandas is imported here only, and this module only when called: `kdeval --help` stays fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kdeval.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

    from kdeval.runs import LoadedRun

RunPath = Path | str
#: what `kdeval export` can write
TABLES = ("scores", "samples", "leaderboard")
#: per-example record keys left out of samples_frame (bootstrap rows, raw choice logprobs)
_INTERNAL = ("rows", "choice_logprobs")


def _load(run: RunPath | LoadedRun) -> LoadedRun:
    from kdeval.runs import LoadedRun, load_run

    return run if isinstance(run, LoadedRun) else load_run(Path(run))


def scores_frame(run: RunPath | LoadedRun) -> pd.DataFrame:
    """Every score of a run: model, role, task, family, metric, primary (is the task's primary
    metric), value (0-100), ci_low, ci_high (95% bootstrap) and n (examples)."""
    import pandas as pd

    r = _load(run).result
    roles = {m.name: m.role for m in r.models}
    tasks = {t.name: t for t in r.tasks}
    rows = [
        {
            "model": s.model,
            "role": roles.get(s.model),
            "task": s.task,
            "family": tasks[s.task].family if s.task in tasks else None,
            "metric": s.metric,
            "primary": s.task in tasks and tasks[s.task].primary_metric == s.metric,
            "value": s.value,
            "ci_low": s.ci_low,
            "ci_high": s.ci_high,
            "n": s.n,
        }
        for s in r.scores
    ]
    columns = ["model", "role", "task", "family", "metric", "primary", "value", "ci_low", "ci_high", "n"]
    return pd.DataFrame(rows, columns=columns)


def samples_frame(
    run: RunPath | LoadedRun, model: str | None = None, task: str | None = None
) -> pd.DataFrame:
    """Per-example records: model, task, id, prompt, output (the last turn of each when a task has
    several), answer, references, then one column per metric with the example's score. Other
    scalar fields of the records (e.g. a thinking trace) ride along; bootstrap rows do not."""
    import pandas as pd

    loaded = _load(run)
    r = loaded.result
    models, tasks = [m.name for m in r.models], [t.name for t in r.tasks]
    for name, have, flag in ((model, models, "--model"), (task, tasks, "--task")):
        if name is not None and name not in have:
            raise UserError(
                f"{flag.lstrip('-')} '{name}' is not in this run (have: {', '.join(have)})",
                where=str(loaded.path),
                fix=f"pass {flag} with one of them",
            )
    rows: list[dict[str, Any]] = []
    metrics: dict[str, None] = {}
    for m in models if model is None else [model]:
        for t in tasks if task is None else [task]:
            if f"{m}/{t}" not in r.samples:
                continue  # a model a run did not score on a task (e.g. a failed model)
            for rec in loaded.records(m, t).values():
                row: dict[str, Any] = {"model": m, "task": t}
                for key, value in rec.items():
                    if key in _INTERNAL:
                        continue
                    if key == "scores" and isinstance(value, dict):
                        metrics.update(dict.fromkeys(value))
                        row.update(value)
                    elif key in ("prompt", "output") and isinstance(value, list):
                        row[key] = value[-1] if value else None
                    else:
                        row[key] = value
                rows.append(row)
    lead = ["model", "task", "id", "prompt", "output", "answer", "references"]
    frame = pd.DataFrame(rows)
    order = [c for c in lead if c in frame.columns] + [c for c in metrics if c in frame.columns]
    return frame[order + [c for c in frame.columns if c not in order]] if rows else pd.DataFrame(columns=lead)


def leaderboard_frame(
    paths: Sequence[RunPath | LoadedRun], sort: str = "overall", keep: Literal["newest", "last"] = "newest"
) -> pd.DataFrame:
    """The leaderboard of `kdeval leaderboard` as a frame: rank (empty for unranked rows), model,
    path, n_params, overall, retention, one column per family and per task.metric, run (its
    results.json) and differs (why a run is not comparable with the reference run; empty: it is)."""
    import pandas as pd

    from kdeval.report import leaderboard

    rows = leaderboard.build([_load(p) for p in paths], keep)
    families = sorted({f for row in rows for f in row.families})
    scores = sorted({k for row in rows for k in row.scores})
    out = []
    for rank, row in leaderboard.ranked(rows, sort):
        entry: dict[str, Any] = {
            "rank": rank,
            "model": row.name,
            "path": row.path,
            "n_params": row.n_params,
            "overall": row.overall,
            "retention": row.retention,
        }
        entry.update({f: row.families.get(f) for f in families})
        entry.update({f"{t}.{m}": row.scores.get((t, m)) for t, m in scores})
        entry.update(run=str(row.run.path), differs="; ".join(row.differs))
        out.append(entry)
    frame = pd.DataFrame(out)
    if not out:
        return frame
    frame["rank"] = frame["rank"].astype("Int64")
    frame["n_params"] = frame["n_params"].astype("Int64")
    return frame


def write_frame(frame: pd.DataFrame, out: Path) -> None:
    """Write CSV (`.csv`) or Parquet (`.parquet`, needs pyarrow); atomically, like every kdeval write."""
    from kdeval.datafiles import write_atomic

    suffix = out.suffix.lower()
    if suffix == ".csv":
        write_atomic(out, frame.to_csv(index=False))
        return
    if suffix != ".parquet":
        raise UserError(f"cannot tell the format of '{out}'", fix="name the output FILE.csv or FILE.parquet")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise UserError(
            "Parquet export needs pyarrow", fix="pip install pyarrow, or write FILE.csv"
        ) from None
    tmp = out.with_name(f".{out.name}.tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(tmp, index=False)
    tmp.replace(out)


def export(
    table: str,
    runs: Sequence[Path],
    out: Path,
    *,
    model: str | None = None,
    task: str | None = None,
    sort: str = "overall",
) -> int:
    """`kdeval export`: write one table of one run (scores, samples) or of several (leaderboard);
    returns the number of rows written."""
    if table not in TABLES:
        raise UserError(f"unknown table '{table}'", fix=f"pass one of: {', '.join(TABLES)}")
    if table != "leaderboard" and len(runs) != 1:
        raise UserError(f"{table} export reads one run, got {len(runs)}", fix="pass one DIR/results.json")
    if table == "leaderboard" and (model or task):
        raise UserError("--model and --task select samples", fix="leave them out of a leaderboard export")
    if table == "scores" and (model or task):
        raise UserError("--model and --task select samples", fix="use --table samples, or leave them out")
    frame = (
        scores_frame(runs[0])
        if table == "scores"
        else samples_frame(runs[0], model, task)
        if table == "samples"
        else leaderboard_frame(runs, sort)
    )
    write_frame(frame, out)
    return len(frame)
