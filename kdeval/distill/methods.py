"""The registry of distillation methods: the one place that knows each method.

A `LossMethod` says what it is called, what it needs from the teacher (nothing, its written
answers, or its token distributions) and, for token-level methods, which divergence compares the
student's distribution with the teacher's. The config's validation, the CLI's `--method` choices,
the trainer's set-up and the objective ask this registry instead of spelling method names.

Built-in methods are listed below and their divergences imported only when a loss is computed, so
`kdeval --help` stays instant (torch is not imported here). A third-party package adds one with an
entry point in the group `kdeval.losses` (name = "package.module:METHOD", a `LossMethod`): one file
with the divergence and the `LossMethod`, plus that one registration.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Literal

from kdeval.entrypoints import load_target
from kdeval.errors import UserError

if TYPE_CHECKING:
    from torch import Tensor

    from kdeval.distill.losses import LossSpec

#: (student log-probs, teacher log-probs, the loss spec with its knobs) -> per-row divergence.
Divergence = Callable[["Tensor", "Tensor", "LossSpec"], "Tensor"]
#: What a method needs from the teacher: nothing (gold responses), its written answers, or its logits.
TeacherNeed = Literal["none", "text", "logits"]

GROUP = "kdeval.losses"


@dataclass(frozen=True)
class LossMethod:
    """One distillation method.

    teacher:    "none" trains on gold responses (CE); "text" on teacher-written responses (CE,
                sequence-level KD); "logits" adds a divergence from the teacher's token distribution:
                alpha * CE + (1 - alpha) * T**2 * divergence.
    divergence: for "logits" methods, the divergence or its "module:function" path (imported on
                first use, so the registry imports no torch).
    on_policy:  the student writes the responses of a share (`lmbda`) of the micro-batches and the
                teacher scores them (GKD); needs a teacher loaded for training (no top-k cache).
    """

    name: str
    summary: str
    teacher: TeacherNeed = "logits"
    divergence: Divergence | str | None = None
    on_policy: bool = False

    @property
    def token_level(self) -> bool:
        """Whether the loss compares token distributions (a dense teacher or a top-k cache)."""
        return self.teacher == "logits"

    @property
    def needs_teacher(self) -> bool:
        return self.teacher != "none"

    def divergence_fn(self) -> Divergence:
        if self.divergence is None:
            raise ValueError(f"method {self.name!r} has no divergence")
        if callable(self.divergence):
            return self.divergence
        module, _, attr = self.divergence.partition(":")
        fn: Divergence = getattr(importlib.import_module(module), attr)
        return fn


_L = "kdeval.distill.losses"
#: Built-in methods, in the order the CLI lists them.
_BUILTIN: dict[str, LossMethod] = {
    m.name: m
    for m in (
        LossMethod("sft", "CE on the gold responses (the baseline)", teacher="none"),
        LossMethod("seqkd", "CE on teacher-written responses (sequence-level KD)", teacher="text"),
        LossMethod("kd", "Hinton KD: forward KL(p_T || p_S)", divergence=f"{_L}:kd_divergence"),
        LossMethod("jsd", "generalized JSD(beta) as in TRL", divergence=f"{_L}:jsd_divergence"),
        LossMethod("tvd", "total variation distance (DistiLLM)", divergence=f"{_L}:tvd_divergence"),
        LossMethod("skl", "skew forward KL (DistiLLM)", divergence=f"{_L}:skl_divergence"),
        LossMethod(
            "gkd",
            "on-policy GKD (TRL): generalized JSD(beta), a share lmbda of batches written by the student",
            divergence=f"{_L}:jsd_divergence",
            on_policy=True,
        ),
    )
}
_LOADED: dict[str, LossMethod] = {}


def _third_party() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=GROUP) if ep.name not in _BUILTIN}


def names() -> list[str]:
    """Every registered method (built-ins first, then plugins by name); imports no plugin.

    >>> names()[:7]
    ['sft', 'seqkd', 'kd', 'jsd', 'tvd', 'skl', 'gkd']
    """
    return [*_BUILTIN, *sorted(_third_party())]


def get(name: str) -> LossMethod:
    """The method called `name`; UserError with close matches otherwise.

    >>> get("jsd").token_level, get("seqkd").teacher
    (True, 'text')
    """
    if name in _BUILTIN:
        return _BUILTIN[name]
    if name in _LOADED:
        return _LOADED[name]
    target = _third_party().get(name)
    if target is None:
        close = difflib.get_close_matches(name, names(), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UserError(f"unknown method '{name}'", fix=f"{hint}methods: {', '.join(names())}")
    method = load_target("loss", name, target, builtin=False)
    if not isinstance(method, LossMethod) or method.name != name:
        raise UserError(f"loss plugin '{name}' ({target}) is not a kdeval LossMethod named '{name}'")
    if method.token_level and method.divergence is None:
        raise UserError(f"loss plugin '{name}' ({target}) needs teacher logits but has no divergence")
    _LOADED[name] = method
    return method


def token_methods() -> list[str]:
    """Methods that compare the student's token distribution with the teacher's."""
    return [n for n in names() if get(n).token_level]


def topk_methods() -> list[str]:
    """Token methods that can train from a top-k teacher cache (all but the on-policy ones, whose
    sequences are written during training)."""
    return [n for n in token_methods() if not get(n).on_policy]


def teacher_methods() -> list[str]:
    """Methods that learn from a teacher (the demo's choices)."""
    return [n for n in names() if get(n).needs_teacher]
