"""Does distillation help the demo's student, and which method? Paired seeds, every method.

    python benchmarks/experiment_methods.py [--seeds 1 2 3] [--methods seqkd kd jsd tvd skl]
                                            [--limit 300] [--workdir DIR] [--out FILE]

The demo's teacher (`kdeval demo`'s settings, trained once and cached) teaches students of the
demo's size. For each seed, the baseline (gold answers only) and one student per method start
from the same random weights and see the same examples in the same order for the same number of
steps; only the loss differs. All are scored by `kdeval compare` (hf backend) on the first
--limit test examples of each demo task. The table gives, per method, the mean over seeds of
each task's primary metric, the overall score (mean of families) with a 95% t-interval over
seeds, the paired difference to the baseline (same seeds) with its 95% t-interval, and in how
many seeds that difference was significant within the seed (paired bootstrap over examples).
Models land in the demo's cache, so `kdeval demo` reuses the seed-1 baseline and kd student.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from kdeval.config import ModelSpec, RunSpec
from kdeval.distill import DistillConfig, is_complete, methods, train
from kdeval.distill.demo import (
    QUICK,
    DemoConfig,
    Shape,
    default_workdir,
    init_models,
    jobs,
    student_job,
    training_data,
)
from kdeval.distill.demo_report import paired_delta
from kdeval.results import RunResult
from kdeval.runs import read_results

#: Every method that learns from the teacher (the registry: kdeval.distill.methods).
METHODS = tuple(methods.teacher_methods())
#: Two-sided 95% Student t quantiles by degrees of freedom (no scipy needed).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (nan for a single value)."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, math.nan
    t = T95.get(len(values) - 1, 1.96)
    return m, t * statistics.stdev(values) / math.sqrt(len(values))


def fit(job: DistillConfig) -> float:
    """Train (unless cached); seconds spent."""
    started = time.perf_counter()
    if not is_complete(job):
        train(job, resume=True, progress=False)
    return time.perf_counter() - started


def one_seed(cfg: DemoConfig, seed: int, methods: list[str], workdir: Path, limit: int) -> Path:
    """Train the seed's baseline and students; compare them; return results.json."""
    from kdeval.compare import compare
    from kdeval.plugins import load_catalog

    seeded = cfg.model_copy(
        update={"student": Shape(hidden=cfg.student.hidden, layers=cfg.student.layers, seed=seed)}
    )
    data = training_data(seeded, workdir)
    init = init_models(seeded, data, workdir)
    teacher = jobs(seeded, data, init, workdir, "hf")["teacher"]
    print(f"seed {seed}: teacher {fit(teacher):.0f} s", file=sys.stderr, flush=True)
    models = [ModelSpec(name="teacher", path=teacher.out, role="teacher")]
    for method in ["sft", *methods]:
        job = student_job(seeded, data, init["student"], workdir, method, teacher.out, "hf")
        print(f"seed {seed}: {method} {fit(job):.0f} s", file=sys.stderr, flush=True)
        name = "baseline" if method == "sft" else method
        models.append(ModelSpec(name=name, path=job.out, role="baseline" if method == "sft" else "other"))
    out = workdir / "experiment" / f"seed-{seed}"
    spec = RunSpec(models=models, tasks=list(cfg.tasks), backend="hf", limit=limit, out=out)
    compare(spec, load_catalog(), argv=["experiment_methods.py"], log=lambda _m: None)
    return out / "results.json"


def table(runs: dict[int, Path], methods: list[str], tasks: tuple[str, ...]) -> str:
    results = {s: read_results(p) for s, p in runs.items()}
    first = next(iter(results.values()))
    primary = {t.name: t.primary_metric for t in first.tasks}

    def overall(r: RunResult, model: str) -> float:
        return next(x.value for x in r.summary if x.model == model and x.scope == "overall")

    head = [
        "model",
        *[f"{t} ({primary[t]})" for t in tasks],
        "overall [95% CI]",
        "Δ vs baseline [95% CI]",
        "seeds +/=/−",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for model in ["teacher", "baseline", *methods]:
        cells = [model]
        for t in tasks:
            vals = [r.value(model, t, primary[t]) for r in results.values()]
            cells.append(f"{statistics.fmean(v for v in vals if v is not None):.1f}")
        m, h = mean_ci([overall(r, model) for r in results.values()])
        cells.append(f"{m:.1f} ± {h:.1f}")
        if model in ("teacher", "baseline"):
            cells += ["—", "—"]
        else:
            d, dh = mean_ci([overall(r, model) - overall(r, "baseline") for r in results.values()])
            calls = [paired_delta(p, "baseline", model).call for p in runs.values()]
            cells.append(f"{d:+.1f} ± {dh:.1f}")
            cells.append(
                f"{calls.count('better')}/{calls.count('no clear difference')}/{calls.count('worse')}"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--limit", type=int, default=300, help="test examples per task")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    p.add_argument("--quick", action="store_true", help="the demo's --quick sizes (a smoke run)")
    args = p.parse_args()
    torch.set_num_threads(1)  # tiny models: a second thread only waits (see kdeval.distill.demo)
    cfg, workdir = QUICK if args.quick else DemoConfig(), args.workdir or default_workdir()
    started = time.perf_counter()
    runs = {s: one_seed(cfg, s, args.methods, workdir, args.limit) for s in args.seeds}
    text = table(runs, args.methods, cfg.tasks)
    minutes = (time.perf_counter() - started) / 60
    note = (
        f"\n\n{len(args.seeds)} seeds ({', '.join(map(str, args.seeds))}), first {args.limit} test examples "
        f"per task, hf backend; {minutes:.1f} min. ± is the 95% t-interval over seeds; "
        "'seeds +/=/−' counts seeds where the method beat / tied / lost to the baseline "
        "beyond the within-seed paired bootstrap interval."
    )
    print(text + note)
    if args.out:
        args.out.write_text(text + note + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
