"""Offline statistics: Clopper–Pearson bounds, split-conformal quantiles, coverage bands, CVaR.

The regularized incomplete beta function and its inverse are written here (Lentz's continued
fraction with ``math.lgamma``, inverted by safeguarded Newton on the log tail) rather than
taken from scipy, so that the tests comparing with ``scipy.stats.beta`` compare two
independent computations.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from edge_agent.errors import CalibrationError

_TINY = 1e-300
_EPS = 1e-16


def _log_beta(a: float, b: float) -> float:
    # For a, b ~ 1e6 the three lgamma terms (~1e7 each) cancel: I_x keeps ~1e-10 relative
    # accuracy there, which moves an inverted quantile by only ~pdf⁻¹·1e-10 ≈ 1e-13.
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of I_x(a, b) (modified Lentz); converges fast for x < (a+1)/(a+b+2)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = _TINY if abs(d) < _TINY else d
    d = 1.0 / d
    h = d
    # O(sqrt(max(a, b))) terms are needed; the cap is far above that for N ≤ 1e9.
    max_iter = 10_000 + int(10 * math.sqrt(max(a, b)))
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = _TINY if abs(d) < _TINY else d
        c = 1.0 + aa / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = _TINY if abs(d) < _TINY else d
        c = 1.0 + aa / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge for a={a}, b={b}, x={x}")


def betainc_pair(a: float, b: float, x: float) -> tuple[float, float]:
    """(I_x(a, b), 1 − I_x(a, b)), each computed without cancellation."""
    if not (a > 0 and b > 0):
        raise ValueError(f"betainc_pair needs a > 0 and b > 0, got a={a}, b={b}")
    if x <= 0.0:
        return 0.0, 1.0
    if x >= 1.0:
        return 1.0, 0.0
    log_front = a * math.log(x) + b * math.log1p(-x) - _log_beta(a, b)
    if x < (a + 1.0) / (a + b + 2.0):
        lower = math.exp(log_front) * _betacf(a, b, x) / a
        return lower, 1.0 - lower
    upper = math.exp(log_front) * _betacf(b, a, 1.0 - x) / b
    return 1.0 - upper, upper


def _log_pdf(a: float, b: float, x: float) -> float:
    return (a - 1.0) * math.log(x) + (b - 1.0) * math.log1p(-x) - _log_beta(a, b)


def beta_ppf(p: float, a: float, b: float, *, upper_tail: bool = False) -> float:
    """x with I_x(a, b) = p (or, with upper_tail, with 1 − I_x(a, b) = p), to ~1e-15 relative."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"beta_ppf needs 0 ≤ p ≤ 1, got {p}")
    # Solve on whichever tail is smaller, so a tiny tail probability keeps all its digits.
    if not upper_tail and p > 0.5:
        return beta_ppf(1.0 - p, a, b, upper_tail=True)
    if upper_tail and p > 0.5:
        return beta_ppf(1.0 - p, a, b, upper_tail=False)
    if p == 0.0:
        return 1.0 if upper_tail else 0.0
    log_p = math.log(p)
    lo, hi = 0.0, 1.0
    x = a / (a + b)
    for _ in range(400):
        low_t, up_t = betainc_pair(a, b, x)
        tail = up_t if upper_tail else low_t
        if tail <= 0.0:
            g = -math.inf
        else:
            g = math.log(tail) - log_p
        # the lower tail grows with x, the upper tail shrinks
        increasing = not upper_tail
        if g == 0.0:
            return x
        if (g > 0) == increasing:
            hi = x
        else:
            lo = x
        if tail > 0.0:
            # Newton on log(tail): d/dx log I = pdf / I (and −pdf / Q for the upper tail)
            dlog = math.exp(_log_pdf(a, b, x) - math.log(tail))
            step = g / dlog if increasing else -g / dlog
            x_new = x - step
        else:
            x_new = math.nan
        if not (lo < x_new < hi):
            # bisect, geometrically near 0 so tiny quantiles are reached in few steps
            x_new = math.sqrt(lo * hi) if lo > 0.0 and hi / lo > 4.0 else 0.5 * (lo + hi)
            if lo == 0.0:
                x_new = hi * 1e-3 if hi > 1e-290 else 0.5 * hi
        if abs(x_new - x) <= 1e-16 * max(x, 1e-300) or hi - lo <= 2e-16 * max(hi, 1e-300):
            return x_new
        x = x_new
    raise ArithmeticError(f"beta_ppf did not converge for p={p}, a={a}, b={b}")


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
    # log pmf of Beta-Binomial(m, a, b) at j = 0..m, by log-gamma (no scipy on this path)
    base = math.lgamma(m + 1) + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) - math.lgamma(m + a + b)
    logs = [
        base - math.lgamma(j + 1) - math.lgamma(m - j + 1) + math.lgamma(j + a) + math.lgamma(m - j + b)
        for j in range(m + 1)
    ]
    top = max(logs)
    pmf = np.exp(np.array(logs) - top)
    cdf = np.cumsum(pmf) / pmf.sum()
    j_lo = int(np.searchsorted(cdf, lo))  # smallest j with P(X ≤ j) ≥ lo
    j_hi = int(np.searchsorted(cdf, hi))
    return j_lo / m, j_hi / m


def cvar(values: npt.ArrayLike, level: float) -> float:
    """Lower-tail CVaR: the mean of the m = ⌈(1−level)·n⌉ smallest values (worst minimum distances)."""
    level = _check_prob("level", level)
    v = _finite_scores(values)
    m = max(1, math.ceil((1.0 - level) * v.size - 1e-9))
    return float(np.mean(np.partition(v, m - 1)[:m]))
