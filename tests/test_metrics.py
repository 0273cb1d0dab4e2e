"""Tests for kdeval.metrics: corpus scores equal the reference implementations they claim to be."""

from __future__ import annotations

import doctest
import math
import re
import string
from collections import Counter
from typing import Any

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer

import kdeval.metrics
import kdeval.metrics_text
from kdeval.metrics import (
    METRICS,
    Metric,
    bootstrap_ci,
    extract_final_number,
    get_metric,
    mean_row,
    normalize_answer,
    normalize_text,
    squad_exact_match,
    squad_f1,
)

# --------------------------------------------------------------------------------------------
# helpers


def rows_for(metric: Metric, hyps: list[str], refs: list[list[str]]) -> np.ndarray:
    return np.array([metric.stats(h, r) for h, r in zip(hyps, refs, strict=True)])


def streams(refs: list[list[str]]) -> list[list[Any]]:
    """Per-example reference lists -> sacrebleu's None-padded reference streams (str | None)."""
    k = max(len(r) for r in refs)
    return [[r[i] if i < len(r) else None for r in refs] for i in range(k)]


HYPS = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog",
    "It is raining today in Paris, they said.",
    "Numbers like 1,234 and 3.5 should tokenize.",
]
ONE_REF = [
    ["The cat is sitting on the mat."],
    ["The quick brown fox jumped over a lazy dog."],
    ["They said it rains in Paris today."],
    ["Numbers such as 1,234 and 3.5 are tokenized."],
]
THREE_REFS = [
    ["The cat is sitting on the mat.", "A cat sat on the mat.", "There is a cat on the mat."],
    ["The quick brown fox jumped over a lazy dog.", "A fast fox leaps over the dog.", "fox and dog"],
    ["They said it rains in Paris today.", "It is raining in Paris.", "Rain in Paris today, they said."],
    ["Numbers such as 1,234 and 3.5 are tokenized.", "1,234 and 3.5", "Numbers like these tokenize."],
]
RAGGED = [THREE_REFS[0], ONE_REF[1], THREE_REFS[2][:2], ONE_REF[3]]

CASES = {
    "single_ref": (HYPS, ONE_REF),
    "three_refs": (HYPS, THREE_REFS),
    "ragged_refs": (HYPS, RAGGED),
    "empty_hypothesis": (["", *HYPS[1:]], RAGGED),
    "all_empty": (["", ""], [["a b c d e"], ["f g"]]),
    "identical": ([r[0] for r in ONE_REF], ONE_REF),
    "short_segments": (["a b", "c"], [["a b", "b a"], ["c d"]]),
}


# --------------------------------------------------------------------------------------------
# registry and API


def test_registry_keys_and_get_metric() -> None:
    assert set(METRICS) == {"accuracy", "exact_match", "f1", "bleu", "chrf", "rouge1", "rouge2", "rougeL"}
    for name, metric in METRICS.items():
        assert get_metric(name) is metric
        assert metric.name == name
        assert metric.higher_is_better
    with pytest.raises(ValueError, match="known: accuracy, bleu"):
        get_metric("BLEU")


def test_mean_row_and_mean_metrics() -> None:
    assert mean_row(1) == [1.0, 1.0]
    acc = get_metric("accuracy")
    rows = np.array([acc.stats("a", ["a"]), acc.stats("b", ["a"]), acc.stats("a", ["b", "a"])])
    assert rows.tolist() == [[1.0, 1.0], [0.0, 1.0], [0.0, 1.0]]  # accuracy: first reference only
    assert acc.corpus(rows) == pytest.approx(100 / 3)
    assert acc.example(rows[0]) == 100.0 and acc.example(rows[1]) == 0.0
    em = get_metric("exact_match")
    assert em.stats("The Broncos!", ["x", "broncos"]) == [1.0, 1.0]
    f1 = get_metric("f1")
    assert f1.corpus(np.array([f1.stats("the Broncos team", ["Denver Broncos"]), [1.0, 1.0]])) == 75.0


def test_empty_corpus_and_missing_references() -> None:
    for metric in METRICS.values():
        assert math.isnan(metric.corpus(np.zeros((0, 2))))
        with pytest.raises(ValueError, match="reference"):
            metric.stats("x", [])
    with pytest.raises(TypeError):
        squad_f1("x", "x")  # a bare string is not a list of references


