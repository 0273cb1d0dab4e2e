"""Everything a run needs before its first step: data, student, teacher source, vocabulary guard.

All checks that can fail because of the user's input (files, tokenizers, vocabularies, missing
responses) run here, before any training step, so a bad run stops in seconds with one line.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdeval.distill import methods
from kdeval.distill.config import DistillConfig
from kdeval.distill.data import (
    TokenizedExample,
    collate,
    fingerprint,
    read_records,
    require_responses,
    tokenize,
)
from kdeval.distill.losses import LossSpec
from kdeval.distill.models import check_head, load_model, load_tokenizer, teacher_dtype, vocab_size
from kdeval.distill.objective import DenseTeacher, Objective, TeacherSource
from kdeval.distill.onpolicy import OnPolicy
from kdeval.distill.topk import FORMAT, build_cache, open_cache
from kdeval.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from kdeval.backends.prompting import PromptCodec


@dataclass
class Setup:
    spec: LossSpec
    student: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    codec: PromptCodec
    pad_id: int
    train: list[TokenizedExample]
    valid: list[TokenizedExample]
    objective: Objective
    on_policy: OnPolicy | None = None  # gkd: the student writes a share of the responses


def loss_spec(cfg: DistillConfig) -> LossSpec:
    # methods without a divergence (sft, seqkd) are CE on their responses
    method = cfg.method if methods.get(cfg.method).token_level else "sft"
    return LossSpec(method, cfg.temperature, cfg.alpha, cfg.beta, cfg.skew)


def check_inputs(cfg: DistillConfig) -> None:
    """Paths first: a typo should cost a second, not a model load."""
    from kdeval.config import is_url
    from kdeval.modeldir import check_model

    for role in ("student", "teacher"):
        path = getattr(cfg, role)
        if path is not None and not is_url(path):  # a server is checked when it is first asked
            check_model(role, path, trust_remote_code=cfg.trust_remote_code)
    for flag, path in (("--train", cfg.train), ("--valid", cfg.valid)):
        if path is not None and not Path(path).is_file():
            raise UserError("data file not found", where=path, fix=f"check the path given to {flag}")


def prepare(cfg: DistillConfig, *, progress: bool = True, device: Any = None) -> Setup:
    """Data, student (LoRA-wrapped when asked), teacher source; models on `device` (default: the GPU
    when there is one). `Setup.student` is what trains and is saved; the objective runs its inner
    Hugging Face model."""
    from kdeval.backends.prompting import PromptCodec

    check_inputs(cfg)
    tokenizer = load_tokenizer(cfg.student, trust_remote_code=cfg.trust_remote_code)
    codec = PromptCodec(tokenizer, cfg.use_chat_template)
    train = tokenize(_train_records(cfg, progress), codec, cfg.max_len)
    valid: list[TokenizedExample] = []
    if cfg.valid:
        records = read_records(Path(cfg.valid))
        require_responses(records, "validation")
        valid = tokenize(records, codec, cfg.max_len)
    student = load_model(cfg.student, trust_remote_code=cfg.trust_remote_code, device=device)
    spec = loss_spec(cfg)
    vocab, teacher = _teacher_source(cfg, tokenizer, student, train, codec.pad_id, progress, device)
    check_head(student, collate(train[:1], codec.pad_id), vocab)
    trained = _trainable(cfg, student)
    objective = Objective(spec, student, vocab, cfg.chunk_size, teacher)
    on_policy = _on_policy(cfg, codec) if methods.get(cfg.method).on_policy else None
    return Setup(spec, trained, tokenizer, codec, codec.pad_id, train, valid, objective, on_policy)


def _on_policy(cfg: DistillConfig, codec: PromptCodec) -> OnPolicy:
    return OnPolicy(
        lmbda=cfg.lmbda,
        temperature=cfg.student_temperature,
        max_new_tokens=cfg.student_max_tokens,
        max_len=cfg.max_len,
        seed=cfg.seed,
        pad_id=codec.pad_id,
        eos_ids=tuple(codec.eos_ids),
    )


def _trainable(cfg: DistillConfig, student: PreTrainedModel) -> Any:
    """The student as it trains: gradient checkpointing on when asked, wrapped in LoRA when asked."""
    if cfg.gradient_checkpointing:
        if not student.supports_gradient_checkpointing:
            raise UserError(
                "this student model does not support gradient checkpointing",
                where=cfg.student,
                fix="drop --gradient-checkpointing",
            )
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora_r is None:
        return student
    from kdeval.distill.lora import apply_lora

    return apply_lora(student, cfg)


def _train_records(cfg: DistillConfig, progress: bool) -> list[Any]:
    records = read_records(Path(cfg.train))
    if methods.get(cfg.method).teacher == "text":  # sequence-level KD: the teacher writes them
        from kdeval.distill.seqkd import teacher_responses

        return teacher_responses(cfg, records, progress=progress)
    require_responses(records, cfg.method)
    return records


def _teacher_source(
    cfg: DistillConfig,
    tokenizer: PreTrainedTokenizerBase,
    student: PreTrainedModel,
    train: list[TokenizedExample],
    pad_id: int,
    progress: bool,
    device: Any = None,
) -> tuple[int, TeacherSource | None]:
    """(real vocabulary size, teacher source) after the vocabulary guard."""
    if not methods.get(cfg.method).token_level or cfg.teacher is None:
        return vocab_size(tokenizer, student), None
    if cfg.teacher_served():
        return _served_topk_cache(cfg, tokenizer, student, train, progress)
    teacher_tok = load_tokenizer(cfg.teacher, trust_remote_code=cfg.trust_remote_code)
    if cfg.topk is None:
        teacher = _load_teacher(cfg, device)
        vocab = vocab_size(tokenizer, student, teacher_tok, teacher, cfg.teacher)
        check_head(teacher, collate(train[:1], pad_id), vocab)
        return vocab, DenseTeacher(teacher, vocab, cfg.temperature)
    vocab = vocab_size(tokenizer, student, teacher_tok, None, cfg.teacher)
    return vocab, _topk_cache(cfg, tokenizer, student, train, vocab, pad_id, progress, device)


def _load_teacher(cfg: DistillConfig, device: Any) -> PreTrainedModel:
    """The teacher for inference only: no gradients, in bf16/fp16 or its checkpoint's dtype."""
    assert cfg.teacher is not None
    dtype = teacher_dtype(cfg.precision)
    teacher = load_model(cfg.teacher, trust_remote_code=cfg.trust_remote_code, device=device, dtype=dtype)
    teacher.requires_grad_(False)
    return teacher


