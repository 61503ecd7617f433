"""Paired comparisons (vamba.evaluation.stats) against hand-computed values and a coverage check."""
from __future__ import annotations

import numpy as np
import pytest

from vamba.evaluation.stats import Interval, bootstrap_mean, discordant, mcnemar_exact, paired_bootstrap, verdict


@pytest.mark.parametrize("b, c, p", [
    (0, 0, 1.0),  # no discordant pair: no evidence
    (0, 5, 2 / 32),  # 2 * P(X <= 0), X ~ Bin(5, 1/2)
    (1, 5, 2 * (1 + 6) / 64),  # 0.21875
    (2, 8, 2 * (1 + 10 + 45) / 1024),  # 0.109375
    (0, 10, 2 / 1024),
    (5, 5, 1.0),  # 2 * 638/1024 > 1: capped
    (3, 4, 1.0),
])
def test_mcnemar_exact_against_hand_computed_binomial_tails(b, c, p) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(p, abs=1e-15)
    assert mcnemar_exact(c, b) == mcnemar_exact(b, c)


def test_mcnemar_exact_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="discordant"):
        mcnemar_exact(-1, 3)


def test_discordant_counts_each_side() -> None:
    a = np.array([[1, 1, 0, 0, 1], [0, 1, 1, 0, 0]])
    b = np.array([[1, 0, 1, 0, 0], [0, 0, 1, 1, 0]])
    assert discordant(a, b) == (3, 2)
    with pytest.raises(ValueError, match="0/1"):
        discordant(a * 2, b)
    with pytest.raises(ValueError, match="shape"):
        discordant(a, b[:, :3])


def test_paired_bootstrap_estimate_and_degenerate_cases() -> None:
    a = np.array([1, 1, 1, 0, 1, 0, 1, 1])
    b = np.array([1, 0, 1, 0, 0, 0, 1, 0])
    diff = paired_bootstrap(a, b, resamples=2000)
    assert diff.estimate == pytest.approx(100 * 3 / 8)
    assert diff.lo <= diff.estimate <= diff.hi and diff.hi <= 100 and diff.lo >= 0  # every discordant pair favours a
    same = paired_bootstrap(a, a, resamples=500)
    assert (same.estimate, same.lo, same.hi) == (0.0, 0.0, 0.0)
    # fixed seed: the same interval every time
    assert paired_bootstrap(a, b, resamples=2000, seed=3) == paired_bootstrap(a, b, resamples=2000, seed=3)


def test_bootstrap_matches_the_normal_interval_on_a_large_sample() -> None:
    """One seed, 2000 questions at 70%: the percentile interval is close to +-1.96 * sqrt(p (1 - p) / n)."""
    x = np.zeros(2000)
    x[:1400] = 1
    ci = bootstrap_mean(x, resamples=10_000)
    half = 100 * 1.96 * np.sqrt(0.7 * 0.3 / 2000)
    assert ci.estimate == pytest.approx(70.0)
    assert ci.hi - ci.estimate == pytest.approx(half, rel=0.08) and ci.estimate - ci.lo == pytest.approx(half, rel=0.08)


def test_paired_bootstrap_covers_the_true_difference_about_95_percent() -> None:
    """400 synthetic experiments with a known difference (fixed seed, so the count is the same every run):
    each question's pair of outcomes is drawn from one joint distribution with E[a - b] = 0.10; the 95%
    interval from 150 questions must contain 10 points in about 95% of the experiments."""
    rng = np.random.default_rng(12345)
    # joint distribution of (a, b): both right 0.5, only a 0.2, only b 0.1, both wrong 0.2 -> E[a - b] = 0.1
    outcomes = np.array([(1, 1), (1, 0), (0, 1), (0, 0)])
    covered = 0
    for k in range(400):
        pairs = outcomes[rng.choice(4, size=150, p=[0.5, 0.2, 0.1, 0.2])]
        ci = paired_bootstrap(pairs[:, 0], pairs[:, 1], resamples=1000, seed=k)
        covered += ci.lo <= 10.0 <= ci.hi
    assert 0.92 <= covered / 400 <= 0.98, covered


def test_seeds_widen_the_interval_when_training_varies() -> None:
    """Three seeds that disagree (one seed's a is far better): resampling seeds widens the interval beyond the
    questions' share alone, which one pooled seed would show."""
    rng = np.random.default_rng(0)
    b = (rng.random((3, 300)) < 0.5).astype(int)
    a = b.copy()
    a[0, :60] = 1  # seed 0 only: a right on 60 questions (about 30 of them where b was wrong)
    pooled = paired_bootstrap(a.reshape(1, -1), b.reshape(1, -1), resamples=4000)
    by_seed = paired_bootstrap(a, b, resamples=4000)
    assert by_seed.estimate == pytest.approx(pooled.estimate)
    assert by_seed.hi - by_seed.lo > 1.5 * (pooled.hi - pooled.lo)


@pytest.mark.parametrize("lo, hi, sign, expected", [
    (1.0, 9.0, 1, "reproduced"), (-9.0, -1.0, 1, "contradicted"), (-2.0, 5.0, 1, "inconclusive"),
    (-9.0, -1.0, -1, "reproduced"), (1.0, 9.0, -1, "contradicted"), (0.0, 3.0, 1, "inconclusive"),
])
def test_verdict(lo, hi, sign, expected) -> None:
    assert verdict(Interval((lo + hi) / 2, lo, hi), sign) == expected


def test_a_verdict_needs_the_interval_and_mcnemar_both() -> None:
    """20 questions, 5 right in A alone: the percentile interval lies above 0 but the exact McNemar p is 0.0625, so
    the verdict is inconclusive; 10 of 20: both agree (p = 0.002)."""
    from vamba.evaluation.stats import judge_paired

    b = np.zeros(20, dtype=np.int8)
    few, more = b.copy(), b.copy()
    few[:5], more[:10] = 1, 1
    weak = judge_paired(few, b, resamples=2000)
    assert weak.difference.lo > 0 and weak.mcnemar_p == pytest.approx(0.0625) and weak.verdict == "inconclusive"
    strong = judge_paired(more, b, resamples=2000)
    assert strong.mcnemar_p < 0.05 and strong.verdict == "reproduced"
    assert judge_paired(b, more, resamples=2000).verdict == "contradicted"
