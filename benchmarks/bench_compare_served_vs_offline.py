"""kdeval compare through a vLLM server vs through vLLM's offline engine: same model, same tasks.

    python benchmarks/bench_compare_served_vs_offline.py [--tasks math_synth nli_synth]
        [--limit 500] [--concurrency 64] [--rounds 2]

One tiny Llama (4 layers, width 128) is served by the installed vLLM's OpenAI-compatible server
(loopback, float32, eager, prefix caching off) and loaded by kdeval's offline vLLM backend with
the same settings. Each round runs the whole `kdeval compare` (store, requests, scoring,
intervals, results and report) once per side into a fresh folder, alternating which goes first;
engine and server start-up are excluded from both timings (the offline engine is started once
and handed to compare, as benchmarks/bench_compare_vs_vllm.py does). Prints every round, the
medians and served / offline, and whether the two sides' scores are identical.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_compare_vs_vllm import KeptEngine  # noqa: E402


def run_compare(
    models: dict[str, dict[str, Any]], args: argparse.Namespace, out: Path, kept: Any = None
) -> tuple[float, Any]:
    from kdeval.compare import compare
    from kdeval.config import ModelSpec, RunSpec
    from kdeval.plugins import load_catalog

    specs = [ModelSpec(name=n, **m) for n, m in models.items()]
    spec = RunSpec(models=specs, tasks=args.tasks, limit=args.limit, backend="vllm", out=out)
    factory = (lambda s, m: KeptEngine(kept)) if kept is not None else None
    start = time.perf_counter()
    kwargs = {"make_backend": factory} if factory else {}
    result = compare(spec, load_catalog(), argv=["bench"], log=lambda m: None, **kwargs)
    return time.perf_counter() - start, result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["math_synth", "nli_synth"])
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    from kdeval.backends.base import GenerationSettings
    from kdeval.backends.vllm import VLLMBackend
    from kdeval.tinymodels import build_tiny_model
    from tests.servers import VLLMServer

    tmp = Path(tempfile.mkdtemp(prefix="kdeval-served-vs-offline-"))
    model = build_tiny_model(tmp / "model", hidden=128, layers=4, heads=4)
    server = VLLMServer(model, tmp / "server.log", extra_args=["--no-enable-prefix-caching"]).start()
    settings = GenerationSettings(dtype="float32", max_model_len=2048)
    engine = VLLMBackend(str(model), settings, enable_prefix_caching=False)
    served = {
        "m": {"backend": "openai", "options": {"base_url": server.base_url, "concurrency": args.concurrency}}
    }
    offline = {"m": {"path": str(model), "backend": "vllm"}}
    times: dict[str, list[float]] = {"offline": [], "served": []}
    scores: dict[str, Any] = {}
    try:
        for r in range(args.rounds):
            order = ["offline", "served"] if r % 2 == 0 else ["served", "offline"]
            for side in order:
                out = tmp / f"{side}-{r}"
                t, result = run_compare(
                    served if side == "served" else offline, args, out, engine if side == "offline" else None
                )
                times[side].append(t)
                scores[side] = [(s.task, s.metric, s.value) for s in result.scores]
            o, s_ = times["offline"][-1], times["served"][-1]
            print(f"round {r + 1} ({order[0]} first): offline {o:.2f} s, served {s_:.2f} s, "
                  f"served/offline {s_ / o:.3f}", flush=True)  # fmt: skip
    finally:
        engine.close()
        server.stop()
    med = {k: statistics.median(v) for k, v in times.items()}
    n = args.limit * len(args.tasks)
    print(f"\n{n} examples ({', '.join(args.tasks)}), tiny Llama 4x128, concurrency {args.concurrency}, "
          f"median of {args.rounds} round(s); start-up excluded")  # fmt: skip
    print(f"{'':28} {'offline vLLM':>13} {'served (HTTP)':>14} {'served/offline':>15}")
    ratio = med["served"] / med["offline"]
    print(f"{'kdeval compare wall time (s)':28} {med['offline']:13.2f} {med['served']:14.2f} {ratio:15.3f}")
    print("scores identical" if scores["offline"] == scores["served"] else "SCORES DIFFER")
    return 0


if __name__ == "__main__":  # vLLM spawns workers that re-import the main module
    sys.exit(main())