def _topk_cache(
    cfg: DistillConfig,
    tokenizer: PreTrainedTokenizerBase,
    student: PreTrainedModel,
    train: list[TokenizedExample],
    vocab: int,
    pad_id: int,
    progress: bool,
    device: Any = None,
) -> TeacherSource:
    """Reuse the cache when it was built for this teacher, data, k, T and vocabulary; else build it."""
    from kdeval.config import model_fingerprint

    assert cfg.teacher is not None and cfg.topk is not None
    identity = _cache_identity(cfg, vocab, train, model_fingerprint(cfg.teacher))
    if cfg.precision != "fp32":  # the teacher runs in half precision (fp32 keeps the old identity)
        identity["teacher_dtype"] = cfg.precision
    folder = cfg.topk_dir()
    cache = open_cache(folder, identity)
    if cache is not None:
        return cache
    teacher = _load_teacher(cfg, device)
    # The tokenizers already matched; this checks the teacher's output layer covers the vocabulary.
    vocab_size(tokenizer, student, tokenizer, teacher, cfg.teacher)
    check_head(teacher, collate(train[:1], pad_id), vocab)
    bar = _bar(len(train), progress)
    cache = build_cache(
        teacher,
        train,
        folder,
        identity,
        pad_id=pad_id,
        chunk_size=cfg.chunk_size,
        shard_examples=cfg.topk_shard,
        progress=bar.update,
    )
    bar.close()
    del teacher  # training never needs it again: its memory goes back before the student trains
    gc.collect()
    return cache


def _served_topk_cache(
    cfg: DistillConfig,
    tokenizer: PreTrainedTokenizerBase,
    student: PreTrainedModel,
    train: list[TokenizedExample],
    progress: bool,
) -> tuple[int, TeacherSource]:
    """The top-k cache filled by a teacher that never enters training memory: a server (vLLM's
    prompt_logprobs with token ids) or a vLLM engine, through kdeval's backends."""
    from kdeval.config import digest
    from kdeval.distill.seqkd import teacher_model
    from kdeval.distill.topk import build_cache_from_backend

    assert cfg.topk is not None
    teacher = teacher_model(cfg, needs=frozenset({"topk"}))
    source = teacher.facts.get("tokenizer") or teacher.path
    teacher_tok = load_tokenizer(source, trust_remote_code=cfg.trust_remote_code)
    vocab = vocab_size(tokenizer, student, teacher_tok, None, cfg.teacher or source)
    identity = _cache_identity(
        cfg, vocab, train, teacher.fingerprint, f"{teacher.backend}:{digest(teacher.output_options)}"
    )
    folder = cfg.topk_dir()
    cache = open_cache(folder, identity)
    if cache is not None:
        return vocab, cache
    backend = teacher.kind().start(teacher)
    if not hasattr(backend, "prompt_topk"):
        backend.close()
        raise UserError(
            f"the {teacher.backend} backend cannot give the teacher's top-k log-probs",
            fix="serve the teacher with vLLM (a URL or teacher_backend: vllm), or drop --teacher-backend",
        )
    bar = _bar(len(train), progress)
    try:
        cache = build_cache_from_backend(
            backend,  # type: ignore[arg-type]
            train,
            folder,
            identity,
            shard_examples=cfg.topk_shard,
            progress=bar.update,
        )
    finally:
        bar.close()
        backend.close()
    return vocab, cache


def _cache_identity(
    cfg: DistillConfig, vocab: int, train: list[TokenizedExample], teacher: str, source: str | None = None
) -> dict[str, Any]:
    """What a top-k cache was built for; a cache for anything else is rebuilt."""
    identity = {
        "format": FORMAT,
        "k": cfg.topk,
        "temperature": cfg.temperature,
        "vocab": vocab,
        "data": fingerprint(train),
        "teacher": teacher,
    }
    return identity if source is None else {**identity, "source": source}


def _bar(total: int, enabled: bool) -> Any:
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc="teacher top-k", unit="ex", disable=not enabled, file=sys.stderr)
