"""The demo's data in the realistic distillation regime, cut from the suites' training splits only.

Each task's training split (never its test split) is cut once, in file order:

    [ gold | pool ......... | (unused) | validation ]
    teacher: everything before validation, with gold answers (it stands in for a model that
             has seen far more labelled data than the student's owner has)
    gold:    the first `gold_per_task` examples: the only gold answers the students' side has;
             the baseline is fine-tuned on them alone
    pool:    the next `pool_per_task` prompts, answers dropped: the teacher answers them, and the
             distilled student trains on those answers plus the gold set
    valid:   the last `valid_per_task` examples, in the task's own file format: held out from every
             model, scored by benchmarks/experiment_demo_regime.py to choose sizes and methods

Every file is named by its content, so the same cut is the same path (and a finished model on it
is recognised as finished).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdeval.datafiles import write_atomic
from kdeval.distill.suitedata import pair_records, train_examples
from kdeval.plugins import Catalog

if TYPE_CHECKING:
    from kdeval.distill.config import DistillConfig
    from kdeval.distill.demo import DemoConfig


@dataclass(frozen=True)
class Splits:
    """Trainer JSONL files (teacher, gold, pool) and per-task validation files (task format)."""

    teacher: Path
    gold: Path
    pool: Path
    valid: dict[str, Path]


def write_named(folder: Path, stem: str, records: Iterable[dict[str, Any]]) -> Path:
    """Records as JSONL under a name derived from their content; written once."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    path = folder / f"{stem}-{hashlib.sha256(text.encode()).hexdigest()[:12]}.jsonl"
    if not path.is_file():
        write_atomic(path, text)
    return path


def split_data(cfg: DemoConfig, catalog: Catalog, folder: Path) -> Splits:
    """Cut every demo task's training split as the module docstring says."""
    teacher: list[dict[str, Any]] = []
    gold: list[dict[str, Any]] = []
    pool: list[dict[str, Any]] = []
    valid: dict[str, Path] = {}
    for name in cfg.tasks:
        task = catalog.tasks[name]
        examples = train_examples(task)
        n_valid = min(cfg.valid_per_task, len(examples) // 4)
        rest = examples[: len(examples) - n_valid]
        teacher += pair_records(task, rest[: cfg.teacher_per_task])
        gold += pair_records(task, rest[: cfg.gold_per_task])
        pool += map(_unlabelled, pair_records(task, rest[cfg.gold_per_task :][: cfg.pool_per_task]))
        assert task.train_path is not None  # train_examples checked it
        valid[name] = write_named(folder, f"valid-{name}", _rows(task.train_path, examples[-n_valid:]))
    return Splits(
        teacher=write_named(folder, "teacher", teacher),
        gold=write_named(folder, "gold", gold),
        pool=write_named(folder, "pool", pool),
        valid=valid,
    )


def _unlabelled(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "response"}


def _rows(path: Path, examples: Sequence[Any]) -> list[dict[str, Any]]:
    """The split file's own rows for `examples` (so `compare --data` reads them as the task does)."""
    wanted = {ex.id for ex in examples}
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    chosen = [r for r in rows if r.get("id") in wanted]
    if len(chosen) != len(wanted):
        raise ValueError(f"{path}: {len(wanted) - len(chosen)} validation examples not found by id")
    return chosen


def count_lines(path: Path) -> int:
    with path.open(encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def distilled_data(teacher: DistillConfig, splits: Splits, folder: Path, progress: bool) -> Path:
    """The gold set plus the pool answered by the teacher (seqkd's stage 1: generated through
    kdeval's backends, greedy, cached by teacher fingerprint and prompt), as one trainer JSONL."""
    from kdeval.distill.data import read_records
    from kdeval.distill.seqkd import teacher_responses
    from kdeval.distill.suitedata import messages_json

    answered = teacher_responses(teacher, read_records(splits.pool), progress=progress)
    pool = ({"id": r.id, "messages": messages_json(r.messages), "response": r.response} for r in answered)
    gold = (json.loads(line) for line in splits.gold.read_text(encoding="utf-8").splitlines())
    return write_named(folder, "distilled", [*gold, *pool])
