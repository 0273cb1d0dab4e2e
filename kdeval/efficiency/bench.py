"""`kdeval bench`: one model's cost (start-up, latency, throughput, memory), and the efficiency
phase of `kdeval compare` (`measure_models`).

Each model is measured on an engine started for the purpose: its start-up is part of the cost,
and the engine runs with prefix caching off (vLLM's `bench latency` turns it off too: repeating a
prompt would otherwise skip its prefill) and with request metrics on (for TTFT). In `compare`
each model is measured in a fresh process, so one model's memory cannot linger in the next
one's peak and every model starts from the same state.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdeval.backends.base import GenerationSettings
from kdeval.efficiency import engines
from kdeval.efficiency import prompts as prompt_io
from kdeval.efficiency.machine import describe, device_label, versions
from kdeval.efficiency.memory import PeakSampler, loaded_bytes, memory_figures, param_count, weight_bytes
from kdeval.efficiency.probes import ProbeConfig, run_probes, timed
from kdeval.errors import UserError

if TYPE_CHECKING:
    from kdeval.config import RunSpec
    from kdeval.runner import LoadedTask

Log = Callable[[str], None]


@dataclass(frozen=True)
class BenchConfig:
    num_prompts: int = 16  # the latency sample: batch-1 requests per repeat
    throughput_prompts: int = 64  # submitted at once in the throughput pass
    output_len: int = 128
    warmup: int = 3
    repeats: int = 3

    def probe(self) -> ProbeConfig:
        return ProbeConfig(output_len=self.output_len, warmup=self.warmup, repeats=self.repeats)


def measure_model(
    kind: str,
    path: str,
    settings: GenerationSettings,
    prompts: Sequence[prompt_io.Prompt],
    cfg: BenchConfig,
    *,
    use_chat_template: bool | None = None,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Start the model's engine, measure it, stop it; the figures for results.json `efficiency`."""
    imported = "vllm" in sys.modules or kind != "vllm"
    with PeakSampler() as sampler:
        backend, startup = timed(engines.start, kind, path, settings, use_chat_template, trust_remote_code)
        try:
            ids = prompt_io.encode(prompts, backend.codec, settings.max_model_len, cfg.output_len)
            latency, batch = ids[: cfg.num_prompts], prompt_io.cycle(ids, cfg.throughput_prompts)
            engine = engines.for_backend(kind, backend, settings)
            figures = run_probes(engine, latency, batch, cfg.probe(), sampler)
            on_gpu, info = engines.on_gpu(kind, backend), backend.info
            engine_settings = engines.settings(kind, backend)
            kv, kv_note = engines.kv_cache(kind, backend)
        finally:
            backend.close()
    n_params = info.n_params or param_count(Path(path))
    memory, source, notes = memory_figures(
        sampler.peak, weights_loaded=loaded_bytes(n_params, info.dtype), kv_cache=kv, kv_note=kv_note
    )
    machine = describe()
    return {
        "device": device_label(machine, on_gpu),
        "backend": kind,
        "dtype": info.dtype,
        "startup_s": round(startup, 3),
        "startup_includes_import": not imported,
        **figures,
        "memory_mib": memory,
        "memory_source": source,
        "n_params": n_params,
        "weight_bytes": weight_bytes(Path(path)),
        "workload": {
            "latency_requests": len(latency),
            "throughput_requests": len(batch),
            "mean_prompt_tokens": round(sum(map(len, batch)) / len(batch), 1),
            "output_len": cfg.output_len,
            "warmup": cfg.warmup,
            "temperature": settings.temperature,
            "prefix_caching": False,
        },
        "engine": engine_settings,
        "notes": notes,
        "machine": machine,
        "versions": versions(),
    }


# -- compare's efficiency phase -----------------------------------------------------------------


def measure_run(
    spec: RunSpec, tasks: Sequence[LoadedTask], log: Log, cfg: BenchConfig | None = None
) -> dict[str, dict[str, Any]]:
    """`kdeval compare`'s efficiency phase: every model of the run, on a fixed sample of the run's
    own first-turn prompts, with the run's backend and generation settings."""
    cfg = cfg or BenchConfig()
    n = max(cfg.num_prompts, cfg.throughput_prompts)
    prompts = prompt_io.sample_tasks([(lt.task, lt.examples) for lt in tasks], n, spec.seed)
    return measure_models(
        [(m.name, m.path) for m in spec.models],
        spec.backend,
        spec.generation(),
        prompts,
        cfg,
        log=log,
        use_chat_template=spec.use_chat_template,
        trust_remote_code=spec.trust_remote_code,
    )


def measure_models(
    models: Sequence[tuple[str, str]],
    kind: str,
    settings: GenerationSettings,
    prompts: Sequence[prompt_io.Prompt],
    cfg: BenchConfig,
    *,
    log: Log,
    use_chat_template: bool | None = None,
    trust_remote_code: bool = False,
    isolate: bool = True,
) -> dict[str, dict[str, Any]]:
    """Figures per model name. A model that fails is recorded with its error, so a long quality
    run is never lost to its cost phase."""
    out: dict[str, dict[str, Any]] = {}
    for name, path in models:
        log(f"{name}: measuring start-up, latency, throughput and memory ({kind})")
        try:
            if isolate:
                out[name] = _measure_in_subprocess(
                    kind, path, settings, prompts, cfg, use_chat_template, trust_remote_code
                )
            else:
                out[name] = measure_model(
                    kind,
                    path,
                    settings,
                    prompts,
                    cfg,
                    use_chat_template=use_chat_template,
                    trust_remote_code=trust_remote_code,
                )
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            log(f"{name}: efficiency not measured: {exc}")
            out[name] = {"error": str(exc)}
        for warning in out[name].get("warnings", []):
            log(f"{name}: warning: {warning}")
    return out


