"""`kdeval run pipeline.yaml`: distill, then compare teacher / baseline / distilled, from one file.

The file reads like a distillation job (teacher, student, data, task type, hyperparameters),
then says what to compare on. Paths are relative to the working directory, as on the command line:

    teacher: Qwen/Qwen2.5-1.5B-Instruct
    student: Qwen/Qwen2.5-0.5B-Instruct
    task_type: nli                    # nli | qa | math | summarization | conversation
    data:
      train: nli_synth                # a JSONL file, or a suite / task name (its training split)
      valid: data/valid.jsonl         # optional, JSONL with responses
    distill:                          # any `kdeval distill` setting; defaults as there
      method: kd
      lr: 2.0e-5
    compare:
      baseline: sft                   # a model path, "sft" (train the student on the gold
                                      # responses, same settings), or omitted (the untouched student)
      limit: 200
    out: runs/my-distillation         # OUT/distilled, OUT/baseline (if trained), OUT/compare

Every problem in the file is one line naming file:line. Training jobs resume where they stopped,
and a finished one is not redone; the comparison reuses every stored output of an unchanged model.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kdeval.config import RunSpec
from kdeval.distill.config import DistillConfig
from kdeval.errors import UserError
from kdeval.outdir import check_out, hold
from kdeval.runconfig import CompareSettings, Entry, ModelEntry
from kdeval.yamlfile import Lines, line_of, read_yaml

Family = Literal["nli", "qa", "math", "summarization", "conversation"]
#: Set at the top of the file, so the `distill:` section holds hyperparameters only.
_TOP_LEVEL = ("teacher", "student", "train", "valid", "out")


class DataSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: str = Field(description="JSONL of prompts (and responses), or a suite / task name")
    valid: str | None = None


class CompareSection(CompareSettings):
    """`kdeval compare`'s settings (the run file's schema); the models come from the pipeline."""

    baseline: str | None = Field(
        default=None, description="model path, 'sft', or None (the untouched student)"
    )


class Pipeline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    teacher: Entry = Field(description="a path, hub id or server URL, or a model entry as in a run file")
    student: str
    task_type: Family | None = Field(
        default=None, description="what the student is for; default suite to compare"
    )
    data: DataSection
    distill: dict[str, Any] = Field(default_factory=dict)
    compare: CompareSection = CompareSection()
    out: str


def _validation_error(exc: ValidationError, file: Path, lines: Lines, prefix: tuple[str, ...]) -> UserError:
    err = exc.errors()[0]
    loc = (*prefix, *(x for x in err["loc"]))
    key = ".".join(str(x) for x in loc)
    where = f"{file}:{line_of(lines, loc)}"
    if err["type"] == "extra_forbidden":
        top = prefix == ("distill",) and loc[-1] in _TOP_LEVEL
        fix = (
            f"set '{loc[-1]}' at the top level of the file"
            if top
            else "check the spelling (see examples/pipeline.yaml)"
        )
        return UserError(f"unknown key '{key}'", where=where, fix=fix)
    if err["type"] == "missing":
        return UserError(f"missing key '{key}'", where=where, fix="add it (see examples/pipeline.yaml)")
    return UserError(f"{key}: {err['msg'].removeprefix('Value error, ')}", where=where, fix="fix that value")


def load_pipeline(file: Path) -> tuple[Pipeline, Lines]:
    """Parse and validate the file; YAML and schema errors are UserErrors at file:line."""
    data, lines = read_yaml(file, missing="pipeline file not found", fix="pass an existing YAML file")
    if not isinstance(data, dict):
        raise UserError("expected a mapping (teacher:, student:, data:, ...)", where=f"{file}:1")
    try:
        pipeline = Pipeline.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, file, lines, ()) from None
    distill_config(pipeline, file, lines, pipeline.data.train)  # hyperparameter errors surface now
    compare_spec(pipeline, "distilled", "baseline", file, lines)  # and the comparison's, before training
    return pipeline, lines


def distill_config(
    p: Pipeline, file: Path, lines: Lines, train: str, *, out: str | None = None, sft: bool = False
) -> DistillConfig:
    """The `distill:` section plus the top-level paths; `sft` makes the gold-only baseline job."""
    values: dict[str, Any] = {**p.distill, "student": p.student, "train": train, **_teacher_fields(p.teacher)}
    values.update(valid=p.data.valid, out=out or str(Path(p.out) / "distilled"))
    if sft:  # same hyperparameters, no teacher: the fair baseline
        values.update(
            method="sft", teacher=None, teacher_backend=None, teacher_options={}, teacher_thinking="auto"
        )
        values.update(topk=None, topk_cache=None)
    for key in _TOP_LEVEL:
        if key in p.distill:
            raise UserError(
                f"unknown key 'distill.{key}'",
                where=f"{file}:{line_of(lines, ('distill', key))}",
                fix=f"set '{key}' at the top level of the file",
            )
    try:
        return DistillConfig.model_validate(values)
    except ValidationError as exc:
        raise _validation_error(exc, file, lines, ("distill",)) from None


def _teacher_fields(t: ModelEntry) -> dict[str, Any]:
    """The distill settings that say where the teacher is and how it is served."""
    path = t.path or t.options.get("base_url")
    return {
        "teacher": path,
        "teacher_backend": t.backend,
        "teacher_options": t.options,
        "teacher_thinking": t.thinking,
    }


def run_pipeline(file: Path, *, progress: bool = True, log: Callable[[str], None] | None = None) -> Path:
    """Train what is missing, compare, write OUT/compare/report.md; returns that report's path."""
    from kdeval.distill.suitedata import resolve_train

    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    p, lines = load_pipeline(file)
    check_compare(p, file, lines)  # a typo in compare: must not wait for hours of training
    with hold(Path(p.out), ["kdeval", "run", str(file)], flag="out:", where=_where(file, lines, "out")):
        train_file = resolve_train(p.data.train)
        distilled = distill_config(p, file, lines, train_file)
        baseline = _baseline(p, file, lines, train_file, say, progress)
        say(f"distill ({distilled.method}) -> {distilled.out}")
        _train(distilled, progress)
        return _compare(p, distilled.out, baseline, file, say, progress)


