"""The teacher's top-k log-probabilities on the training tokens, written once to disk.

Per response token it keeps the k most likely tokens' ids and log-probs (at the loss temperature)
plus one tail bucket, the log of all remaining mass, so bucketed divergences stay exact
divergences between two (k+1)-outcome distributions. With k >= vocabulary there is no tail.
The teacher is needed only while the cache is built; training then reads it lazily (safetensors
shards are memory-mapped), so a big teacher never shares memory with the student.

Layout: DIR/meta.json (written last: a cache without it is incomplete) and DIR/shard-NNNNN.safetensors
with `index` int32 [tokens, k], `logp` float32 [tokens, k(+1)], `offsets` int64 [examples + 1].
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    """Run the teacher over `examples` once and write the cache (replacing any old one)."""
    from safetensors.torch import save_file

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    k, temperature, vocab = identity["k"], identity["temperature"], identity["vocab"]
    head = output_head(teacher.eval(), vocab)
    shards: list[str] = []
    for first in range(0, len(examples), shard_examples):
        part = examples[first : first + shard_examples]
        index, logp, offsets = _shard_rows(
            teacher, head, part, k, temperature, pad_id, batch_size, chunk_size, progress
        )
        name = f"shard-{len(shards):05d}.safetensors"
        save_file({"index": index, "logp": logp, "offsets": offsets}, str(folder / name))
        shards.append(name)
    meta = {"format": FORMAT, "identity": identity, "shards": shards, "examples": len(examples)}
    write_atomic(folder / META, json.dumps(meta, indent=1))
    return TopkCache(folder, meta)


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
