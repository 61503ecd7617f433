"""Paired comparisons of two models answered on the same questions: how sure a difference in accuracy is.

Two models (arms) evaluated on the same held-out questions, each trained with the same seeds, give paired
outcomes: ``a[s, q]``, ``b[s, q]`` in {0, 1} for seed ``s`` and question ``q``. Used by the miniature
ablations (docs/ablations.md):

- ``mcnemar_exact(b, c)``: the exact two-sided McNemar test on the discordant pairs (``b`` questions only the
  first arm answered right, ``c`` only the second): under "no difference" each discordant pair goes either
  way with probability 1/2, so ``min(b, c)`` is Binomial(b + c, 1/2).
- ``paired_bootstrap(a, b)``: the mean difference in accuracy (points) with a percentile interval from
  resampling seeds and questions with replacement, independently (the same draw for both arms: paired). It
  counts both sources of noise a conclusion must survive: which questions were asked and how training
  went. With few seeds it is too narrow on the seed part (3 seeds: resampling them has 10 distinct
  outcomes and 2/3 of their variance), which docs/ablations.md states beside the numbers.
- ``bootstrap_mean(x)``: one arm's accuracy with the same interval.
- ``verdict(lo, hi, sign)``: a claim's direction against an interval.
- ``judge_paired(a, b)``: all of the above for "``a`` scores higher than ``b``" (the ablation report and
  ``vamba compare`` both judge with it); a verdict other than inconclusive needs the interval and McNemar both.

Pure numpy; nothing here knows about models or benchmarks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs: ``min(1, 2 P(X <= min(b, c)))``
    with ``X ~ Binomial(b + c, 1/2)`` (1.0 when there is no discordant pair). Exact rational arithmetic."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got {b}, {c}")
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    tail = Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2 ** n)
    return float(min(Fraction(1), 2 * tail))


def discordant(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(questions only ``a`` got right, questions only ``b`` got right) over paired 0/1 outcomes of any shape."""
    a, b = _outcomes(a), _outcomes(b)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes need one shape, got {a.shape} and {b.shape}")
    return int((a & ~b).sum()), int((~a & b).sum())


def _outcomes(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if not np.isin(x, (0, 1)).all():
        raise ValueError("outcomes must be 0/1 (or bool)")
    return x.astype(bool)


def _grid(x: np.ndarray) -> np.ndarray:
    """``[S, Q]`` float outcomes (a 1-D array is one seed)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"outcomes must be [seeds, questions] (or [questions]), got shape {x.shape}")
    return x


def _resampled_means(x: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """``[resamples]`` means of ``x [S, Q]`` over seeds and questions drawn with replacement, independently.

    A resample's mean over its drawn cells is ``w_s @ x @ w_q / (S Q)`` with ``w_s``, ``w_q`` the times each
    seed / question was drawn (multinomial counts), so no resampled array is built."""
    s, q = x.shape
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    chunk = max(1, 2_000_000 // max(q, 1))
    for start in range(0, resamples, chunk):
        n = min(chunk, resamples - start)
        ws = rng.multinomial(s, np.full(s, 1.0 / s), size=n).astype(np.float64)  # [n, S]
        wq = rng.multinomial(q, np.full(q, 1.0 / q), size=n).astype(np.float64)  # [n, Q]
        out[start:start + n] = np.einsum("rq,rq->r", ws @ x, wq) / (s * q)
    return out


@dataclass(frozen=True)
class Interval:
    """An estimate in points (percent) with its percentile bootstrap interval at ``level``."""

    estimate: float
    lo: float
    hi: float
    level: float = 0.95

    def __str__(self) -> str:
        return f"{self.estimate:+.1f} [{self.lo:+.1f}, {self.hi:+.1f}]"


def _interval(estimate: float, draws: np.ndarray, level: float) -> Interval:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return Interval(100 * estimate, 100 * float(lo), 100 * float(hi), level)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, resamples: int = 10_000, level: float = 0.95,
                     seed: int = 0) -> Interval:
    """Accuracy of ``a`` minus accuracy of ``b`` in points, paired outcomes ``[S, Q]`` (or ``[Q]``), with the
    percentile interval of the mean difference over seeds and questions resampled together (module docstring)."""
    a, b = _grid(_outcomes(a)), _grid(_outcomes(b))
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes need one shape, got {a.shape} and {b.shape}")
    d = a - b
    return _interval(float(d.mean()), _resampled_means(d, resamples, seed), level)


def bootstrap_mean(x: np.ndarray, *, resamples: int = 10_000, level: float = 0.95, seed: int = 0) -> Interval:
    """Accuracy of ``x [S, Q]`` (or ``[Q]``) in percent with its interval over seeds and questions."""
    x = _grid(_outcomes(x))
    return _interval(float(x.mean()), _resampled_means(x, resamples, seed), level)


def verdict(interval: Interval, sign: int) -> str:
    """A claim that the difference has sign ``sign`` (+1 or -1) against its interval: ``reproduced`` when the
    interval excludes 0 on the claimed side, ``contradicted`` when it excludes 0 on the other, else
    ``inconclusive``."""
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign}")
    lo, hi = sorted((sign * interval.lo, sign * interval.hi))
    if lo > 0:
        return "reproduced"
    if hi < 0:
        return "contradicted"
    return "inconclusive"


@dataclass(frozen=True)
class PairedJudgement:
    """"``a`` scores higher than ``b``" judged on paired ``[S, Q]`` outcomes (points)."""

    difference: Interval  # mean of a - b with its paired bootstrap interval
    per_seed: list[float]  # a - b per seed
    only_a: int  # discordant pairs that only ``a`` got right
    only_b: int
    mcnemar_p: float
    verdict: str  # reproduced / contradicted / inconclusive for a > b


def judge_paired(a: np.ndarray, b: np.ndarray, *, resamples: int = 10_000, level: float = 0.95) -> PairedJudgement:
    """The verdict needs both tests: the interval on one side of 0 and the exact McNemar p under 1 - ``level``.
    Each is too lenient where the other is not: the percentile bootstrap with few discordant questions (5 of 20
    questions right in A alone: interval [+10, +45], p = 0.0625), McNemar with several seeds that disagree (it is
    conditional on the trained models)."""
    diff = paired_bootstrap(a, b, resamples=resamples, level=level)
    only_a, only_b = discordant(a, b)
    per_seed = (_grid(a) - _grid(b)).mean(axis=1)
    p = mcnemar_exact(only_a, only_b)
    return PairedJudgement(diff, [round(100 * float(x), 2) for x in per_seed], only_a, only_b, p,
                           verdict(diff, +1) if p < 1 - level else "inconclusive")
