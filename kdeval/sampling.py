"""Statistics over several sampled answers to one example: pass@k and majority vote.

pass@k is the unbiased estimator of Chen et al. (2021, "Evaluating Large Language Models Trained
on Code", the HumanEval paper): with n samples of which c are right, the probability that at
least one of k samples drawn without replacement is right.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c right: 1 - C(n-c, k) / C(n, k).

    Computed in the numerically stable product form of the HumanEval paper,
    1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms large binomials.

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 2), pass_at_k(4, 3, 2), pass_at_k(5, 0, 3)
    (0.25, 0.5, 1.0, 0.0)
    """
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got c={c}, n={n}")
    if n - c < k:
        return 1.0  # every k-subset holds a right sample
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def ks_for(n: int) -> list[int]:
    """The k of pass@k reported for n samples: the powers of two below n, then n itself.

    >>> ks_for(8), ks_for(5), ks_for(1)
    ([1, 2, 4, 8], [1, 2, 4, 5], [1])
    """
    if n < 1:
        raise ValueError(f"need at least one sample, got n={n}")
    ks = []
    k = 1
    while k < n:
        ks.append(k)
        k *= 2
    return [*ks, n]


def majority(answers: Sequence[str]) -> tuple[str, int]:
    """Majority vote over already-normalized answers: (the winning answer, its count).

    Ties: among the most frequent answers, the one that appears first in sample order wins.
    The empty answer ("" = no answer, e.g. a thinking trace that never finished) never wins
    unless every answer is empty.

    >>> majority(["7", "", "", "8", "8", "7"])
    ('7', 2)
    >>> majority(["", ""])
    ('', 2)
    """
    if not answers:
        raise ValueError("majority vote over no answers")
    counts = Counter(a for a in answers if a != "")
    if not counts:
        return "", len(answers)
    best = max(counts.values())
    winner = next(a for a in answers if a != "" and counts[a] == best)
    return winner, best
