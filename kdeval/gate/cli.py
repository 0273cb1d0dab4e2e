"""`kdeval gate` and `kdeval leaderboard`: argument parsing and printing only.

`add_parsers(sub)` adds both subcommands to kdeval's parser; `run(args)` runs the chosen one and
returns the exit code (0 pass, 1 regression, 2 unusable input; UserError propagates to the
caller, which prints it as one line and exits 2). `main(argv)` runs them standalone.

The baseline run is --baseline, else gate.yaml's `baseline_results`; the candidate run is
--candidate, else the run gate.yaml's `compare:` section makes (see `kdeval.gate.config`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kdeval.datafiles import write_atomic
from kdeval.errors import UserError

if TYPE_CHECKING:
    from kdeval.gate.rules import GateConfig, LoadedConfig, Rule
    from kdeval.gate.run import Options

#: The rules checked when neither --rule nor gate.yaml's rules: gives any: the overall score (the
#: mean over families of each task's primary metric) may not drop by more than 1 point, significantly.
DEFAULT_RULES = ("overall:-1pt",)

_RULE_HELP = (
    "a rule (repeatable): PATH:TOLERANCE such as qa.f1:-1pt, math.accuracy:-2%%, latency.p50:+10%%; "
    "or PATH>=BOUND such as qa.f1>=70, retention>=0.90 "
    f"(default, when neither --rule nor gate.yaml gives one: {' '.join(DEFAULT_RULES)})"
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("gate", help="fail when a candidate run regressed against a baseline run")
    g.add_argument(
        "--baseline", type=Path, metavar="OLD/results.json", help="default: gate.yaml's baseline_results"
    )
    g.add_argument(
        "--candidate",
        type=Path,
        metavar="NEW/results.json",
        help="default: the run that gate.yaml's compare: section makes",
    )
    g.add_argument("--rule", action="append", default=[], metavar="RULE", help=_RULE_HELP)
    g.add_argument(
        "--config",
        type=Path,
        metavar="gate.yaml",
        help="standing rules (rules, alpha, strict, model), baseline_results, and a compare: section",
    )
    g.add_argument(
        "--compare-only",
        action="store_true",
        help="run gate.yaml's compare: section and stop (e.g. to store main's baseline run)",
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
    from kdeval.gate.run import gate

    try:
        plan = _plan(args)
        if args.compare_only:
            _run_compare(args, plan)
            return 0
        candidate = args.candidate or _run_compare(args, plan)
        assert plan.baseline is not None  # _plan refuses a gate without one
        result = gate(plan.baseline, candidate, plan.rules, plan.options)
        if not args.rule and not args.config:  # said once the runs loaded, so an error stays one line
            print(
                f"kdeval gate: no rules given; used the default {', '.join(DEFAULT_RULES)}", file=sys.stderr
            )
    except UserError as exc:
        _write_unusable(args, str(exc))  # CI still gets a comment and a red test saying why
        raise
    print(render.text(result))
    if args.summary_md:
        write_atomic(args.summary_md, render.markdown(result))
    if args.junit:
        write_atomic(args.junit, render.junit(result))
    return result.exit_code


@dataclass(frozen=True)
class _Plan:
    """The gate's inputs from flags and gate.yaml (flags win), checked before anything runs."""

    loaded: LoadedConfig | None
    rules: list[Rule]
    options: Options
    baseline: Path | None


def _plan(args: argparse.Namespace) -> _Plan:
    from kdeval.gate.rules import load_config, parse_rule

    loaded = load_config(args.config) if args.config else None
    cfg = loaded.config if loaded else None
    rules = [*(loaded.rules if loaded else []), *(parse_rule(r, where="--rule") for r in args.rule)]
    if not rules and not args.compare_only:
        rules = [parse_rule(r, where="default rule") for r in DEFAULT_RULES]
    plan = _Plan(loaded, rules, _options(args, cfg), args.baseline or (cfg.baseline_results if cfg else None))
    _check_inputs(args, plan, has_compare=bool(cfg and cfg.compare))
    return plan


def _options(args: argparse.Namespace, cfg: GateConfig | None) -> Options:
    from kdeval.gate.run import Options

    alpha = args.alpha if args.alpha is not None else (cfg.alpha if cfg else 0.05)
    if not 0 < alpha < 1:
        raise UserError(f"--alpha must be between 0 and 1, got {alpha:g}")
    model = args.model or (cfg.model if cfg else None)
    return Options(alpha, args.strict or bool(cfg and cfg.strict), model)


def _check_inputs(args: argparse.Namespace, plan: _Plan, *, has_compare: bool) -> None:
    """Missing inputs are refused here, before a compare: run spends minutes or GPU hours."""
    if args.compare_only:
        if not has_compare:
            raise UserError("--compare-only needs a compare: section in the --config file")
        return
    if plan.baseline is None:
        raise UserError("no baseline run", fix="pass --baseline OLD/results.json or set baseline_results:")
    if args.candidate is None and not has_compare:
        raise UserError(
            "no candidate run", fix="pass --candidate NEW/results.json or add a compare: section to gate.yaml"
        )
    if args.candidate is not None and has_compare:
        print("kdeval gate: --candidate given, so gate.yaml's compare: section is not run", file=sys.stderr)


def _run_compare(args: argparse.Namespace, plan: _Plan) -> Path:
    """Run gate.yaml's compare: section; its results.json is the candidate run."""
    from kdeval.gate.config import DEFAULT_OUT, precheck, run_compare
    from kdeval.outdir import check_out
    from kdeval.runs import load_run

    assert plan.loaded is not None and plan.loaded.config.compare is not None
    section, where = plan.loaded.config.compare, plan.loaded.where("compare")
    spec = section.run_spec(
        default_out=DEFAULT_OUT, lines=plan.loaded.lines, file=plan.loaded.file, prefix=("compare",)
    )
    if plan.baseline is not None and not args.compare_only:
        precheck(spec, load_run(plan.baseline).result, plan.options.model, where)
    check_out(spec.out, "compare.out:", where)  # a folder another run holds: refused before the log
    print(f"kdeval gate: running the compare: of {where} into {spec.out}", file=sys.stderr, flush=True)
    from kdeval.fidelity.phase import FidelityConfig

    return run_compare(
        spec,
        efficiency=section.efficiency,
        fidelity=FidelityConfig(topk=section.fidelity_topk) if section.fidelity else None,
        argv=["kdeval", "gate", "--config", str(args.config)],
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
    )


def _write_unusable(args: argparse.Namespace, message: str) -> None:
    from kdeval.gate import render

    if args.summary_md:
        write_atomic(args.summary_md, render.markdown_unusable(message))
    if args.junit:
        write_atomic(args.junit, render.junit_unusable(message))


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from kdeval.report import leaderboard
    from kdeval.runs import load_run

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
