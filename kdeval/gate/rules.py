"""Gate rules: short strings parsed into small check objects, and the gate.yaml that holds them.

Two forms, in the spirit of pytest-benchmark's `--benchmark-compare-fail=mean:5%`:

* ``PATH:TOLERANCE`` — how much worse the candidate may be than the baseline, in points
  (``qa.f1:-1pt``), percent of the baseline (``math.accuracy:-2%``) or, for efficiency
  figures, their own unit (``latency.p50:+5ms``). The sign, when given, must point the way the
  metric gets worse (``-`` for quality and throughput, ``+`` for latency and memory).
* ``PATH>=BOUND`` / ``PATH<=BOUND`` — an absolute floor or ceiling on the candidate alone
  (``qa.f1>=70``, ``retention>=0.90``, ``latency.p50<=50``).

PATH is ``SCOPE.METRIC``: SCOPE is a task, a family or ``overall``; METRIC is a metric name or
``primary`` (each task's primary metric; the default when the metric is left out). The ratios
``retention``, ``gap_closed`` and ``agreement`` (distilled against the teacher of the same run)
take floors only, with ``overall`` as the default scope. ``latency.{mean,p50,p90,p99}`` (ms),
``memory.{weights,kv_cache,peak}`` (MiB) and ``throughput.{requests_per_s,tokens_per_s}`` read
the run's `efficiency` figures.

>>> parse_rule("qa.f1:-1pt")
Tolerance(text='qa.f1:-1pt', path=MetricPath(kind='quality', scope='qa', metric='f1'), amount=1.0, unit='pt')
>>> parse_rule("retention>=90%").bound
0.9
>>> parse_rule("latency.p50:+10%").path.higher_is_better
False
>>> parse_rule("qa.f1:+1pt")
Traceback (most recent call last):
...
kdeval.errors.UserError: rule 'qa.f1:+1pt': '+' means higher, but higher qa.f1 is better; write qa.f1:-1pt
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kdeval.errors import UserError
from kdeval.gate.config import CompareSection
from kdeval.metrics import is_known, names
from kdeval.results import EFFICIENCY
from kdeval.yamlfile import line_of, read_yaml

Kind = Literal["quality", "ratio", "efficiency"]
RATIOS = ("retention", "gap_closed", "agreement")
_RULE = re.compile(
    r"^(?P<path>[A-Za-z0-9_.@\-]+)\s*(?:"
    r":\s*(?P<sign>[+-]?)(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>[A-Za-z%]*)"
    r"|(?P<op>>=|<=)\s*(?P<bound>-?\d+(?:\.\d+)?)\s*(?P<bunit>%?))$"
)


@dataclass(frozen=True)
class MetricPath:
    """What a rule measures. `scope` is resolved against the runs later (task, family, overall)."""

    kind: Kind
    scope: str
    metric: str

    @property
    def higher_is_better(self) -> bool:
        return self.kind != "efficiency" or EFFICIENCY[self.scope][3]

    @property
    def unit(self) -> str:
        if self.kind == "efficiency":
            return EFFICIENCY[self.scope][2]
        return "pt" if self.kind == "quality" else ""  # ratios are plain fractions

    def __str__(self) -> str:
        return f"{self.scope}.{self.metric}"


@dataclass(frozen=True)
class Tolerance:
    """Fail when the candidate is worse than the baseline by more than `amount` `unit`."""

    text: str
    path: MetricPath
    amount: float
    unit: str  # "%" or the path's own unit ("pt", "ms", "MiB")


@dataclass(frozen=True)
class Floor:
    """Fail when the candidate's value is on the wrong side of `bound`."""

    text: str
    path: MetricPath
    op: Literal[">=", "<="]
    bound: float


Rule = Tolerance | Floor


def parse_rule(text: str, where: str | None = None) -> Rule:
    """Parse one rule string; a malformed rule is a UserError naming the rule (and `where`)."""
    m = _RULE.match(text.strip())
    if m is None:
        _bad(text, "expected PATH:TOLERANCE (qa.f1:-1pt, math.accuracy:-2%) or PATH>=BOUND", where)
    path = parse_path(m["path"], text, where)
    if m["op"]:
        return _floor(text.strip(), path, m["op"], float(m["bound"]), m["bunit"], where)
    return _tolerance(text.strip(), path, m["sign"], float(m["amount"]), m["unit"], where)


def parse_path(raw: str, text: str, where: str | None = None) -> MetricPath:
    """SCOPE.METRIC -> MetricPath; see the module docstring for the forms.

    >>> parse_path("overall", "overall:-1pt")
    MetricPath(kind='quality', scope='overall', metric='primary')
    >>> parse_path("qa.retention", "qa.retention>=0.9")
    MetricPath(kind='ratio', scope='qa', metric='retention')
    """
    parts = raw.split(".")
    if len(parts) > 2 or not all(parts):
        _bad(text, f"path '{raw}' must be SCOPE.METRIC (a task, family or overall, then a metric)", where)
    if parts[0] in EFFICIENCY:
        stats = EFFICIENCY[parts[0]][1]
        if len(parts) != 2 or parts[1] not in stats:
            _bad(text, f"{parts[0]} needs one of: {', '.join(f'{parts[0]}.{s}' for s in stats)}", where)
        return MetricPath("efficiency", parts[0], parts[1])
    if parts[-1] in RATIOS:
        return MetricPath("ratio", parts[0] if len(parts) == 2 else "overall", parts[-1])
    metric = parts[1] if len(parts) == 2 else "primary"
    if metric != "primary" and not is_known(metric):
        known = ", ".join(["primary", *sorted(names()), "pass@K", "maj@N", *RATIOS])
        _bad(text, f"unknown metric '{metric}' (known: {known})", where)
    return MetricPath("quality", parts[0], metric)


