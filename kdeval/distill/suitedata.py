"""Training data from the suites: a task's shipped training split -> the trainer's JSONL.

`--train nli_synth` (a task), `--train nli` (a suite: its offline tasks), `--train nli_synth,qa_synth`
(several, concatenated; the trainer shuffles) and `--train qa_synth:500` (the first 500 examples)
all name training splits instead of files. Each example becomes one record per stage:

    {"id": "nli_synth/nli-train-00000/0", "messages": [{"role": "user", ...}], "response": " yes"}

with the prompt messages from `Task.training_pair`, i.e. exactly the request the task sends when it
evaluates, so a student is trained on the format it is scored with. The file is written once to a
cache folder under a name derived from its content, so the same selection always yields the same
path (and a finished training run on it is recognised as finished).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kdeval.datafiles import write_atomic
from kdeval.errors import UserError
from kdeval.plugins import Catalog
from kdeval.tasks import Example, Message, Task


def cache_root() -> Path:
    """$KDEVAL_CACHE, else ~/.cache/kdeval."""
    return Path(os.environ.get("KDEVAL_CACHE") or Path.home() / ".cache" / "kdeval")


def messages_json(messages: tuple[Message, ...]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def pair_records(task: Task, examples: list[Example]) -> Iterator[dict[str, Any]]:
    """One training record per (example, stage), ids unique across tasks."""
    for ex in examples:
        for stage in range(task.stages):
            messages, response = task.training_pair(ex, stage)
            yield {
                "id": f"{task.name}/{ex.id}/{stage}",
                "messages": messages_json(messages),
                "response": response,
            }


def train_examples(task: Task) -> list[Example]:
    """The task's training split; tasks without one are a UserError naming those that have one."""
    if task.train_path is None:
        raise UserError(
            f"task '{task.name}' has no shipped training split",
            fix="pass a JSONL file to --train, or a task with one (nli_synth, qa_synth, math_synth, ...)",
        )
    return task.load(task.train_path)


def select(spec: str, catalog: Catalog) -> list[tuple[Task, int | None]]:
    """'NAME[:N][,NAME[:N]...]' -> (task, limit) pairs; a suite NAME means its offline tasks."""
    chosen: list[tuple[Task, int | None]] = []
    for part in (p.strip() for p in spec.split(",")):
        name, _, count = part.partition(":")
        limit = _count(count, part) if count else None
        if name in catalog.suites:
            chosen += [(t, limit) for t in catalog.suites[name].tasks if t.offline]
        elif name in catalog.tasks:
            chosen.append((catalog.tasks[name], limit))
        else:
            raise UserError(
                f"'{name}' is neither a file nor a suite or task",
                fix=f"known tasks with training splits: {', '.join(trainable(catalog))}",
            )
    return chosen


def _count(text: str, part: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"bad example count in '{part}'", fix="write NAME:N with N a positive integer")
    return int(text)


def trainable(catalog: Catalog) -> list[str]:
    return [t.name for t in catalog.tasks.values() if t.train_path is not None]


def looks_like_name(value: str) -> bool:
    """A --train value that is not an existing file and reads as NAME[:N][,...] (no path syntax)."""
    return not Path(value).exists() and not any(c in value for c in "/\\") and not value.endswith(".jsonl")


def build_records(spec: str, catalog: Catalog) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for task, limit in select(spec, catalog):
        examples = train_examples(task)
        records += pair_records(task, examples[:limit] if limit else examples)
    return records


def write_training_file(spec: str, catalog: Catalog, folder: Path | None = None) -> Path:
    """The JSONL for `spec` in `folder` (default: the cache), named by its content; written once."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in build_records(spec, catalog))
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    safe = spec.replace(",", "+").replace(":", "-")[:80]
    path = (folder or cache_root() / "train_data") / f"{safe}-{digest}.jsonl"
    if not path.is_file():
        write_atomic(path, text)
    return path


def resolve_train(value: str, catalog: Catalog | None = None) -> str:
    """A --train value as a file path: files pass through, suite/task names become the cached JSONL."""
    if not looks_like_name(value):
        return value
    from kdeval.plugins import load_catalog

    return str(write_training_file(value, catalog or load_catalog()))
