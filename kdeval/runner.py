"""Plan and run: models × tasks, minus what the store already holds.

One backend engine per model, started only when something is missing, shared by all tasks;
the requests of all tasks at the same stage go to the engine together so it batches them.
No printing here: progress and messages go through the callbacks the caller passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from kdeval import datasource
from kdeval.backends.base import Backend
from kdeval.backends.registry import ResolvedModel
from kdeval.config import RunSpec, digest
from kdeval.errors import UserError
from kdeval.plugins import Catalog
from kdeval.store import Store, request_key
from kdeval.tasks import Example, GenerateRequest, Output, Request, Task

Log = Callable[[str], None]


class ProgressBar(Protocol):
    def update(self, n: int = 1) -> object: ...

    def close(self) -> None: ...


Progress = Callable[[str, int], ProgressBar]


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class LoadedTask:
    task: Task
    examples: list[Example]
    data_file: str | None
    data_hash: str
    prompt_hash: str


@dataclass
class ModelOutputs:
    model: ResolvedModel
    info: dict[str, object] = field(default_factory=dict)
    #: task name -> example id -> outputs per stage (of the first sample)
    outputs: dict[str, dict[str, list[Output]]] = field(default_factory=dict)
    #: task name -> example id -> one list of outputs per stage for each sample (`--samples`)
    samples: dict[str, dict[str, list[list[Output]]]] = field(default_factory=dict)
    reused: int = 0
    computed: int = 0

    @property
    def name(self) -> str:
        return self.model.name


BackendFactory = Callable[[RunSpec, ResolvedModel], Backend]


def load_tasks(spec: RunSpec, catalog: Catalog) -> list[LoadedTask]:
    """Select and load every task up front, so bad input fails before any model starts."""
    kdeval_tasks = spec.suites or spec.tasks or spec.data or not spec.lm_eval.tasks
    tasks: list[Task] = catalog.select(spec.suites, spec.tasks, list(spec.data)) if kdeval_tasks else []
    if spec.lm_eval.tasks:
        from kdeval.lmeval.adapter import lmeval_tasks

        tasks += lmeval_tasks(spec.lm_eval, spec.limit)
        _check_unique(tasks)
    loaded = []
    for task in tasks:
        path = datasource.resolve(task, spec.data.get(task.name))
        examples = task.load(path)
        if not examples:
            raise UserError(f"task '{task.name}' has no examples", where=str(path) if path else None)
        if spec.limit is not None:
            examples = examples[: spec.limit]
        first = [_first_request(task, ex) for ex in examples]
        loaded.append(
            LoadedTask(
                task=task,
                examples=examples,
                data_file=str(path) if path else None,
                data_hash=digest([(e.id, e.data) for e in examples]),
                prompt_hash=digest([repr(r) for r in first]),
            )
        )
    return loaded


def _check_unique(tasks: list[Task]) -> None:
    """A kdeval task and an lm-eval task of the same name (gsm8k) would share their results' rows."""
    names = [t.name for t in tasks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(
            f"task {', '.join(dupes)} is both a kdeval task and an lm-eval task of this run",
            fix="run one of the two (in a separate run for the other)",
        )


def _first_request(task: Task, ex: Example) -> Request:
    return task.request(ex, [])


def check_models(spec: RunSpec) -> None:
    if not spec.models:
        raise UserError("no models given", fix="pass --teacher, --baseline, --distilled or --model NAME=PATH")
    names = [m.name for m in spec.models]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise UserError(
            f"model name used twice: {', '.join(sorted(dupes))}", fix="give each model its own name"
        )


def resolve_models(spec: RunSpec, tasks: list[LoadedTask], log: Log) -> list[ResolvedModel]:
    """Every model checked by its backend (paths, options, servers) before any of them runs."""
    from kdeval.backends import resolve

    needs = frozenset(lt.task.task_type for lt in tasks)
    _check_budgets(spec, tasks)
    models = [resolve(spec, m, needs) for m in spec.models]
    for m in models:
        _check_context(spec, m, tasks)
        _check_lmeval_local(m, tasks)
    _warn_same_checkpoint(models, log)
    for m in models:
        where = m.path if m.remote else f"{m.path} ({m.settings.dtype})"
        think = f", thinks in {m.think[0]} ... {m.think[1]}" if m.think else ""
        log(f"{m.name}: {m.backend} backend, {where}{think}")
    return models


def _warn_same_checkpoint(models: list[ResolvedModel], log: Log) -> None:
    """Two models on one checkpoint (same path, or same fingerprint) is most often a slip of a flag."""
    seen: dict[str, ResolvedModel] = {}
    for m in models:
        keys = {m.fingerprint, m.path if m.remote else str(Path(m.path).expanduser().resolve())}
        first = next((seen[k] for k in keys if k in seen), None)
        if first is not None:
            alike = " with the same settings" if first.settings_hash() == m.settings_hash() else ""
            log(
                f"warning: models '{first.name}' and '{m.name}' are the same checkpoint ({m.path})"
                f"{alike}; check their paths if that is not what you meant"
            )
        seen.update(dict.fromkeys(keys, first or m))


def _check_lmeval_local(m: ResolvedModel, tasks: list[LoadedTask]) -> None:
    """lm-eval's requests are raw text tokenized as lm-eval does: local engines only (for now)."""
    lmeval = [lt.task.name for lt in tasks if lt.task.family == "lm-eval"]
    if lmeval and m.remote:
        raise UserError(
            f"model '{m.name}' is a server: lm-eval tasks ({', '.join(lmeval)}) run on local backends only",
            fix="give the model's checkpoint with --backend hf or vllm",
        )


def _check_budgets(spec: RunSpec, tasks: list[LoadedTask]) -> None:
    generate = {lt.task.name for lt in tasks if lt.task.task_type == "generate"}
    for task in spec.max_tokens:
        if task != "*" and task not in generate:
            raise UserError(
                f"--max-tokens {task}=...: '{task}' is not a generation task of this run",
                fix=f"name one of: {', '.join(sorted(generate)) or 'none (this run has no generation task)'}",
            )


def _check_context(spec: RunSpec, m: ResolvedModel, tasks: list[LoadedTask]) -> None:
    """A budget the model's context cannot hold is refused, not silently cut to half the window."""
    window = m.settings.max_model_len
    for lt in tasks:
        if lt.task.task_type != "generate" or not spec.max_tokens:
            continue
        budget = spec.budget(lt.task.name, 0)
        if budget >= window:
            raise UserError(
                f"--max-tokens {budget} for task '{lt.task.name}' does not fit model '{m.name}', "
                f"whose context is {window} tokens (prompt included)",
                fix="lower --max-tokens or raise --max-model-len (up to the model's own context)",
            )


def sample_seed(seed: int, task: str, example_id: str, sample: int) -> int:
    """The seed of one sample: its own, so a sample's answer does not depend on batching or order."""
    return int(digest([seed, task, example_id, sample]), 16) % (2**31 - 1)


def make_request(
    spec: RunSpec, m: ResolvedModel, task: Task, ex: Example, history: list[Output], k: int
) -> Request:
    """The task's request as this run sends it to this model: the run's budget, the model's
    thinking delimiters, and a sample's own seed when there are several samples."""
    req = task.request(ex, history)
    if not isinstance(req, GenerateRequest):
        return req
    seed = sample_seed(spec.seed, task.name, ex.id, k) if spec.samples > 1 else None
    return replace(req, max_tokens=spec.budget(task.name, req.max_tokens), think=m.think, seed=seed)


def n_samples(spec: RunSpec, task: Task) -> int:
    """Samples per example: multiple choice is scored by log-likelihood, one pass is exact."""
    return spec.samples if task.task_type == "generate" else 1


def run_models(
    spec: RunSpec,
    models: list[ResolvedModel],
    tasks: list[LoadedTask],
    store: Store,
    make_backend: BackendFactory,
    log: Log,
    progress: Progress | None = None,
) -> list[ModelOutputs]:
    results = []
    for m in models:
        mo = ModelOutputs(m)
        _run_one(spec, mo, tasks, store, make_backend, log, progress)
        results.append(mo)
    return results


@dataclass
class _Pending:
    """One stage of one model: the requests, their store keys, and those not yet stored."""

    todo: list[tuple[LoadedTask, Example, int, Request]]  # (task, example, sample, request)
    keys: list[str]
    found: dict[str, Output]

    @property
    def missing(self) -> list[int]:
        return [i for i, k in enumerate(self.keys) if k not in self.found]


def _run_one(
    spec: RunSpec,
    mo: ModelOutputs,
    tasks: list[LoadedTask],
    store: Store,
    make_backend: BackendFactory,
    log: Log,
    progress: Progress | None,
) -> None:
    m = mo.model
    settings = m.settings_hash()
    info_key = f"{m.fingerprint}:{settings}"
    for lt in tasks:
        n = n_samples(spec, lt.task)
        mo.samples[lt.task.name] = {ex.id: [[] for _ in range(n)] for ex in lt.examples}
    with _lazy_engine(lambda: make_backend(spec, m)) as engine:
        for stage in range(max(lt.task.stages for lt in tasks)):
            todo = [
                (lt, ex, k, make_request(spec, m, lt.task, ex, chains[k], k))
                for lt in tasks
                if stage < lt.task.stages
                for ex in lt.examples
                for chains in [mo.samples[lt.task.name][ex.id]]
                for k in range(len(chains))
            ]
            keys = [request_key(m.fingerprint, settings, req) for *_, req in todo]
            pending = _Pending(todo, keys, store.get_many(keys))
            missing = pending.missing
            mo.reused += len(todo) - len(missing)
            mo.computed += len(missing)
            log(
                f"{mo.name}: stage {stage + 1}: {len(todo) - len(missing)} of {len(todo)} requests "
                f"reused from the store, {len(missing)} to run"
            )
            if missing:
                bar = progress(f"{mo.name} stage {stage + 1}", len(missing)) if progress else _NoBar()
                backend = engine()
                _serve(backend, pending, missing, store, mo.name, stage, bar)
                store.put_info(info_key, _info_dict(backend))
            for (lt, ex, k, _), key in zip(todo, keys, strict=True):
                mo.samples[lt.task.name][ex.id][k].append(pending.found[key])
    mo.outputs = {t: {ex: chains[0] for ex, chains in per.items()} for t, per in mo.samples.items()}
    mo.info = store.get_info(info_key) or {}
    _warn_no_traces(mo, log)


def _warn_no_traces(mo: ModelOutputs, log: Log) -> None:
    """Delimiters that never appear in any answer are most likely the wrong ones: say so."""
    think = mo.model.think
    outs = [o for per in mo.samples.values() for chains in per.values() for c in chains for o in c]
    generated = [o for o in outs if not o.choice_logprobs]
    if think and generated and not any(o.thinking for o in generated):
        log(
            f"warning: {mo.name}: its thinking delimiters {think[0]} ... {think[1]} appear in none of "
            f"its {len(generated)} answers; if it does not think, pass --thinking {mo.name}=off, "
            "else give its delimiters (--thinking NAME=START,END)"
        )


def _serve(
    backend: Backend, p: _Pending, missing: list[int], store: Store, model: str, stage: int, bar: ProgressBar
) -> None:
    """Run the missing requests, storing each output the moment it completes."""

    def done(j: int, out: Output) -> None:
        i = missing[j]
        lt, ex, k, _ = p.todo[i]
        store.put(p.keys[i], model, lt.task.name, ex.id if k == 0 else f"{ex.id}#{k}", stage, out)
        p.found[p.keys[i]] = out
        bar.update(1)

    try:
        backend.run([p.todo[i][3] for i in missing], done)
    finally:
        bar.close()


def _info_dict(backend: Backend) -> dict[str, object]:
    i = backend.info
    return {
        "backend": backend.name,
        "chat_template": i.chat_template,
        "n_params": i.n_params,
        "dtype": i.dtype,
        **i.extra,
    }


@contextmanager
def _lazy_engine(start: Callable[[], Backend]) -> Iterator[Callable[[], Backend]]:
    """Start the engine on first use only (a fully reused model never loads) and always close it."""
    holder: list[Backend] = []

    def get() -> Backend:
        if not holder:
            holder.append(start())
        return holder[0]

    try:
        yield get
    finally:
        for b in holder:
            b.close()


def default_backend_factory(spec: RunSpec, model: ResolvedModel) -> Backend:
    return model.kind().start(model)


def store_path(out: Path) -> Path:
    return out / "store.sqlite"
