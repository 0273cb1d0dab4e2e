"""Does kdeval's client see what `vllm bench serve` sees? One server, both clients, same load.

    python benchmarks/bench_client_vs_vllm_serve.py [--model PATH] [--output-len 128]
        [--concurrency 16] [--num-prompts 64] [--latency-prompts 16] [--rounds 2] [--out DIR]

Starts the installed vLLM's OpenAI-compatible server once (loopback, eager mode on CPU, float32)
on a tiny random Llama unless --model is given, then alternates, round by round:

- vLLM's `bench serve` (its Python entry point, the code `vllm bench serve` runs) on a custom
  dataset, --output-len tokens per request with EOS ignored, streamed; once with
  --max-concurrency 1 (latency: e2e, TTFT, TPOT) and once with --max-concurrency C (throughput);
- `kdeval bench --model URL --option concurrency=C` on the same prompts: its batch-1 latency pass
  (streamed, TTFT at the first chunk, as vLLM's client) and its throughput pass (all prompts,
  C in flight).

The prompts are the math suite's shipped questions, as text for both clients (the server
tokenizes vLLM's, kdeval tokenizes its own the same way). Random token ids are not used: a
random tiny model answers them with tokens whose text is empty, and vLLM's server then holds
the stream back, so TTFT would measure the prompt, not the client.

Prints every round with both sides' settings, then the medians and kdeval / vLLM. Targets:
throughput ratio >= 0.95, latency within 10%.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROWS = [  # (label, key, kind): kind "throughput" wants >= 0.95, "latency" within 10%
    ("requests/s (concurrency C)", "requests_per_s", "throughput"),
    ("output tokens/s (concurrency C)", "output_tokens_per_s", "throughput"),
    ("latency mean, batch 1 (ms)", "latency_mean_ms", "latency"),
    ("latency p50, batch 1 (ms)", "latency_p50_ms", "latency"),
    ("TTFT p50, batch 1 (ms)", "ttft_p50_ms", "latency"),
    ("TPOT p50, batch 1 (ms)", "tpot_p50_ms", "latency"),
]


def _run(argv: list[str]) -> str:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{proc.stderr[-4000:]}")
    return proc.stdout


def vllm_side(
    a: argparse.Namespace, model: Path, url: str, tmp: Path
) -> tuple[dict[str, float], dict[str, Any]]:
    base = url.removesuffix("/v1")
    common = ["--backend", "vllm", "--base-url", base, "--model", str(model), "--dataset-name", "custom",
              "--dataset-path", str(tmp / "prompts.jsonl"), "--skip-chat-template",
              "--custom-output-len", str(a.output_len), "--ignore-eos", "--temperature", "0",
              "--percentile-metrics", "ttft,tpot,e2el",
              "--metric-percentiles", "50,99", "--disable-tqdm", "--save-result",
              "--result-dir", str(tmp)]  # fmt: skip
    me = str(Path(__file__).resolve())
    _run([me, "_serve", *common, "--num-prompts", str(a.latency_prompts), "--max-concurrency", "1",
          "--num-warmups", "2", "--result-filename", "lat.json"])  # fmt: skip
    _run([me, "_serve", *common, "--num-prompts", str(a.num_prompts), "--max-concurrency", str(a.concurrency),
          "--num-warmups", "2", "--result-filename", "tp.json"])  # fmt: skip
    lat, tp = (json.loads((tmp / f).read_text()) for f in ("lat.json", "tp.json"))
    figures = {
        "requests_per_s": tp["request_throughput"],
        "output_tokens_per_s": tp["output_throughput"],
        "latency_mean_ms": lat["mean_e2el_ms"],
        "latency_p50_ms": lat["median_e2el_ms"],
        "ttft_p50_ms": lat["median_ttft_ms"],
        "tpot_p50_ms": lat["median_tpot_ms"],
    }
    settings = {"client": "vllm bench serve (aiohttp, streamed)", "latency requests": lat["completed"],
                "throughput requests": tp["completed"], "concurrency": tp.get("max_concurrency"),
                "mean input tokens": round(tp["total_input_tokens"] / tp["completed"], 1),
                "output tokens": tp["total_output_tokens"] // max(1, tp["completed"]),
                "prompts": "the math suite's questions (text)", "warm-up": 2}  # fmt: skip
    return figures, settings


def kdeval_side(a: argparse.Namespace, url: str, tmp: Path) -> tuple[dict[str, float], dict[str, Any]]:
    _run(["-m", "kdeval.efficiency.bench", "--model", url, "--option", f"concurrency={a.concurrency}",
          "--prompts", str(tmp / "prompts.jsonl"), "--output-len", str(a.output_len),
          "--num-prompts", str(a.latency_prompts),
          "--throughput-prompts", str(a.num_prompts), "--warmup", "2", "--repeats", "1",
          "--out", str(tmp / "kdeval"), "--quiet"])  # fmt: skip
    fig = next(iter(json.loads((tmp / "kdeval" / "bench.json").read_text())["efficiency"].values()))
    figures = {
        "requests_per_s": fig["throughput"]["requests_per_s"],
        "output_tokens_per_s": fig["throughput"]["output_tokens_per_s"],
        "latency_mean_ms": fig["latency_ms"]["mean"],
        "latency_p50_ms": fig["latency_ms"]["p50"],
        "ttft_p50_ms": fig["ttft_ms"]["p50"],
        "tpot_p50_ms": fig["tpot_ms"]["p50"],
    }
    w = fig["workload"]
    settings = {"client": "kdeval (aiohttp; latency streamed, throughput not)",
                "latency requests": w["latency_requests"], "throughput requests": w["throughput_requests"],
                "concurrency": w.get("concurrency"), "mean input tokens": w["mean_prompt_tokens"],
                "output tokens": fig["output_tokens"]["max"], "prompts": "the math suite's questions (text)",
                "warm-up": w["warmup"]}  # fmt: skip
    return figures, settings


def write_prompts(path: Path, n: int) -> None:
    """n questions from the math suite's shipped data, as {"prompt": text} (both clients read it)."""
    from kdeval.backends.prompting import render_plain
    from kdeval.efficiency.prompts import from_suites

    rows = [{"prompt": render_plain(p)} for p in from_suites("math_synth", n) if not isinstance(p, list)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def ratio_ok(kind: str, r: float) -> bool:
    return r >= 0.95 if kind == "throughput" else abs(r - 1) <= 0.10


def table(v: dict[str, float], k: dict[str, float]) -> tuple[str, bool]:
    lines = [f"{'':34} {'vllm bench serve':>17} {'kdeval bench':>13} {'kdeval/vllm':>12}"]
    ok = True
    for label, key, kind in ROWS:
        r = k[key] / v[key]
        ok &= ratio_ok(kind, r)
        flag = (
            "" if ratio_ok(kind, r) else ("  <- below 0.95" if kind == "throughput" else "  <- off by > 10%")
        )
        lines.append(f"{label:34} {v[key]:17.2f} {k[key]:13.2f} {r:12.3f}{flag}")
    return "\n".join(lines), ok


def settings_table(v: dict[str, Any], k: dict[str, Any]) -> str:
    lines = [f"{'setting':22} {'vllm bench serve':>40} {'kdeval bench':>52}"]
    for key in v:
        lines.append(f"{key:22} {v[key]!s:>40} {k.get(key)!s:>52}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--num-prompts", type=int, default=64, help="throughput requests")
    p.add_argument("--latency-prompts", type=int, default=16)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/bench_client_vs_serve"))
    a = p.parse_args()
    from tests.servers import VLLMServer  # the tests' loopback server launcher

    with tempfile.TemporaryDirectory(prefix="kdeval-vs-serve-") as tmp_dir:
        tmp = Path(tmp_dir)
        model = a.model
        if model is None:
            from kdeval.tinymodels import build_tiny_model

            model = build_tiny_model(tmp / "tiny", seed=0)
        write_prompts(tmp / "prompts.jsonl", max(a.num_prompts, a.latency_prompts))
        server = VLLMServer(model, tmp / "server.log").start()
        rounds: list[tuple[dict[str, float], dict[str, float]]] = []
        try:
            for i in range(a.rounds):
                vllm_first = i % 2 == 0  # alternate, so a busy machine's drift hits both sides
                v, vs = vllm_side(a, model, server.base_url, tmp) if vllm_first else ({}, {})
                k, ks = kdeval_side(a, server.base_url, tmp)
                if not vllm_first:
                    v, vs = vllm_side(a, model, server.base_url, tmp)
                rounds.append((v, k))
                text, _ = table(v, k)
                print(
                    f"\nround {i + 1} ({'vLLM first' if vllm_first else 'kdeval first'})\n{text}", flush=True
                )
        finally:
            server.stop()
    v = {key: statistics.median(r[0][key] for r in rounds) for key in rounds[0][0]}
    k = {key: statistics.median(r[1][key] for r in rounds) for key in rounds[0][1]}
    text, ok = table(v, k)
    print(
        f"\nmodel {a.model or 'tiny random Llama'} · math_synth questions · output {a.output_len} tokens · "
        f"concurrency {a.concurrency} · {a.num_prompts} throughput / {a.latency_prompts} latency requests · "
        f"median of {a.rounds} round(s)\n{text}\n\n{settings_table(vs, ks)}"
    )
    print("agree (throughput >= 0.95, latency within 10%)" if ok else "DISAGREE on some figure")
    a.out.mkdir(parents=True, exist_ok=True)
    doc = {"vllm": v, "kdeval": k, "rounds": rounds, "settings": {"vllm": vs, "kdeval": ks}, "args": vars(a)}
    (a.out / "bench_client_vs_serve.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return 0 if ok else 1


def _serve_entry(argv: list[str]) -> None:
    """vLLM's `bench serve` exactly as the `vllm bench serve` command runs it."""
    from vllm.benchmarks import serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    serve.add_cli_args(parser)
    serve.main(parser.parse_args(argv))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        _serve_entry(sys.argv[2:])
        sys.exit(0)
    sys.exit(main())
