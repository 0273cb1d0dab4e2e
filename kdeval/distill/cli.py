"""`kdeval distill`, `kdeval run` and `kdeval demo`: parse, call the core, print.

distill: flags (or a YAML file, flags winning) -> DistillConfig -> train -> one summary line.
run:     a pipeline file -> distill, then compare (kdeval.distill.pipeline).
demo:    the whole loop on tiny models built here (kdeval.distill.demo).
Only argparse and the config model load here, so `kdeval --help` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from kdeval.distill import methods
from kdeval.distill.config import DistillConfig, load_config

#: The subcommands `add_parsers` defines; kdeval.cli sends each of them to `run`.
COMMANDS = ("distill", "run", "demo")

#: flag -> (config field, type); the defaults live in DistillConfig, not here, so a YAML file's
#: values are only overridden by flags the user actually gave.
_FLAGS: dict[str, tuple[str, Any]] = {
    "--teacher": ("teacher", str),
    "--student": ("student", str),
    "--train": ("train", str),
    "--valid": ("valid", str),
    "--out": ("out", str),
    "--temperature": ("temperature", float),
    "--alpha": ("alpha", float),
    "--beta": ("beta", float),
    "--skew": ("skew", float),
    "--lr": ("lr", float),
    "--batch-size": ("batch_size", int),
    "--grad-accum": ("grad_accum", int),
    "--epochs": ("epochs", int),
    "--max-steps": ("max_steps", int),
    "--seed": ("seed", int),
    "--max-len": ("max_len", int),
    "--checkpoint-every": ("checkpoint_every", int),
    "--checkpoint-minutes": ("checkpoint_minutes", float),
    "--topk": ("topk", int),
    "--topk-cache": ("topk_cache", str),
    "--topk-shard": ("topk_shard", int),
    "--chunk-size": ("chunk_size", int),
    "--teacher-backend": ("teacher_backend", str),
    "--teacher-max-tokens": ("teacher_max_tokens", int),
    "--teacher-thinking": ("teacher_thinking", str),
    # gkd (kdeval.distill.onpolicy)
    "--lmbda": ("lmbda", float),
    "--student-temperature": ("student_temperature", float),
    "--student-max-tokens": ("student_max_tokens", int),
    "--lora-r": ("lora_r", int),
    "--lora-alpha": ("lora_alpha", int),
    "--lora-target": ("lora_target", str),
}
#: on/off flags: (config field); None when not given, so a YAML file's value stands.
_SWITCHES = {"--gradient-checkpointing": "gradient_checkpointing", "--save-adapter": "save_adapter"}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    _distill_parser(sub)
    r = sub.add_parser(
        "run",
        help="distill, then compare teacher / baseline / distilled, as one pipeline file says",
        description="See examples/pipeline.yaml for the file's keys.",
    )
    r.add_argument("pipeline", type=Path, metavar="PIPELINE.yaml")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    _demo_parser(sub)


def _methods_help() -> str:
    """The loss methods as the registry (kdeval.distill.methods) describes them."""
    # argparse %-formats help strings
    return "; ".join(f"{n}: {methods.get(n).summary}" for n in methods.names()).replace("%", "%%")


def _demo_parser(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser(
        "demo",
        help="the whole loop on tiny models built here: teacher, baseline, distilled, compare, verdict",
        description="Trains a tiny teacher, baseline and distilled student on the offline suites' "
        "training splits in the realistic regime (a small gold set for the baseline; the teacher "
        "answers a larger pool of prompts for the distilled student; cached, keyed by their "
        "settings), compares them on the test splits with the cost phase and says whether "
        "distillation helped. Writes into the work folder only.",
    )
    d.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="report folder (default WORKDIR/report)"
    )
    d.add_argument(
        "--workdir", type=Path, default=None, metavar="DIR", help="model cache (default ~/.cache/kdeval/demo)"
    )
    d.add_argument(
        "--backend",
        choices=("vllm", "hf"),
        default=None,
        help="local backend (default: vllm when it imports)",
    )
    d.add_argument("--method", choices=methods.teacher_methods(), default=None)
    d.add_argument("--limit", type=int, default=None, metavar="N", help="first N test examples per task")
    d.add_argument("--quick", action="store_true", help="a smaller smoke run: a few examples, few steps")
    d.add_argument("--quiet", action="store_true", help="no progress bars")


def _distill_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill",
        help="train a student from a teacher (or on gold responses) into a Hugging Face model directory",
        description="Defaults (lr 2e-5, batch size 2, grad accumulation 8, 3 epochs, T=1, alpha=0.5) "
        "are in kdeval/distill/config.py; --config YAML gives any field, flags override it.",
    )
    for flag, (field, kind) in _FLAGS.items():
        info = DistillConfig.model_fields[field]
        metavar = "PATH" if kind is str and field not in ("teacher_backend", "teacher_thinking") else None
        metavar = "NAMES" if field == "lora_target" else metavar
        p.add_argument(flag, dest=field, type=kind, default=None, metavar=metavar, help=info.description)
    p.add_argument("--method", default=None, choices=methods.names(), help=_methods_help())
    p.add_argument(
        "--precision",
        default=None,
        choices=("fp32", "bf16", "fp16"),
        help=DistillConfig.model_fields["precision"].description,
    )
    for flag, field in _SWITCHES.items():
        info = DistillConfig.model_fields[field]
        p.add_argument(flag, dest=field, action="store_true", default=None, help=info.description)
    p.add_argument(
        "--num-processes", type=int, default=None, metavar="N",
        help="train in N processes (data parallel, through accelerate's launcher; gloo on CPU): same "
        "data order, global batch and result as one process; or launch with accelerate launch -m kdeval",
    )  # fmt: skip
    p.add_argument("--config", type=Path, default=None, metavar="YAML", help="settings file (flags win)")
    p.add_argument("--chat-template", choices=["auto", "on", "off"], default=None)
    p.add_argument("--trust-remote-code", action="store_true", default=None)
    p.add_argument(
        "--teacher-option", action="append", default=[], metavar="KEY=VALUE",
        help="an option of the teacher's backend (repeatable): concurrency=64, tensor_parallel_size=8",
    )  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue OUT's run from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace) -> DistillConfig:
    overrides = {field: getattr(args, field) for field, _ in _FLAGS.values()}
    overrides["method"] = args.method
    overrides["precision"] = args.precision
    overrides.update({field: getattr(args, field) for field in _SWITCHES.values()})
    overrides["trust_remote_code"] = args.trust_remote_code
    if args.teacher_option:
        from kdeval.config import parse_options

        overrides["teacher_options"] = parse_options(args.teacher_option, "--teacher-option")
    if args.chat_template is not None:
        overrides["use_chat_template"] = {"auto": None, "on": True, "off": False}[args.chat_template]
    cfg = load_config(args.config, overrides)
    from kdeval.distill.suitedata import looks_like_name, resolve_train

    if looks_like_name(cfg.train):  # a suite or task name: its training split, as a JSONL file
        cfg = cfg.model_copy(update={"train": resolve_train(cfg.train)})
    return cfg


def run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    if args.command == "run":
        return _run_pipeline(args)
    if args.command == "demo":
        return _run_demo(args)
    from kdeval.distill import train

    cfg = config_from_args(args)
    from kdeval.outdir import check_out

    check_out(Path(cfg.out))  # a file or an unwritable folder: one line, before any model loads
    if args.num_processes is not None:
        from kdeval.distill import accel

        accel.check_launch(cfg.precision, args.num_processes)
        accel.check_num_processes(args.num_processes)
        accel.check_method(cfg.method, args.num_processes)
        if args.num_processes > 1 and accel.launched_world() == 1:
            _check_before_launch(cfg)
            return _launch(list(sys.argv[1:] if argv is None else argv), args.num_processes, cfg.precision)
    result = train(cfg, resume=args.resume, progress=not args.quiet)
    if os.environ.get("RANK", "0") != "0":  # one summary line per run, from the main process
        return 0
    print(
        f"distilled {cfg.method}: {result.steps} steps, final loss {result.final_loss:.4f}, "
        f"{result.tokens_per_s:.0f} tokens/s -> {result.out}",
        file=sys.stderr,
    )
    return 0


def _check_before_launch(cfg: DistillConfig) -> None:
    """The input checks every process would make, made once here: a mistake is one line, not one
    per process plus the launcher's report of failed workers."""
    from kdeval.distill.accel import check_precision
    from kdeval.distill.lora import check_config_targets
    from kdeval.distill.models import default_device
    from kdeval.distill.setup import check_inputs

    check_precision(cfg.precision, default_device())
    check_inputs(cfg)
    check_config_targets(cfg)
    from kdeval.distill.data import read_records, require_responses

    if methods.get(cfg.method).teacher != "text":  # seqkd's teacher writes the responses
        require_responses(read_records(Path(cfg.train)), cfg.method)
    if cfg.valid:
        require_responses(read_records(Path(cfg.valid)), "validation")


