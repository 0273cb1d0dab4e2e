"""kdeval compare vs a plain `vllm.LLM.generate` over the same 500 prompts and settings.

Both sides use the same engine (started once, its start-up excluded from both timings), the
same token ids and the same SamplingParams; kdeval's side is the whole `compare` call: store
look-ups and writes, the step-by-step engine loop, scoring, bootstrap intervals, result and
report files. Prefix caching is off so neither side profits from the other's cached prompts.

    python benchmarks/bench_compare_vs_vllm.py [--task math_synth] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def plain_vllm(backend: Any, prompts: list[list[int]], params: list[Any]) -> float:
    from vllm.inputs import TokensPrompt

    start = time.perf_counter()
    backend.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    return time.perf_counter() - start


def kdeval_compare(backend: Any, model: Path, task: str, out: Path) -> float:
    from kdeval.compare import compare
    from kdeval.config import ModelSpec, RunSpec
    from kdeval.plugins import load_catalog

    spec = RunSpec(models=[ModelSpec(name="m", path=str(model))], tasks=[task], backend="vllm", out=out)
    start = time.perf_counter()
    compare(
        spec,
        load_catalog(),
        argv=["bench"],
        log=lambda m: None,
        make_backend=lambda s, p: KeptEngine(backend),
    )
    return time.perf_counter() - start


class KeptEngine:
    """The already started engine, handed to compare; closed by the benchmark, not by compare."""

    def __init__(self, backend: Any) -> None:
        self.b, self.name, self.info = backend, backend.name, backend.info

    def run(self, requests: Any, on_done: Any) -> None:
        self.b.run(requests, on_done)

    def close(self) -> None:
        pass


def same_requests(backend: Any, task: str) -> tuple[list[list[int]], list[Any], int]:
    """The token ids and SamplingParams kdeval sends for this task, built by the backend itself."""
    from kdeval.plugins import load_catalog

    t = load_catalog().tasks[task]
    examples = t.load(None)
    jobs = [job for i, ex in enumerate(examples) for job in backend._jobs(i, t.request(ex, []))]
    return [j.prompt_ids for j in jobs], [j.params for j in jobs], len(examples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="math_synth", help="a generation task with >= 500 shipped examples")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    from kdeval.backends.base import GenerationSettings
    from kdeval.backends.vllm import VLLMBackend
    from kdeval.tinymodels import build_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="kdeval-bench-"))
    model = build_tiny_model(tmp / "model", hidden=128, layers=4, heads=4)
    backend = VLLMBackend(str(model), GenerationSettings(), enable_prefix_caching=False)
    prompts, params, n = same_requests(backend, args.task)
    plain_vllm(backend, prompts[:32], params[:32])  # warm-up, as vLLM's own benchmarks do
    plain, ours = [], []
    for r in range(args.repeats):  # alternate, so machine noise hits both sides alike
        plain.append(plain_vllm(backend, prompts, params))
        ours.append(kdeval_compare(backend, model, args.task, tmp / f"run{r}"))
    backend.close()
    p, k = statistics.median(plain), statistics.median(ours)
    print(f"\n{n} prompts of {args.task}, greedy, {args.repeats} repeats (median; engine start excluded)\n")
    print("| path | wall time (s) | runs |")
    print("| --- | --- | --- |")
    print(f"| plain vllm.LLM.generate | {p:.2f} | {', '.join(f'{x:.2f}' for x in plain)} |")
    print(f"| kdeval compare | {k:.2f} | {', '.join(f'{x:.2f}' for x in ours)} |")
    print(f"\nratio kdeval / plain vLLM: {k / p:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
