"""Extra corpus metrics from Hugging Face `evaluate` (`--metric TASK=evaluate:PATH_OR_ID`).

Each module is loaded before any model runs (a bad path fails first) and computed once per model
and task on the answers and references kdeval scored, so its values sit beside kdeval's own in
results.json and the report. evaluate computes corpus values only: they have no interval, and the
gate's paired tests (which need per-example rows) do not apply to them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdeval.errors import UserError
from kdeval.results import ScoreRow

if TYPE_CHECKING:
    from kdeval.aggregate import Aggregated
    from kdeval.config import RunSpec
    from kdeval.runner import LoadedTask

PREFIX = "evaluate:"


def load_modules(spec: RunSpec, tasks: list[LoadedTask]) -> dict[str, list[Any]]:
    """task name -> its loaded evaluate modules; one line (exit 2) for an unknown task or module."""
    if not spec.evaluate:
        return {}
    from kdeval.lmeval.build import require

    evaluate = require("evaluate")
    names = {lt.task.name for lt in tasks}
    modules: dict[str, list[Any]] = {}
    for task, targets in spec.evaluate.items():
        if task not in names:
            raise UserError(
                f"--metric {task}=...: '{task}' is not a task of this run",
                fix=f"name one of: {', '.join(sorted(names))}",
            )
        modules[task] = [_load(evaluate, task, t) for t in targets]
    return modules


def _load(evaluate: Any, task: str, target: str) -> Any:
    from kdeval.lmeval.build import quiet

    path = Path(target).expanduser()
    try:
        with quiet():
            return evaluate.load(str(path) if path.exists() else target)
    except Exception as exc:  # a missing module, a hub id offline, a broken script
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(
            f"--metric {task}=evaluate:{target}: could not load it: {type(exc).__name__}: {first}",
            fix="give a local evaluate module folder, or a hub id where the network allows",
        ) from None


def add_scores(modules: dict[str, list[Any]], agg: Aggregated, out: Path) -> None:
    """Compute every module on each model's answers and add the numeric values as score rows."""
    for key, rel in agg.samples.items():
        model, _, task = key.partition("/")
        for module in modules.get(task, []):
            preds, refs = _pairs(out / rel)
            values = module.compute(predictions=preds, references=refs) if preds else {}
            for name, value in sorted((values or {}).items()):
                if not isinstance(value, int | float) or isinstance(value, bool):
                    continue
                metric = f"{PREFIX}{module.name}" if name == module.name else f"{PREFIX}{module.name}.{name}"
                agg.scores.append(
                    ScoreRow(model=model, task=task, metric=metric, value=float(value), ci_low=None,
                             ci_high=None, n=len(preds))
                )  # fmt: skip
                if metric not in agg.metrics[task]:
                    agg.metrics[task].append(metric)


def _pairs(samples: Path) -> tuple[list[str], list[str]]:
    """(answers, first references) of the examples this run compared (kdeval.aggregate's records)."""
    preds, refs = [], []
    for line in samples.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if r.get("excluded") or not r.get("references"):
            continue
        preds.append(str(r.get("answer", "")))
        refs.append(str(r["references"][0]))
    return preds, refs
