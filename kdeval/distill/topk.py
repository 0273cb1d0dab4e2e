"""The teacher's top-k log-probabilities on the training tokens, written once to disk.

Per response token it keeps the k most likely tokens' ids and log-probs (at the loss temperature)
plus one tail bucket, the log of all remaining mass, so bucketed divergences stay exact
divergences between two (k+1)-outcome distributions. With k >= vocabulary there is no tail.
The teacher is needed only while the cache is built; training then reads it lazily (safetensors
shards are memory-mapped), so a big teacher never shares memory with the student.

The cache is built by the teacher loaded here (transformers, any temperature) or by a kdeval
backend that serves the teacher elsewhere (a vLLM server's or engine's `prompt_logprobs=k`, at
temperature 1). Shards are written one at a time, atomically, tagged with the cache's identity:
a build that dies keeps its finished shards and the next build of the same cache resumes.

Layout: DIR/meta.json (written last: a cache without it is incomplete) and DIR/shard-NNNNN.safetensors
with `index` int32 [tokens, k], `logp` float32 [tokens, k(+1)], `offsets` int64 [examples + 1].
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from kdeval.datafiles import write_atomic
from kdeval.distill.data import IGNORE, Batch, TokenizedExample, collate
from kdeval.distill.losses import TeacherFn, TeacherTarget, fold
from kdeval.distill.models import hidden_states, output_head

if TYPE_CHECKING:
    from transformers import PreTrainedModel

META = "meta.json"
FORMAT = 1


def topk_rows(logits: Tensor, k: int, temperature: float) -> tuple[Tensor, Tensor]:
    """(index [n, k], log-probs [n, k(+1)]) of rows of logits, softened by `temperature`."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    vocab = logp.shape[-1]
    if k >= vocab:
        index = torch.arange(vocab).expand(logp.shape[0], vocab)
        return index, logp
    index = logp.topk(k, dim=-1).indices
    return index, fold(logp, index, tail=True)


class TopkCache:
    """Read side: the cached rows of any example, and a TeacherSource for the trainer."""

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        from safetensors import safe_open

        self.folder, self.meta = folder, meta
        self._files = [safe_open(str(folder / name), framework="pt") for name in meta["shards"]]
        self._offsets = [f.get_tensor("offsets").tolist() for f in self._files]
        self._where: list[tuple[int, int]] = [
            (s, i) for s, offs in enumerate(self._offsets) for i in range(len(offs) - 1)
        ]

    def __len__(self) -> int:
        return len(self._where)

    def rows(self, example: int) -> tuple[Tensor, Tensor]:
        shard, i = self._where[example]
        a, b = self._offsets[shard][i], self._offsets[shard][i + 1]
        f = self._files[shard]
        return f.get_slice("index")[a:b].long(), f.get_slice("logp")[a:b]

    def for_batch(self, batch: Batch, example_ids: Sequence[int], valid: Tensor) -> TeacherFn:
        parts = [self.rows(i) for i in example_ids]
        index = torch.cat([p[0] for p in parts]).to(valid.device)
        logp = torch.cat([p[1] for p in parts]).to(valid.device)
        if index.shape[0] != int(valid.sum()):
            raise RuntimeError(f"top-k cache {self.folder} does not match the batch: rebuild it")
        return lambda start, end: TeacherTarget(logp[start:end], index[start:end])


def open_cache(folder: Path, identity: dict[str, Any]) -> TopkCache | None:
    """The cache in `folder` when it is complete and was built for `identity`, else None."""
    meta_path = folder / META
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("identity") != identity:
        return None
    return TopkCache(folder, meta)


ShardRows = Callable[[int, int], tuple[Tensor, Tensor, Tensor]]


def write_cache(
    folder: Path, identity: dict[str, Any], n_examples: int, rows_of: ShardRows, *, shard_examples: int = 1024
) -> TopkCache:
    """Write the cache shard by shard; `rows_of(first, last)` gives (index, logp, offsets) of the
    examples [first, last). Shards already written for this identity are kept (resume)."""
    from safetensors.torch import save_file

    from kdeval.config import digest

    tag = digest(identity)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / META).unlink(missing_ok=True)  # incomplete until every shard is in place
    shards: list[str] = []
    for first in range(0, n_examples, shard_examples):
        last = min(first + shard_examples, n_examples)
        name = f"shard-{len(shards):05d}.safetensors"
        shards.append(name)
        if _shard_done(folder / name, tag, first, last):
            continue
        index, logp, offsets = rows_of(first, last)
        tmp = folder / f".{name}.tmp"
        meta = {"identity": tag, "first": str(first), "last": str(last)}
        save_file({"index": index, "logp": logp, "offsets": offsets}, str(tmp), metadata=meta)
        tmp.replace(folder / name)
    for old in folder.glob("shard-*.safetensors"):
        if old.name not in shards:
            old.unlink()
    meta_doc = {"format": FORMAT, "identity": identity, "shards": shards, "examples": n_examples}
    write_atomic(folder / META, json.dumps(meta_doc, indent=1))
    return TopkCache(folder, meta_doc)


def _shard_done(path: Path, tag: str, first: int, last: int) -> bool:
    if not path.is_file():
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # a torn file from a crash: rewrite it
        return False
    return meta.get("identity") == tag and meta.get("first") == str(first) and meta.get("last") == str(last)