def check_compare(p: Pipeline, file: Path, lines: Lines) -> None:
    """The comparison's inputs, checked before any training: its suites, tasks and data files
    exist and load (as `kdeval compare` loads them), and its output folders can be written."""
    from kdeval.plugins import load_catalog
    from kdeval.runner import load_tasks

    spec = compare_spec(p, "distilled", "baseline", file, lines)
    check_out(Path(p.out), flag="out:", where=_where(file, lines, "out"))
    check_out(spec.out, flag="compare.out:", where=_where(file, lines, "compare", "out"))
    catalog = load_catalog()
    for key, args in (
        ("suites", (spec.suites, [], [])),
        ("tasks", ([], spec.tasks, [])),
        ("data", ([], [], list(spec.data))),
    ):
        _at(partial(catalog.select, *args), _where(file, lines, "compare", key))
    for task, path in spec.data.items():  # each data file read now, its errors at its own line
        only = spec.model_copy(update={"suites": [], "tasks": [task], "data": {task: path}})
        _at(partial(load_tasks, only, catalog), _where(file, lines, "compare", "data", task))
    rest = [t for t in spec.tasks if t not in spec.data]
    if spec.suites or rest:  # and the tasks without a data file (shipped or downloaded data)
        others = spec.model_copy(update={"tasks": rest, "data": {}})
        _at(partial(load_tasks, others, catalog), _where(file, lines, "compare", "tasks"))


def _where(file: Path, lines: Lines, *key: str) -> str:
    return f"{file}:{line_of(lines, key)}"


def _at(check: Callable[[], object], where: str) -> None:
    """Run a check; a UserError that names no place gets the pipeline file's line."""
    try:
        check()
    except UserError as exc:
        if exc.where is not None:
            raise
        raise UserError(exc.what, where=where, fix=exc.fix) from None


def _train(cfg: DistillConfig, progress: bool) -> None:
    from kdeval.distill import is_complete, train

    if not is_complete(cfg):
        # resume=True continues an interrupted run; a folder holding a different run is refused.
        train(cfg, resume=True, progress=progress)


def _baseline(
    p: Pipeline, file: Path, lines: Lines, train_file: str, say: Callable[[str], None], progress: bool
) -> str:
    if p.compare.baseline is None:
        return p.student
    if p.compare.baseline != "sft":
        return p.compare.baseline
    cfg = distill_config(p, file, lines, train_file, out=str(Path(p.out) / "baseline"), sft=True)
    say(f"baseline (sft on the gold responses) -> {cfg.out}")
    _train(cfg, progress)
    return cfg.out


def compare_spec(p: Pipeline, distilled: str, baseline: str, file: Path, lines: Lines) -> RunSpec:
    """The comparison as a run file would say it: the teacher entry, the two students, `compare:`'s
    settings (one schema with `kdeval compare --config`); errors point at the pipeline file's lines."""
    models = {
        "teacher": p.teacher,
        "baseline": ModelEntry(path=baseline),
        "distilled": ModelEntry(path=distilled),
    }
    suites = p.compare.suites or ([p.task_type] if p.task_type and not p.compare.tasks else [])
    settings = p.compare.model_copy(update={"suites": suites})
    # the run file's key paths: models.teacher.* is the pipeline's teacher.*, settings are compare.*
    as_run = {("models", *k): n for k, n in lines.items() if k[:1] == ("teacher",)}
    as_run |= {k[1:]: n for k, n in lines.items() if k[:1] == ("compare",) and len(k) > 1}
    return settings.spec_for(models, default_out=Path(p.out) / "compare", lines=as_run, file=file)


def read_yaml_lines(file: Path) -> Lines:
    return read_yaml(file, missing="pipeline file not found", fix="pass an existing YAML file")[1]


def _compare(
    p: Pipeline, distilled: str, baseline: str, file: Path, say: Callable[[str], None], progress: bool
) -> Path:
    from kdeval.compare import compare
    from kdeval.distill.demo import tqdm_progress
    from kdeval.efficiency.bench import BenchConfig
    from kdeval.fidelity.phase import FidelityConfig
    from kdeval.plugins import load_catalog

    c = p.compare
    models = {
        "teacher": p.teacher,
        "baseline": ModelEntry(path=baseline),
        "distilled": ModelEntry(path=distilled),
    }
    suites = c.suites or ([p.task_type] if p.task_type and not c.tasks else [])
    settings = c.model_copy(update={"suites": suites})
    spec = settings.spec_for(models, default_out=Path(p.out) / "compare", file=file, prefix=("compare",))
    say(f"compare: teacher / baseline / distilled ({spec.backend}) -> {spec.out}")
    compare(
        spec,
        load_catalog(),
        argv=["kdeval", "run", str(file)],
        log=say,
        progress=tqdm_progress if progress else None,
        efficiency=BenchConfig() if c.efficiency else None,
        fidelity=FidelityConfig(topk=c.fidelity_topk) if c.fidelity else None,
    )
    return spec.out / "report.md"
