"""The batch-1 fast paths (shield, agent tick, nominal model) decide exactly as the batched code.

The onboard loop runs B = 1, where Python floats beat numpy's per-call overhead, so the shield,
the agent tick and the nominal model have scalar paths. They must never change a decision: every
tick here runs twice, once through the fast path and once through the batched path, on random
inputs that include stale, non-finite and negative ages, NaN and huge numbers, link loss,
inference failure, calibrator alarms and latched fallbacks. Setpoints, layers, reasons and stages
must be identical; continuous diagnostics (slack, scores) equal up to rounding.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from edge_agent.agent import AgentCore
from edge_agent.calibrator import Calibrator, CalibratorConfig
from edge_agent.mission import Mission, load_mission, parse_mission
from edge_agent.nominal import NominalModel, SilenceBehavior, lag_error, lag_error_one
from edge_agent.observation import ObservationBuilder, StateArrays
from edge_agent.shield import Reason, Shield, ShieldConfig, ShieldInput, ShieldResult

# The demo mission and the L-shaped polygon mission of the shield tests.
from tests.runtime.test_shield import DEMO, POLYGON


def missions() -> list[Mission]:
    return [load_mission(DEMO), parse_mission(copy.deepcopy(POLYGON))]


def _maybe(rng: np.random.Generator, x: np.ndarray, p: float, values: tuple[float, ...]) -> np.ndarray:
    """Replace each element by one of ``values`` with probability p."""
    out = x.copy()
    hit = rng.random(out.shape) < p
    out[hit] = rng.choice(values, size=int(hit.sum()))
    return out


def random_tick(rng: np.random.Generator, now_s: float, hostile: bool) -> ShieldInput:
    """One vehicle's inputs: mostly ordinary flight near the boundaries, some garbage when hostile."""
    if rng.random() < 0.7:  # well inside, where most ticks of a flight happen
        pos = np.array([[rng.uniform(-22, 22), rng.uniform(-22, 22), -rng.uniform(6.0, 24.0)]])
        vel = rng.normal(0.0, 0.7, (1, 3))
        action = np.concatenate([rng.uniform(-2.5, 2.5, (1, 3)), rng.uniform(-2, 2, (1, 1))], axis=1)
    else:  # anywhere, outside included
        pos = np.array([[rng.uniform(-34, 34), rng.uniform(-34, 34), -rng.uniform(0.0, 33.0)]])
        vel = rng.normal(0.0, 2.0, (1, 3))
        action = np.concatenate([rng.uniform(-7, 7, (1, 3)), rng.uniform(-2, 2, (1, 1))], axis=1)
    ages = rng.uniform(0.0, 0.06, (1, 4))
    margin = np.array([rng.uniform(-0.5, 2.5)])
    link_ok = np.array([True])
    inference_ok = np.array([True])
    alarm = np.array([False])
    if hostile:
        bad = (np.nan, np.inf, -np.inf, 1e300, -1e300)
        pos = _maybe(rng, pos, 0.03, bad)
        vel = _maybe(rng, vel, 0.03, bad)
        action = _maybe(rng, action, 0.03, bad)
        ages = _maybe(rng, ages, 0.05, (np.nan, np.inf, -1.0, 0.2))
        margin = _maybe(rng, margin, 0.05, (np.nan, np.inf, -3.0))
        link_ok[0] = rng.random() > 0.05
        inference_ok[0] = rng.random() > 0.05
        alarm[0] = rng.random() < 0.05
    return ShieldInput(now_s, pos, vel, action, margin, ages, link_ok, inference_ok, alarm)


