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

Each form is a rule kind: a `Rule` subclass that parses its text, evaluates itself against the
runs (`kdeval.gate.run.Context`), says what the runs must share and renders its own cells. Kinds
live in a registry (`RULE_KINDS`): the built-ins `Tolerance` and `Floor` register here, others
with `register_rule_kind` or through the entry-point group ``kdeval.gate_rules``.

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
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, NoReturn, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kdeval.errors import UserError
from kdeval.gate.config import CompareSection
from kdeval.gate.outcome import NoData, Options, Outcome
from kdeval.metrics import get_metric, is_known, names
from kdeval.results import EFFICIENCY
from kdeval.yamlfile import line_of, read_yaml

if TYPE_CHECKING:
    import numpy as np

    from kdeval.gate.run import Context
    from kdeval.gate.stats import Estimate

Kind = Literal["quality", "ratio", "efficiency"]
RATIOS = ("retention", "gap_closed", "agreement")
_PATH = r"^(?P<path>[A-Za-z0-9_.@,\-]+)\s*"  # "," for lm-eval's metric keys (acc,none)
_TOLERANCE = re.compile(_PATH + r":\s*(?P<sign>[+-]?)(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>[A-Za-z%]*)$")
_FLOOR = re.compile(_PATH + r"(?P<op>>=|<=)\s*(?P<bound>-?\d+(?:\.\d+)?)\s*(?P<bunit>%?)$")


@dataclass(frozen=True)
class MetricPath:
    """What a rule measures. `scope` is resolved against the runs later (task, family, overall)."""

    kind: Kind
    scope: str
    metric: str

    @property
    def higher_is_better(self) -> bool:
        if self.kind == "quality" and self.metric != "primary":
            return get_metric(self.metric).higher_is_better  # lm-eval's perplexities are not
        return self.kind != "efficiency" or EFFICIENCY[self.scope][3]

    @property
    def unit(self) -> str:
        if self.kind == "efficiency":
            return EFFICIENCY[self.scope][2]
        return "pt" if self.kind == "quality" else ""  # ratios are plain fractions

    def __str__(self) -> str:
        return f"{self.scope}.{self.metric}"


# --- rule kinds: the protocol and the registry ---------------------------------------------------


@dataclass(frozen=True)
class Needs:
    """What the two runs must share for a rule's numbers to be comparable (`kdeval.gate.differences`)."""

    #: scopes (task, family, overall) whose tasks must match: names, data, prompts, limits
    scopes: frozenset[str] = field(default_factory=frozenset)
    #: the gated model's efficiency figures must come from the same device in both runs
    same_device: bool = False


class Rule(ABC):
    """A kind of gate rule: it parses its own text form, evaluates itself and renders its cells.

    A kind is a (frozen) dataclass subclass with a `text` field, registered with
    `register_rule_kind` (or the entry-point group ``kdeval.gate_rules``). `parse_rule` offers
    the text to each kind in turn; the first whose `parse` returns a rule wins.
    """

    #: the kind's registry name
    kind: ClassVar[str]
    #: its text form for the "expected ..." error, e.g. "PATH>=BOUND"
    form: ClassVar[str]
    #: a path prefix the kind owns (e.g. "fidelity"): texts starting with it go to this kind first
    prefix: ClassVar[str | None] = None
    #: the rule as written
    text: str

    @classmethod
    @abstractmethod
    def parse(cls, text: str, where: str | None = None) -> Rule | None:
        """The rule `text` describes, or None when it is not in this kind's form. Text in the
        form but wrong (unknown metric, wrong sign) is a UserError naming the rule and `where`."""

    @abstractmethod
    def evaluate(self, ctx: Context) -> Outcome:
        """The verdict on the runs of `ctx`; raise `NoData(why)` when they lack what it needs."""

    def needs(self) -> Needs:
        """What the runs must share (default: only the settings and the gated model's own)."""
        return Needs()

    @property
    def value_unit(self) -> str:
        """Unit of the baseline and candidate values (the effect's unit is the outcome's)."""
        return ""

    def baseline_cell(self, o: Outcome) -> str:
        """The markdown table's baseline cell."""
        from kdeval.gate.render import number

        return number(o.baseline, self.value_unit)

    def values(self, o: Outcome) -> str:
        """The values part of the one-line form, e.g. '71.2 -> 65.0'."""
        from kdeval.gate.render import number

        return f"{number(o.baseline, self.value_unit)} -> {number(o.candidate, self.value_unit)}"


