"""gate.yaml's `compare:` section: the gate runs `kdeval compare` itself, so one CI step does all.

    baseline_results: runs/main/results.json   # the stored run to gate against (or --baseline)
    compare:                                   # makes the candidate run (unless --candidate)
      models:                                  # name: path (or {path, backend, options}); teacher,
        teacher: checkpoints/teacher           # baseline and distilled are roles, any other
        distilled: checkpoints/student         # name is an extra model
      suites: [qa, math]                       # and/or tasks: [nli_synth]
      limit: 200
      backend: hf                              # default: vllm when it imports, else hf
      out: runs/current                        # results.json and samples/ of the candidate
      efficiency: true                         # the cost phase; latency/memory rules need it

The section is the run file of `kdeval compare --config` (kdeval.runconfig.RunConfig, one schema
for both), so a teacher on a server or a student on parallel vLLM is written the same way.
Paths are relative to the working directory, as on the command line. The run goes through
`kdeval.compare.compare` with the installed suites, exactly as `kdeval compare` runs it.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kdeval.config import RunSpec
from kdeval.errors import UserError
from kdeval.runconfig import RunConfig

if TYPE_CHECKING:
    from kdeval.fidelity.phase import FidelityConfig
    from kdeval.plugins import Catalog
    from kdeval.results import RunResult
    from kdeval.runner import BackendFactory

Log = Callable[[str], None]

#: gate.yaml's compare: section is a run file.
CompareSection = RunConfig
#: Where the candidate run goes when compare: names no out.
DEFAULT_OUT = Path("runs/current")


def precheck(spec: RunSpec, baseline: RunResult, model: str | None, where: str) -> None:
    """Refuse, before any model runs, a compare whose run the gate would refuse afterwards."""
    names = [m.name for m in spec.models]
    if model is not None and model not in names:
        raise UserError(f"model '{model}' is not in compare.models ({', '.join(names)})", where=where)
    if model is None and "distilled" not in names and len(names) != 1:
        raise UserError(
            f"no 'distilled' model among compare.models ({', '.join(names)})",
            where=where,
            fix="name the gated model 'distilled', or set model: NAME",
        )
    from kdeval.runs import IGNORED_SETTINGS

    # The settings RunSpec has: what compare would record differently.
    differ = [
        f"setting {key} {value!r} (baseline) vs {getattr(spec, key)!r} (compare:)"
        for key, value in sorted(baseline.settings.values().items())
        if key not in IGNORED_SETTINGS and hasattr(spec, key) and getattr(spec, key) != value
    ]
    if differ:
        raise UserError(
            "compare: would make a run the baseline cannot be compared with: " + "; ".join(differ),
            where=where,
            fix="use the settings the baseline run was made with",
        )


def run_compare(
    spec: RunSpec,
    *,
    efficiency: bool,
    argv: list[str],
    fidelity: FidelityConfig | None = None,
    log: Log,
    catalog: Catalog | None = None,
    make_backend: BackendFactory | None = None,
) -> Path:
    """Run the comparison as `kdeval compare` would; returns the path of its results.json."""
    from kdeval.compare import compare
    from kdeval.efficiency.bench import BenchConfig
    from kdeval.plugins import load_catalog
    from kdeval.runner import default_backend_factory

    try:
        compare(
            spec,
            catalog or load_catalog(),
            argv=argv,
            log=log,
            make_backend=make_backend or default_backend_factory,
            efficiency=BenchConfig() if efficiency else None,
            fidelity=fidelity,
        )
    except (RuntimeError, OSError, ValueError) as exc:
        # A crash is not a regression: exit 2 (unusable input) with the cause, never exit 1.
        log(traceback.format_exc().rstrip())
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserError(f"the compare: run failed ({type(exc).__name__}: {first})") from None
    return spec.out / "results.json"
