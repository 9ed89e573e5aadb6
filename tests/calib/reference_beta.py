"""An independent incomplete beta for cross-checking scipy in tests (not used by any tool).

This is the hand-written version that ``calib.stats`` used before it moved to scipy (issue 19):
Lentz's continued fraction with ``math.lgamma``, inverted by safeguarded Newton on the log tail.
It stays here only so that the tests compare two independent computations of the number printed
on a certificate. For a, b ~ 1e6 the lgamma terms cancel and it keeps ~1e-10 relative accuracy
(scipy is closer: 6e-12 against 50-digit mpmath where this one is 8e-10, see the commit message).
"""

from __future__ import annotations

import math

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


def clopper_pearson_upper(k: int, n: int, beta: float) -> float:
    """ε(k, N, β) with this module's inverse (the closed form at k = 0, 1 at k = N)."""
    if k == n:
        return 1.0
    if k == 0:
        return -math.expm1(math.log(beta) / n)
    return beta_ppf(beta, k + 1.0, float(n - k), upper_tail=True)