#: rule kinds by name, in the order `parse_rule` tries them (built-ins first)
RULE_KINDS: dict[str, type[Rule]] = {}
#: entry-point group through which installed packages add rule kinds
GROUP = "kdeval.gate_rules"
_plugins_loaded = False
R = TypeVar("R", bound=type[Rule])


def register_rule_kind(cls: R) -> R:
    """Add a rule kind (usable as a class decorator); a second kind with the same name is a bug."""
    if not (isinstance(cls, type) and issubclass(cls, Rule)):
        raise TypeError(f"{cls!r} is not a kdeval.gate.rules.Rule subclass")
    other = RULE_KINDS.get(cls.kind)
    if other is not None and other is not cls:
        raise ValueError(f"gate rule kind '{cls.kind}' is already registered ({other.__qualname__})")
    RULE_KINDS[cls.kind] = cls
    return cls


def rule_kinds() -> dict[str, type[Rule]]:
    """The registered kinds, with those of installed plugins (loaded once, on first use)."""
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True
        for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
            try:
                register_rule_kind(ep.load())
            except Exception as exc:  # a third-party plugin's bug must not break the gate
                print(
                    f"kdeval: warning: gate rule plugin '{ep.name}' ({ep.value}) failed to load: {exc}",
                    file=sys.stderr,
                )
    return RULE_KINDS


def parse_rule(text: str, where: str | None = None) -> Rule:
    """Parse one rule string; a malformed rule is a UserError naming the rule (and `where`)."""
    owner = text.strip().split(".", 1)[0]
    kinds = sorted(rule_kinds().values(), key=lambda k: k.prefix != owner)  # an owning kind first
    for kind in kinds:
        rule = kind.parse(text, where)
        if rule is not None:
            return rule
    forms = [k.form for k in kinds]
    _bad(text, f"expected {', '.join(forms[:-1])}{' or ' if len(forms) > 1 else ''}{forms[-1]}", where)


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


# --- the built-in kinds --------------------------------------------------------------------------


@register_rule_kind
@dataclass(frozen=True)
class Tolerance(Rule):
    """Fail when the candidate is worse than the baseline by more than `amount` `unit`.

    Quality: only when the drop is also significant at alpha (unless strict). Efficiency figures
    are single measurements: the tolerance alone decides."""

    kind: ClassVar[str] = "tolerance"
    form: ClassVar[str] = "PATH:TOLERANCE (qa.f1:-1pt, math.accuracy:-2%)"

    text: str
    path: MetricPath
    amount: float
    unit: str  # "%" or the path's own unit ("pt", "ms", "MiB")

    @classmethod
    def parse(cls, text: str, where: str | None = None) -> Tolerance | None:
        m = _TOLERANCE.match(text.strip())
        if m is None:
            return None
        path = parse_path(m["path"], text, where)
        return _tolerance(text.strip(), path, m["sign"], float(m["amount"]), m["unit"], where)

    @property
    def value_unit(self) -> str:
        return self.path.unit  # values stay in the metric's unit even when the rule is in %

    def needs(self) -> Needs:
        if self.path.kind == "efficiency":
            return Needs(same_device=True)
        return Needs(scopes=frozenset({self.path.scope}))

    def evaluate(self, ctx: Context) -> Outcome:
        if self.path.kind == "efficiency":
            import numpy as np

            from kdeval.gate.stats import Estimate

            a, b = ctx.figure("baseline", str(self.path)), ctx.figure("candidate", str(self.path))
            if a is None or b is None:
                which = "the baseline run" if a is None else "the candidate run"
                raise NoData(f"{which} has no efficiency figure {self.path} for its model")
            est = Estimate(a, b, np.array([]), np.array([]), 0)
            return self.decide(est, None, "tolerance only (single measurement)", ctx.options)
        est, p, test = ctx.paired(self.path.scope, self.path.metric)
        return self.decide(est, p, test, ctx.options)

    def decide(self, est: Estimate, p: float | None, test: str, opt: Options) -> Outcome:
        from kdeval.gate.stats import interval

        sign = 1.0 if self.path.higher_is_better else -1.0
        delta = est.b - est.a
        lo, hi = interval(est.b_reps - est.a_reps) if est.a_reps.size else (None, None)
        if self.unit == "%":
            scale = 100.0 / abs(est.a) if est.a else float("nan")
            allowed = self.amount / 100 * abs(est.a)
        else:
            scale, allowed = 1.0, self.amount
        effect = delta * scale
        low, high = (lo * scale, hi * scale) if lo is not None and hi is not None else (None, None)
        beyond = sign * delta < -allowed - 1e-9
        significant = p is None or p < opt.alpha  # no test (efficiency): the tolerance decides
        failed = beyond and (opt.strict or significant)
        return Outcome(
            self,
            "fail" if failed else "pass",
            est.a,
            est.b,
            effect,
            low,
            high,
            self.unit,
            p,
            test,
            est.n or None,
            self._reason(beyond, significant, p, opt),
        )

    def _reason(self, beyond: bool, significant: bool, p: float | None, opt: Options) -> str:
        tol = f"{self.amount:g}{'' if self.unit == '%' else ' '}{self.unit} tolerance"
        if not beyond:
            return f"within the {tol}"
        if p is None:
            return f"beyond the {tol}"
        if significant:
            return f"beyond the {tol} and significant at alpha = {opt.alpha:g}"
        if opt.strict:
            return f"beyond the {tol}; not significant at alpha = {opt.alpha:g}, but --strict fails it"
        return (
            f"beyond the {tol} but not significant at alpha = {opt.alpha:g} (noise; --strict would fail it)"
        )


