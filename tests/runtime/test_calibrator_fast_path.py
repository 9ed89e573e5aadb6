"""The calibrator's batch-1 scalar path (what the onboard tick calls) equals its batched path.

``Calibrator.update`` with one vehicle takes a Python float and bool from the agent's scalar
tick and answers through ``_update_one``; the same calibrator with the scalar path switched off
runs the batched numpy code. Every field of every tick must agree, on scores that are ordinary,
huge (the margin saturates at q_max_m and the integrator's tan blows up), NaN or infinite, with
invalid ticks and resets in between.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_agent.calibrator import Calibrator, CalibratorConfig, CalibratorTick

FLOATS = ("margin_m", "score_m", "miscoverage", "rolling_miscoverage")
BOOLS = ("miss", "alarm", "saturated")


def assert_same_tick(a: CalibratorTick, b: CalibratorTick, where: str) -> None:
    for name in FLOATS:
        got, want = getattr(a, name), getattr(b, name)
        assert got.shape == want.shape == (1,) and got.dtype == want.dtype, (name, where)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=f"{name} at {where}")
    for name in BOOLS:
        got, want = getattr(a, name), getattr(b, name)
        assert got.shape == want.shape == (1,) and got.dtype == want.dtype, (name, where)
        np.testing.assert_array_equal(got, want, err_msg=f"{name} at {where}")


def random_score(rng: np.random.Generator, k: int) -> float:
    u = rng.random()
    if u < 0.03:
        return math.nan
    if u < 0.05:
        return math.inf
    if 300 <= k < 650:  # a burst of large scores: misses, the integrator's tan past π/2, q_max_m
        return float(rng.uniform(5.0, 40.0))
    return float(abs(rng.normal(0.4, 0.3)))


@pytest.mark.parametrize("ki_m", [0.0, 0.1, 2.0])
@pytest.mark.parametrize("q_min_m", [0.0, -math.inf])
def test_scalar_update_equals_the_batched_update(ki_m: float, q_min_m: float) -> None:
    cfg = CalibratorConfig(
        horizon_ticks=7,
        lr=0.05,
        ki_m=ki_m,
        q_min_m=q_min_m,
        q_max_m=3.0,
        rolling_window_ticks=30,
        alarm_threshold=4.0,
    )
    fast = Calibrator(cfg, n=1, warm_quantile_m=0.5)
    arrays = Calibrator(cfg, n=1, warm_quantile_m=0.5)  # scalar path, fed [1]-arrays
    slow = Calibrator(cfg, n=1, warm_quantile_m=0.5)
    slow._fast = False
    assert fast._fast and arrays._fast
    rng = np.random.default_rng(int(ki_m * 10) + (q_min_m == 0.0))
    seen = {"saturated": False, "alarm": False}
    for k in range(900):
        score = random_score(rng, k)
        valid = bool(rng.random() > 0.05)
        a = fast.update(score, valid)
        b = arrays.update(np.array([score]), np.array([valid]))
        c = slow.update(np.array([score]), np.array([valid]))
        assert_same_tick(a, c, f"tick {k} (floats)")
        assert_same_tick(b, c, f"tick {k} (arrays)")
        np.testing.assert_allclose(fast.margin_m, slow.margin_m, rtol=1e-12, atol=1e-12)
        seen["saturated"] |= bool(c.saturated[0])
        seen["alarm"] |= bool(c.alarm[0])
        u = rng.random()
        if u < 0.03:  # a full reset, a masked one, or a mask that spares the vehicle
            mask = None if u < 0.01 else np.array([u < 0.02])
            for cal in (fast, arrays, slow):
                cal.reset(mask)
    # Without the integrator the clipped P-state never asks for more than q_max_m.
    assert seen["alarm"] and seen["saturated"] == (ki_m > 0), seen


def test_a_float_is_taken_without_the_scalar_path_too() -> None:
    """n = 1 with another method: the float is wrapped and the batched code runs."""
    cfg = CalibratorConfig(horizon_ticks=3, lr=0.05, method="aci", score_window=20)
    a, b = Calibrator(cfg, n=1, warm_quantile_m=0.5), Calibrator(cfg, n=1, warm_quantile_m=0.5)
    assert not a._fast
    rng = np.random.default_rng(2)
    for k in range(200):
        score = random_score(rng, k)
        assert_same_tick(a.update(score, True), b.update(np.array([score]), np.array([True])), str(k))


def test_ticks_do_not_share_memory() -> None:
    """The scalar path hands out views of one buffer per tick; the next tick must not touch them."""
    cal = Calibrator(CalibratorConfig(horizon_ticks=2, lr=0.5), n=1, warm_quantile_m=0.5)
    first = cal.update(0.1, True)
    kept = {name: getattr(first, name).copy() for name in FLOATS + BOOLS}
    for k in range(10):
        cal.update(5.0 + k, True)
    for name, value in kept.items():
        np.testing.assert_array_equal(getattr(first, name), value, err_msg=name)
