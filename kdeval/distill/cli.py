"""`kdeval distill`: flags (or a YAML file, flags winning) -> DistillConfig -> train -> one summary line.

Only argparse and the config model load here, so `kdeval --help` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kdeval.distill.config import DistillConfig, load_config

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
    "--topk": ("topk", int),
    "--topk-cache": ("topk_cache", str),
    "--chunk-size": ("chunk_size", int),
    "--teacher-backend": ("teacher_backend", str),
    "--teacher-max-tokens": ("teacher_max_tokens", int),
}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill",
        help="train a student from a teacher (or on gold responses) into a Hugging Face model directory",
        description="Defaults (lr 2e-5, batch size 2, grad accumulation 8, 3 epochs, T=1, alpha=0.5) "
        "are in kdeval/distill/config.py; --config YAML gives any field, flags override it.",
    )
    for flag, (field, kind) in _FLAGS.items():
        info = DistillConfig.model_fields[field]
        metavar = "PATH" if kind is str and field not in ("teacher_backend",) else None
        p.add_argument(flag, dest=field, type=kind, default=None, metavar=metavar, help=info.description)
    p.add_argument("--method", default=None, choices=["sft", "seqkd", "kd", "jsd", "tvd", "skl"])
    p.add_argument("--config", type=Path, default=None, metavar="YAML", help="settings file (flags win)")
    p.add_argument("--chat-template", choices=["auto", "on", "off"], default=None)
    p.add_argument("--trust-remote-code", action="store_true", default=None)
    p.add_argument("--resume", action="store_true", help="continue OUT's run from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace) -> DistillConfig:
    overrides = {field: getattr(args, field) for field, _ in _FLAGS.values()}
    overrides["method"] = args.method
    overrides["trust_remote_code"] = args.trust_remote_code
    if args.chat_template is not None:
        overrides["use_chat_template"] = {"auto": None, "on": True, "off": False}[args.chat_template]
    return load_config(args.config, overrides)


def run(args: argparse.Namespace) -> int:
    from kdeval.distill import train

    cfg = config_from_args(args)
    result = train(cfg, resume=args.resume, progress=not args.quiet)
    print(
        f"distilled {cfg.method}: {result.steps} steps, final loss {result.final_loss:.4f}, "
        f"{result.tokens_per_s:.0f} tokens/s -> {result.out}",
        file=sys.stderr,
    )
    return 0