def _measure_in_subprocess(
    kind: str,
    path: str,
    settings: GenerationSettings,
    prompts: Sequence[prompt_io.Prompt],
    cfg: BenchConfig,
    chat: bool | None,
    trust: bool,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kdeval-bench-") as tmp:
        prompt_file = Path(tmp) / "prompts.jsonl"
        prompt_io.write(prompts, prompt_file)
        argv = _argv(kind, path, settings, cfg, chat, trust, prompt_file, Path(tmp))
        proc = subprocess.run(
            [sys.executable, "-m", "kdeval.efficiency.bench", *argv], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise RuntimeError(f"kdeval bench exited with {proc.returncode}: {proc.stderr.strip()[-2000:]}")
        figures: dict[str, Any] = json.loads((Path(tmp) / "bench.json").read_text())["efficiency"]
        return next(iter(figures.values()))


def _argv(
    kind: str,
    path: str,
    s: GenerationSettings,
    cfg: BenchConfig,
    chat: bool | None,
    trust: bool,
    prompt_file: Path,
    out: Path,
) -> list[str]:
    argv = ["--model", path, "--backend", kind, "--prompts", str(prompt_file), "--out", str(out)]
    argv += ["--output-len", str(cfg.output_len), "--num-prompts", str(cfg.num_prompts)]
    argv += ["--throughput-prompts", str(cfg.throughput_prompts), "--warmup", str(cfg.warmup)]
    argv += ["--repeats", str(cfg.repeats), "--dtype", s.dtype, "--max-model-len", str(s.max_model_len)]
    argv += ["--batch-size", str(s.batch_size), "--seed", str(s.seed), "--temperature", str(s.temperature)]
    argv += ["--chat-template", {None: "auto", True: "on", False: "off"}[chat], "--quiet"]
    return argv + ["--trust-remote-code"] * trust


# -- the command -------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    c = BenchConfig
    p.add_argument("--model", required=True, metavar="PATH")
    p.add_argument("--backend", choices=["vllm", "hf"], default=None, help="default: vllm when it imports")
    p.add_argument(
        "--prompts", metavar="SUITE|FILE", help="a suite/task's shipped data (default: every offline suite), "
        "or a .txt (one per line) / .jsonl (prompt, messages or prompt_token_ids) file"
    )  # fmt: skip
    p.add_argument("--output-len", type=int, default=c.output_len, metavar="N", help="tokens per request")
    p.add_argument(
        "--num-prompts", type=int, default=c.num_prompts, metavar="N", help="batch-1 latency sample"
    )
    p.add_argument("--throughput-prompts", type=int, default=c.throughput_prompts, metavar="N")
    p.add_argument("--warmup", type=int, default=c.warmup, metavar="N", help="untimed batch-1 requests first")
    p.add_argument("--repeats", type=int, default=c.repeats, metavar="N", help="min/median/max over these")
    p.add_argument("--out", type=Path, default=Path("runs/bench"), metavar="DIR")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--max-model-len", type=int, default=2048, metavar="N")
    p.add_argument("--batch-size", type=int, default=16, metavar="N", help="transformers backend batch size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--chat-template", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--quiet", action="store_true", help="print nothing; DIR/bench.json and bench.md only")


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_arguments(sub.add_parser("bench", help="measure one model's latency, throughput and memory"))


def run(args: argparse.Namespace) -> int:
    """`kdeval bench`: writes DIR/bench.json and DIR/bench.md, prints the table."""
    from kdeval.config import ModelSpec, check_model_path
    from kdeval.report.cost import bench_markdown

    check_model_path(ModelSpec(name="model", path=args.model))
    for flag in ("output_len", "num_prompts", "throughput_prompts", "repeats"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    kind = args.backend or _default_backend()
    cfg = BenchConfig(args.num_prompts, args.throughput_prompts, args.output_len, args.warmup, args.repeats)
    settings = GenerationSettings(
        temperature=args.temperature,
        seed=args.seed,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        batch_size=args.batch_size,
    )
    prompts = prompt_io.load(args.prompts, max(cfg.num_prompts, cfg.throughput_prompts), args.seed)
    chat = {"auto": None, "on": True, "off": False}[args.chat_template]
    figures = measure_model(
        kind,
        args.model,
        settings,
        prompts,
        cfg,
        use_chat_template=chat,
        trust_remote_code=args.trust_remote_code,
    )
    name = Path(args.model).name or args.model
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "schema": "kdeval.bench",
        "model": args.model,
        "prompts": args.prompts,
        "efficiency": {name: figures},
    }
    from kdeval.datafiles import write_atomic

    write_atomic(args.out / "bench.json", json.dumps(doc, indent=2) + "\n")
    text = bench_markdown(name, figures)
    write_atomic(args.out / "bench.md", text)
    if not args.quiet:
        print(text)
        print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.md'}", file=sys.stderr)
    return 0


def _default_backend() -> str:
    from kdeval.backends import vllm_available

    return "vllm" if vllm_available() else "hf"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kdeval bench", description="one model's cost")
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except UserError as exc:
        print(f"kdeval: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # vLLM's engine start needs the main-module guard (spawned workers)
    sys.exit(main())
