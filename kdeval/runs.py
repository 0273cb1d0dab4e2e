"""A run on disk: its results.json read into the typed schema (`kdeval.results`), its
per-example samples, and whether two runs can be compared.

`kdeval report`, `kdeval gate`, `kdeval leaderboard`, the pytest plugin and the demo all read
runs through here, so a bad file reads the same everywhere: one line naming the file and the
field (``runs/x/results.json: models[1].fingerprint: field required; re-run kdeval compare``),
exit 2, no traceback.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kdeval.errors import UserError
from kdeval.results import SCHEMA, SCHEMA_VERSION, RunResult, TaskRow

_FIX = "re-run kdeval compare"

# settings that do not change model outputs (batch size, by design) or are hashes of the rest
IGNORED_SETTINGS = {"batch_size", "bootstrap_resamples", "settings_hash"}
#: per-task entries that must match for a task's scores to be comparable
TASK_KEYS = ("suite", "version", "data_hash", "prompt_hash", "n_examples", "max_tokens", "samples")
#: per-model entries that change outputs (options that only place or pace a model are left out)
MODEL_KEYS = ("backend", "dtype", "max_model_len", "output_options", "thinking")


def read_results(path: Path) -> RunResult:
    """Read and check DIR/results.json (DIR alone is accepted too); every problem is a UserError."""
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise UserError(
            "results file not found", where=str(path), fix="pass DIR/results.json written by `kdeval compare`"
        )
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError("not a kdeval results file (not UTF-8 text)", where=str(path), fix=_FIX) from None
    except json.JSONDecodeError as exc:
        raise UserError(f"malformed JSON ({exc.msg})", where=f"{path}:{exc.lineno}", fix=_FIX) from None
    except OSError as exc:
        raise UserError(f"cannot read the results file ({exc.strerror})", where=str(path)) from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise UserError(
            "not a kdeval results file", where=str(path), fix="pass DIR/results.json from `kdeval compare`"
        )
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise UserError(
            f"results schema version {raw.get('schema_version')!r} is not supported "
            f"(this kdeval reads {SCHEMA_VERSION})",
            where=str(path),
            fix="re-run `kdeval compare` with this version",
        )
    try:
        return RunResult.model_validate(raw, strict=True)
    except ValidationError as exc:
        raise UserError(field_error(exc), where=str(path), fix=_FIX) from None


def field_error(exc: ValidationError) -> str:
    """The first error as 'models[1].fingerprint: field required' (one line).

    >>> from kdeval.results import ScoreRow
    >>> try:
    ...     ScoreRow.model_validate({"model": "m", "task": "t", "metric": "f1", "value": "high"}, strict=True)
    ... except ValidationError as exc:
    ...     print(field_error(exc))
    value: expected a number, got "high"
    """
    err = exc.errors(include_url=False)[0]
    where = "".join(
        f"[{x}]" if isinstance(x, int) else f".{x}" if x.isidentifier() else f"[{json.dumps(x)}]"
        for x in err["loc"]
    ).lstrip(".")
    if err["type"] == "missing":
        what = "field required"
    elif err["type"] == "extra_forbidden":
        what = "unknown key"
    else:
        what = _MESSAGES.get(err["type"]) or str(err["msg"]).removeprefix("Value error, ")
        what = what[:1].lower() + what[1:]
        if err["type"] in _MESSAGES or err["type"] == "literal_error":
            what += f", got {_shown(err.get('input'))}"
    return f"{where}: {what}" if where else what


_MESSAGES = {
    "int_type": "expected an integer",
    "float_type": "expected a number",
    "finite_number": "expected a finite number",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "list_type": "expected a list",
    "dict_type": "expected an object",
    "model_type": "expected an object",
}


def _shown(value: object) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class LoadedRun:
    """A results file and the folder its per-sample files are relative to."""

    path: Path
    result: RunResult
    _records: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict, repr=False)

    def records(self, model: str, task: str) -> dict[str, dict[str, Any]]:
        """Per-example records of `model` on `task`, by example id (read once, then cached)."""
        key = f"{model}/{task}"
        if key not in self._records:
            self._records[key] = self._read_records(key)
        return self._records[key]

    def _read_records(self, key: str) -> dict[str, dict[str, Any]]:
        rel = self.result.samples.get(key)  # a path inside the run's folder (checked on reading)
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
                            "malformed per-example record", where=f"{file}:{lineno}", fix=_FIX
                        ) from None
        return out


def load_run(path: Path) -> LoadedRun:
    """Read DIR/results.json (DIR alone is accepted too) with the folder of its samples."""
    if path.is_dir():
        path = path / "results.json"
    return LoadedRun(path, read_results(path))


def scope_tasks(run: LoadedRun, scope: str, metric: str) -> list[tuple[TaskRow, str]]:
    """(task, metric name) for every task a scope (a task, a family or overall) and metric cover."""
    tasks = run.result.tasks
    chosen = [t for t in tasks if scope in ("overall", t.name)] or [t for t in tasks if t.family == scope]
    if not chosen:
        names = ", ".join(sorted({t.name for t in tasks} | {t.family for t in tasks}))
        raise UserError(
            f"no task or family '{scope}' in this run (have: {names}, overall)", where=str(run.path)
        )
    out = [(t, t.primary_metric if metric == "primary" else metric) for t in chosen]
    out = [(t, m) for t, m in out if m in t.metrics]
    if not out:
        raise UserError(f"no task in '{scope}' has metric '{metric}'", where=str(run.path))
    return out


# --- comparability ----------------------------------------------------------------------------


def setting_differences(a: RunResult, b: RunResult) -> list[str]:
    """The settings that differ between two runs (empty when their outputs are comparable)."""
    va, vb = a.settings.values(), b.settings.values()
    out = [
        f"setting {k} {va[k]!r} vs {vb[k]!r}"
        for k in sorted(va)
        if k not in IGNORED_SETTINGS and va[k] != vb[k]
    ]
    if not out and va["settings_hash"] != vb["settings_hash"]:
        out.append(f"settings_hash {va['settings_hash']} vs {vb['settings_hash']}")
    return out


def task_differences(
    base: LoadedRun, cand: LoadedRun, scope: str, labels: tuple[str, str] = ("baseline", "candidate")
) -> list[str]:
    """How the tasks a scope covers differ between two runs (names, data, prompts, limits, ...)."""
    ta = {t.name: t for t, _ in scope_tasks(base, scope, "primary")}
    tb = {t.name: t for t, _ in scope_tasks(cand, scope, "primary")}
    out = []
    if set(ta) != set(tb):
        out.append(
            f"'{scope}' covers different tasks ({labels[0]}: {', '.join(sorted(ta))}; "
            f"{labels[1]}: {', '.join(sorted(tb))})"
        )
    for name in sorted(set(ta) & set(tb)):
        for key in TASK_KEYS:
            va, vb = getattr(ta[name], key), getattr(tb[name], key)
            if va != vb:
                out.append(f"task {name} {key} {va} vs {vb}")
    return out


def model_differences(a: RunResult, ma: str, b: RunResult, mb: str) -> list[str]:
    """What differs in how one model ran in two runs: chat template and output-changing options."""
    ea, eb = a.model(ma), b.model(mb)
    assert ea is not None and eb is not None, (ma, mb)
    out = []
    if ea.chat_template != eb.chat_template:
        out.append(f"chat template {ea.chat_template} vs {eb.chat_template}")
    for key in MODEL_KEYS:
        va, vb = getattr(ea, key), getattr(eb, key)
        if va != vb:
            out.append(f"{ma}'s {key.replace('_', ' ')} {va!r} vs {vb!r}")
    return out


def run_differences(
    base: LoadedRun,
    cand: LoadedRun,
    scopes: Sequence[str] = ("overall",),
    labels: tuple[str, str] = ("baseline", "candidate"),
) -> list[str]:
    """Why two runs' scores cannot be set side by side: settings and the scopes' tasks."""
    out = setting_differences(base.result, cand.result)
    for scope in scopes:
        out += task_differences(base, cand, scope, labels)
    return list(dict.fromkeys(out))
