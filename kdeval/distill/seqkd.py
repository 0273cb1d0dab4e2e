"""Sequence-level KD, stage 1: the teacher answers the training prompts (stage 2 is plain SFT).

Generation goes through kdeval's backend layer, the same code `compare` evaluates with (vLLM where
available), greedy by default. Each answer is appended to a JSONL cache as soon as it is done,
keyed by the teacher's fingerprint, the prompt and the generation settings, so stage 2, a re-run
and a run resumed after a crash reuse every answer already written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from kdeval import thinking
from kdeval.backends.base import GenerationSettings
from kdeval.backends.registry import Needs, ResolvedModel
from kdeval.config import digest
from kdeval.distill.config import DistillConfig
from kdeval.distill.data import PromptRecord
from kdeval.tasks import GenerateRequest, Output


def generation_settings(cfg: DistillConfig) -> GenerationSettings:
    return GenerationSettings(
        temperature=0.0,
        seed=cfg.seed,
        dtype="auto",
        max_model_len=max(cfg.max_len, 2 * cfg.teacher_max_tokens),
    )


def teacher_model(cfg: DistillConfig, needs: Needs = frozenset({"generate"})) -> ResolvedModel:
    """The teacher as kdeval's backends serve it: a server (URL), a parallel vLLM engine, or
    transformers, checked the way `compare` checks a model (options, server, tokenizer)."""
    from kdeval.backends import default_backend, resolve_path
    from kdeval.config import is_url

    assert cfg.teacher is not None
    return resolve_path(
        cfg.teacher_backend or ("openai" if is_url(cfg.teacher) else default_backend()),
        cfg.teacher,
        generation_settings(cfg),
        use_chat_template=cfg.use_chat_template,
        trust_remote_code=cfg.trust_remote_code,
        options=cfg.teacher_options,
        thinking=cfg.teacher_thinking,
        needs=needs,
        name="teacher",
        role="teacher",
    )


def teacher_responses(
    cfg: DistillConfig, records: Sequence[PromptRecord], *, progress: bool = True
) -> list[PromptRecord]:
    """`records` with `response` replaced by the teacher's answer (generated, or from the cache)."""
    teacher = teacher_model(cfg)
    settings = teacher.settings
    scope = {
        "teacher": teacher.fingerprint,
        "settings": settings.__dict__,
        "max_tokens": cfg.teacher_max_tokens,
        "chat": cfg.use_chat_template,
        **({"think": teacher.think} if teacher.think else {}),
    }
    keys = [digest({**scope, "messages": [(m.role, m.content) for m in r.messages]}) for r in records]
    path = cfg.responses_path()
    cached = read_cache(path)
    todo = [i for i, k in enumerate(keys) if k not in cached]
    if todo:
        _generate(cfg, teacher, [records[i] for i in todo], [keys[i] for i in todo], path, cached, progress)
    return [replace(r, response=cached[k]) for r, k in zip(records, keys, strict=True)]


def whole_answer(output: Output, think: tuple[str, str] | None) -> str:
    """What the teacher wrote after the prompt: trace (if any) and answer, as one text."""
    if not output.thinking:
        return output.text
    delims = think or thinking.DEFAULT  # a server's reasoning parser split it: R1's delimiters
    opened = thinking.opens_trace(output.prompt, delims)
    return thinking.full_text(output.reasoning, output.text, output.thinking, delims, opened)


def read_cache(path: Path) -> dict[str, str]:
    """key -> response from the cache file (lines cut short by a crash are skipped)."""
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            out[row["key"]] = row["response"]
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return out


def _generate(
    cfg: DistillConfig,
    teacher: ResolvedModel,
    records: Sequence[PromptRecord],
    keys: Sequence[str],
    path: Path,
    cached: dict[str, str],
    progress: bool,
) -> None:
    import sys

    from tqdm import tqdm

    # The teacher's whole answer is the target, its thinking trace included (the R1-Distill recipe).
    think = teacher.think
    requests = [
        GenerateRequest(messages=r.messages, max_tokens=cfg.teacher_max_tokens, think=think) for r in records
    ]
    backend = teacher.kind().start(teacher)
    path.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(requests), desc="teacher answers", unit="req", disable=not progress, file=sys.stderr)
    try:
        with path.open("a", encoding="utf-8") as fh:

            def done(i: int, output: Output) -> None:
                response = whole_answer(output, think)
                row = {"key": keys[i], "id": records[i].id, "response": response}
                if output.thinking:
                    row["thinking"] = output.thinking  # "open": the trace ran out of tokens
                fh.write(json.dumps(row) + "\n")
                fh.flush()
                cached[keys[i]] = response
                bar.update(1)

            backend.run(requests, done)
    finally:
        bar.close()
        backend.close()
