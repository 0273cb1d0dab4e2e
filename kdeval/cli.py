"""Command line: parse, build the typed spec, call the core, print. Nothing else lives here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from kdeval import __version__
from kdeval.distill.cli import COMMANDS as DISTILL_COMMANDS
from kdeval.distill.cli import add_parsers as add_distill_parsers
from kdeval.efficiency.bench import add_parser as add_bench_parser
from kdeval.errors import UserError
from kdeval.gate.cli import add_parsers as add_gate_parsers

if TYPE_CHECKING:
    from kdeval.config import RunSpec
    from kdeval.runconfig import RunConfig
    from kdeval.runner import ProgressBar
    from kdeval.yamlfile import Lines


def _compare_parser(sub: argparse._SubParsersAction) -> None:
    from kdeval.backends import names

    # Defaults are None: a flag given overrides --config's file; the defaults live in RunConfig.
    p = sub.add_parser("compare", help="run teacher / baseline / distilled (and more) through the suites")
    p.add_argument(
        "--config", type=Path, metavar="RUN.yaml", help="models (with backends and options) and settings"
    )
    for role in ("teacher", "baseline", "distilled"):
        p.add_argument(
            f"--{role}", metavar="PATH|URL", help="a checkpoint, hub id or OpenAI-compatible server URL"
        )
    p.add_argument(
        "--model", action="append", default=[], metavar="NAME=PATH", help="an extra model (repeatable)"
    )
    p.add_argument(
        "--suite", action="append", default=[], metavar="NAME",
        help="run this suite's offline tasks (repeatable; default: every suite's offline tasks)",
    )  # fmt: skip
    p.add_argument(
        "--task", action="append", default=[], metavar="NAME",
        help="run this task (repeatable; default: every suite's offline tasks)",
    )  # fmt: skip
    p.add_argument("--data", action="append", default=[], metavar="TASK=FILE", help="data file for a task")
    _lmeval_flags(p)
    p.add_argument(
        "--backend", choices=names(), default=None,
        help="for local models (default: vllm when it imports, else hf); a URL is always openai",
    )  # fmt: skip
    p.add_argument(
        "--model-backend", action="append", default=[], metavar="NAME=BACKEND",
        help="one model's backend (default: --backend's)",
    )  # fmt: skip
    p.add_argument(
        "--option", action="append", default=[], metavar="NAME.KEY=VALUE",
        help="a backend option of one model (repeatable), e.g. teacher.tensor_parallel_size=2",
    )  # fmt: skip
    p.add_argument(
        "--thinking", action="append", default=[], metavar="NAME=auto|off|START,END",
        help="a model's thinking-trace delimiters (default auto: read from its chat template)",
    )  # fmt: skip
    p.add_argument(
        "--limit", type=int, default=None, metavar="N", help="first N examples per task (default: all)"
    )
    p.add_argument(
        "--max-tokens", action="append", default=[], metavar="N|TASK=N",
        help="generation budget for every task, or for one (repeatable); default: each task's own",
    )  # fmt: skip
    p.add_argument(
        "--samples", type=int, default=None, metavar="N",
        help="N sampled answers per example: mean@N, pass@k, maj@N (needs --temperature > 0)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="default: runs/latest")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default 0)")
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling (default 1.0: off)")
    p.add_argument(
        "--dtype", default=None, help="auto (the checkpoint's own; default) | float32 | bfloat16 | float16"
    )
    p.add_argument("--max-model-len", type=int, default=None, help="default 2048, capped at each model's")
    p.add_argument(
        "--batch-size", type=int, default=None, help="transformers backend batch size (default 16)"
    )
    p.add_argument(
        "--chat-template", choices=["auto", "on", "off"], default=None,
        help="auto (default): use the tokenizer's chat template when it has one",
    )  # fmt: skip
    p.add_argument(
        "--trust-remote-code", action="store_true", default=None,
        help="run a checkpoint's own model code (default: off, such checkpoints are refused)",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress output (default: progress on stderr)")
    p.add_argument(
        "--no-efficiency", action="store_true",
        help="skip the cost phase (latency, throughput, memory; default: measured, repeated until "
        "stable or 30 s of timed passes per model)",
    )  # fmt: skip
    p.add_argument(
        "--no-fidelity", action="store_true",
        help="skip the fidelity phase (students teacher-forced on the teacher's outputs: KL, top-1, "
        "perplexity, calibration; default: on when there is a teacher)",
    )  # fmt: skip
    p.add_argument(
        "--fidelity-topk", type=int, default=None, metavar="K",
        help="compare the teacher's top K tokens + one tail bucket (KL is then a lower bound; default: "
        "the full vocabulary on hf, top 20 from a vLLM teacher)",
    )  # fmt: skip


def _lmeval_flags(p: argparse.ArgumentParser) -> None:
    """lm-evaluation-harness tasks and `evaluate` metrics (the extra kdeval[lm-eval]); lm-eval's names."""
    p.add_argument(
        "--lm-eval-task", action="append", default=[], metavar="NAME",
        help="an lm-evaluation-harness task, group or tag (repeatable; needs kdeval[lm-eval])",
    )  # fmt: skip
    p.add_argument(
        "--lm-eval-include", action="append", default=[], metavar="DIR",
        help="a folder of your own lm-eval task YAMLs",
    )  # fmt: skip
    p.add_argument(
        "--num-fewshot", type=int, default=None, metavar="N", help="few-shot examples of lm-eval tasks"
    )
    p.add_argument(
        "--apply-chat-template", action="store_true", default=None,
        help="lm-eval tasks' prompts as chat turns, rendered with each model's template",
    )  # fmt: skip
    p.add_argument(
        "--system-instruction", default=None, metavar="TEXT", help="system prompt of lm-eval tasks"
    )
    p.add_argument(
        "--metric", action="append", default=[], metavar="TASK=evaluate:PATH",
        help="an extra corpus metric from the `evaluate` library for a task (a module folder or hub id)",
    )  # fmt: skip


