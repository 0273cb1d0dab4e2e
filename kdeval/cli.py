"""Command line: parse, build the typed spec, call the core, print. Nothing else lives here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kdeval import __version__
from kdeval.distill.cli import COMMANDS as DISTILL_COMMANDS
from kdeval.distill.cli import add_parsers as add_distill_parsers
from kdeval.efficiency.bench import add_parser as add_bench_parser
from kdeval.errors import UserError
from kdeval.gate.cli import add_parsers as add_gate_parsers

if TYPE_CHECKING:
    from kdeval.config import RunSpec
    from kdeval.runner import ProgressBar


def _compare_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="run teacher / baseline / distilled (and more) through the suites")
    p.add_argument("--teacher", metavar="PATH")
    p.add_argument("--baseline", metavar="PATH")
    p.add_argument("--distilled", metavar="PATH")
    p.add_argument(
        "--model", action="append", default=[], metavar="NAME=PATH", help="an extra model (repeatable)"
    )
    p.add_argument(
        "--suite", action="append", default=[], metavar="NAME", help="run this suite's offline tasks"
    )
    p.add_argument("--task", action="append", default=[], metavar="NAME", help="run this task (repeatable)")
    p.add_argument("--data", action="append", default=[], metavar="TASK=FILE", help="data file for a task")
    p.add_argument(
        "--backend", choices=["vllm", "hf"], default=None, help="default: vllm when it imports, else hf"
    )
    p.add_argument("--limit", type=int, default=None, metavar="N", help="first N examples per task")
    p.add_argument("--out", type=Path, default=Path("runs/latest"), metavar="DIR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 | auto")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=16, help="transformers backend batch size")
    p.add_argument("--chat-template", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument(
        "--no-efficiency", action="store_true", help="skip the cost phase (latency, throughput, memory)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdeval", description="Did your distillation work?")
    parser.add_argument("--version", action="version", version=f"kdeval {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("suites", help="list every suite and task")
    _compare_parser(sub)
    add_bench_parser(sub)
    r = sub.add_parser("report", help="re-render the report from stored results (no model runs)")
    r.add_argument("results", type=Path, metavar="DIR/results.json")
    r.add_argument(
        "--out", type=Path, default=None, metavar="FILE", help="default: report.md beside the results"
    )
    add_gate_parsers(sub)
    add_distill_parsers(sub)
    return parser


def cmd_suites() -> int:
    from kdeval.plugins import load_catalog

    catalog = load_catalog()
    print("| suite | family | task | size | type | metrics | data |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for suite in catalog.suites.values():
        for t in suite.tasks:
            n = t.size()
            size = str(n) if n is not None else "—"
            print(
                f"| {suite.name} | {t.family} | {t.name} | {size} | {t.task_type} | "
                f"{', '.join(t.metrics)} | {t.data_source} |"
            )
    return 0


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    from pydantic import ValidationError

    from kdeval.config import ModelSpec, RunSpec, parse_assignment

    models = [
        ModelSpec(name=r, path=getattr(args, r), role=r)
        for r in ("teacher", "baseline", "distilled")
        if getattr(args, r)
    ]
    try:
        models += [ModelSpec(name=n, path=p) for n, p in (parse_assignment(x, "--model") for x in args.model)]
    except ValidationError as exc:
        raise UserError(
            f"bad --model name: {exc.errors()[0]['msg']}", fix="use letters, digits, '.', '_', '-'"
        ) from None
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, got {args.limit}")
    backend = args.backend
    if backend is None:
        from kdeval.backends import vllm_available

        backend = "vllm" if vllm_available() else "hf"
    return RunSpec(
        models=models,
        suites=args.suite,
        tasks=args.task,
        data=dict(parse_assignment(x, "--data") for x in args.data),
        backend=backend,
        limit=args.limit,
        out=args.out,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        batch_size=args.batch_size,
        use_chat_template={"auto": None, "on": True, "off": False}[args.chat_template],
        trust_remote_code=args.trust_remote_code,
    )


def cmd_compare(args: argparse.Namespace, argv: list[str]) -> int:
    from kdeval.compare import compare
    from kdeval.efficiency.bench import BenchConfig
    from kdeval.plugins import load_catalog
    from kdeval.report.markdown import render

    spec = spec_from_args(args)

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    result = compare(
        spec,
        load_catalog(),
        argv=["kdeval", *argv],
        log=log,
        progress=None if args.quiet else _tqdm_progress,
        efficiency=None if args.no_efficiency else BenchConfig(),
    )
    print(render(result))
    print(
        f"wrote {spec.out / 'report.md'}, {spec.out / 'results.json'} and {spec.out / 'samples'}/",
        file=sys.stderr,
    )
    return 0


def _tqdm_progress(desc: str, total: int) -> ProgressBar:
    from tqdm import tqdm

    bar: ProgressBar = tqdm(total=total, desc=desc, unit="req", file=sys.stderr, dynamic_ncols=True)
    return bar


def cmd_report(args: argparse.Namespace) -> int:
    from kdeval.compare import rerender

    print(rerender(args.results, args.out))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "suites":
            return cmd_suites()
        if args.command == "compare":
            return cmd_compare(args, argv)
        if args.command == "bench":
            from kdeval.efficiency.bench import run as run_bench

            return run_bench(args)
        if args.command in DISTILL_COMMANDS:
            from kdeval.distill.cli import run as run_distill_cli

            return run_distill_cli(args)
        if args.command in ("gate", "leaderboard"):
            from kdeval.gate.cli import run as run_gate_cli

            return run_gate_cli(args)
        return cmd_report(args)
    except UserError as exc:
        print(f"kdeval: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "kdeval: interrupted; completed samples are kept, run the same command to resume", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
