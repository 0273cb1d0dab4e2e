"""Build lm-eval tasks with lm-eval's own TaskManager, as `kdeval compare --lm-eval-task` names them.

Every failure a user can cause (the extra missing, an unknown task, data that cannot be loaded
offline) is one line: kdeval.errors.UserError.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdeval.errors import UserError

if TYPE_CHECKING:
    from kdeval.config import LmEvalSpec

INSTALL = 'pip install "kdeval[lm-eval]"'


def require(module: str) -> Any:
    """Import lm_eval or evaluate, or say in one line how to get them."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{module} is not installed (an optional extra of kdeval)", fix=INSTALL) from None


def task_manager(spec: LmEvalSpec) -> Any:
    """lm-eval's TaskManager. Indexing lm-eval's own thousands of task YAMLs takes most of its
    start-up, so when every named task is in --lm-eval-include's folders those are indexed alone."""
    require("lm_eval")
    from lm_eval.tasks import TaskManager

    for path in spec.include:
        if not Path(path).is_dir():
            raise UserError(f"--lm-eval-include {path}: not a directory", fix="pass a folder of task YAMLs")
    for name in ("lm_eval", "datasets", "evaluate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if spec.include:
        own = TaskManager(include_path=list(spec.include), include_defaults=False)
        if set(spec.tasks) <= set(own.all_tasks):
            return own
    return TaskManager(include_path=list(spec.include) or None)


def build_tasks(spec: LmEvalSpec) -> dict[str, Any]:
    """lm-eval task name -> its Task object, groups and tags expanded, few-shot settings applied
    as lm_eval.simple_evaluate applies them."""
    tm = task_manager(spec)
    for name in spec.tasks:
        _check_known(tm, name)
    try:
        with quiet():
            loaded = tm.load(list(spec.tasks))
    except Exception as exc:  # a dataset that cannot load (offline, missing file) or a bad YAML
        raise UserError(
            f"lm-eval task {', '.join(spec.tasks)}: could not be built: {_first_line(exc)}",
            fix="check the task's dataset is local (dataset_path / data_files) or the network is up",
        ) from None
    tasks: dict[str, Any] = loaded["tasks"]
    for task in tasks.values():
        _apply_fewshot(task, spec.num_fewshot)
    return tasks


@contextmanager
def quiet() -> Iterator[None]:
    """lm-eval and datasets draw progress bars and log while they load data and build requests:
    kdeval's output stays its own (their errors still surface, as exceptions)."""
    import datasets

    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        if was:
            datasets.enable_progress_bars()


def _check_known(tm: Any, name: str) -> None:
    known = set(tm.all_tasks)
    if name in known or any(c in name for c in "*?["):
        return
    close = difflib.get_close_matches(name, sorted(known), n=3)
    hint = (
        f"did you mean {', '.join(close)}?" if close else "see `lm-eval ls tasks`, or --lm-eval-include DIR"
    )
    raise UserError(f"--lm-eval-task {name}: no such lm-eval task, group or tag", fix=hint)


def _apply_fewshot(task: Any, num_fewshot: int | None) -> None:
    """lm_eval.simple_evaluate's rule: --num-fewshot overrides a task's own unless it says 0."""
    default = task.get_config("num_fewshot")
    if num_fewshot is not None and default != 0:
        task.set_config(key="num_fewshot", value=num_fewshot)
    elif default is None:
        task.set_config(key="num_fewshot", value=0)
    task.set_fewshot_seed(seed=1234)  # simple_evaluate's default fewshot_random_seed


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()