def _lmeval_settings(args: argparse.Namespace, data: dict[str, Any]) -> None:
    """The lm-eval and evaluate flags on top of --config's `lm_eval:` and `evaluate:`."""
    from kdeval.config import parse_assignment

    given = {
        "tasks": args.lm_eval_task or None,
        "include": args.lm_eval_include or None,
        "num_fewshot": args.num_fewshot,
        "apply_chat_template": args.apply_chat_template,
        "system_instruction": args.system_instruction,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if given:
        data["lm_eval"] = {**data.get("lm_eval", {}), **given}
    for item in args.metric:
        task, spec = parse_assignment(item, "--metric")
        kind, sep, target = spec.partition(":")
        if kind != "evaluate" or not sep or not target:
            raise UserError(
                f"--metric expects TASK=evaluate:PATH_OR_ID, got '{item}'",
                fix="e.g. --metric gsm8k=evaluate:./metrics/my_metric",
            )
        data.setdefault("evaluate", {}).setdefault(task, []).append(target)


class OneLineParser(argparse.ArgumentParser):
    """argparse with kdeval's error contract: one line (what, how to fix), exit 2, no usage dump.
    Sub-commands' parsers are made from the same class (argparse's default parser_class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="kdeval", description="Did your distillation work?")
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
    x = sub.add_parser("export", help="write a run's scores or samples, or a leaderboard, as CSV or Parquet")
    x.add_argument("results", type=Path, nargs="+", metavar="DIR/results.json")
    x.add_argument(
        "--out", type=Path, required=True, metavar="FILE", help="FILE.csv, or FILE.parquet (needs pyarrow)"
    )
    x.add_argument(
        "--table",
        choices=["scores", "samples", "leaderboard"],
        default="scores",
        help="scores (default) or samples of one run; leaderboard of several",
    )
    x.add_argument("--model", metavar="NAME", help="samples of this model only")
    x.add_argument("--task", metavar="TASK", help="samples of this task only")
    x.add_argument(
        "--sort", default="overall", metavar="KEY", help="leaderboard order (as kdeval leaderboard)"
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


def run_config_from_args(args: argparse.Namespace) -> tuple[RunConfig, Path | None, Lines]:
    """--config's file (if any) with the flags given on top, checked against the one schema."""
    from pydantic import ValidationError

    from kdeval.config import parse_assignment, parse_value
    from kdeval.runconfig import RunConfig, load_run_config

    data: dict[str, Any] = {}
    lines: Lines = {}
    if args.config is not None:
        config, lines = load_run_config(args.config)
        data = config.model_dump(exclude_unset=True)
        data["models"] = {n: e.model_dump(exclude_unset=True) for n, e in config.models.items()}
    models: dict[str, dict[str, Any]] = data.setdefault("models", {})
    given = [(r, getattr(args, r)) for r in ("teacher", "baseline", "distilled") if getattr(args, r)]
    named = given + [parse_assignment(x, "--model") for x in args.model]
    for name, path in named:
        if sum(n == name for n, _ in named) > 1:
            raise UserError(f"model name used twice: {name}", fix="give each model its own name")
        models[name] = {"path": path}
    for name, backend in (parse_assignment(x, "--model-backend") for x in args.model_backend):
        _entry(models, name, "--model-backend")["backend"] = backend
    for name, value in (parse_assignment(x, "--thinking") for x in args.thinking):
        _entry(models, name, "--thinking")["thinking"] = value
    for item in args.option:
        target, value = parse_assignment(item, "--option")
        name, dot, key = target.partition(".")
        if not dot or not key:
            raise UserError(
                f"--option expects NAME.KEY=VALUE, got '{item}'", fix="e.g. --option teacher.concurrency=64"
            )
        _entry(models, name, "--option").setdefault("options", {})[key] = parse_value(value)
    flags = {
        "suites": args.suite or None,
        "tasks": args.task or None,
        "data": dict(parse_assignment(x, "--data") for x in args.data) or None,
        "use_chat_template": {"auto": None, "on": True, "off": False}[args.chat_template]
        if args.chat_template
        else ...,
        "efficiency": False if args.no_efficiency else None,
        "fidelity": False if args.no_fidelity else None,
        "max_tokens": _budget_flags(args.max_tokens) or None,
    }
    for key in ("backend", "limit", "out", "seed", "temperature", "top_p", "dtype", "max_model_len",
                "batch_size", "trust_remote_code", "samples", "fidelity_topk"):  # fmt: skip
        flags[key] = getattr(args, key)
    data.update({k: v for k, v in flags.items() if v is not None and v is not ...})
    _lmeval_settings(args, data)
    if not models:
        raise UserError(
            "no models given", fix="pass --teacher, --baseline, --distilled, --model NAME=PATH or --config"
        )
    try:
        return RunConfig.model_validate(data), args.config, lines
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(x) for x in err["loc"]]
        msg = str(err["msg"]).removeprefix("Value error, ")
        if loc[:1] == ["models"] and "[key]" in loc:
            raise UserError(
                f"bad --model name '{loc[1]}': {msg}", fix="use letters, digits, '.', '_', '-'"
            ) from None
        flag = _FLAG_OF.get(loc[0], f"--{loc[0].replace('_', '-')}") if loc else "compare"
        what = f"{flag} {'.'.join(loc[1:])}".strip()
        where = f"{args.config}" if args.config is not None else None
        got = err.get("input")
        shown = isinstance(got, int | float | str) and repr(got) not in msg and loc[:1] != ["models"]
        value = f" (got {got!r})" if shown else ""
        raise UserError(
            f"{what}: {msg}{value}", where=where, fix="see `kdeval compare --help` for the values it takes"
        ) from None