# --------------------------------------------------------------------------------------------
# BLEU and chrF == sacrebleu


@pytest.mark.parametrize("case", sorted(CASES))
def test_bleu_equals_sacrebleu_corpus_bleu(case: str) -> None:
    hyps, refs = CASES[case]
    rows = rows_for(get_metric("bleu"), hyps, refs)
    assert rows.shape == (len(hyps), 10)
    expected = sacrebleu.corpus_bleu(hyps, streams(refs)).score
    assert get_metric("bleu").corpus(rows) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("case", sorted(CASES))
def test_chrf_equals_sacrebleu_corpus_chrf(case: str) -> None:
    hyps, refs = CASES[case]
    rows = rows_for(get_metric("chrf"), hyps, refs)
    assert rows.shape == (len(hyps), 18)
    expected = sacrebleu.corpus_chrf(hyps, streams(refs)).score
    assert get_metric("chrf").corpus(rows) == pytest.approx(expected, abs=1e-9)


def test_identical_hypotheses_score_100() -> None:
    hyps, refs = CASES["identical"]
    for name in ("bleu", "chrf", "rouge1", "rouge2", "rougeL"):
        assert get_metric(name).corpus(rows_for(get_metric(name), hyps, refs)) == pytest.approx(100.0)


def test_bleu_is_a_corpus_score_not_a_mean_of_sentences() -> None:
    hyps, refs = CASES["three_refs"]
    bleu = get_metric("bleu")
    rows = rows_for(bleu, hyps, refs)
    mean_sentence = np.mean([bleu.example(r) for r in rows])
    assert abs(bleu.corpus(rows) - mean_sentence) > 1.0


@pytest.mark.parametrize("case", ["three_refs", "ragged_refs", "short_segments"])
def test_per_example_values_equal_sacrebleu_sentence_scores(case: str) -> None:
    hyps, refs = CASES[case]
    bleu, chrf = get_metric("bleu"), get_metric("chrf")
    for h, r in zip(hyps, refs, strict=True):
        assert bleu.example(bleu.stats(h, r)) == pytest.approx(sacrebleu.sentence_bleu(h, r).score)
        assert chrf.example(chrf.stats(h, r)) == pytest.approx(sacrebleu.sentence_chrf(h, r).score)


def test_rows_survive_a_json_like_round_trip() -> None:
    hyps, refs = CASES["ragged_refs"]
    for name in ("bleu", "chrf"):
        metric = get_metric(name)
        stored = [[float(x) for x in metric.stats(h, r)] for h, r in zip(hyps, refs, strict=True)]
        assert all(isinstance(x, float) for row in stored for x in row)
        assert metric.corpus(np.array(stored)) == pytest.approx(
            metric.corpus(rows_for(metric, hyps, refs)), abs=1e-12
        )


# --------------------------------------------------------------------------------------------
# ROUGE == rouge_score


def test_rouge_hand_computed() -> None:
    r1, r2, rl = (get_metric(t) for t in ("rouge1", "rouge2", "rougeL"))
    hyp, ref = "the cat sat", "the cat sat on the mat"
    assert r1.stats(hyp, [ref])[0] == pytest.approx(2 / 3)  # P=1, R=3/6
    assert r2.stats(hyp, [ref])[0] == pytest.approx(2 * 1 * 0.4 / 1.4)  # P=2/2, R=2/5
    assert rl.stats(hyp, [ref])[0] == pytest.approx(2 / 3)  # LCS 3
    assert r1.stats("cats running", ["cat runs"])[0] == pytest.approx(1.0)  # Porter stemmer is on
    assert r1.stats("the cat sat", ["dog", ref])[0] == pytest.approx(2 / 3)  # max over references
    assert r1.stats("", [ref]) == [0.0, 1.0]