def build_cache(
    teacher: PreTrainedModel,
    examples: Sequence[TokenizedExample],
    folder: Path,
    identity: dict[str, Any],
    *,
    pad_id: int,
    batch_size: int = 8,
    chunk_size: int = 512,
    shard_examples: int = 1024,
    progress: Callable[[int], None] | None = None,
) -> TopkCache:
    """Run the teacher loaded here over `examples` once and write the cache."""
    k, temperature, vocab = identity["k"], identity["temperature"], identity["vocab"]
    head = output_head(teacher.eval(), vocab)

    def rows_of(first: int, last: int) -> tuple[Tensor, Tensor, Tensor]:
        part = examples[first:last]
        return _shard_rows(teacher, head, part, k, temperature, pad_id, batch_size, chunk_size, progress)

    return write_cache(folder, identity, len(examples), rows_of, shard_examples=shard_examples)


class PromptTopk(Protocol):
    """A backend that returns the top-k log-probs of every prompt token (vLLM's prompt_logprobs)."""

    def prompt_topk(
        self, seqs: Sequence[list[int]], k: int, on_done: Callable[[int, list[Any]], None]
    ) -> None: ...


def build_cache_from_backend(
    backend: PromptTopk,
    examples: Sequence[TokenizedExample],
    folder: Path,
    identity: dict[str, Any],
    *,
    shard_examples: int = 1024,
    progress: Callable[[int], None] | None = None,
) -> TopkCache:
    """Fill the cache from a served teacher: one prompt_logprobs=k request per example, k (and
    the backend's own concurrency) as the backend allows."""
    k, vocab = identity["k"], identity["vocab"]

    def rows_of(first: int, last: int) -> tuple[Tensor, Tensor, Tensor]:
        part = examples[first:last]
        got: dict[int, tuple[Tensor, Tensor]] = {}

        def done(i: int, rows: list[Any]) -> None:
            got[i] = served_rows(rows, part[i], k, vocab)
            if progress is not None:
                progress(1)

        backend.prompt_topk([list(e.input_ids) for e in part], k, done)
        index = torch.cat([got[i][0] for i in range(len(part))])
        logp = torch.cat([got[i][1] for i in range(len(part))])
        counts = [got[i][0].shape[0] for i in range(len(part))]
        offsets = torch.tensor([0, *counts], dtype=torch.int64).cumsum(0)
        return index.contiguous(), logp.contiguous(), offsets

    return write_cache(folder, identity, len(examples), rows_of, shard_examples=shard_examples)


#: Teacher log-prob given to a filler slot: exp() of it is 0, yet 0 * it stays finite.
_NEVER = -1e30


def served_rows(
    prompt_logprobs: list[Any], ex: TokenizedExample, k: int, vocab: int
) -> tuple[Tensor, Tensor]:
    """(index [n, k], logp [n, k+1]) for the response tokens of one example, from the server's
    per-token {id: {logprob, rank}} (the top k by rank, plus the actual token, which is dropped
    unless it ranks in the top k). The row predicting token t is prompt_logprobs[t].

    Ids past the real vocabulary (padded embedding rows) are left out and their mass goes to the
    tail; the slots they leave get unused ids with teacher probability 0 (a rare approximation
    that only such rows see)."""
    n_prompt = max(ex.n_prompt, 1)
    index = torch.empty((len(ex.input_ids) - n_prompt, k), dtype=torch.int32)
    logp = torch.empty((len(ex.input_ids) - n_prompt, k + 1), dtype=torch.float32)
    for r, t in enumerate(range(n_prompt, len(ex.input_ids))):
        given = (prompt_logprobs[t] or {}).items()
        entries = sorted(
            ((int(tok), float(v["logprob"]), int(v["rank"])) for tok, v in given), key=lambda e: e[2]
        )
        top = [(tok, lp) for tok, lp, rank in entries if rank <= k and tok < vocab][:k]
        mass = float(sum(math.exp(lp) for _, lp in top))
        used = {tok for tok, _ in top}
        fillers = (i for i in range(vocab) if i not in used)
        top += [(next(fillers), _NEVER) for _ in range(k - len(top))]
        index[r] = torch.tensor([tok for tok, _ in top], dtype=torch.int32)
        tail = math.log(max(1.0 - mass, 1e-30))
        logp[r] = torch.tensor([lp for _, lp in top] + [tail], dtype=torch.float32)
    return index, logp


def _shard_rows(
    teacher: PreTrainedModel,
    head: Callable[[Tensor], Tensor],
    examples: Sequence[TokenizedExample],
    k: int,
    temperature: float,
    pad_id: int,
    batch_size: int,
    chunk_size: int,
    progress: Callable[[int], None] | None,
) -> tuple[Tensor, Tensor, Tensor]:
    indices, logps, counts = [], [], []
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            group = examples[start : start + batch_size]
            batch = collate(group, pad_id).to(teacher.device)
            valid = batch.labels[:, 1:] != IGNORE
            rows = hidden_states(teacher, batch)[:, :-1][valid]
            for a in range(0, rows.shape[0], chunk_size):
                index, logp = topk_rows(head(rows[a : a + chunk_size]), k, temperature)
                indices.append(index.to(torch.int32).cpu())
                logps.append(logp.float().cpu())
            counts += valid.sum(dim=1).tolist()
            if progress is not None:
                progress(len(group))
    offsets = torch.tensor([0, *counts], dtype=torch.int64).cumsum(0)
    return torch.cat(indices).contiguous(), torch.cat(logps).contiguous(), offsets
