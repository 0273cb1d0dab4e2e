"""Thinking traces: where a reasoning model's trace ends and its answer begins.

A reasoning model writes `<think> ... </think>` and then its answer (DeepSeek-R1 and its
distilled students; the chat template often opens the trace itself, so the output starts inside
it). Scoring sees only the answer; a trace that never closes leaves no answer (an empty answer,
scored as wrong and counted apart). A task's stop strings apply to the answer only: the engine is
not given them (they would cut the trace, e.g. a "\\n" stop right after "<think>"), and the answer
is cut at the first of them here, the same way on every backend.

Delimiters are per model: given (`thinking: "<think>,</think>"`), switched off (`"off"`), or by
default (`"auto"`) read from the model's chat template or tokenizer where they are declared.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: Pairs looked for in a chat template / vocabulary when a model's thinking is "auto".
KNOWN = (
    ("<think>", "</think>"),
    ("<thinking>", "</thinking>"),
    ("<|begin_of_thought|>", "<|end_of_thought|>"),
)
DEFAULT = KNOWN[0]

State = Literal["", "closed", "open"]


@dataclass(frozen=True)
class Split:
    """One generation, split.

    trace:  the text before the closing delimiter, as generated (or all of it when it never closed).
    answer: the text after the closing delimiter, cut at the first stop string.
    state:  "" (no trace), "closed", or "open" (the trace never closed: no answer).
    stopped: the answer ended on a stop string.
    """

    trace: str
    answer: str
    state: State
    stopped: bool


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def split(text: str, delims: tuple[str, str] | None, stop: Sequence[str] = (), opened: bool = False) -> Split:
    """Split a generation into trace and answer.

    `opened` says the prompt itself ends inside a trace (the chat template wrote the opening
    delimiter), so an output without the closing one is an unfinished trace, not an answer.

    >>> split("<think>a\\nb</think> 42\\nQuestion: more", ("<think>", "</think>"), ["Question:"])
    Split(trace='<think>a\\nb', answer=' 42\\n', state='closed', stopped=True)
    >>> split("still thinking", ("<think>", "</think>"), opened=True).state
    'open'
    >>> split("no trace here", ("<think>", "</think>")).answer
    'no trace here'
    """
    if delims is None:
        answer, hit = cut_at_stop(text, stop)
        return Split("", answer, "", hit)
    start, end = delims
    at = text.find(end)
    if at >= 0:
        answer, hit = cut_at_stop(text[at + len(end) :], stop)
        return Split(text[:at], answer, "closed", hit)
    if opened or start in text:
        return Split(text, "", "open", False)
    answer, hit = cut_at_stop(text, stop)
    return Split("", answer, "", hit)


def shown_trace(trace: str, delims: tuple[str, str] | None) -> str:
    """The trace without its opening delimiter, for people to read."""
    if delims is None:
        return trace
    t = trace.lstrip()
    return t[len(delims[0]) :].lstrip() if t.startswith(delims[0]) else trace.strip()


def full_text(
    reasoning: str, answer: str, state: str, delims: tuple[str, str] | None, opened: bool = False
) -> str:
    """The whole generation again, trace included (what seqkd trains a thinking student on).

    `opened`: the prompt already ends with the opening delimiter, so the completion must not
    repeat it. A trace a server returned apart (reasoning parser) comes without delimiters."""
    if not state or delims is None:
        return answer
    start, end = delims
    head = reasoning if opened or reasoning.lstrip().startswith(start) else f"{start}{reasoning}"
    return head if state == "open" else f"{head}{end}{answer}"


def opens_trace(prompt: str, delims: tuple[str, str] | None) -> bool:
    """True when the rendered prompt ends inside a trace (the template opened it)."""
    return delims is not None and prompt.rstrip().endswith(delims[0])


# -- which delimiters a model uses ----------------------------------------------------------------

Thinking = Literal["auto", "off"] | str


def parse(value: str, where: str | None = None) -> tuple[str, str] | None | Literal["auto"]:
    """A model's `thinking` setting: "auto", "off", or "START,END".

    >>> parse("<think>,</think>"), parse("off"), parse("auto")
    (('<think>', '</think>'), None, 'auto')
    """
    from kdeval.errors import UserError

    v = value.strip()
    if v == "auto":
        return "auto"
    if v in ("off", "none", ""):
        return None
    start, sep, end = v.partition(",")
    if not sep or not start.strip() or not end.strip() or start.strip() == end.strip() or "," in end:
        raise UserError(
            f"thinking delimiters must be 'START,END', 'auto' or 'off', got '{value}'",
            where=where,
            fix="e.g. --thinking distilled='<think>,</think>'",
        )
    return start.strip(), end.strip()


def check_setting(value: str) -> str:
    """A pydantic validator's body: the setting, or ValueError with parse's message."""
    from kdeval.errors import UserError

    try:
        parse(value)
    except UserError as exc:
        raise ValueError(f"{exc.what}; {exc.fix}") from None
    return value


def detect(model_dir: str | Path) -> tuple[str, str] | None:
    """The delimiters a local checkpoint declares: in its chat template, else as added tokens."""
    d = Path(model_dir).expanduser()
    template = _chat_template(d)
    for start, end in KNOWN:
        if start in template and end in template:
            return start, end
    vocab = _added_tokens(d)
    for start, end in KNOWN:
        if start in vocab and end in vocab:
            return start, end
    return None


def _chat_template(d: Path) -> str:
    texts = []
    jinja = d / "chat_template.jinja"
    if jinja.is_file():
        texts.append(jinja.read_text(encoding="utf-8", errors="replace"))
    for name in ("tokenizer_config.json", "chat_template.json"):
        data = _json(d / name)
        value = data.get("chat_template") if isinstance(data, dict) else None
        if isinstance(value, list):  # named templates: [{"name": ..., "template": ...}]
            value = " ".join(str(v.get("template", "")) for v in value if isinstance(v, dict))
        if isinstance(value, str):
            texts.append(value)
    return "\n".join(texts)


def _json(f: Path) -> object:
    if not f.is_file() or f.stat().st_size > 64 << 20:
        return None
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _added_tokens(d: Path) -> set[str]:
    found: set[str] = set()
    for name in ("tokenizer.json", "tokenizer_config.json", "added_tokens.json"):
        data = _json(d / name)
        if not isinstance(data, dict):
            continue
        if name == "tokenizer.json":
            found |= {str(t.get("content")) for t in data.get("added_tokens", []) if isinstance(t, dict)}
        elif name == "tokenizer_config.json":
            decoder = data.get("added_tokens_decoder") or {}
            found |= {str(t.get("content")) for t in decoder.values() if isinstance(t, dict)}
        else:
            found |= set(map(str, data))
    return found