_FLAG_OF = {"models": "model", "suites": "--suite", "tasks": "--task", "data": "--data"}


def _budget_flags(items: list[str]) -> dict[str, int]:
    """--max-tokens N (every task) and --max-tokens TASK=N (one task)."""
    budgets: dict[str, int] = {}
    for item in items:
        task, sep, value = item.rpartition("=")
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1 or (sep and not task):
            raise UserError(
                f"--max-tokens expects N or TASK=N with N >= 1, got '{item}'",
                fix="e.g. --max-tokens 4096 or --max-tokens gsm8k=512",
            )
        budgets[task.strip() if sep else "*"] = n
    return budgets


def _entry(models: dict[str, dict[str, Any]], name: str, flag: str) -> dict[str, Any]:
    if name not in models:
        known = ", ".join(models) or "none yet"
        raise UserError(f"{flag}: no model named '{name}' (models: {known})", fix="name a model of the run")
    return models[name]


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    config, file, lines = run_config_from_args(args)
    return config.run_spec(lines=lines, file=file)


def cmd_compare(args: argparse.Namespace, argv: list[str]) -> int:
    from kdeval.compare import compare
    from kdeval.efficiency.bench import BenchConfig
    from kdeval.fidelity.phase import FidelityConfig
    from kdeval.plugins import load_catalog
    from kdeval.report.markdown import render

    config, file, lines = run_config_from_args(args)
    spec = config.run_spec(lines=lines, file=file)

    def log(msg: str) -> None:
        if not args.quiet or msg.startswith("warning:"):  # --quiet hides progress, not warnings
            print(msg, file=sys.stderr, flush=True)

    result = compare(
        spec,
        load_catalog(),
        argv=["kdeval", *argv],
        log=log,
        progress=None if args.quiet else _tqdm_progress,
        efficiency=BenchConfig() if config.efficiency else None,
        fidelity=FidelityConfig(topk=config.fidelity_topk) if config.fidelity else None,
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


def cmd_export(args: argparse.Namespace) -> int:
    from kdeval.frames import export

    n = export(args.table, args.results, args.out, model=args.model, task=args.task, sort=args.sort)
    print(f"wrote {args.out} ({n} rows)", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from kdeval.backends.enginelogs import quiet_engine_logs

    quiet_engine_logs()  # before anything imports vllm: its log goes to stderr, stdout stays ours
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

            return run_distill_cli(args, argv)
        if args.command in ("gate", "leaderboard"):
            from kdeval.gate.cli import run as run_gate_cli

            return run_gate_cli(args)
        if args.command == "export":
            return cmd_export(args)
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