@pytest.mark.parametrize("case", ["single_ref", "three_refs", "ragged_refs", "empty_hypothesis"])
def test_rouge_equals_rouge_score_max_over_references(case: str) -> None:
    hyps, refs = CASES[case]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for t in ("rouge1", "rouge2", "rougeL"):
        expected = [scorer.score_multi(r, h)[t].fmeasure for h, r in zip(hyps, refs, strict=True)]
        rows = rows_for(get_metric(t), hyps, refs)
        assert rows[:, 0] == pytest.approx(expected, abs=1e-12)
        assert get_metric(t).corpus(rows) == pytest.approx(100 * float(np.mean(expected)), abs=1e-9)


# --------------------------------------------------------------------------------------------
# SQuAD v1.1


def official_normalize_answer(s: str) -> str:
    """Verbatim from the official SQuAD v1.1 evaluate script."""

    def remove_articles(text: str) -> str:
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text: str) -> str:
        return " ".join(text.split())

    def remove_punc(text: str) -> str:
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def official_f1(prediction: str, ground_truth: str) -> float:
    prediction_tokens = official_normalize_answer(prediction).split()
    ground_truth_tokens = official_normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


NORMALIZE_CASES = [
    ("The  Denver Broncos!", "denver broncos"),
    ("A theory", "theory"),
    ("an apple, a day", "apple day"),
    ("then there", "then there"),  # articles only as whole words
    ("U.S.A.", "usa"),
    ("the-cat", "thecat"),  # punctuation goes first, so "the-" is no longer a word
    ("the\u2014dash", "\u2014dash"),  # non-ASCII punctuation stays
    ("  Hello,\n\tWorld  ", "hello world"),
    ("The", ""),
    ("Caf\u00c9 $5.00", "caf\u00e9 500"),
]


