"""Offline statistics: Clopper–Pearson bounds, split-conformal quantiles, coverage bands, CVaR.

The special functions are scipy's (``scipy.special.betainc``/``betaincc`` and their inverses,
``scipy.stats.betabinom``): the ε printed on a certificate comes from a library that many people
check. This is offline code (calib may import scipy; the onboard ``edge_agent`` never does). The
tests cross-check scipy against an independent hand-written incomplete beta that lives only in
``tests/calib/reference_beta.py``.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import special
from scipy import stats as sps

from edge_agent.errors import CalibrationError


def betainc_pair(a: float, b: float, x: float) -> tuple[float, float]:
    """(I_x(a, b), 1 − I_x(a, b)), each computed without cancellation (scipy's betainc / betaincc)."""
    if not (a > 0 and b > 0):
        raise ValueError(f"betainc_pair needs a > 0 and b > 0, got a={a}, b={b}")
    if x <= 0.0:
        return 0.0, 1.0
    if x >= 1.0:
        return 1.0, 0.0
    return float(special.betainc(a, b, x)), float(special.betaincc(a, b, x))


def beta_ppf(p: float, a: float, b: float, *, upper_tail: bool = False) -> float:
    """x with I_x(a, b) = p (or, with upper_tail, with 1 − I_x(a, b) = p): scipy's betaincinv / betainccinv.

    The upper-tail inverse is solved on that tail, so a tiny tail probability (β = 1e-9 on a
    certificate) keeps all its digits instead of being computed as 1 − (1 − β).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"beta_ppf needs 0 ≤ p ≤ 1, got {p}")
    inverse = special.betainccinv if upper_tail else special.betaincinv
    return float(inverse(a, b, p))


def _check_int(name: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise CalibrationError(f"{name} must be an integer, got {v!r}")
    return int(v)


def _check_prob(name: str, v: float) -> float:
    if not isinstance(v, int | float | np.floating) or not 0.0 < float(v) < 1.0:
        raise CalibrationError(f"{name} = {v!r} must lie strictly between 0 and 1")
    return float(v)


def clopper_pearson_upper(k: int, n: int, beta: float) -> float:
    """One-sided Clopper–Pearson upper bound ε(k, N, β) = BetaInv(1−β; k+1, N−k) on a failure rate."""
    k = _check_int("k (failures)", k)
    n = _check_int("n (episodes)", n)
    beta = _check_prob("beta (confidence 1 − β)", beta)
    if n < 1:
        raise CalibrationError(f"n (episodes) = {n} must be ≥ 1")
    if not 0 <= k <= n:
        raise CalibrationError(f"k (failures) = {k} must lie in [0, n] = [0, {n}]")
    if k == n:
        return 1.0
    if k == 0:
        return -math.expm1(math.log(beta) / n)
    # P(Beta(k+1, N−k) > ε) = β
    return beta_ppf(beta, k + 1.0, float(n - k), upper_tail=True)


def episodes_needed(eps: float, beta: float) -> int:
    """Smallest N such that N failure-free episodes certify ε at confidence 1 − β: ⌈ln β / ln(1−ε)⌉."""
    eps = _check_prob("eps (failure-rate bound)", eps)
    beta = _check_prob("beta (confidence 1 − β)", beta)
    n = math.ceil(math.log(beta) / math.log1p(-eps))
    # guard the ceiling against rounding on either side
    while n > 1 and -math.expm1(math.log(beta) / (n - 1)) <= eps:
        n -= 1
    while -math.expm1(math.log(beta) / n) > eps:
        n += 1
    return n


def _finite_scores(scores: npt.ArrayLike) -> npt.NDArray[np.float64]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise CalibrationError("no scores given: calibration needs at least one scored tick")
    bad = ~np.isfinite(s)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise CalibrationError(
            f"{int(bad.sum())} of {s.size} scores are NaN or infinite (first at index {first}, value {s[first]}); "
            f"drop invalid ticks before calibrating"
        )
    return s


def split_conformal_rank(n: int, alpha: float) -> int:
    """k = ⌈(n+1)(1−α)⌉, the rank of the split-conformal quantile among n scores."""
    # the small guard keeps e.g. (99+1)*0.9 = 90.00000000000001 from rounding up to 91
    return math.ceil((n + 1) * (1.0 - alpha) - 1e-9)


def split_conformal_quantile(scores: npt.ArrayLike, alpha: float) -> float:
    """The k-th smallest score, k = ⌈(n+1)(1−α)⌉: a margin covering a new score w.p. ≥ 1 − α."""
    alpha = _check_prob("alpha", alpha)
    s = _finite_scores(scores)
    n = s.size
    k = split_conformal_rank(n, alpha)
    if k > n:
        n_min = math.ceil(1.0 / alpha - 1.0 - 1e-9)
        raise CalibrationError(
            f"n = {n} scores cannot support α = {alpha}: the split-conformal rank ⌈(n+1)(1−α)⌉ = {k} exceeds n. "
            f"Collect at least n = {n_min} scores, or use α ≥ {1.0 / (n + 1):.6g}"
        )
    return float(np.partition(s, k - 1)[k - 1])


def conformal_coverage_band(n: int, alpha: float, lo: float = 0.05, hi: float = 0.95) -> tuple[float, float]:
    """The [lo, hi] quantiles of the coverage of one calibration set, Beta(k, n+1−k) (no ties)."""
    n = _check_int("n", n)
    alpha = _check_prob("alpha", alpha)
    lo = _check_prob("lo", lo)
    hi = _check_prob("hi", hi)
    if not lo < hi:
        raise CalibrationError(f"lo = {lo} must be smaller than hi = {hi}")
    k = split_conformal_rank(n, alpha)
    if n < 1 or k > n:
        raise CalibrationError(f"n = {n} scores cannot support α = {alpha} (rank {k} > n)")
    a, b = float(k), float(n + 1 - k)
    return beta_ppf(lo, a, b), beta_ppf(hi, a, b)


def heldout_coverage_band(
    n: int, alpha: float, m: int, lo: float = 0.05, hi: float = 0.95
) -> tuple[float, float]:
    """The [lo, hi] quantiles of the empirical coverage on m held-out exchangeable scores.

    Two sources of spread: the calibration set's coverage C ~ Beta(k, n+1−k), and the held-out
    count given C ~ Binomial(m, C); together the count is Beta-Binomial(m, k, n+1−k). Returned as
    fractions of m (the band a correct calibration falls in 90 % of the time by default).
    """
    m = _check_int("m", m)
    if m < 1:
        raise CalibrationError(f"m = {m} held-out scores: need at least 1")
    conformal_coverage_band(n, alpha, lo, hi)  # the same checks on n, α, lo and hi
    k = split_conformal_rank(n, alpha)
    a, b = float(k), float(n + 1 - k)
    # ppf: the smallest j with P(X ≤ j) ≥ lo (and hi)
    counts = sps.betabinom(m, a, b)
    j_lo, j_hi = int(counts.ppf(lo)), int(counts.ppf(hi))
    return j_lo / m, j_hi / m


def cvar(values: npt.ArrayLike, level: float) -> float:
    """Lower-tail CVaR: the mean of the m = ⌈(1−level)·n⌉ smallest values (worst minimum distances)."""
    level = _check_prob("level", level)
    v = _finite_scores(values)
    m = max(1, math.ceil((1.0 - level) * v.size - 1e-9))
    return float(np.mean(np.partition(v, m - 1)[:m]))
