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
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdeval.efficiency import prompts as prompt_io
from kdeval.efficiency.machine import describe, device_label, serving_processes, versions
from kdeval.efficiency.memory import PeakSampler, loaded_bytes, memory_figures, param_count, weight_bytes
from kdeval.efficiency.probes import Engine, ProbeConfig, run_probes, summary_ms, timed
from kdeval.errors import UserError
from kdeval.tasks import Message

if TYPE_CHECKING:
    from kdeval.backends.prompting import PromptCodec
    from kdeval.backends.registry import ResolvedModel
    from kdeval.config import RunSpec
    from kdeval.runner import LoadedTask

Log = Callable[[str], None]


@dataclass(frozen=True)
class BenchConfig:
    num_prompts: int = 16  # the latency sample: batch-1 requests per repeat
    throughput_prompts: int = 64  # submitted at once in the throughput pass
    output_len: int = 128
    warmup: int = 3
    repeats: int | None = None  # a fixed number; None: repeat until stable or budget_s is spent
    answers: int = 8  # batch-1 requests of the run's generation tasks, answered in full
    budget_s: float = 30.0  # seconds of timed latency/throughput passes per model (adaptive)
    min_repeats: int = 2
    max_repeats: int = 10

    def probe(self) -> ProbeConfig:
        return ProbeConfig(
            output_len=self.output_len,
            warmup=self.warmup,
            repeats=self.repeats,
            budget_s=self.budget_s,
            min_repeats=self.min_repeats,
            max_repeats=self.max_repeats,
        )


