"""The prompts the cost is measured on: a fixed sample from the suites, or a user's file.

A prompt is either messages (rendered by each model's own codec, so a model with a chat
template is measured on the prompt it really sees) or token ids (used as they are, which is how
`benchmarks/bench_vs_vllm_bench.py` matches vLLM's random prompts of a given length).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from kdeval.datafiles import read_jsonl, read_lines
from kdeval.errors import UserError
from kdeval.tasks import Message, Task

if TYPE_CHECKING:
    from kdeval.backends.prompting import PromptCodec

Prompt = tuple[Message, ...] | list[int]
_ROLES = ("system", "user", "assistant")


def sample_tasks(tasks: Sequence[tuple[Task, Sequence[Any]]], n: int, seed: int = 0) -> list[Prompt]:
    """n first-turn prompts, taken in turn from each task's examples (a seeded sample of each).

    `tasks` pairs each task with its loaded examples, so `compare` measures on its own run's data."""
    pools = []
    for task, examples in tasks:
        picked = random.Random(seed).sample(list(examples), min(n, len(examples)))
        pools.append([task.request(ex, []).messages for ex in picked])
    out: list[Prompt] = []
    for i in range(max((len(p) for p in pools), default=0)):
        out += [pool[i] for pool in pools if i < len(pool)]
    return out[:n]


def from_suites(name: str | None, n: int, seed: int = 0) -> list[Prompt]:
    """A sample from a suite's (or one task's) shipped data; all offline tasks when name is None."""
    from kdeval.plugins import load_catalog

    catalog = load_catalog()
    if name is None:
        tasks = [t for s in catalog.suites.values() for t in s.tasks if t.offline]
    elif name in catalog.suites:
        tasks = [t for t in catalog.suites[name].tasks if t.offline]
    elif name in catalog.tasks:
        tasks = [catalog.tasks[name]]
    else:
        known = ", ".join(sorted(catalog.suites))
        raise UserError(
            f"--prompts {name}: no such file, suite or task",
            fix=f"pass a .jsonl/.txt file or a suite ({known})",
        )
    offline = [t for t in tasks if t.offline]
    if not offline:
        raise UserError(f"--prompts {name}: no shipped data to sample", fix="pass a prompts file instead")
    return sample_tasks([(t, t.load(None)) for t in offline], n, seed)


def from_file(path: Path) -> list[Prompt]:
    """One prompt per line of a .txt file, or per object of a .jsonl file with
    "prompt_token_ids" (ids), "prompt" (text) or "messages" ([{role, content}])."""
    if path.suffix != ".jsonl":
        return [(Message("user", ln),) for _, ln in read_lines(path)]
    out: list[Prompt] = []
    for lineno, obj in read_jsonl(path):
        out.append(_prompt(obj, f"{path}:{lineno}"))
    if not out:
        raise UserError("no prompts in the file", where=str(path))
    return out


def _prompt(obj: dict[str, Any], where: str) -> Prompt:
    if "prompt_token_ids" in obj:
        return [int(t) for t in obj["prompt_token_ids"]]
    if isinstance(obj.get("prompt"), str):
        return (Message("user", obj["prompt"]),)
    msgs = obj.get("messages")
    if isinstance(msgs, list) and msgs and all(m.get("role") in _ROLES for m in msgs):
        return tuple(Message(m["role"], str(m["content"])) for m in msgs)
    raise UserError(
        "a prompt needs 'prompt_token_ids', 'prompt' or 'messages' (roles system/user/assistant)",
        where=where,
    )


def load(spec: str | None, n: int, seed: int = 0) -> list[Prompt]:
    """--prompts: a file if one exists at that path, else a suite or task name."""
    if spec is not None and Path(spec).is_file():
        return from_file(Path(spec))
    return from_suites(spec, n, seed)


def write(prompts: Sequence[Prompt], path: Path) -> None:
    """Prompts as a .jsonl file `from_file` reads back (how compare hands them to a subprocess)."""
    lines = []
    for p in prompts:
        if isinstance(p, list):
            lines.append(json.dumps({"prompt_token_ids": p}))
        else:
            lines.append(json.dumps({"messages": [{"role": m.role, "content": m.content} for m in p]}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def encode(
    prompts: Sequence[Prompt], codec: PromptCodec | None, max_model_len: int, output_len: int
) -> list[Any]:
    """Token ids per prompt, left-truncated so prompt + output_len fit the context window.

    A server without a local tokenizer (codec None) gets the prompts as text, rendered without a
    chat template; token-id prompts need the tokenizer they were made with."""
    room = max_model_len - output_len
    if room < 1:
        raise UserError(
            f"--output-len {output_len} leaves no room for a prompt in --max-model-len {max_model_len}"
        )
    if codec is None:
        from kdeval.backends.prompting import render_plain

        if any(isinstance(p, list) for p in prompts):
            raise UserError(
                "token-id prompts need the model's tokenizer", fix="give the model a tokenizer: option"
            )
        return [render_plain(p) for p in prompts if not isinstance(p, list)]
    ids = [p if isinstance(p, list) else codec.encode_text(codec.render(p)) for p in prompts]
    return [row[-room:] for row in ids]


T = TypeVar("T")


def cycle(prompts: list[T], n: int) -> list[T]:
    """n prompts, repeating the sample when it is shorter (prefix caching is off in the bench).

    >>> cycle([[1], [2]], 3)
    [[1], [2], [1]]
    """
    return [prompts[i % len(prompts)] for i in range(n)]
