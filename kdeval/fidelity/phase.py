"""`kdeval compare`'s fidelity phase: every student teacher-forced on the teacher's outputs.

Runs after the quality run, from the teacher's stored outputs. Per-example rows go to the store
keyed by (teacher, student, teacher source, the exact token sequences), so a re-run or a resumed
run computes only what is missing and a report never runs a model. A student that does not share
the teacher's tokenizer (or whose weights are not here) gets a reason instead of numbers.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from kdeval.config import digest
from kdeval.errors import UserError
from kdeval.runner import BackendFactory, LoadedTask, Log, ModelOutputs, Progress

if TYPE_CHECKING:
    from kdeval.backends.prompting import PromptCodec
    from kdeval.backends.registry import ResolvedModel
    from kdeval.config import RunSpec
    from kdeval.distill.data import TokenizedExample
    from kdeval.distill.topk import PromptTopk
    from kdeval.fidelity.compute import TeacherSource
    from kdeval.results import FidelityRow
    from kdeval.store import Store

#: top-k of a served teacher when none is asked for (vLLM's default max_logprobs)
SERVED_K = 20
TOKENIZERS_DIFFER = "tokenizers differ"


@dataclass(frozen=True)
class FidelityConfig:
    #: the teacher's distribution cut to its top k tokens + a tail bucket (None: dense when the
    #: teacher runs in transformers, SERVED_K for a served teacher)
    topk: int | None = None
    batch_size: int = 8
    chunk_size: int = 512


@dataclass
class StudentFidelity:
    """One student's per-example rows by task (in data order), or why there are none."""

    model: str
    source: str = ""
    rows: dict[str, list[list[float]]] = field(default_factory=dict)
    note: str | None = None


def run_fidelity(
    spec: RunSpec,
    tasks: list[LoadedTask],
    models: list[ModelOutputs],
    store: Store,
    make_backend: BackendFactory,
    log: Log,
    config: FidelityConfig,
    progress: Progress | None = None,
) -> list[FidelityRow]:
    """The phase's results.json rows: every student, per task, family and overall."""
    from kdeval.aggregate import N_RESAMPLES
    from kdeval.fidelity.aggregate import fidelity_rows

    teacher = next((m for m in models if m.model.role == "teacher"), None)
    if teacher is None:
        return []
    students = _students(spec, tasks, teacher, models, store, make_backend, log, config, progress)
    families = {lt.task.name: lt.task.family for lt in tasks}
    return fidelity_rows(students, teacher.name, families, spec.seed, N_RESAMPLES)


def _students(
    spec: RunSpec,
    tasks: list[LoadedTask],
    teacher: ModelOutputs,
    models: list[ModelOutputs],
    store: Store,
    make_backend: BackendFactory,
    log: Log,
    config: FidelityConfig,
    progress: Progress | None,
) -> list[StudentFidelity]:
    students = [m for m in models if m is not teacher]
    codec, why = _teacher_codec(teacher.model)
    out = []
    with _teacher_source(spec, teacher.model, config, make_backend) as source:
        for mo in students:
            note = why or _why_not(teacher.model, mo.model, codec)
            if note is not None or codec is None:
                log(f"{mo.name}: fidelity: not computed ({note})")
                out.append(StudentFidelity(mo.name, note=note))
                continue
            out.append(_student(spec, tasks, teacher, mo, codec, source, store, log, config, progress))
    return out


def _teacher_codec(m: ResolvedModel) -> tuple[PromptCodec | None, str | None]:
    from kdeval.backends.prompting import PromptCodec

    path = str(m.facts.get("tokenizer") or m.path)
    try:
        return PromptCodec.from_pretrained(
            path, use_chat_template=m.use_chat_template, trust_remote_code=m.trust_remote_code
        ), None
    except Exception as exc:  # any tokenizer that does not load: the phase says so, the run goes on
        return None, f"the teacher's tokenizer does not load here ({type(exc).__name__})"


def _why_not(teacher: ResolvedModel, student: ResolvedModel, codec: PromptCodec | None) -> str | None:
    if student.remote:
        return "served remotely: fidelity needs the student's weights here"
    from kdeval.distill.models import load_tokenizer

    try:
        tok = load_tokenizer(student.path, trust_remote_code=student.trust_remote_code)
    except Exception as exc:  # as for the teacher's: a reason in the report, not a crash
        return f"the student's tokenizer does not load here ({type(exc).__name__})"
    if codec is None or tok.get_vocab() != codec.tokenizer.get_vocab():
        return TOKENIZERS_DIFFER
    return None


