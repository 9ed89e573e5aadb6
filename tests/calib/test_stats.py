"""Offline statistics: Clopper–Pearson (scipy) against an independent incomplete beta, split conformal,
coverage band, CVaR."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
import reference_beta as ref_beta
from scipy import stats as sps

from calib.stats import (
    beta_ppf,
    betainc_pair,
    clopper_pearson_upper,
    conformal_coverage_band,
    cvar,
    episodes_needed,
    heldout_coverage_band,
    split_conformal_quantile,
    split_conformal_rank,
)
from edge_agent.errors import CalibrationError

N_GRID = (1, 2, 7, 50, 500, 2_995, 13_809, 100_000, 1_000_000)
BETA_GRID = (0.5, 0.05, 1e-3, 1e-6, 1e-9)


def _k_grid(n: int) -> list[int]:
    return sorted({k for k in (0, 1, 2, 3, 10, n // 100, n // 2, n - 1, n) if 0 <= k <= n})


@pytest.mark.parametrize("n", N_GRID)
def test_clopper_pearson_equals_the_independent_reference(n: int) -> None:
    for k in _k_grid(n):
        for beta in BETA_GRID:
            mine = clopper_pearson_upper(k, n, beta)
            # the hand-written incomplete beta (tests/calib/reference_beta.py): two computations
            # that share nothing; ~1e-9 relative is the reference's own accuracy at N = 1e6
            assert mine == pytest.approx(ref_beta.clopper_pearson_upper(k, n, beta), rel=1e-9, abs=1e-15)
            # the scipy call is wired to the right tail and arguments: scipy.stats's own beta
            ref = 1.0 if k == n else float(sps.beta.ppf(1.0 - beta, k + 1, n - k))
            assert abs(mine - ref) <= 1e-9, (k, n, beta, mine, ref)
            if k < n:
                assert mine == pytest.approx(float(sps.beta.isf(beta, k + 1, n - k)), rel=1e-12), (k, n, beta)


def test_clopper_pearson_closed_forms_and_monotonicity() -> None:
    assert clopper_pearson_upper(0, 13_809, 1e-6) == pytest.approx(1 - 1e-6 ** (1 / 13_809), rel=1e-14)
    assert clopper_pearson_upper(0, 13_809, 1e-6) <= 1e-3
    assert clopper_pearson_upper(0, 13_808, 1e-6) > 1e-3
    assert clopper_pearson_upper(10, 10, 0.05) == 1.0
    bounds = [clopper_pearson_upper(k, 1000, 0.05) for k in range(0, 50)]
    assert all(a < b for a, b in itertools.pairwise(bounds))
    assert clopper_pearson_upper(5, 1000, 0.05) > 5 / 1000


def test_incomplete_beta_against_the_independent_reference() -> None:
    # rel 1e-12 for moderate a, b; for a, b ~ 1e6 the reference's lgamma cancellation leaves ~1e-10
    # (see reference_beta.py), which still moves a Clopper–Pearson bound by only ~1e-13 absolute.
    cases = [(0.5, 0.5, 0.3, 1e-12), (3.0, 900.0, 0.001, 1e-12), (2.0, 7.0, 0.9, 1e-12)]
    cases += [(5e5, 5e5, 0.5005, 1e-9), (1.0, 1e6, 1e-6, 1e-9)]
    for a, b, x, rel in cases:
        lower, upper = betainc_pair(a, b, x)
        ref_lower, ref_upper = ref_beta.betainc_pair(a, b, x)
        assert lower == pytest.approx(ref_lower, rel=rel, abs=1e-300)
        assert upper == pytest.approx(ref_upper, rel=rel, abs=1e-300)
        assert lower == pytest.approx(float(sps.beta.cdf(x, a, b)), rel=1e-14, abs=1e-300)
    for p, a, b in [(0.3, 2.0, 5.0), (1e-9, 3.0, 900.0), (0.999, 0.5, 0.5), (1e-6, 11.0, 13_799.0)]:
        assert beta_ppf(p, a, b) == pytest.approx(ref_beta.beta_ppf(p, a, b), rel=1e-12)
        assert beta_ppf(p, a, b, upper_tail=True) == pytest.approx(
            ref_beta.beta_ppf(p, a, b, upper_tail=True), rel=1e-12
        )
    # a tiny upper tail keeps its digits (solved on that tail, not as 1 − (1 − p))
    assert beta_ppf(1e-12, 1.0, 1.0, upper_tail=False) == pytest.approx(1e-12, rel=1e-14)
    assert beta_ppf(1e-12, 2.0, 3.0, upper_tail=True) == pytest.approx(
        ref_beta.beta_ppf(1e-12, 2.0, 3.0, upper_tail=True), rel=1e-12
    )


def test_episodes_needed_matches_reference() -> None:
    assert episodes_needed(1e-3, 0.05) == 2_995
    assert episodes_needed(1e-3, 1e-6) == 13_809
    for eps, beta in [(1e-2, 0.01), (1e-4, 1e-9), (0.2, 0.5)]:
        n = episodes_needed(eps, beta)
        assert clopper_pearson_upper(0, n, beta) <= eps < clopper_pearson_upper(0, n - 1, beta) or n == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((3, 2, 0.05), "k (failures) = 3 must lie in [0, n] = [0, 2]"),
        ((0, 0, 0.05), "n (episodes) = 0 must be ≥ 1"),
        ((0, 10, 1.0), "beta (confidence 1 − β) = 1.0 must lie strictly between 0 and 1"),
        ((0.5, 10, 0.05), "k (failures) must be an integer, got 0.5"),
    ],
)
def test_clopper_pearson_rejects_bad_input(args: tuple[object, object, object], message: str) -> None:
    with pytest.raises(CalibrationError, match=re.escape(message)):
        clopper_pearson_upper(*args)  # type: ignore[arg-type]


# ---------------------------------------------------------------- split conformal


def test_split_conformal_quantile_matches_reference_rank() -> None:
    rng = np.random.default_rng(0)
    for n, alpha, k in [(99, 0.1, 90), (500, 0.1, 451), (9, 0.1, 9), (1000, 0.05, 951), (19, 0.05, 19)]:
        s = rng.exponential(size=n)
        assert split_conformal_rank(n, alpha) == k
        assert split_conformal_quantile(s, alpha) == np.sort(s)[k - 1]


def test_split_conformal_refuses_an_alpha_n_cannot_support() -> None:
    msg = (
        "n = 5 scores cannot support α = 0.1: the split-conformal rank ⌈(n+1)(1−α)⌉ = 6 exceeds n. "
        "Collect at least n = 9 scores, or use α ≥ 0.166667"
    )
    with pytest.raises(CalibrationError, match=re.escape(msg)):
        split_conformal_quantile(np.arange(5.0), 0.1)
    # the advice is right: both remedies work
    split_conformal_quantile(np.arange(9.0), 0.1)
    split_conformal_quantile(np.arange(5.0), 1 / 6)


def test_split_conformal_rejects_nan_inf_and_empty() -> None:
    with pytest.raises(
        CalibrationError, match=re.escape("1 of 3 scores are NaN or infinite (first at index 1, value nan)")
    ):
        split_conformal_quantile([1.0, math.nan, 2.0], 0.5)
    with pytest.raises(
        CalibrationError, match=re.escape("2 of 3 scores are NaN or infinite (first at index 0, value inf)")
    ):
        split_conformal_quantile([math.inf, 1.0, -math.inf], 0.5)
    with pytest.raises(CalibrationError, match=re.escape("no scores given")):
        split_conformal_quantile([], 0.5)
    with pytest.raises(CalibrationError, match=re.escape("alpha = 0.0 must lie strictly between 0 and 1")):
        split_conformal_quantile([1.0], 0.0)


def test_coverage_band_matches_reference_and_scipy() -> None:
    lo, hi = conformal_coverage_band(500, 0.1)
    assert lo == pytest.approx(0.877, abs=5e-4) and hi == pytest.approx(0.921, abs=5e-4)
    assert lo == pytest.approx(float(sps.beta.ppf(0.05, 451, 50)), abs=1e-12)
    assert hi == pytest.approx(float(sps.beta.ppf(0.95, 451, 50)), abs=1e-12)


def test_stationary_coverage_lies_in_the_beta_band() -> None:
    # 4000 calibration sets of n = 500 uniform scores: the coverage of each set is exactly its
    # quantile q (P(U ≤ q) = q), distributed Beta(451, 50). Vectorised: one sort for all sets.
    n, alpha, sets = 500, 0.1, 4000
    rng = np.random.default_rng(123)
    scores = rng.random((sets, n))
    k = split_conformal_rank(n, alpha)
    q = np.sort(scores, axis=1)[:, k - 1]
    for i in range(5):  # the vectorised computation is the function's
        assert q[i] == split_conformal_quantile(scores[i], alpha)
    coverage = q
    lo, hi = conformal_coverage_band(n, alpha)
    inside = np.mean((coverage >= lo) & (coverage <= hi))
    sd = math.sqrt(0.9 * 0.1 / sets)
    assert abs(inside - 0.90) < 4 * sd
    # marginal guarantee: 1 − α ≤ E[coverage] ≤ 1 − α + 1/(n+1), up to Monte-Carlo error
    se = float(np.std(coverage)) / math.sqrt(sets)
    assert 1 - alpha - 4 * se <= coverage.mean() <= 1 - alpha + 1 / (n + 1) + 4 * se
    # and the test can fail: a naive (1−α) empirical quantile under-covers on average
    naive = np.sort(scores, axis=1)[:, math.ceil(n * (1 - alpha)) - 2]
    assert naive.mean() < 1 - alpha - 4 * se


def test_heldout_band_is_the_beta_binomial_and_holds_in_simulation() -> None:
    n, alpha, m = 500, 0.1, 250
    lo, hi = heldout_coverage_band(n, alpha, m)
    ref = sps.betabinom(m, 451, 50)
    assert lo * m == ref.ppf(0.05) and hi * m == ref.ppf(0.95)
    assert hi - lo > 0.05  # wider than the calibration set's own band (0.044)
    # 4000 calibrations of n uniform scores, each checked on m fresh ones: ~90 % fall inside.
    rng = np.random.default_rng(5)
    q = np.sort(rng.random((4000, n)), axis=1)[:, split_conformal_rank(n, alpha) - 1]
    cov = (rng.random((4000, m)) <= q[:, None]).mean(axis=1)
    inside = np.mean((cov >= lo) & (cov <= hi))
    assert 0.87 < inside < 0.97  # ≥ 90 % by construction (discrete quantiles), not far above
    with pytest.raises(CalibrationError, match="at least 1"):
        heldout_coverage_band(n, alpha, 0)


def test_heldout_band_at_an_exact_tie_takes_the_smaller_count() -> None:
    # n = 19, α = 0.05: k = 19, so one held-out score is covered with probability 19/20 and
    # P(X ≤ 0) = 0.05 exactly; the 5 % quantile is therefore 0. The hand-written Beta-Binomial
    # (before scipy) rounded P(X ≤ 0) below 0.05 and answered 1.
    assert heldout_coverage_band(19, 0.05, 1) == (0.0, 1.0)


# ---------------------------------------------------------------- CVaR


def test_cvar_is_the_mean_of_the_worst_fraction() -> None:
    v = np.arange(1.0, 11.0)  # 1..10: the smallest distances are the worst
    assert cvar(v, 0.8) == 1.5  # ⌈0.2·10⌉ = 2 worst: mean(1, 2)
    assert cvar(v, 0.95) == 1.0  # ⌈0.05·10⌉ = 1
    assert cvar(v, 0.5) == 3.0  # mean(1..5)
    assert cvar(np.random.default_rng(0).permutation(v), 0.7) == 2.0
    with pytest.raises(CalibrationError, match=re.escape("level = 1.0 must lie strictly between 0 and 1")):
        cvar(v, 1.0)