@pytest.mark.parametrize(("raw", "expected"), NORMALIZE_CASES)
def test_normalize_answer_matches_official_script(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected
    assert official_normalize_answer(raw) == expected


def test_squad_em_and_f1_known_values() -> None:
    assert squad_exact_match("Denver Broncos", ["Denver Broncos", "the Broncos"]) == 1.0
    assert squad_exact_match("the denver broncos.", ["Denver Broncos"]) == 1.0
    assert squad_exact_match("Broncos", ["Denver Broncos"]) == 0.0
    assert squad_f1("the Broncos team", ["Denver Broncos"]) == pytest.approx(0.5)
    assert squad_f1("Denver Broncos", ["Broncos"]) == pytest.approx(2 / 3)  # P=1/2, R=1
    assert squad_f1("Denver Broncos", ["Carolina", "the Broncos", "Broncos of Denver"]) == pytest.approx(0.8)
    assert squad_f1("", ["Denver"]) == 0.0
    assert squad_f1("the", ["a"]) == 0.0  # both normalize to empty: 0 in v1.1 (v2.0 would give 1)
    assert squad_f1("broncos broncos", ["broncos"]) == pytest.approx(2 / 3)  # multiset overlap


def test_squad_f1_agrees_with_official_on_many_pairs() -> None:
    texts = [s for s, _ in NORMALIZE_CASES] + ["Denver", "Broncos Denver Broncos", "the the cat", "cat"]
    for p in texts:
        for g in texts:
            assert squad_f1(p, [g]) == pytest.approx(official_f1(p, g))
            assert squad_exact_match(p, [g]) == float(
                official_normalize_answer(p) == official_normalize_answer(g)
            )


def test_normalize_text() -> None:
    assert normalize_text("  The\tCat \n SAT ") == "the cat sat"
    assert normalize_text("") == ""


# --------------------------------------------------------------------------------------------
# final-number extraction

NUMBER_CASES = [
    ("Natalia sold 48/2 = 24 clips in May.\n48 + 24 = 72\n#### 72", "72"),
    ("So the total is 1,000 + 234.\n#### 1,234", "1234"),
    ("#### 7 apples, costing 10 dollars", "7"),
    ("The answer is $18.00.", "18"),
    ("The answer is: 42", "42"),
    ("Answer: -3", "-3"),
    ("I think the answer is 5. Let me check: 2 + 3 = 5, then 6 more.", "5"),
    ("She had 5 apples, ate 2, and has 3 left.", "3"),
    ("The price went from $12 to $15.75", "15.75"),
    ("Each costs 3.50", "3.5"),
    ("That makes 18.", "18"),
    ("It is 18.0 exactly", "18"),
    ("Temperature dropped to -0", "0"),
    ("About 3/4 of them", "3/4"),
    ("Total: 2,500,000 people", "2500000"),
    ("5-3 = 2", "2"),
    ("H2O and CO2 are molecules", None),
    ("no number here", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "expected"), NUMBER_CASES)
def test_extract_final_number(text: str, expected: str | None) -> None:
    assert extract_final_number(text) == expected


def test_extract_final_number_never_evaluates() -> None:
    assert extract_final_number("__import__('os').system('true') or 2**10") == "10"


# --------------------------------------------------------------------------------------------
# bootstrap


def binary_rows(p: float, n: int) -> np.ndarray:
    k = round(p * n)
    return np.array([mean_row(1.0)] * k + [mean_row(0.0)] * (n - k))


def test_bootstrap_is_deterministic_and_contains_the_point_estimate() -> None:
    acc = get_metric("accuracy")
    rows = binary_rows(0.7, 50)
    a = bootstrap_ci(acc, rows, seed=3)
    assert a == bootstrap_ci(acc, rows, seed=3)
    assert a != bootstrap_ci(acc, rows, seed=4)
    assert a[0] < acc.corpus(rows) < a[1]
    # ~ normal approximation 70 +- 1.96 * sqrt(.21 / 50) * 100 = 70 +- 12.7
    assert 50 < a[0] < 64 and 76 < a[1] < 90


def test_bootstrap_matches_a_plain_loop_with_the_same_draws() -> None:
    f1 = get_metric("f1")
    rows = np.array([mean_row(x) for x in [0.1, 0.9, 0.5, 0.3, 1.0, 0.0, 0.7]])
    rng = np.random.default_rng(11)
    idx = rng.integers(0, len(rows), size=(200, len(rows)))
    reps = [100 * float(np.mean(rows[i, 0])) for i in idx]
    expected = np.percentile(reps, [5.0, 95.0])
    got = bootstrap_ci(f1, rows, n_resamples=200, seed=11, level=0.9)
    assert got == pytest.approx(tuple(expected), abs=1e-9)


def test_bootstrap_narrows_as_n_grows() -> None:
    acc = get_metric("accuracy")
    widths = [np.subtract(*bootstrap_ci(acc, binary_rows(0.6, n))[::-1]) for n in (20, 200, 2000)]
    assert widths[0] > widths[1] > widths[2] > 0


def test_bootstrap_corpus_metric() -> None:
    bleu = get_metric("bleu")
    hyps, refs = CASES["three_refs"]
    rows = rows_for(bleu, hyps * 5, refs * 5)
    lo, hi = bootstrap_ci(bleu, rows, n_resamples=300)
    assert lo <= bleu.corpus(rows) <= hi and lo < hi


def test_bootstrap_large_input_is_chunked_and_deterministic() -> None:
    chrf = get_metric("chrf")
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 20, size=(3000, 18)).astype(float)
    a = bootstrap_ci(chrf, rows, n_resamples=200, seed=5)
    assert a == bootstrap_ci(chrf, rows, n_resamples=200, seed=5)
    assert a[0] <= chrf.corpus(rows) <= a[1]


def test_bootstrap_degenerate_cases() -> None:
    acc, bleu = get_metric("accuracy"), get_metric("bleu")
    assert bootstrap_ci(acc, np.array([mean_row(1.0)])) == (100.0, 100.0)
    assert bootstrap_ci(acc, binary_rows(1.0, 30)) == (100.0, 100.0)
    row = bleu.stats("a b c d e", ["a b c d f"])
    value = bleu.corpus(np.array([row]))
    assert bootstrap_ci(bleu, np.array([row] * 4)) == (value, value)
    lo, hi = bootstrap_ci(acc, np.zeros((0, 2)))
    assert math.isnan(lo) and math.isnan(hi)
    with pytest.raises(ValueError):
        bootstrap_ci(acc, binary_rows(0.5, 10), level=1.5)


# --------------------------------------------------------------------------------------------
# doctests (the same as `pytest --doctest-modules kdeval/metrics.py kdeval/metrics_text.py`)


@pytest.mark.parametrize("module", [kdeval.metrics, kdeval.metrics_text])
def test_doctests(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.attempted > 0
    assert result.failed == 0
