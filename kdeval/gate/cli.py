"""`kdeval gate` and `kdeval leaderboard`: argument parsing and printing only.

`add_parsers(sub)` adds both subcommands to kdeval's parser; `run(args)` runs the chosen one and
returns the exit code (0 pass, 1 regression, 2 unusable input; UserError propagates to the
caller, which prints it as one line and exits 2). `main(argv)` runs them standalone.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from kdeval.datafiles import write_atomic
from kdeval.errors import UserError

_RULE_HELP = (
    "a rule (repeatable): PATH:TOLERANCE such as qa.f1:-1pt, math.accuracy:-2%%, latency.p50:+10%%; "
    "or PATH>=BOUND such as qa.f1>=70, retention>=0.90"
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("gate", help="fail when a candidate run regressed against a baseline run")
    g.add_argument("--baseline", type=Path, required=True, metavar="OLD/results.json")
    g.add_argument("--candidate", type=Path, required=True, metavar="NEW/results.json")
    g.add_argument("--rule", action="append", default=[], metavar="RULE", help=_RULE_HELP)
    g.add_argument(
        "--config", type=Path, metavar="gate.yaml", help="standing rules (rules, alpha, strict, model)"
    )
    g.add_argument("--alpha", type=float, default=None, help="significance level (default 0.05)")
    g.add_argument(
        "--strict", action="store_true", help="fail drops beyond tolerance even when not significant"
    )
    g.add_argument("--model", metavar="NAME", help="model to gate (default: the distilled one)")
    g.add_argument("--summary-md", type=Path, metavar="FILE", help="write a markdown summary (PR comment)")
    g.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML, one test case per rule")
    lb = sub.add_parser("leaderboard", help="markdown leaderboard from results files")
    lb.add_argument("results", type=Path, nargs="+", metavar="RUN/results.json")
    lb.add_argument("--out", type=Path, metavar="LEADERBOARD.md", help="write here (default: print)")
    lb.add_argument(
        "--sort", default="overall", metavar="KEY", help="overall | FAMILY | METRIC | SCOPE.METRIC"
    )
    lb.add_argument(
        "--keep",
        choices=["newest", "last"],
        default="newest",
        help="which run of a model wins (default newest)",
    )


def run(args: argparse.Namespace) -> int:
    return cmd_gate(args) if args.command == "gate" else cmd_leaderboard(args)


def cmd_gate(args: argparse.Namespace) -> int:
    from kdeval.gate import render
    from kdeval.gate.rules import load_config, parse_rule
    from kdeval.gate.run import Options, gate

    try:
        loaded = load_config(args.config) if args.config else None
        rules = [*(loaded.rules if loaded else []), *(parse_rule(r, where="--rule") for r in args.rule)]
        cfg = loaded.config if loaded else None
        alpha = args.alpha if args.alpha is not None else (cfg.alpha if cfg else 0.05)
        if not 0 < alpha < 1:
            raise UserError(f"--alpha must be between 0 and 1, got {alpha:g}")
        model = args.model or (cfg.model if cfg else None)
        options = Options(alpha, args.strict or bool(cfg and cfg.strict), model)
        result = gate(args.baseline, args.candidate, rules, options)
    except UserError as exc:
        _write_unusable(args, str(exc))  # CI still gets a comment and a red test saying why
        raise
    print(render.text(result))
    if args.summary_md:
        write_atomic(args.summary_md, render.markdown(result))
    if args.junit:
        write_atomic(args.junit, render.junit(result))
    return result.exit_code


def _write_unusable(args: argparse.Namespace, message: str) -> None:
    from kdeval.gate import render

    if args.summary_md:
        write_atomic(args.summary_md, render.markdown_unusable(message))
    if args.junit:
        write_atomic(args.junit, render.junit_unusable(message))


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from kdeval.gate import load_run
    from kdeval.report import leaderboard

    rows = leaderboard.build([load_run(p) for p in args.results], args.keep)
    text = leaderboard.render(rows, args.sort, args.keep)
    if args.out:
        write_atomic(args.out, text)
        print(f"wrote {args.out} ({len(rows)} models)", file=sys.stderr)
    else:
        print(text, end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (`python -m kdeval.gate.cli gate ...`), with kdeval's error handling."""
    parser = argparse.ArgumentParser(prog="kdeval")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return run(args)
    except UserError as exc:
        print(f"kdeval: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