def _launch(argv: list[str], n: int, precision: str) -> int:
    """Run this same command in n processes under accelerate's launcher; its exit status."""
    import subprocess

    from kdeval.distill.accel import launch_command, strip_flag

    cmd = launch_command(strip_flag(argv, "--num-processes"), n, precision)
    return subprocess.run(cmd, check=False).returncode


def _run_pipeline(args: argparse.Namespace) -> int:
    from kdeval.distill.demo_report import verdict
    from kdeval.distill.pipeline import run_pipeline

    report = run_pipeline(args.pipeline, progress=not args.quiet)
    print(report.read_text(encoding="utf-8"))
    print(f"wrote {report} and {report.parent / 'results.json'}", file=sys.stderr)
    print(verdict(report.parent / "results.json"))
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from kdeval.distill.demo import QUICK, DemoConfig, default_workdir, run_demo
    from kdeval.errors import UserError

    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, got {args.limit}")
    cfg = QUICK if args.quick else DemoConfig()
    changes = {k: v for k, v in (("method", args.method), ("limit", args.limit)) if v is not None}
    cfg = cfg.model_copy(update=changes)
    result = run_demo(
        cfg,
        workdir=args.workdir or default_workdir(),
        out=args.out,
        backend=args.backend,
        progress=not args.quiet,
    )
    # The report ends with the verdict line: printed once, as the last line of the output.
    print((result.out / "report.md").read_text(encoding="utf-8").rstrip("\n"))
    print(f"wrote {result.out / 'report.md'}; {result.seconds['total']:.0f} s in all", file=sys.stderr)
    return 0
