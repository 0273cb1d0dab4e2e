"""The regression gate (`kdeval gate`): does a candidate run fall short of a baseline run?

This module holds the runs: loading, choosing the gated model, resolving a rule's scope to
tasks, and the comparability check. `rules` parses rule strings and gate.yaml, `config` runs
gate.yaml's `compare:` section (the candidate run), `stats` holds the paired tests, `run`
evaluates the rules and decides, `render` writes the text, markdown and JUnit outputs, `cli`
wires `kdeval gate` and `kdeval leaderboard`.

`RunResult.efficiency` holds cost figures per model name, measured in their own phase::

      "efficiency": {
        "distilled": {
          "device": "NVIDIA H100 80GB HBM3",        # latency rules refuse different devices
          "latency_ms": {"mean": 41.0, "p50": 40.2, "p90": 47.9, "p99": 55.1},
          "memory_mib": {"weights": 480.0, "kv_cache": 1024.0, "peak": 1630.0},
          "throughput": {"requests_per_s": 31.5, "tokens_per_s": 2010.0}
        }
      }
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdeval.errors import UserError
from kdeval.results import RunResult

if TYPE_CHECKING:
    from kdeval.gate.rules import Rule

# settings that do not change model outputs (batch size, by design) or are hashes of the rest
IGNORED_SETTINGS = {"batch_size", "bootstrap_resamples", "settings_hash"}
_TASK_KEYS = ("suite", "version", "data_hash", "prompt_hash", "n_examples", "max_tokens", "samples")
#: per-model entries that change outputs (options that only place or pace a model are left out)
_MODEL_KEYS = ("backend", "dtype", "max_model_len", "output_options", "thinking")


Results = RunResult  # the name the gate and its pytest plugin use


@dataclass
class LoadedRun:
    """A results file and the folder its per-sample files are relative to."""

    path: Path
    result: Results
    _records: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict, repr=False)

    def records(self, model: str, task: str) -> dict[str, dict[str, Any]]:
        """Per-example records of `model` on `task`, by example id (read once, then cached)."""
        key = f"{model}/{task}"
        if key not in self._records:
            self._records[key] = self._read_records(key)
        return self._records[key]

    def _read_records(self, key: str) -> dict[str, dict[str, Any]]:
        rel = self.result.samples.get(key)
        file = self.path.parent / rel if rel else None
        if file is None or not file.is_file():
            raise UserError(
                f"per-example samples for {key} are missing",
                where=str(file or self.path),
                fix="keep the samples/ folder that `kdeval compare` writes next to results.json",
            )
        out: dict[str, dict[str, Any]] = {}
        with file.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if line.strip():
                    try:
                        rec = json.loads(line)
                        out[str(rec["id"])] = rec
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise UserError(
                            "malformed per-example record",
                            where=f"{file}:{lineno}",
                            fix="re-run kdeval compare",
                        ) from None
        return out


def load_run(path: Path) -> LoadedRun:
    """Read DIR/results.json (DIR alone is accepted too); a missing file is a UserError."""
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise UserError(
            "results file not found", where=str(path), fix="pass DIR/results.json written by `kdeval compare`"
        )
    result = Results.read(path)
    return LoadedRun(path, result)


def pick_model(run: LoadedRun, name: str | None) -> str:
    names = [m["name"] for m in run.result.models]
    if name is not None:
        if name not in names:
            raise UserError(
                f"model '{name}' is not in this run (models: {', '.join(names)})",
                where=str(run.path),
                fix="pass --model with one of them",
            )
        return name
    chosen = run.result.role("distilled") or (names[0] if len(names) == 1 else None)
    if chosen is None:
        raise UserError(
            f"no 'distilled' model among {', '.join(names)}", where=str(run.path), fix="pass --model NAME"
        )
    return chosen


def scope_tasks(run: LoadedRun, scope: str, metric: str) -> list[tuple[dict[str, Any], str]]:
    """(task entry, metric name) for every task a rule's scope and metric cover."""
    tasks = run.result.tasks
    chosen = [t for t in tasks if scope in ("overall", t["name"])] or [
        t for t in tasks if t["family"] == scope
    ]
    if not chosen:
        names = ", ".join(sorted({t["name"] for t in tasks} | {t["family"] for t in tasks}))
        raise UserError(
            f"no task or family '{scope}' in this run (have: {names}, overall)", where=str(run.path)
        )
    out = [(t, t["primary_metric"] if metric == "primary" else metric) for t in chosen]
    out = [(t, m) for t, m in out if m in t["metrics"]]
    if not out:
        raise UserError(f"no task in '{scope}' has metric '{metric}'", where=str(run.path))
    return out


def differences(base: LoadedRun, cand: LoadedRun, ma: str, mb: str, rules: Sequence[Rule]) -> list[str]:
    """Why the two runs cannot be compared for these rules (empty when they can)."""
    from kdeval.gate.rules import Tolerance  # here, so `kdeval --help` does not load yaml/pydantic

    a, b = base.result, cand.result
    out = [
        f"setting {k} {a.settings.get(k)!r} vs {b.settings.get(k)!r}"
        for k in sorted((set(a.settings) | set(b.settings)) - IGNORED_SETTINGS)
        if a.settings.get(k) != b.settings.get(k)
    ]
    if not out and a.settings.get("settings_hash") != b.settings.get("settings_hash"):
        out.append(f"settings_hash {a.settings.get('settings_hash')} vs {b.settings.get('settings_hash')}")
    ea, eb = (next(m for m in r.models if m["name"] == n) for r, n in ((a, ma), (b, mb)))
    if ea.get("chat_template") != eb.get("chat_template"):
        out.append(f"chat template {ea.get('chat_template')} vs {eb.get('chat_template')}")
    for key in _MODEL_KEYS:  # what the gated model's own backend settings change in its outputs
        if ea.get(key) != eb.get(key):
            out.append(f"{ma}'s {key.replace('_', ' ')} {ea.get(key)!r} vs {eb.get(key)!r}")
    scopes = {r.path.scope for r in rules if r.path.kind == "quality" and isinstance(r, Tolerance)}
    for scope in sorted(scopes):
        out += _task_differences(base, cand, scope)
    if any(isinstance(r, Tolerance) and r.path.kind == "efficiency" for r in rules):
        devices = [r.efficiency.get(n, {}).get("device") for r, n in ((a, ma), (b, mb))]
        if None not in devices and devices[0] != devices[1]:
            out.append(f"efficiency measured on {devices[0]} vs {devices[1]}")
    return list(dict.fromkeys(out))


def _task_differences(base: LoadedRun, cand: LoadedRun, scope: str) -> list[str]:
    ta = {t["name"]: t for t, _ in scope_tasks(base, scope, "primary")}
    tb = {t["name"]: t for t, _ in scope_tasks(cand, scope, "primary")}
    out = []
    if set(ta) != set(tb):
        out.append(
            f"'{scope}' covers different tasks (baseline: {', '.join(sorted(ta))}; "
            f"candidate: {', '.join(sorted(tb))})"
        )
    for name in sorted(set(ta) & set(tb)):
        for key in _TASK_KEYS:
            if ta[name].get(key) != tb[name].get(key):
                out.append(f"task {name} {key} {ta[name].get(key)} vs {tb[name].get(key)}")
    return out
