"""The top-k teacher cache built by vLLM's offline engine (`--teacher-backend vllm --topk K`): it
agrees with the cache the transformers teacher builds, and a build killed with SIGKILL resumes from
its finished shards to the same cache.

Tolerance: vLLM's CPU engine runs the checkpoint's dtype ("auto"), float32 for the tiny test model,
with its own kernels (attention, fused norms), so its log-probs differ from transformers' float32
ones by float rounding only: ~5e-6 measured, 1e-4 asserted. A bfloat16 teacher would differ by
~1e-2 and may swap near-tied tokens at the k-th place.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kdeval.distill import DistillConfig, train
from kdeval.distill.topk import META, TopkCache
from tests import test_trainer as shared
from tests.test_trainer import PAIRS, _cfg

models, _one_thread = shared.models, shared._one_thread  # the trainer tests' tiny models (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("vllm_loaded")]

ATOL = 1e-4
K, SHARD = 8, 2  # 6 examples -> 3 shards


def _cache(cfg: DistillConfig) -> TopkCache:
    folder = cfg.topk_dir()
    return TopkCache(folder, json.loads((folder / META).read_text()))


@pytest.fixture(scope="module")
def built(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, DistillConfig]:
    """One uninterrupted run per builder: vLLM's engine and the transformers teacher."""
    root = tmp_path_factory.mktemp("caches")
    common = {"method": "kd", "topk": K, "topk_shard": SHARD, "max_steps": 1}
    cfgs = {
        "vllm": _cfg(models, root / "vllm", teacher_backend="vllm", **common),
        "hf": _cfg(models, root / "hf", **common),
    }
    for cfg in cfgs.values():
        train(cfg, progress=False)
    return cfgs


def test_a_cache_built_by_vllm_agrees_with_the_transformers_cache(built: dict[str, DistillConfig]) -> None:
    served, local = _cache(built["vllm"]), _cache(built["hf"])
    assert served.meta["shards"] == [
        "shard-00000.safetensors",
        "shard-00001.safetensors",
        "shard-00002.safetensors",
    ]
    assert served.meta["identity"]["source"].startswith("vllm:") and len(served) == len(local) == len(PAIRS)
    for i in range(len(PAIRS)):
        (si, sl), (li, ll) = served.rows(i), local.rows(i)
        assert si.shape == li.shape and sl.shape == ll.shape == (si.shape[0], K + 1)
        for r in range(si.shape[0]):
            local_logp = dict(zip(li[r].tolist(), ll[r, :K].tolist(), strict=True))
            pairs = zip(si[r].tolist(), sl[r, :K].tolist(), strict=True)
            overlap = [(lp, local_logp[t]) for t, lp in pairs if t in local_logp]
            assert len(overlap) >= K - 1  # only a tie at the k-th place may swap
            got, want = torch.tensor(overlap).T
            torch.testing.assert_close(got, want, rtol=0, atol=ATOL)
        torch.testing.assert_close(sl[:, K], ll[:, K], rtol=0, atol=ATOL)  # the tail bucket


_CHILD = """
import json, sys, time
from pathlib import Path

import kdeval.distill.topk as topk
from kdeval.backends import load_backend
from kdeval.backends.base import GenerationSettings
from kdeval.backends.prompting import PromptCodec
from kdeval.distill.data import read_records, tokenize


def main():
    teacher, data, folder, identity, shard = sys.argv[1:6]
    served = topk.served_rows

    def slow(*args):  # one second per example, so the parent can kill the build between shards
        time.sleep(1.0)
        return served(*args)

    topk.served_rows = slow
    examples = tokenize(read_records(Path(data)), PromptCodec.from_pretrained(teacher), 32)
    backend = load_backend("vllm", teacher, GenerationSettings(dtype="auto"))
    ident = json.loads(Path(identity).read_text())
    topk.build_cache_from_backend(backend, examples, Path(folder), ident, shard_examples=int(shard))


if __name__ == "__main__":  # vLLM's engine process is spawned
    main()
"""


def test_a_vllm_build_killed_mid_way_resumes_to_the_same_cache(
    built: dict[str, DistillConfig], models: dict[str, Path], tmp_path: Path
) -> None:
    from kdeval.backends import load_backend
    from kdeval.backends.base import GenerationSettings
    from kdeval.backends.prompting import PromptCodec
    from kdeval.distill.data import read_records, tokenize
    from kdeval.distill.topk import build_cache_from_backend

    whole = _cache(built["vllm"])
    identity = tmp_path / "identity.json"
    identity.write_text(json.dumps(whole.meta["identity"]))
    (tmp_path / "child.py").write_text(_CHILD)
    folder = tmp_path / "cache"
    argv = [sys.executable, str(tmp_path / "child.py"), str(models["teacher"]), str(models["train"])]
    log = (tmp_path / "child.log").open("w")
    child = subprocess.Popen(
        [*argv, str(folder), str(identity), str(SHARD)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        while not (folder / "shard-00000.safetensors").exists():
            assert child.poll() is None and time.monotonic() < deadline, (
                "the child ended before its first shard"
            )
            time.sleep(0.05)
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the build and its engine process, mid-way
        child.wait()
        log.close()
    kept = sorted(p.name for p in folder.glob("shard-*.safetensors"))
    assert not (folder / META).exists() and "shard-00002.safetensors" not in kept
    first = (folder / "shard-00000.safetensors").stat()

    codec = PromptCodec.from_pretrained(str(models["teacher"]))
    examples = tokenize(read_records(models["train"]), codec, 32)
    backend = load_backend("vllm", str(models["teacher"]), GenerationSettings(dtype="auto"))
    done: list[int] = []
    try:
        resumed = build_cache_from_backend(
            backend,  # type: ignore[arg-type]  # the vllm backend has prompt_topk
            examples,
            folder,
            whole.meta["identity"],
            shard_examples=SHARD,
            progress=done.append,
        )
    finally:
        backend.close()
    assert len(done) == len(PAIRS) - SHARD * len(kept)  # only the unfinished shards were rebuilt
    again = (folder / "shard-00000.safetensors").stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert resumed.meta["shards"] == whole.meta["shards"]
    for i in range(len(PAIRS)):
        (ri, rl), (wi, wl) = resumed.rows(i), whole.rows(i)
        assert torch.equal(ri, wi) and torch.equal(rl, wl)
