"""pass@k, the reported k values and majority vote (kdeval.sampling)."""

from __future__ import annotations

import doctest
import itertools
import math

import pytest

import kdeval.sampling
from kdeval.sampling import ks_for, majority, pass_at_k


def closed_form(n: int, c: int, k: int) -> float:
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def brute_force(n: int, c: int, k: int) -> float:
    """Fraction of the k-subsets of n samples (c of them right) that hold a right one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    return sum(any(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize(
    ("n", "c", "k"),
    [
        (1, 0, 1),
        (1, 1, 1),
        (4, 1, 1),
        (4, 1, 2),
        (10, 3, 1),
        (10, 3, 5),
        (20, 1, 10),
        (100, 7, 16),
        (200, 13, 64),
    ],
)
def test_pass_at_k_matches_the_closed_form(n: int, c: int, k: int) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(closed_form(n, c, k), abs=1e-12)


def test_pass_at_k_matches_brute_force_for_all_small_cases() -> None:
    cases = 0
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_force(n, c, k), abs=1e-12), (n, c, k)
                cases += 1
    assert cases == sum((n + 1) * n for n in range(1, 9))


def test_pass_at_k_edges() -> None:
    assert pass_at_k(5, 0, 1) == 0.0
    assert pass_at_k(5, 5, 1) == 1.0
    assert pass_at_k(5, 1, 5) == 1.0  # n - c < k: every subset holds the right sample
    assert pass_at_k(5, 2, 4) == 1.0
    assert pass_at_k(8, 2, 1) == pytest.approx(0.25)  # pass@1 is the fraction right
    # Large n does not overflow or lose the answer (the product form).
    assert 0.0 < pass_at_k(10_000, 1, 1) == pytest.approx(1e-4)
    assert pass_at_k(10_000, 5000, 100) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("n", "c", "k"), [(4, 1, 5), (4, 1, 0), (4, 1, -1), (4, 5, 1), (4, -1, 1), (0, 0, 0)]
)
def test_pass_at_k_refuses_impossible_arguments(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


@pytest.mark.parametrize(
    ("n", "ks"),
    [(1, [1]), (2, [1, 2]), (3, [1, 2, 3]), (4, [1, 2, 4]), (5, [1, 2, 4, 5]), (8, [1, 2, 4, 8]),
     (9, [1, 2, 4, 8, 9]), (64, [1, 2, 4, 8, 16, 32, 64])],
)  # fmt: skip
def test_ks_for(n: int, ks: list[int]) -> None:
    assert ks_for(n) == ks


def test_ks_for_refuses_no_samples() -> None:
    with pytest.raises(ValueError):
        ks_for(0)


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (["3"], ("3", 1)),
        (["3", "4", "4"], ("4", 2)),
        (["4", "3", "3", "4"], ("4", 2)),  # tie: first in sample order wins
        (["3", "4", "4", "3"], ("3", 2)),
        (["a", "b", "c"], ("a", 1)),
        (["c", "b", "a"], ("c", 1)),
        (["", "", "5"], ("5", 1)),  # an empty answer never wins over a real one
        (["", "", "5", "6", "6"], ("6", 2)),
        (["", "7", "", "8"], ("7", 1)),  # tie among non-empty answers, the empty ones left out
        (["", "", ""], ("", 3)),  # all empty: "" with every sample counted
        ([""], ("", 1)),
    ],
)
def test_majority(answers: list[str], expected: tuple[str, int]) -> None:
    assert majority(answers) == expected


def test_majority_refuses_no_answers() -> None:
    with pytest.raises(ValueError):
        majority([])


def test_doctests() -> None:
    result = doctest.testmod(kdeval.sampling)
    assert result.attempted > 0 and result.failed == 0
