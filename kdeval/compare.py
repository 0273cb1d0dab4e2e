"""`kdeval compare` end to end: validate, run (resumable), score, write results and report."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from kdeval import __version__
from kdeval.aggregate import N_RESAMPLES, Aggregated, aggregate
from kdeval.config import RunSpec
from kdeval.datafiles import write_atomic
from kdeval.derive import derive
from kdeval.outdir import check_out, hold
from kdeval.plugins import Catalog
from kdeval.report.cost import PLOT_NAME, write_plot
from kdeval.report.markdown import render
from kdeval.results import Figures, ModelRow, RunResult, RunSettings, TaskRow
from kdeval.runner import (
    BackendFactory,
    LoadedTask,
    Log,
    ModelOutputs,
    Progress,
    check_models,
    default_backend_factory,
    load_tasks,
    n_samples,
    resolve_models,
    run_models,
    store_path,
)
from kdeval.runs import read_results
from kdeval.store import Store

if TYPE_CHECKING:
    from kdeval.backends.registry import ResolvedModel
    from kdeval.efficiency.bench import BenchConfig
    from kdeval.fidelity.phase import FidelityConfig


def compare(
    spec: RunSpec,
    catalog: Catalog,
    *,
    argv: list[str],
    log: Log,
    progress: Progress | None = None,
    make_backend: BackendFactory = default_backend_factory,
    efficiency: BenchConfig | None = None,
    fidelity: FidelityConfig | None = None,
) -> RunResult:
    check_models(spec)
    check_out(spec.out)
    tasks = load_tasks(spec, catalog)  # every input error surfaces here, before anything is written
    extra = _evaluate_modules(spec, tasks)
    resolved = resolve_models(spec, tasks, log)  # paths, engine options, servers: checked, not started
    with hold(spec.out, argv):  # one run at a time writes to a folder
        phases = (efficiency, extra, fidelity)
        return _run(spec, catalog, tasks, resolved, argv, log, progress, make_backend, *phases)


def _evaluate_modules(spec: RunSpec, tasks: list[LoadedTask]) -> dict[str, list[object]]:
    """`--metric TASK=evaluate:...` modules, loaded up front (nothing imported without one)."""
    if not spec.evaluate:
        return {}
    from kdeval.lmeval.evaluate_metrics import load_modules

    return load_modules(spec, tasks)


def _run(
    spec: RunSpec,
    catalog: Catalog,
    tasks: list[LoadedTask],
    resolved: list[ResolvedModel],
    argv: list[str],
    log: Log,
    progress: Progress | None,
    make_backend: BackendFactory,
    efficiency: BenchConfig | None,
    extra: dict[str, list[object]],
    fidelity: FidelityConfig | None = None,
) -> RunResult:
    out = spec.out
    # An older results.json must not pass for this run's if this run dies half-way.
    for name in ("results.json", "report.md", PLOT_NAME):
        (out / name).unlink(missing_ok=True)
    store = Store(store_path(out))
    try:
        models = run_models(spec, resolved, tasks, store, make_backend, log, progress)
        agg = aggregate(tasks, models, spec.seed, out / "samples")
        if extra:
            from kdeval.lmeval.evaluate_metrics import add_scores

            add_scores(extra, agg, out)
        result = _quality_result(spec, catalog, tasks, models, agg, argv)
        result.write(out / "results.json")  # the quality results are safe before the later phases
        if fidelity is not None:
            from kdeval.fidelity.phase import run_fidelity

            result.fidelity = run_fidelity(spec, tasks, models, store, make_backend, log, fidelity, progress)
            result.write(out / "results.json")
    finally:
        store.close()
    if efficiency is not None:
        from kdeval.efficiency.bench import measure_run

        figures = measure_run(spec, resolved, tasks, log, efficiency)
        result.efficiency = {name: Figures.model_validate(fig) for name, fig in figures.items()}
        result.write(out / "results.json")
    write_plot(result, out)
    write_atomic(out / "report.md", render(result))
    return result


def _quality_result(
    spec: RunSpec,
    catalog: Catalog,
    tasks: list[LoadedTask],
    models: list[ModelOutputs],
    agg: Aggregated,
    argv: list[str],
) -> RunResult:
    result = RunResult(
        kdeval_version=__version__,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        command=argv,
        settings=RunSettings.model_validate(_settings(spec)),
        models=[ModelRow.model_validate(_model_entry(m)) for m in models],
        tasks=[
            TaskRow.model_validate(_task_entry(lt, catalog, spec, agg.metrics[lt.task.name], agg.dropped))
            for lt in tasks
        ],
        scores=agg.scores,
        agreement=agg.agreement,
        samples=agg.samples,
        generation=agg.generation,
        similarity=agg.similarity,
        commit=_commit(),
    )
    derive(result)
    return result


def rerender(results_path: Path, out: Path | None = None) -> str:
    """`kdeval report`: the report from stored results, no model runs."""
    if results_path.is_dir():
        results_path = results_path / "results.json"
    result = read_results(results_path)
    derive(result)
    text = render(result)
    target = out or results_path.with_name("report.md")
    write_plot(result, target.parent)  # beside the report, where its link points
    write_atomic(target, text)
    return text


def _commit() -> str | None:
    """The revision of the repository the run was started from, for leaderboards."""
    if os.environ.get("GITHUB_SHA"):
        return os.environ["GITHUB_SHA"]
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def _settings(spec: RunSpec) -> dict[str, object]:
    return {
        "backend": spec.backend,
        "temperature": spec.temperature,
        "top_p": spec.top_p,
        "seed": spec.seed,
        "dtype": spec.dtype,
        "max_model_len": spec.max_model_len,
        "batch_size": spec.batch_size,
        "use_chat_template": spec.use_chat_template,
        "limit": spec.limit,
        # written only when set, so runs without them stay comparable with earlier ones
        **({"max_tokens": spec.max_tokens} if spec.max_tokens else {}),
        **({"samples": spec.samples} if spec.samples > 1 else {}),
        "bootstrap_resamples": N_RESAMPLES,
        "settings_hash": spec.settings_hash(),
    }


def _model_entry(mo: ModelOutputs) -> dict[str, object]:
    m = mo.model
    return {
        "name": m.name,
        "role": m.role,
        "path": m.path,
        "fingerprint": m.fingerprint,
        "reused": mo.reused,
        "computed": mo.computed,
        **mo.info,
        "backend": m.backend,  # the backend this run used (the stored info may be older)
        "remote": m.remote,
        "dtype": m.settings.dtype if m.settings.dtype != "auto" else mo.info.get("dtype", "auto"),
        "max_model_len": m.settings.max_model_len,
        "options": m.kind().public_options(m.options),
        "output_options": m.output_options,
        "settings_hash": m.settings_hash(),
        **({"thinking": list(m.think)} if m.think else {}),
        **({"server": m.facts} if m.facts else {}),
    }


def _task_entry(
    lt: LoadedTask, catalog: Catalog, spec: RunSpec, metrics: list[str], dropped: dict[str, dict[str, int]]
) -> dict[str, object]:
    t = lt.task
    why = dropped.get(t.name, {})
    generate = t.task_type == "generate"
    budget = spec.max_tokens.get(t.name, spec.max_tokens.get("*"))  # None: the task's own
    return {
        "name": t.name,
        "suite": "lm-eval" if t.family == "lm-eval" else catalog.suite_of(t).name,
        "family": t.family,
        "version": t.version,
        "task_type": t.task_type,
        "metrics": metrics,
        "primary_metric": t.primary_metric,
        # the budget this run gave it (absent: the task's own), and samples per example
        **({"max_tokens": budget} if generate and budget is not None else {}),
        **({"samples": n_samples(spec, t)} if n_samples(spec, t) > 1 else {}),
        "n_examples": len(lt.examples),
        # examples some model could not be scored on are dropped for all (kdeval.aggregate)
        **({"compared": len(lt.examples) - sum(why.values()), "dropped": why} if why else {}),
        "data_file": lt.data_file,
        "data_hash": lt.data_hash,
        "prompt_hash": lt.prompt_hash,
    }
