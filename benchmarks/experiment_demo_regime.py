"""The demo's regime, sizes and method, chosen on a validation split over paired seeds (never the test split).

    python benchmarks/experiment_demo_regime.py [--seeds 1 2 3] [--methods seqkd kd] [--gold 50 200]
                                                [--pool 1000] [--workdir DIR] [--out FILE]

The demo's teacher (`kdeval demo`'s settings: every training example but the validation ones,
gold answers) is trained once; it answers the pool's prompts once. For each seed and each gold-set
size, the baseline (the gold set alone) and one distilled student per method (gold set + the
teacher's answers for the pool; kd adds its logits) start from the same random weights with the
same seed and the same number of optimizer steps. All are scored by `kdeval compare` (--backend,
hf by default) on the validation examples: the last --valid examples of each task's TRAINING
split, held out from every model. The test splits are not read.

The table gives, per (gold size, method), the mean over seeds of the overall score (mean of
families) of baseline and distilled, the paired difference with its 95% t-interval over seeds,
and in how many seeds that difference was significant within the seed (paired bootstrap over
examples). Rule fixed before the run: the demo takes the cell whose seed interval has the highest
lower bound. Models land in the demo's cache, so `kdeval demo` reuses the teacher and its answers.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

from kdeval.config import ModelSpec, RunSpec
from kdeval.distill import DistillConfig, is_complete, methods, train
from kdeval.distill.demo import (
    QUICK,
    DemoConfig,
    Shape,
    answer_job,
    default_workdir,
    init_models,
    splits,
    student_jobs,
    teacher_job,
)
from kdeval.distill.demo_data import distilled_data
from kdeval.distill.demo_report import paired_delta
from kdeval.results import RunResult
from kdeval.runs import read_results

#: Two-sided 95% Student t quantiles by degrees of freedom (no scipy needed).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (nan for a single value)."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, math.nan
    return m, T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))


def fit(job: DistillConfig, what: str) -> None:
    started = time.perf_counter()
    if not is_complete(job):
        train(job, resume=True, progress=False)
    print(f"{what}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


def one_seed(base: DemoConfig, seed: int, args: argparse.Namespace, workdir: Path) -> Path:
    """Train the seed's baselines and students for every gold size; score them on validation."""
    from kdeval.compare import compare
    from kdeval.plugins import load_catalog

    cfg = base.model_copy(
        update={"student": Shape(hidden=base.student.hidden, layers=base.student.layers, seed=seed)}
    )
    data = splits(cfg, workdir)
    init = init_models(cfg, data.teacher, workdir)
    teacher = teacher_job(cfg, data.teacher, init["teacher"], workdir)
    fit(teacher, "teacher")
    models = [ModelSpec(name="teacher", path=teacher.out, role="teacher")]
    for gold in args.gold:
        sized = cfg.model_copy(update={"gold_per_task": gold})
        cut = splits(sized, workdir)
        answers = answer_job(sized, cut.pool, teacher.out, workdir, "vllm")
        distilled = distilled_data(answers, cut, workdir / "data", progress=False)
        for method in args.methods:
            jobs = student_jobs(
                sized.model_copy(update={"method": method}),
                cut.gold,
                distilled,
                init["student"],
                teacher.out,
                workdir,
            )
            if method == args.methods[0]:
                fit(jobs["baseline"], f"seed {seed} gold {gold}: baseline")
                role = "baseline" if gold == args.gold[0] else "other"
                models.append(ModelSpec(name=f"baseline-g{gold}", path=jobs["baseline"].out, role=role))
            fit(jobs["distilled"], f"seed {seed} gold {gold}: {method}")
            models.append(ModelSpec(name=f"{method}-g{gold}", path=jobs["distilled"].out, role="other"))
    out = workdir / "experiment" / f"seed-{seed}"
    spec = RunSpec(
        models=models,
        tasks=list(cfg.tasks),
        backend=args.backend,
        data={t: str(p) for t, p in data.valid.items()},
        out=out,
    )
    started = time.perf_counter()
    compare(spec, load_catalog(), argv=["experiment_demo_regime.py"], log=lambda _m: None)
    print(f"seed {seed}: compare {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return out / "results.json"


def overall(r: RunResult, model: str) -> float:
    return next(x.value for x in r.summary if x.model == model and x.scope == "overall")


def table(runs: dict[int, Path], args: argparse.Namespace) -> str:
    results = {s: read_results(p) for s, p in runs.items()}
    head = ["gold / task", "method", "baseline", "distilled", "Δ [95% CI over seeds]", "seeds +/=/−"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for gold in args.gold:
        base = f"baseline-g{gold}"
        for method in args.methods:
            name = f"{method}-g{gold}"
            b = statistics.fmean(overall(r, base) for r in results.values())
            d = statistics.fmean(overall(r, name) for r in results.values())
            diff, half = mean_ci([overall(r, name) - overall(r, base) for r in results.values()])
            calls = [paired_delta(p, base, name).call for p in runs.values()]
            counts = f"{calls.count('better')}/{calls.count('no clear difference')}/{calls.count('worse')}"
            ci = f"{diff:+.2f} [{diff - half:+.2f}, {diff + half:+.2f}]"
            lines.append(f"| {gold} | {method} | {b:.2f} | {d:.2f} | {ci} | {counts} |")
    teacher = statistics.fmean(overall(r, "teacher") for r in results.values())
    return "\n".join(lines) + f"\n\nTeacher on the same validation examples: {teacher:.2f} overall."


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--methods", nargs="+", default=["seqkd", "kd"], choices=methods.teacher_methods())
    p.add_argument("--gold", type=int, nargs="+", default=[50, 200], help="gold examples per task")
    p.add_argument("--pool", type=int, default=DemoConfig().pool_per_task, help="pool prompts per task")
    p.add_argument(
        "--valid", type=int, default=DemoConfig().valid_per_task, help="validation examples per task"
    )
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    p.add_argument("--backend", default="hf", choices=("hf", "vllm"), help="scores the validation set")
    p.add_argument("--quick", action="store_true", help="the demo's --quick models (a smoke run)")
    args = p.parse_args()
    cfg = (QUICK if args.quick else DemoConfig()).model_copy(
        update={"pool_per_task": args.pool, "valid_per_task": args.valid}
    )
    workdir = args.workdir or default_workdir()
    started = time.perf_counter()
    runs = {s: one_seed(cfg, s, args, workdir) for s in args.seeds}
    minutes = (time.perf_counter() - started) / 60
    t, s = cfg.teacher, cfg.student
    note = (
        f"\n\n{len(args.seeds)} paired seeds ({', '.join(map(str, args.seeds))}); validation: the last "
        f"{args.valid} examples of each task's training split (no test example read); pool {args.pool} "
        f"prompts per task; teacher {t.hidden}x{t.layers}, students {s.hidden}x{s.layers}; teacher "
        f"answers on vllm, validation scored on {args.backend}; "
        f"{minutes:.1f} min. Scores: overall (mean of families) in points. Δ = distilled − baseline, "
        "same seed; its interval is the 95% t-interval over seeds. 'seeds +/=/−': seeds where the "
        "distilled student beat / tied / lost to the baseline beyond the within-seed paired "
        "bootstrap interval."
    )
    text = table(runs, args) + note
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
