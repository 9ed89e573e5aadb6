"""The onboard tick's scalar observation: state_arrays, scalar_observation and build_one equal
the batched builder's numbers (as the float32 the policy sees), and step aside when they cannot.

The batched path (build_observation on [B, ...] arrays) is the definition; the scalar path must
give the very same float32 values whenever it answers, and answer None for what it cannot build
exactly (geometry and heading features, any non-finite value), so the tick uses the batched one.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_agent.observation import ObservationBuilder, StateArrays, state_arrays
from firmware_bridge.features import (
    VOCABULARY,
    FeatureInputs,
    build_observation,
    observation_size,
    scalar_observation,
)
from firmware_bridge.types import Signal, VehicleState

SCALAR = (
    "goal_rel_ned_m",
    "goal_rel_enu_m",
    "pos_ned_m",
    "pos_enu_m",
    "vel_ned_m_s",
    "vel_enu_m_s",
    "q_wxyz_ned_frd",
    "q_wxyz_enu_flu",
    "rates_frd_rad_s",
    "rates_flu_rad_s",
    "prev_action",
    "battery_frac",
)
NOT_SCALAR = (
    "yaw_sin_cos_ned",
    "fence_dist_m",
    "alt_floor_dist_m",
    "alt_ceiling_dist_m",
    "keepout_rel_ned_m",
    "keepout_dist_m",
)


def reference_state_arrays(state: VehicleState, now_ns: int) -> StateArrays:
    """state_arrays as first written: one np.array per field."""
    nan3 = (math.nan,) * 3

    def value(sig: Signal | None, default: tuple[float, ...]) -> tuple[float, ...]:
        return default if sig is None else sig.value

    def age(sig: Signal | None) -> float:
        return math.inf if sig is None else (now_ns - sig.stamp_ns) * 1e-9

    return StateArrays(
        pos_ned_m=np.array([value(state.pos_ned_m, nan3)], dtype=np.float64),
        vel_ned_m_s=np.array([value(state.vel_ned_m_s, nan3)], dtype=np.float64),
        q_wxyz=np.array([value(state.q_wxyz, (1.0, 0.0, 0.0, 0.0))], dtype=np.float64),
        rates_frd_rad_s=np.array([value(state.rates_frd_rad_s, nan3)], dtype=np.float64),
        battery_frac=np.array([value(state.battery, (math.nan,))[0]], dtype=np.float64),
        signal_age_s=np.array(
            [[age(state.pos_ned_m), age(state.vel_ned_m_s), age(state.q_wxyz), age(state.rates_frd_rad_s)]]
        ),
    )


def random_state(rng: np.random.Generator, now_ns: int) -> VehicleState:
    def sig(size: int) -> Signal | None:
        if rng.random() < 0.1:
            return None
        v = rng.normal(0.0, 5.0, size)
        v[rng.random(size) < 0.05] = rng.choice([np.nan, np.inf, -np.inf, 1e300])
        return Signal(tuple(v.tolist()), now_ns - int(rng.integers(0, 10**9)))

    return VehicleState(
        pos_ned_m=sig(3), vel_ned_m_s=sig(3), q_wxyz=sig(4), rates_frd_rad_s=sig(3), battery=sig(2)
    )


def test_state_arrays_equal_one_array_per_field() -> None:
    rng = np.random.default_rng(1)
    now = 5 * 10**9
    for _ in range(300):
        st = random_state(rng, now)
        got, want = state_arrays(st, now), reference_state_arrays(st, now)
        for name in StateArrays.__slots__:
            g, w = getattr(got, name), getattr(want, name)
            assert g.shape == w.shape and g.dtype == w.dtype, name
            np.testing.assert_array_equal(g, w, err_msg=name)


def test_state_arrays_keep_a_malformed_snapshot_as_it_is() -> None:
    st = VehicleState(pos_ned_m=Signal((1.0, 2.0), 0), vel_ned_m_s=Signal((0.0, 0.0, 0.0), 0))
    got = state_arrays(st, 10)
    assert got.pos_ned_m.shape == (1, 2) and got.vel_ned_m_s.shape == (1, 3)


def random_inputs(rng: np.random.Generator, hostile: bool) -> dict[str, np.ndarray]:
    x = {
        "pos_ned_m": rng.normal(0, 30, (1, 3)),
        "vel_ned_m_s": rng.normal(0, 8, (1, 3)),
        "q_wxyz": rng.normal(0, 1, (1, 4)),
        "rates_frd_rad_s": rng.normal(0, 5, (1, 3)),
        "goal_ned_m": rng.normal(0, 30, (1, 3)),
        "prev_action": rng.normal(0, 10, (1, 4)),
        "battery_frac": rng.uniform(-0.5, 1.5, 1),
    }
    x["q_wxyz"] /= np.linalg.norm(x["q_wxyz"])
    if rng.random() < 0.05:  # exact zeros and signed zeros
        x["vel_ned_m_s"][0] = [0.0, -0.0, 0.0]
    if hostile:
        for v in x.values():
            hit = rng.random(v.shape) < 0.08
            v[hit] = rng.choice([np.nan, np.inf, -np.inf, 1e308, -1e308], size=int(hit.sum()))
    return x


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the batched path on NaN and inf
@pytest.mark.parametrize("seed", range(4))
def test_scalar_observation_equals_build_observation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    answered = declined = 0
    for trial in range(300):
        names = tuple(rng.choice(SCALAR, size=int(rng.integers(1, 7)), replace=False).tolist())
        d = observation_size(names)
        half = rng.uniform(0.5, 40.0, d)
        lo, hi = rng.uniform(-5, 0, d) - half, rng.uniform(0, 5, d) + half
        if trial % 7 == 0:
            lo, hi = np.zeros(d), np.ones(d)  # bounds at 0: clipping of signed zeros
        one = scalar_observation(names, lo, hi)
        assert one is not None
        x = random_inputs(rng, hostile=trial % 3 == 0)
        want = build_observation(names, lo, hi, FeatureInputs(**x)).astype(np.float32)
        got = one(
            x["pos_ned_m"][0].tolist(),
            x["vel_ned_m_s"][0].tolist(),
            x["q_wxyz"][0].tolist(),
            x["rates_frd_rad_s"][0].tolist(),
            x["goal_ned_m"][0].tolist(),
            x["prev_action"][0].tolist(),
            float(x["battery_frac"][0]),
        )
        if got is None:
            declined += 1
            # only when the batched path has something non-finite to keep (or an overflowing sum)
            every = np.concatenate([v.ravel() for v in x.values()])
            assert not np.isfinite(want).all() or (np.abs(every) > 1e300).any()
            continue
        answered += 1
        np.testing.assert_array_equal(np.array([got], dtype=np.float32), want, err_msg=str(names))
    assert answered > 150 and declined > 20, (answered, declined)


def test_features_without_an_exact_scalar_form_have_no_scalar_builder() -> None:
    assert set(SCALAR) | set(NOT_SCALAR) == set(VOCABULARY)
    for name in NOT_SCALAR:
        names = ("goal_rel_ned_m", name)
        d = observation_size(names)
        assert scalar_observation(names, -np.ones(d), np.ones(d)) is None, name
    assert scalar_observation(("vel_ned_m_s",), -np.ones(4), np.ones(4)) is None  # sizes disagree


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_builder_build_one_equals_build() -> None:
    names = (
        "goal_rel_enu_m",
        "vel_enu_m_s",
        "q_wxyz_enu_flu",
        "rates_flu_rad_s",
        "prev_action",
        "battery_frac",
    )
    d = observation_size(names)
    lo, hi = -np.full(d, 6.0), np.full(d, 6.0)
    builder = ObservationBuilder(names, lo, hi, None, 4)
    rng = np.random.default_rng(3)
    now = 10**10
    answered = 0
    for k in range(400):
        st = random_state(rng, now)
        s = state_arrays(st, now)
        goal = rng.normal(0, 20, (1, 3))
        prev = rng.normal(0, 4, (1, 4))
        want = builder.build(s, goal, prev).copy()
        got = builder.build_one(
            s, s.pos_ned_m[0].tolist(), s.vel_ned_m_s[0].tolist(), goal[0].tolist(), prev[0].tolist()
        )
        if got is None:
            assert not np.isfinite(want).all(), k
            continue
        answered += 1
        np.testing.assert_array_equal(np.array([got], dtype=np.float32), want)
    assert answered > 100, answered


def test_builder_without_a_scalar_form_says_so() -> None:
    names = ("goal_rel_ned_m", "yaw_sin_cos_ned")
    b = ObservationBuilder(names, -np.ones(5), np.ones(5), None, 4)
    s = state_arrays(VehicleState(pos_ned_m=Signal((0.0, 0.0, 0.0), 0)), 0)
    assert b.build_one(s, [0.0] * 3, [0.0] * 3, (1.0, 2.0, 3.0), [0.0] * 4) is None
    # clip bounds beyond float32: a clipped value could overflow the cast, so the batched path decides
    big = ObservationBuilder(("goal_rel_ned_m",), -np.full(3, 1e39), np.full(3, 1e39), None, 4)
    assert big.build_one(s, [0.0] * 3, [0.0] * 3, (1.0, 2.0, 3.0), [0.0] * 4) is None