def _tolerance(text: str, path: MetricPath, sign: str, amount: float, unit: str, where: str | None) -> Rule:
    if path.kind == "ratio":
        _bad(text, f"{path.metric} takes a floor, e.g. {path.metric}>=0.90", where)
    worse = "-" if path.higher_is_better else "+"
    if sign and sign != worse:
        word = "higher" if sign == "+" else "lower"
        better = "higher" if path.higher_is_better else "lower"
        fixed = text.replace(f":{sign}", f":{worse}", 1)
        _bad(text, f"'{sign}' means {word}, but {better} {path} is better; write {fixed}", where)
    units = {"%": "%", path.unit.lower(): path.unit}
    if unit.lower() not in units:
        _bad(
            text,
            f"tolerance needs a unit: {' or '.join(units.values())} (e.g. {path}:{worse}1{path.unit})",
            where,
        )
    return Tolerance(text, path, amount, units[unit.lower()])


def _floor(text: str, path: MetricPath, op: str, bound: float, percent: str, where: str | None) -> Rule:
    if path.kind == "ratio":
        if percent:
            bound /= 100
        elif bound > 1.5:  # "retention>=90" almost surely means 90%
            _bad(
                text,
                f"{path.metric} is a fraction: write {path.metric}{op}{bound / 100:g} or {bound:g}%",
                where,
            )
    elif percent:
        _bad(text, f"'%' bounds are for ratios; {path} is in {path.unit}", where)
    elif path.kind == "quality" and not 0 <= bound <= 100:
        _bad(text, "quality scores are on a 0-100 scale", where)
    return Floor(text, path, ">=" if op == ">=" else "<=", bound)


def _bad(text: str, why: str, where: str | None) -> NoReturn:
    raise UserError(f"rule '{text}': {why}", where=where)


# --- gate.yaml ---------------------------------------------------------------------------------


class GateConfig(BaseModel):
    """A team's standing gate settings (gate.yaml). Unknown keys are errors, not ignored.

    `baseline_results` and `compare` (see `kdeval.gate.config`) let `kdeval gate --config
    gate.yaml` run the comparison itself and gate it against the stored baseline run."""

    model_config = ConfigDict(extra="forbid")

    rules: list[str] = Field(default_factory=list)
    alpha: float = Field(0.05, gt=0, lt=1)
    strict: bool = False
    model: str | None = None
    baseline_results: Path | None = None
    compare: CompareSection | None = None


@dataclass(frozen=True)
class LoadedConfig:
    file: Path
    config: GateConfig
    rules: list[Rule]
    lines: dict[tuple[str | int, ...], int]

    def where(self, *key: str | int) -> str:
        """file:line of a key (or of its nearest enclosing key), for error messages."""
        return f"{self.file}:{line_of(self.lines, key)}"


def load_config(file: Path) -> LoadedConfig:
    """Read gate.yaml; YAML errors, unknown keys, bad values and bad rules name file:line."""
    data, lines = read_yaml(
        file, missing="gate config not found", fix="pass an existing YAML file to --config"
    )
    if data is None:
        data = {}
    if not isinstance(data, dict):
        keys = ", ".join(GateConfig.model_fields)
        raise UserError(f"expected a mapping of keys ({keys})", where=f"{file}:1")
    try:
        config = GateConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, file, lines) from None
    rules = [
        parse_rule(r, where=f"{file}:{line_of(lines, ('rules', i))}") for i, r in enumerate(config.rules)
    ]
    return LoadedConfig(file, config, rules, lines)


def _config_error(exc: ValidationError, file: Path, lines: dict[tuple[str | int, ...], int]) -> UserError:
    """The first validation error as one line at the offending key's line."""
    err = exc.errors()[0]
    loc = tuple(x for x in err["loc"] if x != "[key]")  # a bad mapping key: point at the key
    key = ".".join(str(x) for x in loc)
    msg = str(err["msg"]).removeprefix("Value error, ")
    what = f"unknown key '{key}'" if err["type"] == "extra_forbidden" else f"{key}: {msg}"
    section = CompareSection if loc[:1] == ("compare",) and len(loc) > 1 else GateConfig
    keys = ", ".join(CompareSection.keys() if section is CompareSection else GateConfig.model_fields)
    fix = f"compare: keys: {keys}" if section is CompareSection else f"keys: {keys}"
    return UserError(what, where=f"{file}:{line_of(lines, loc)}", fix=fix)
