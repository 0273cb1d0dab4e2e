"""Training data: JSONL of prompts (and optional responses) -> token ids with a response-only loss.

One record per line:
    {"id": "x1", "prompt": "Premise: ...\\nAnswer:", "response": " yes"}
    {"messages": [{"role": "user", "content": "Hi"}], "response": "Hello!"}
`id` is optional (the line number is used); `response` is optional for seqkd (the teacher writes it).

Prompts are rendered and tokenized by `kdeval.backends.prompting.PromptCodec`, the code that
renders prompts for evaluation, so the student is trained on exactly the prompt format `compare`
scores it with (chat template when the tokenizer has one). The response is tokenized on its own
and followed by EOS, as a generation continues the prompt ids; EOS is trained even when the pad
token is EOS, because the loss mask comes from positions, never from token ids.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdeval.datafiles import read_jsonl
from kdeval.errors import UserError
from kdeval.tasks import Message, user_turn

if TYPE_CHECKING:
    import torch

    from kdeval.backends.prompting import PromptCodec

#: Label of positions that carry no loss (the prompt, padding), as in Hugging Face models.
IGNORE = -100
_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class PromptRecord:
    id: str
    messages: tuple[Message, ...]
    response: str | None
    where: str  # file:line, for error messages


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: tuple[int, ...]
    n_prompt: int  # tokens before the response; the loss is on input_ids[n_prompt:]

    @property
    def n_response(self) -> int:
        return len(self.input_ids) - self.n_prompt


@dataclass
class Batch:
    """Right-padded tensors; labels hold IGNORE on prompt and pad positions."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device))

    @property
    def n_targets(self) -> int:
        """Valid shifted targets: the tokens the loss is averaged over."""
        return int((self.labels[:, 1:] != IGNORE).sum())


def read_records(path: Path) -> list[PromptRecord]:
    """Records from a prompt/response JSONL file; any malformed record is a UserError at file:line."""
    records = []
    for lineno, obj in read_jsonl(path):
        where = f"{path}:{lineno}"
        response = obj.get("response")
        if response is not None and not isinstance(response, str):
            raise UserError(
                "field 'response' must be a string", where=where, fix="write the response as text"
            )
        records.append(PromptRecord(str(obj.get("id", f"L{lineno}")), _messages(obj, where), response, where))
    if not records:
        raise UserError("no records in training file", where=str(path), fix="add one JSON object per line")
    return records


def _messages(obj: dict[str, Any], where: str) -> tuple[Message, ...]:
    fix = "give 'prompt' (text) or 'messages' (a list of {role, content})"
    if isinstance(obj.get("prompt"), str):
        return user_turn(obj["prompt"])
    raw = obj.get("messages")
    if not isinstance(raw, list) or not raw:
        raise UserError("record has neither 'prompt' nor 'messages'", where=where, fix=fix)
    out = []
    for m in raw:
        if not isinstance(m, dict) or m.get("role") not in _ROLES or not isinstance(m.get("content"), str):
            raise UserError(
                f"bad message {json.dumps(m)[:80]}", where=where, fix=f"roles are {', '.join(_ROLES)}"
            )
        out.append(Message(m["role"], m["content"]))
    return tuple(out)


def require_responses(records: Sequence[PromptRecord], method: str) -> None:
    """Methods that train on given responses need one in every record."""
    for r in records:
        if r.response is None:
            raise UserError(
                f"record '{r.id}' has no 'response' (method {method} trains on responses)",
                where=r.where,
                fix="add gold responses, or use --method seqkd to let the teacher write them",
            )


def tokenize(records: Sequence[PromptRecord], codec: PromptCodec, max_len: int) -> list[TokenizedExample]:
    """Prompt ids (as evaluation renders them) + response ids + EOS, cut to max_len tokens.

    Too long: the prompt loses tokens from the left first (as evaluation truncates prompts),
    keeping at least one; only then is the response cut on the right.
    """
    eos = codec.eos_ids[0] if codec.eos_ids else None
    out = []
    for r in records:
        prompt = codec.encode_text(codec.render(r.messages))
        response = list(codec.tokenizer.encode(r.response or "", add_special_tokens=False))
        response += [eos] if eos is not None else []
        if not prompt or not response:
            raise UserError(
                "empty prompt or response after tokenization", where=r.where, fix="check the record"
            )
        keep = max(1, max_len - len(response))
        prompt = prompt[-keep:]
        ids = (prompt + response)[:max_len]
        out.append(TokenizedExample(tuple(int(i) for i in ids), len(prompt)))
    return out


def collate(examples: Sequence[TokenizedExample], pad_id: int) -> Batch:
    """Right-pad a micro-batch; right padding keeps each row's positions as when it is alone."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        mask[row, :n] = 1
        labels[row, e.n_prompt : n] = ids[row, e.n_prompt : n]
    return Batch(ids, mask, labels)


def fingerprint(examples: Sequence[TokenizedExample]) -> str:
    """Identity of a tokenized data set (the top-k cache is valid only for the same one)."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.n_prompt, e.input_ids]).encode())
    return h.hexdigest()[:16]
