"""How many threads torch gets on CPU: one rule for the trainer, the demo, the tiny test models
and the transformers backend (`torch_threads`), applied and undone by `using_torch_threads`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

#: Below this many parameters a model's matrices are too small to split across threads.
SMALL_MODEL_PARAMS = 50_000_000
#: Set to a number of threads to override the rule everywhere kdeval sets threads.
THREADS_ENV = "KDEVAL_TORCH_THREADS"


def torch_threads(n_params: int | None) -> int:
    """Torch's CPU threads for work on a model of `n_params` parameters (summed over the models
    one process runs, e.g. student + dense teacher). The rule, in order:

    1. `KDEVAL_TORCH_THREADS=N` in the environment, when set: N.
    2. A model under `SMALL_MODEL_PARAMS` (50M) parameters: 1 thread. Tiny matrices gain nothing
       from more, and on a busy 2-core machine two threads wait on each other: the demo's
       trainer measured ~10x slower with 2 threads than with 1 (20 tokens/s for `kdeval distill`).
    3. Otherwise, or when the size is unknown: one thread per CPU this process may run on
       (its affinity mask, which is what a container or `taskset` grants), as torch's default.

    >>> os.environ.pop(THREADS_ENV, None) and None
    >>> torch_threads(1_100_000)
    1
    >>> torch_threads(7_000_000_000) == available_cpus()
    True
    """
    given = os.environ.get(THREADS_ENV, "").strip()
    if given:
        try:
            n = int(given)
        except ValueError:
            n = 0
        if n >= 1:
            return n
    if n_params is not None and n_params < SMALL_MODEL_PARAMS:
        return 1
    return available_cpus()


def available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def count_params(modules: Iterable[Any]) -> int | None:
    """Parameters of the torch modules given (None entries skipped); None when there are none."""
    total, seen = 0, False
    for m in modules:
        if m is not None and hasattr(m, "parameters"):
            total += sum(p.numel() for p in m.parameters())
            seen = True
    return total if seen else None


def set_torch_threads(n: int) -> int:
    """Set torch's intra-op threads to `n`; returns the number it had before."""
    import torch

    before = int(torch.get_num_threads())
    torch.set_num_threads(n)
    return before


@contextmanager
def using_torch_threads(n_params: int | None) -> Iterator[int]:
    """`torch_threads(n_params)` threads inside the block, torch's previous number after it."""
    n = torch_threads(n_params)
    before = set_torch_threads(n)
    try:
        yield n
    finally:
        set_torch_threads(before)
