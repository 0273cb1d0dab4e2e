"""Suite discovery through the `kdeval.suites` entry-point group.

Built-in suites register through the same group as third-party packages, so there is one
path for both. Nothing is imported until a suite is asked for, and a broken third-party
plugin is reported and skipped rather than taking the whole tool down.
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from kdeval.errors import UserError
from kdeval.tasks import Suite, Task

GROUP = "kdeval.suites"
#: Built-in families first, in the order the report reads best; plugins after them by name.
_ORDER = ("nli", "qa", "math", "summarization", "conversation")


@dataclass
class Catalog:
    suites: dict[str, Suite]
    #: suites (and their tasks) refused at load, by name: the reason is raised when one is asked for
    broken: dict[str, UserError] = field(default_factory=dict)

    @property
    def tasks(self) -> dict[str, Task]:
        return {t.name: t for s in self.suites.values() for t in s.tasks}

    def suite_of(self, task: Task) -> Suite:
        return next(s for s in self.suites.values() if task in s.tasks)

    def select(self, suites: list[str], tasks: list[str], data_tasks: list[str]) -> list[Task]:
        """Tasks to run: the named ones, else the offline tasks of the named suites, plus every
        task the user gave data for; with no suite or task named, the data's tasks alone (or, with
        no data either, the offline tasks of every suite)."""
        known = self.tasks
        for name in [*suites, *tasks, *data_tasks]:
            if name in self.broken and name not in known and name not in self.suites:
                raise self.broken[name]
        for name in suites:
            if name not in self.suites:
                raise UserError(
                    f"unknown suite '{name}'", fix=f"known suites: {', '.join(sorted(self.suites))}"
                )
        for name in [*tasks, *data_tasks]:
            if name not in known:
                raise UserError(f"unknown task '{name}'", fix=f"known tasks: {', '.join(sorted(known))}")
        if tasks:
            chosen = list(tasks)
        elif not suites and data_tasks:
            chosen = []
        else:
            pool = [self.suites[s] for s in suites] if suites else list(self.suites.values())
            chosen = [t.name for s in pool for t in s.tasks if t.offline]
        chosen += [d for d in data_tasks if d not in chosen]
        order = list(known)  # suites in catalog order, tasks in suite order
        return [known[n] for n in sorted(chosen, key=order.index)]


def check_metrics(task: Task, plugin: str) -> None:
    """A task's metric names, checked when its suite loads (not after every model ran): each is a
    registered metric (kdeval.metrics, group `kdeval.metrics`) or a computed one (pass@k, maj@N),
    and the primary metric is one of them. Imports no metric."""
    from kdeval.metrics import close_matches, is_known

    for name in task.metrics:
        if not is_known(name):
            close = close_matches(name)
            hint = f"did you mean {', '.join(close)}?" if close else "see `kdeval.metrics.names()`"
            raise UserError(
                f"{plugin}: task '{task.name}' uses unknown metric '{name}'",
                fix=f"{hint} (a metric from another package needs that package installed)",
            )
    if task.primary_metric not in task.metrics:
        close = difflib.get_close_matches(task.primary_metric, list(task.metrics), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UserError(
            f"{plugin}: task '{task.name}' has primary_metric '{task.primary_metric}', "
            f"which is not among its metrics ({', '.join(task.metrics)})",
            fix=f"{hint}name one of its metrics or add it to `metrics`",
        )


def load_catalog() -> Catalog:
    """All suites from installed entry points. Set KDEVAL_LOAD_PLUGINS=name,name to restrict."""
    only = os.environ.get("KDEVAL_LOAD_PLUGINS")
    allowed = None if only is None else {n.strip() for n in only.split(",") if n.strip()}
    suites: dict[str, Suite] = {}
    broken: dict[str, UserError] = {}
    seen_tasks: dict[str, str] = {}
    eps = entry_points(group=GROUP)
    for ep in sorted(eps, key=lambda e: (_ORDER.index(e.name) if e.name in _ORDER else len(_ORDER), e.name)):
        if allowed is not None and ep.name not in allowed:
            continue
        try:
            suite = ep.load()
        except Exception as exc:  # a third-party plugin's bug must not break kdeval
            print(
                f"kdeval: warning: suite plugin '{ep.name}' ({ep.value}) failed to load: {exc}",
                file=sys.stderr,
            )
            continue
        if not isinstance(suite, Suite):
            print(
                f"kdeval: warning: plugin '{ep.name}' is not a kdeval.tasks.Suite; skipped", file=sys.stderr
            )
            continue
        try:
            for task in suite.tasks:
                check_metrics(task, f"suite plugin '{ep.name}' ({ep.value})")
        except UserError as exc:
            # Asked for, it is this one line (exit 2, before any model runs); otherwise it is
            # skipped with a warning, as a plugin that fails to import is.
            print(f"kdeval: warning: {exc}; its suite is skipped", file=sys.stderr)
            broken |= {name: exc for name in (ep.name, suite.name, *(t.name for t in suite.tasks))}
            continue
        for task in suite.tasks:
            if task.name in seen_tasks:
                raise UserError(
                    f"task '{task.name}' is defined by two suites, "
                    f"'{seen_tasks[task.name]}' and '{suite.name}'",
                    fix="uninstall one of the plugins or rename the task",
                )
            seen_tasks[task.name] = suite.name
        suites[suite.name] = suite
    return Catalog(suites, broken)