@register_rule_kind
@dataclass(frozen=True)
class Floor(Rule):
    """Fail when the candidate's value is on the wrong side of `bound` (the baseline is not read)."""

    kind: ClassVar[str] = "floor"
    form: ClassVar[str] = "PATH>=BOUND"

    text: str
    path: MetricPath
    op: Literal[">=", "<="]
    bound: float

    @classmethod
    def parse(cls, text: str, where: str | None = None) -> Floor | None:
        m = _FLOOR.match(text.strip())
        if m is None:
            return None
        path = parse_path(m["path"], text, where)
        return _floor(text.strip(), path, m["op"], float(m["bound"]), m["bunit"], where)

    @property
    def value_unit(self) -> str:
        return self.path.unit

    def evaluate(self, ctx: Context) -> Outcome:
        if self.path.kind == "efficiency":
            b = ctx.figure("candidate", str(self.path))
            if b is None:
                raise NoData(f"the candidate run has no efficiency figure {self.path} for '{ctx.mb}'")
            return self.decide(b, None, None, "single measurement", ctx.options)
        if self.path.kind == "ratio":
            value, reps, n, test = ctx.ratio(self.path.scope, self.path.metric)
            return self.decide(value, reps, n, test, ctx.options)
        # a floor looks at the candidate alone: both arms of the bootstrap are the candidate
        est = ctx.candidate_only(self.path.scope, self.path.metric)
        return self.decide(est.b, est.b_reps, est.n, "bootstrap", ctx.options)

    def decide(
        self, value: float, reps: np.ndarray | None, n: int | None, test: str, opt: Options
    ) -> Outcome:
        import numpy as np

        from kdeval.gate.stats import interval, p_below

        if not np.isfinite(value):
            raise NoData(f"{self.path} is undefined here (e.g. a teacher scoring 0, or a zero gap)")
        above = self.op == ">="
        ok = value >= self.bound if above else value <= self.bound
        low = high = p = None
        if reps is not None:
            low, high = interval(reps - self.bound)
            # H1: the true value is on the wrong side of the bound
            p = p_below(value, reps, self.bound) if above else p_below(-value, -reps, -self.bound)
        side = "at or above" if above else "at or below"
        reason = (
            f"{side} the bound {self.bound:g}"
            if ok
            else f"not {side} the bound {self.bound:g} (an absolute bound)"
        )
        return Outcome(
            self,
            "pass" if ok else "fail",
            None,
            value,
            value - self.bound,
            low,
            high,
            self.path.unit,
            p,
            test,
            n,
            reason,
        )

    def baseline_cell(self, o: Outcome) -> str:
        return f"{self.op} {self.bound:g}"

    def values(self, o: Outcome) -> str:
        from kdeval.gate.render import number

        return f"{number(o.candidate, self.value_unit)} (bound {self.bound:g})"


def _tolerance(
    text: str, path: MetricPath, sign: str, amount: float, unit: str, where: str | None
) -> Tolerance:
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


def _floor(text: str, path: MetricPath, op: str, bound: float, percent: str, where: str | None) -> Floor:
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


# the built-in kinds kept in their own modules register on import (after the names they use)
from kdeval.gate import teacher_rules  # noqa: E402, F401