def assert_same_result(fast: ShieldResult, slow: ShieldResult) -> None:
    # Bit-identical unless the barrier projected the command (reason FENCE/ALTITUDE/KEEPOUT at
    # layer 2): the projection's dot products sum in another order than numpy's matmul.
    projected = bool(slow.layer[0] == 2 and slow.reason[0] != int(Reason.SPEED_LIMIT))
    if projected:
        np.testing.assert_allclose(fast.setpoint, slow.setpoint, rtol=0.0, atol=1e-9)
    else:
        np.testing.assert_array_equal(fast.setpoint, slow.setpoint)
    for name in ("intervened", "layer", "reason", "fallback_stage"):
        got, want = getattr(fast, name), getattr(slow, name)
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert got.dtype == want.dtype and got.shape == want.shape, name
    np.testing.assert_allclose(fast.min_slack_m, slow.min_slack_m, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("mission_index", [0, 1])
def test_shield_fast_path_decides_like_the_batched_path(mission_index: int) -> None:
    mission = missions()[mission_index]
    silence = SilenceBehavior.for_autopilot(mission)
    fast = Shield(mission, NominalModel(), silence, ShieldConfig(), n=1)
    slow = Shield(mission, NominalModel(), silence, ShieldConfig(), n=1)
    slow._fast = False
    rng = np.random.default_rng(mission_index)
    took_fast = projected_fast = handed_over = 0
    layers: set[int] = set()
    barrier_reasons = {int(Reason.FENCE), int(Reason.ALTITUDE), int(Reason.KEEPOUT)}
    for k in range(1500):
        inp = random_tick(rng, 0.02 * k, hostile=k % 3 == 0)
        one = fast._certify_one(inp)
        took_fast += one is not None and fast.latch.stage[0] == 0
        projected_fast += one is not None and int(one.reason[0]) in barrier_reasons
        handed_over += one is None
        a, b = fast.certify(inp), slow.certify(inp)
        assert_same_result(a, b)
        layers.add(int(b.layer[0]))
        if k % 10 == 9:  # LAND and RETURN never release: restart so the common path recurs
            fast.reset()
            slow.reset()
    # Both paths were exercised, and every layer acted at least once.
    assert took_fast > 80, took_fast
    assert projected_fast > 20, projected_fast  # the scalar projection ran, and matched
    assert fast.batched_calls == handed_over and slow.batched_calls == 1500  # what the bench counts
    assert layers == {0, 1, 2, 3}, layers


def test_shield_fast_path_survives_any_garbage() -> None:
    mission = missions()[0]
    shield = Shield(mission, NominalModel(), SilenceBehavior.for_autopilot(mission), n=1)
    values = (0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 1e308, -1e308, 5e-324)
    rng = np.random.default_rng(7)
    for _ in range(500):
        inp = ShieldInput(
            0.0,
            rng.choice(values, (1, 3)),
            rng.choice(values, (1, 3)),
            rng.choice(values, (1, 4)),
            rng.choice(values, 1),
            np.abs(rng.choice(values, (1, 4))) * 1e-3,
            np.array([True]),
            np.array([True]),
            np.array([False]),
        )
        res = shield.certify(inp)
        assert np.isfinite(res.setpoint).all()


def test_lag_error_one_matches_the_batched_model() -> None:
    rng = np.random.default_rng(3)
    e0 = np.concatenate([rng.uniform(0, 20, 500), [0.0, 1e-12, 1.2, 1e6]])
    for accel, tau, t in ((3.0, 0.4, 1.0), (1.0, 0.1, 0.02), (5.0, 2.0, 3.2)):
        want_e, want_i = lag_error(e0, accel, tau, t)
        got = np.array([lag_error_one(float(x), accel, tau, t) for x in e0])
        np.testing.assert_allclose(got[:, 0], want_e, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(got[:, 1], want_i, rtol=1e-12, atol=1e-15)


class _Policy:
    """A deterministic numpy policy that drives at the goal too fast, and sometimes fails."""

    def __init__(self, fail_every: int) -> None:
        self.calls = 0
        self.fail_every = fail_every

    def act(self, obs: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.fail_every and self.calls % self.fail_every == 0:
            raise RuntimeError("inference failed")
        out = np.zeros((obs.shape[0], 4), dtype=np.float32)
        out[:, :3] = 1.5 * obs[:, :3] - 0.2 * obs[:, 3:6]
        # every element counts (previous action, battery, fence): the raw action is compared exactly
        out[:, 3] = 0.3 + 0.01 * obs[:, 6:].sum(axis=1) + 0.001 * obs[:, -1]
        return out


class _Timer:
    """A clock whose inference times are random but the same for two cores with the same seed."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.t = 0.0

    def __call__(self) -> float:
        self.t += float(self.rng.exponential(2e-4))
        return self.t


class _PolicyOne(_Policy):
    """The same policy with the runner's batch-1 entry (Python floats in and out)."""

    def act_one(self, obs: list[float]) -> list[float]:
        out: list[float] = self.act(np.array([obs], dtype=np.float32))[0].tolist()
        return out


def make_core(
    mission: Mission, kind: str, features: str = "geometry", policy: str = "act", deadline: bool = False
) -> AgentCore:
    """features: "geometry" (a fence distance: the batched builder) or "scalar" (the tick's
    scalar observation); policy: "act" or "act_one" (the runner's batch-1 entry); deadline: a
    random inference time and a deadline it sometimes misses."""
    enu = kind == "velocity_enu_yaw_rate"
    frame = "enu" if enu else "ned"
    if features == "geometry":
        names: tuple[str, ...] = ("goal_rel_ned_m", "vel_ned_m_s", "fence_dist_m", "prev_action")
        lo = np.array([-20.0] * 3 + [-15.0] * 3 + [-50.0] + [-20.0] * 4)
    else:
        names = (f"goal_rel_{frame}_m", f"vel_{frame}_m_s", "prev_action", "battery_frac")
        lo = np.array([-20.0] * 3 + [-15.0] * 3 + [-20.0] * 4 + [-1.0])
    silence = SilenceBehavior.for_autopilot(mission)
    nominal = NominalModel()
    return AgentCore(
        policy=(_PolicyOne if policy == "act_one" else _Policy)(fail_every=97),
        action_kind=kind,
        builder=ObservationBuilder(names, lo, -lo, mission.geometry_features, 4),
        mission=mission,
        shield=Shield(mission, nominal, silence, n=1),
        calibrator=Calibrator(CalibratorConfig(horizon_ticks=5, lr=0.05), n=1, warm_quantile_m=0.5),
        nominal=nominal,
        n=1,
        # the deadline is missed on about one tick in ten
        inference_deadline_s=4.6e-4 if deadline else float("inf"),
        timer=_Timer(1) if deadline else None,
    )


@pytest.mark.parametrize(
    ("features", "policy", "deadline"),
    [
        ("geometry", "act", False),
        ("scalar", "act", True),
        ("scalar", "act_one", False),
        ("scalar", "act_one", True),
    ],
)
@pytest.mark.parametrize(
    ("mission_index", "kind"), [(0, "velocity_ned_yaw_rate"), (1, "velocity_enu_yaw_rate")]
)
def test_agent_tick_fast_path_equals_the_batched_tick(
    mission_index: int, kind: str, features: str, policy: str, deadline: bool
) -> None:
    mission = missions()[mission_index]
    fast = make_core(mission, kind, features, policy, deadline)
    slow = make_core(mission, kind, features, policy, deadline)
    slow._fast = False
    scalar_obs = {"answered": 0}
    build_one = fast.builder.build_one

    def counting(*args: Any) -> list[float] | None:
        out = build_one(*args)
        scalar_obs["answered"] += out is not None
        return out

    fast.builder.build_one = counting  # type: ignore[method-assign]
    rng = np.random.default_rng(11 + mission_index)
    nominal = NominalModel()
    pos = np.array([[-20.0, -20.0, -10.0]])
    vel = np.zeros((1, 3))
    for k in range(800):
        # A crude closed loop through the nominal model keeps the vehicle near the route and the
        # boundaries; every 4th tick gets hostile inputs on top.
        inp = random_tick(rng, 0.02 * k, hostile=k % 4 == 0)
        ages = inp.signal_age_s if k % 4 == 0 else np.abs(inp.signal_age_s) * 0.5
        p = inp.pos_ned_m if k % 4 == 0 and rng.random() < 0.3 else pos
        state = StateArrays(p, vel, np.array([[1.0, 0.0, 0.0, 0.0]]), np.zeros((1, 3)), np.ones(1), ages)
        a = fast.step(state, 0.02 * k, inp.link_ok)
        b = slow.step(state, 0.02 * k, inp.link_ok)
        # Equal up to rounding: a projected setpoint may differ in its last bits (assert_same_result)
        # and is fed back to the policy as the previous action.
        np.testing.assert_allclose(a.setpoint, b.setpoint, rtol=0.0, atol=1e-9)
        np.testing.assert_allclose(a.raw_action, b.raw_action, rtol=0.0, atol=1e-6)
        for name in (
            "intervened",
            "layer",
            "reason",
            "fallback_stage",
            "alarm",
            "goal_index",
            "mission_complete",
        ):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=f"{name} at tick {k}")
        for name in ("margin_m", "score_m", "miscoverage", "min_slack_m"):
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-9, atol=1e-9, err_msg=name)
        if np.isfinite(p).all():
            pos, vel = nominal.step(pos, vel, a.setpoint[:, :3] + rng.normal(0, 0.3, (1, 3)), 0.02)
        if (a.fallback_stage[0] >= 3) or rng.random() < 0.002:  # landing or random restart
            fast.reset()
            slow.reset()
            pos = np.array([[rng.uniform(-25, 25), rng.uniform(-25, 25), -10.0]])
            vel = np.zeros((1, 3))
    # The scalar observation answered on the finite ticks, and only where it can be exact.
    if features == "scalar":
        assert scalar_obs["answered"] > 400, scalar_obs
    else:
        assert scalar_obs["answered"] == 0, scalar_obs
