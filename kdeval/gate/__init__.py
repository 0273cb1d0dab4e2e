"""The regression gate (`kdeval gate`): does a candidate run fall short of a baseline run?

Runs are read through `kdeval.runs` (as the report and the leaderboard read them). This module
chooses the gated model and says, for a set of rules, why two runs cannot be compared. `rules`
parses rule strings and gate.yaml, `config` runs gate.yaml's `compare:` section (the candidate
run), `stats` holds the paired tests, `run` evaluates the rules and decides, `render` writes the
text, markdown and JUnit outputs, `cli` wires `kdeval gate` and `kdeval leaderboard`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from kdeval.errors import UserError

if TYPE_CHECKING:
    from kdeval.gate.rules import Rule
    from kdeval.runs import LoadedRun


def pick_model(run: LoadedRun, name: str | None) -> str:
    names = [m.name for m in run.result.models]
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


def differences(base: LoadedRun, cand: LoadedRun, ma: str, mb: str, rules: Sequence[Rule]) -> list[str]:
    """Why the two runs cannot be compared for these rules (empty when they can)."""
    from kdeval.runs import model_differences, setting_differences, task_differences

    needs = [r.needs() for r in rules]  # each rule kind says what it needs the runs to share
    scopes = sorted({scope for n in needs for scope in n.scopes})
    out = setting_differences(base.result, cand.result)
    out += model_differences(base.result, ma, cand.result, mb)  # the gated model's own settings
    for scope in scopes:
        out += task_differences(base, cand, scope)
    if any(n.same_device for n in needs):
        devices = [
            fig.device if (fig := r.efficiency.get(n)) else None
            for r, n in ((base.result, ma), (cand.result, mb))
        ]
        if None not in devices and devices[0] != devices[1]:
            out.append(f"efficiency measured on {devices[0]} vs {devices[1]}")
    return list(dict.fromkeys(out))
