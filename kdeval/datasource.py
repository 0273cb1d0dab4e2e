"""Where a task's data comes from: shipped files, the user's --data file, or the public URL."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

from kdeval.errors import UserError
from kdeval.tasks import Task


def cache_dir() -> Path:
    return Path(os.environ.get("KDEVAL_CACHE", Path.home() / ".cache" / "kdeval"))


def resolve(task: Task, given: str | None) -> Path | None:
    """The file to load for a task, or None for its shipped data."""
    if given is not None:
        path = Path(given).expanduser()
        if not path.exists():
            raise UserError(
                f"data file for task '{task.name}' not found: {given}", fix="check the path given to --data"
            )
        return path
    if task.offline:
        return None
    if task.url is None:
        raise UserError(
            f"task '{task.name}' needs data", fix=f"pass --data {task.name}=FILE ({task.data_source})"
        )
    return _download(task.name, task.url)


def _download(name: str, url: str) -> Path:
    target = cache_dir() / "data" / name / url.rsplit("/", 1)[-1]
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as resp, tmp.open("wb") as fh:
            fh.write(resp.read())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(
            f"task '{name}' has no local data and {url} could not be downloaded ({exc})",
            fix=f"download it yourself and pass --data {name}=FILE",
        ) from None
    tmp.replace(target)
    return target