@dataclass(frozen=True)
class AnswerPrompt:
    """A generation task's first-turn prompt as the quality run sends it to one model: its token
    budget, and the stop strings the engine may stop on (none for a model that thinks)."""

    messages: tuple[Message, ...]
    max_tokens: int
    stop: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        msgs = [{"role": m.role, "content": m.content} for m in self.messages]
        return {"messages": msgs, "max_tokens": self.max_tokens, "stop": list(self.stop)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnswerPrompt:
        msgs = tuple(Message(m["role"], m["content"]) for m in d["messages"])
        return cls(msgs, int(d["max_tokens"]), tuple(d["stop"]))


def measure_model(
    model: ResolvedModel,
    prompts: Sequence[prompt_io.Prompt],
    cfg: BenchConfig,
    answers: Sequence[AnswerPrompt] = (),
) -> dict[str, Any]:
    """Start the model's engine, measure it, stop it; the figures for results.json `efficiency`.

    A remote model (a server) is measured as a client sees it: latency, TTFT, TPOT and throughput
    at its configured requests in flight; its memory and parameters are the server's business and
    read "remote" unless the user states them in the model's options (n_params, memory_mib)."""
    kind = model.kind()
    imported = "vllm" in sys.modules or model.backend != "vllm"
    with nullcontext(None) if kind.remote else PeakSampler() as sampler:
        backend, startup = timed(lambda: kind.start(model, measuring=True))
        try:
            ids = prompt_io.encode(prompts, backend.codec, model.settings.max_model_len, cfg.output_len)
            latency, batch = ids[: cfg.num_prompts], prompt_io.cycle(ids, cfg.throughput_prompts)
            engine = kind.cost_engine(backend)
            figures = run_probes(engine, latency, batch, cfg.probe(), sampler)
            if answers:
                figures |= _answer_figures(
                    engine, backend.codec, model.settings.max_model_len, answers, sampler
                )
            on_gpu, info = kind.on_gpu(backend), backend.info
            engine_settings = {**kind.engine_settings(backend), **serving_processes()}
            kv, kv_note = kind.kv_cache(backend)
        finally:
            backend.close()
    machine = describe()
    workload = {
        "latency_requests": len(latency),
        "throughput_requests": len(batch),
        "mean_prompt_tokens": round(sum(map(_length, batch)) / len(batch), 1),
        "output_len": cfg.output_len,
        "warmup": cfg.warmup,
        "temperature": model.settings.temperature,
        "prefix_caching": False,
    }
    head: dict[str, Any] = {"backend": model.backend, "dtype": info.dtype}
    if kind.remote:
        head |= _remote_figures(model, info.extra, workload)
    else:
        assert sampler is not None
        n_params = info.n_params or param_count(Path(model.path))
        memory, source, notes = memory_figures(
            sampler.peak, weights_loaded=loaded_bytes(n_params, info.dtype), kv_cache=kv, kv_note=kv_note
        )
        head |= {
            "device": device_label(machine, on_gpu),
            "startup_s": round(startup, 3),
            "startup_includes_import": not imported,
            "memory_mib": memory,
            "memory_source": source,
            "n_params": n_params,
            "weight_bytes": weight_bytes(Path(model.path)),
            "notes": notes,
        }
    return {
        **head,
        **figures,
        "workload": workload,
        "engine": engine_settings,
        "machine": machine,
        "versions": versions(),
    }


def _answer_figures(
    engine: Engine,
    codec: PromptCodec | None,
    max_model_len: int,
    answers: Sequence[AnswerPrompt],
    sampler: PeakSampler | None,
) -> dict[str, Any]:
    """The cost of whole answers: batch-1 requests of the run's own generation prompts, each to
    EOS or a stop string within its task's budget, so a model that thinks pays for its thinking."""
    from kdeval.backends.prompting import fit_prompt, render_plain

    requests: list[tuple[Any, int, tuple[str, ...]]] = []
    for a in answers:
        if codec is None:
            requests.append((render_plain(a.messages), a.max_tokens, a.stop))
            continue
        ids, budget = fit_prompt(codec.encode_text(codec.render(a.messages)), a.max_tokens, max_model_len)
        requests.append((ids, budget, a.stop))
    if sampler:
        sampler.pause()
    try:
        timings = [engine.answer(p, budget, stop) for p, budget, stop in requests]
    finally:
        if sampler:
            sampler.resume()
    tokens = [t.output_tokens for t in timings]
    return {
        "answer_latency_ms": summary_ms([t.e2e_s for t in timings]),
        "answer_tokens": {"mean": round(sum(tokens) / len(tokens), 1), "max": max(tokens), "n": len(tokens)},
    }


def _remote_figures(model: ResolvedModel, extra: dict[str, str], workload: dict[str, Any]) -> dict[str, Any]:
    """What is known of a server's cost besides the timings: what the user stated, else "remote"."""
    stated = model.options
    workload["concurrency"] = stated.get("concurrency")
    memory = stated.get("memory_mib")
    return {
        "remote": True,
        "device": f"remote: {extra.get('server_model', model.path)} at {extra.get('host', model.path)}",
        "startup_s": None,
        "memory_mib": {"weights": None, "kv_cache": None, "peak": memory},
        "memory_source": "stated" if memory is not None else "remote",
        "n_params": stated.get("n_params"),
        "weight_bytes": None,
        "notes": [
            "remote model: latency and throughput as this client sees them "
            f"({stated.get('concurrency')} requests in flight for throughput), network included; "
            + ("memory and parameters as stated in its options" if memory else "memory not measurable here")
        ],
    }


def _length(prompt: list[int] | str) -> int:
    return len(prompt) if isinstance(prompt, list) else len(prompt.split())


# -- compare's efficiency phase -----------------------------------------------------------------


def measure_run(
    spec: RunSpec,
    models: Sequence[ResolvedModel],
    tasks: Sequence[LoadedTask],
    log: Log,
    cfg: BenchConfig | None = None,
) -> dict[str, dict[str, Any]]:
    """`kdeval compare`'s efficiency phase: every model of the run, on a fixed sample of the run's
    own first-turn prompts, each with its own backend and settings."""
    cfg = cfg or BenchConfig()
    n = max(cfg.num_prompts, cfg.throughput_prompts)
    prompts = prompt_io.sample_tasks([(lt.task, lt.examples) for lt in tasks], n, spec.seed)
    answers = {m.name: answer_prompts(spec, m, tasks, cfg.answers) for m in models}
    return measure_models(models, prompts, cfg, log=log, answers=answers)


def answer_prompts(
    spec: RunSpec, model: ResolvedModel, tasks: Sequence[LoadedTask], n: int
) -> list[AnswerPrompt]:
    """n first-turn prompts of the run's generation tasks, taken in turn from each task, as the
    quality run sent them to this model (budget, thinking)."""
    import random

    from kdeval.backends.prompting import engine_stop
    from kdeval.runner import make_request
    from kdeval.tasks import GenerateRequest

    pools = []
    for lt in tasks:
        if lt.task.task_type != "generate":
            continue
        picked = random.Random(spec.seed).sample(lt.examples, min(n, len(lt.examples)))
        reqs = [make_request(spec, model, lt.task, ex, [], 0) for ex in picked]
        pools.append(
            [
                AnswerPrompt(r.messages, r.max_tokens, engine_stop(r))
                for r in reqs
                if isinstance(r, GenerateRequest)
            ]
        )
    out: list[AnswerPrompt] = []
    for i in range(max((len(p) for p in pools), default=0)):
        out += [pool[i] for pool in pools if i < len(pool)]
    return out[:n]


def measure_models(
    models: Sequence[ResolvedModel],
    prompts: Sequence[prompt_io.Prompt],
    cfg: BenchConfig,
    *,
    log: Log,
    isolate: bool = True,
    answers: dict[str, list[AnswerPrompt]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Figures per model name. A model that fails is recorded with its error, so a long quality
    run is never lost to its cost phase."""
    out: dict[str, dict[str, Any]] = {}
    for model in models:
        name = model.name
        log(f"{name}: measuring start-up, latency, throughput and memory ({model.backend})")
        mine = (answers or {}).get(name, [])
        try:
            out[name] = (
                _measure_in_subprocess(model, prompts, cfg, mine)
                if isolate
                else measure_model(model, prompts, cfg, mine)
            )
        except (RuntimeError, OSError, subprocess.SubprocessError, UserError) as exc:
            log(f"{name}: efficiency not measured: {exc}")
            out[name] = {"error": str(exc)}
        for warning in out[name].get("warnings", []):
            log(f"{name}: warning: {warning}")
    return out


def _measure_in_subprocess(
    model: ResolvedModel,
    prompts: Sequence[prompt_io.Prompt],
    cfg: BenchConfig,
    answers: Sequence[AnswerPrompt] = (),
) -> dict[str, Any]:
    """`kdeval bench` on the resolved model in a fresh process (no memory of earlier models)."""
    with tempfile.TemporaryDirectory(prefix="kdeval-bench-") as tmp:
        prompt_file, model_file = Path(tmp) / "prompts.jsonl", Path(tmp) / "model.json"
        prompt_io.write(prompts, prompt_file)
        model_file.write_text(json.dumps(model.to_dict()))
        argv = ["--resolved", str(model_file), "--prompts", str(prompt_file), "--out", tmp, "--quiet"]
        if answers:
            answer_file = Path(tmp) / "answers.jsonl"
            answer_file.write_text("".join(json.dumps(a.to_dict()) + "\n" for a in answers))
            argv += ["--answers", str(answer_file)]
        proc = subprocess.run(
            [sys.executable, "-m", "kdeval.efficiency.bench", *argv, *_cfg_argv(cfg)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            tail = proc.stderr.strip()[-2000:]
            raise RuntimeError(f"kdeval bench exited with {proc.returncode}: {tail}")
        figures: dict[str, Any] = json.loads((Path(tmp) / "bench.json").read_text())["efficiency"]
        return next(iter(figures.values()))


def _cfg_argv(cfg: BenchConfig) -> list[str]:
    argv = ["--output-len", str(cfg.output_len), "--num-prompts", str(cfg.num_prompts)]
    argv += ["--throughput-prompts", str(cfg.throughput_prompts), "--warmup", str(cfg.warmup)]
    argv += ["--budget-s", str(cfg.budget_s), "--min-repeats", str(cfg.min_repeats)]
    argv += ["--max-repeats", str(cfg.max_repeats)]
    return argv + (["--repeats", str(cfg.repeats)] if cfg.repeats is not None else [])


# -- the command -------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    from kdeval.backends import names

    c = BenchConfig
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--model", metavar="PATH|URL", help="a checkpoint, or an OpenAI-compatible server's URL"
    )
    target.add_argument("--resolved", type=Path, help=argparse.SUPPRESS)  # compare's cost phase
    p.add_argument("--answers", type=Path, help=argparse.SUPPRESS)  # compare's full-answer prompts
    p.add_argument("--backend", choices=names(), default=None, help="default: vllm when it imports, else hf")
    p.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE",
        help="a backend option (repeatable), e.g. tensor_parallel_size=2 or concurrency=64",
    )  # fmt: skip
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
    p.add_argument(
        "--repeats", type=int, default=None, metavar="N",
        help="exactly N repeats of the latency and throughput passes (default: adaptive, repeated until "
        "the p50 and tokens/s agree within 10%% over the last 3 repeats or --budget-s is spent)",
    )  # fmt: skip
    p.add_argument(
        "--budget-s", type=float, default=c.budget_s, metavar="S",
        help=f"adaptive repeats: seconds of timed passes per model (default {c.budget_s:g})",
    )  # fmt: skip
    p.add_argument(
        "--min-repeats", type=int, default=c.min_repeats, metavar="N",
        help=f"adaptive repeats: at least N (default {c.min_repeats})",
    )  # fmt: skip
    p.add_argument(
        "--max-repeats", type=int, default=c.max_repeats, metavar="N",
        help=f"adaptive repeats: at most N (default {c.max_repeats})",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("runs/bench"), metavar="DIR")
    p.add_argument(
        "--dtype", default="auto", help="auto (the checkpoint's own) | float32 | bfloat16 | float16"
    )
    p.add_argument("--max-model-len", type=int, default=2048, metavar="N")
    p.add_argument("--batch-size", type=int, default=16, metavar="N", help="transformers backend batch size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--chat-template", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--quiet", action="store_true", help="print nothing; DIR/bench.json and bench.md only")


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_arguments(sub.add_parser("bench", help="measure one model's latency, throughput and memory"))


def _resolve_target(args: argparse.Namespace) -> ResolvedModel:
    if args.resolved is not None:
        from kdeval.backends.registry import ResolvedModel

        resolved: ResolvedModel = ResolvedModel.from_dict(json.loads(args.resolved.read_text()))
        return resolved
    from pydantic import ValidationError

    from kdeval.backends import default_backend, resolve
    from kdeval.config import ModelSpec, RunSpec, parse_options

    try:
        model = ModelSpec(
            name="model",
            path=args.model,
            backend=args.backend,
            options=parse_options(args.option, "--option"),
        )
        spec = RunSpec(
            models=[model],
            backend=args.backend or default_backend(),
            temperature=args.temperature,
            seed=args.seed,
            dtype=args.dtype,
            max_model_len=args.max_model_len,
            batch_size=args.batch_size,
            use_chat_template={"auto": None, "on": True, "off": False}[args.chat_template],
            trust_remote_code=args.trust_remote_code,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UserError(f"{'.'.join(map(str, err['loc']))}: {err['msg']}", where="kdeval bench") from None
    return resolve(spec, model)


def run(args: argparse.Namespace) -> int:
    """`kdeval bench`: writes DIR/bench.json and DIR/bench.md, prints the table."""
    from kdeval.report.cost import bench_markdown

    for flag in ("output_len", "num_prompts", "throughput_prompts", "repeats", "min_repeats", "max_repeats"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.budget_s <= 0:
        raise UserError(f"--budget-s must be positive, got {args.budget_s:g}")
    if args.min_repeats > args.max_repeats:
        raise UserError(
            f"--min-repeats {args.min_repeats} is more than --max-repeats {args.max_repeats}",
            fix="give a minimum no larger than the maximum",
        )
    model = _resolve_target(args)
    cfg = BenchConfig(
        args.num_prompts,
        args.throughput_prompts,
        args.output_len,
        args.warmup,
        args.repeats,
        budget_s=args.budget_s,
        min_repeats=args.min_repeats,
        max_repeats=args.max_repeats,
    )
    prompts = prompt_io.load(args.prompts, max(cfg.num_prompts, cfg.throughput_prompts), args.seed)
    answers = []
    if args.answers is not None:
        lines = args.answers.read_text(encoding="utf-8").splitlines()
        answers = [AnswerPrompt.from_dict(json.loads(x)) for x in lines if x.strip()]
    figures = measure_model(model, prompts, cfg, answers)
    name = model.name if args.resolved else Path(model.path).name or model.path
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "schema": "kdeval.bench",
        "model": model.path,
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