class _LazySource:
    """The teacher's distribution, loaded or started on first use and shared by every student."""

    def __init__(self, spec: RunSpec, m: ResolvedModel, config: FidelityConfig, make: BackendFactory) -> None:
        self.spec, self.m, self.config, self.make = spec, m, config, make
        self.dense = m.backend == "hf"
        self.name = _source_name(self.dense, config.topk)
        self._source: TeacherSource | None = None
        self._closers: list[Any] = []

    def get(self, vocab: int) -> TeacherSource:
        if self._source is None:
            self._source = self._start(vocab)
        return self._source

    def _start(self, vocab: int) -> TeacherSource:
        from kdeval.fidelity.compute import DenseTeacher, ServedTeacher

        if self.dense:
            from kdeval.distill.models import load_model

            model = load_model(self.m.path, trust_remote_code=self.m.trust_remote_code)
            self._closers.append(model)
            return DenseTeacher(model, vocab, self.config.topk)
        backend = self.make(self.spec, self.m)
        self._closers.append(backend)
        if not hasattr(backend, "prompt_topk"):
            raise UserError(
                f"the {self.m.backend} backend cannot give the teacher's top-k log-probs (fidelity phase)",
                fix="run the teacher on vllm or hf, or pass --no-fidelity",
            )
        return ServedTeacher(cast("PromptTopk", backend), vocab, self.config.topk or SERVED_K)

    def close(self) -> None:
        for thing in self._closers:
            if hasattr(thing, "close"):
                thing.close()
        self._closers.clear()
        self._source = None
        gc.collect()


def _source_name(dense: bool, topk: int | None) -> str:
    if dense and topk is None:
        return "dense"
    return f"top-{topk or SERVED_K}"


@contextmanager
def _teacher_source(
    spec: RunSpec, m: ResolvedModel, config: FidelityConfig, make: BackendFactory
) -> Iterator[_LazySource]:
    source = _LazySource(spec, m, config, make)
    try:
        yield source
    finally:
        source.close()


def _student(
    spec: RunSpec,
    tasks: list[LoadedTask],
    teacher: ModelOutputs,
    mo: ModelOutputs,
    codec: PromptCodec,
    source: _LazySource,
    store: Store,
    log: Log,
    config: FidelityConfig,
    progress: Progress | None,
) -> StudentFidelity:
    from kdeval.fidelity.compute import fit
    from kdeval.fidelity.sequences import example_sequences

    limit = min(teacher.model.settings.max_model_len, mo.model.settings.max_model_len)
    todo: list[tuple[LoadedTask, str, str, list[TokenizedExample]]] = []
    for lt in tasks:
        for ex in lt.examples:
            seqs = [
                fit(s, limit)
                for s in example_sequences(lt.task, ex, teacher.outputs[lt.task.name][ex.id], codec, limit)
            ]
            key = digest(
                {
                    "teacher": teacher.model.fingerprint,
                    "student": mo.model.fingerprint,
                    "source": source.name,
                    "seqs": [[list(s.input_ids), s.n_prompt] for s in seqs],
                }
            )
            todo.append((lt, ex.id, key, seqs))
    found = store.get_rows([key for _, _, key, _ in todo])
    missing = [i for i, (_, _, key, _) in enumerate(todo) if key not in found]
    log(
        f"{mo.name}: fidelity ({source.name} teacher): {len(todo) - len(missing)} of {len(todo)} examples "
        f"reused from the store, {len(missing)} to run"
    )
    if missing:
        _compute(mo.model, [todo[i] for i in missing], found, source, store, config, progress)
    rows: dict[str, list[list[float]]] = {}
    for lt, _, key, _ in todo:
        rows.setdefault(lt.task.name, []).append(found[key])
    return StudentFidelity(mo.name, source.name, rows)


def _compute(
    student: ResolvedModel,
    todo: list[tuple[LoadedTask, str, str, list[TokenizedExample]]],
    found: dict[str, list[float]],
    source: _LazySource,
    store: Store,
    config: FidelityConfig,
    progress: Progress | None,
) -> None:
    from kdeval.backends.prompting import PromptCodec
    from kdeval.distill.models import load_model, vocab_size
    from kdeval.fidelity.compute import example_rows

    codec = PromptCodec.from_pretrained(student.path, trust_remote_code=student.trust_remote_code)
    model = load_model(student.path, trust_remote_code=student.trust_remote_code)
    vocab = vocab_size(codec.tokenizer, model)
    bar = progress(f"{student.name} fidelity", len(todo)) if progress else None

    def done(i: int, row: list[float]) -> None:
        lt, example_id, key, _ = todo[i]
        store.put_row(key, student.name, lt.task.name, example_id, row)
        found[key] = row
        if bar is not None:
            bar.update(1)

    try:
        example_rows(
            model,
            vocab,
            [seqs for *_, seqs in todo],
            source.get(vocab),
            pad_id=codec.pad_id,
            on_done=done,
            batch_size=config.batch_size,
            chunk_size=config.chunk_size,
        )
    finally:
        if bar is not None:
            bar.close()
        del model
        gc.collect()
