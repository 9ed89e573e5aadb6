"""The layered shield: soundness of the barrier under the nominal model, watchdog, fallback latch."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import ConfigError
from edge_agent.fallback import Stage
from edge_agent.mission import Mission, load_mission, parse_mission
from edge_agent.nominal import NominalModel, SilenceBehavior, silence_trajectory
from edge_agent.shield import Reason, Shield, ShieldConfig, ShieldInput

DEMO = Path(__file__).resolve().parents[2] / "examples" / "missions" / "demo.toml"

# A non-convex (L-shaped) polygon fence with a floating box zone and a cylinder: the geometry the
# closed form does not cover (per-edge closest points, disjunctive zones).
POLYGON: dict[str, Any] = {
    "geofence": {
        "kind": "polygon",
        "vertices_ne_m": [[-30, -30], [30, -30], [30, 0], [0, 0], [0, 30], [-30, 30]],
        "floor_alt_m": 2.0,
        "ceiling_alt_m": 30.0,
    },
    "keepout": [
        {"kind": "cylinder", "center_ne_m": [-15.0, -15.0], "radius_m": 4.0, "alt_min_m": 0.0, "alt_max_m": 15.0},
        {"kind": "box", "north_min_m": 10, "north_max_m": 20, "east_min_m": -20, "east_max_m": -10,
         "alt_min_m": 8.0, "alt_max_m": 20.0},
    ],
    "route": {"waypoints_nea_m": [[-25.0, 20.0, 10.0], [20.0, -25.0, 22.0]]},
    "limits": {"horizontal_speed_m_s": 5.0, "up_speed_m_s": 2.0, "down_speed_m_s": 1.5},
    "fallback": {"action": "return", "home_ne_m": [-25.0, 25.0], "return_alt_m": 10.0},
    "autopilot": {"flavour": "ardupilot"},
}  # fmt: skip


def demo() -> Mission:
    return load_mission(DEMO)


def polygon() -> Mission:
    return parse_mission(copy.deepcopy(POLYGON))


def make_input(
    pos: np.ndarray,
    vel: np.ndarray,
    action: np.ndarray,
    *,
    now_s: float = 0.0,
    margin: float | np.ndarray = 0.0,
    ages: float | np.ndarray = 0.0,
    alarm: bool | np.ndarray = False,
) -> ShieldInput:
    b = pos.shape[0]
    return ShieldInput(
        now_s=now_s,
        pos_ned_m=np.asarray(pos, dtype=np.float64),
        vel_ned_m_s=np.asarray(vel, dtype=np.float64),
        action=np.asarray(action, dtype=np.float64),
        margin_m=np.broadcast_to(np.asarray(margin, dtype=np.float64), (b,)).copy(),
        signal_age_s=np.broadcast_to(np.asarray(ages, dtype=np.float64), (b, 4)).copy(),
        link_ok=np.ones(b, dtype=bool),
        inference_ok=np.ones(b, dtype=bool),
        calibrator_alarm=np.broadcast_to(np.asarray(alarm), (b,)).copy(),
    )


def random_states(mission: Mission, rng: np.random.Generator, b: int) -> tuple[np.ndarray, ...]:
    """Positions inside the fence band (some close to edges and zones), velocities and actions."""
    g = mission.geometry
    lo, hi = g.box_min_ne, g.box_max_ne
    pos = np.empty((b, 3))
    pos[:, 0] = rng.uniform(lo[0], hi[0], b)
    pos[:, 1] = rng.uniform(lo[1], hi[1], b)
    fence = mission.geofence
    pos[:, 2] = -rng.uniform(fence.floor_alt_m, fence.ceiling_alt_m, b)
    lim = mission.limits
    vel = rng.normal(0.0, 1.0, (b, 3)) * rng.uniform(0, lim.horizontal_m_s, (b, 1))
    vel[:, 2] *= 0.4
    action = np.column_stack([rng.uniform(-8, 8, (b, 3)), rng.uniform(-2, 2, b)])
    return pos, vel, action


def worst_distances(mission: Mission, traj: np.ndarray) -> dict[str, np.ndarray]:
    """Smallest distance to each boundary kind over a trajectory [T, B, 3] (negative = crossed)."""
    g = mission.geometry
    t, b, _ = traj.shape
    flat = traj.reshape(-1, 3)
    fence, _ = g.fence_distance(flat)
    floor, ceiling = g.altitude_distances(flat)
    out = {
        "fence": fence.reshape(t, b).min(0),
        "floor": floor.reshape(t, b).min(0),
        "ceiling": ceiling.reshape(t, b).min(0),
    }
    if g.n_zones:
        dist, _ = g.keepout_distance(flat)
        out["keepout"] = dist.min(axis=1).reshape(t, b).min(0)
    return out


def check_sound(mission: Mission, silence: SilenceBehavior, seed: int, margin: float, b: int = 256) -> int:
    """Certify random actions, let the agent die right after, and check every margin held.

    Returns how many certified commands were checked (so callers can require coverage)."""
    rng = np.random.default_rng(seed)
    nominal = NominalModel()
    shield = Shield(mission, nominal, silence, ShieldConfig(latency_s=0.0), n=b)
    pos, vel, action = random_states(mission, rng, b)
    res = shield.certify(make_input(pos, vel, action, margin=margin))
    assert np.isfinite(res.setpoint).all()
    certified = res.layer <= 2
    # Only states the barrier can vouch for: inside, and where a command was certified.
    traj = silence_trajectory(nominal, silence, pos, vel, res.setpoint[:, :3], dt_s=0.01)
    worst = worst_distances(mission, traj)
    start = worst_distances(mission, pos[None])
    m = mission.margins
    need = {"fence": m.fence_m, "floor": m.altitude_m, "ceiling": m.altitude_m}
    tol = 1e-3
    for kind, want_m in need.items():
        want = want_m + margin
        # Certified while already inside a margin band (recovery): the distance must not shrink.
        bad = certified & (worst[kind] < np.minimum(want, start[kind]) - tol)
        assert not bad.any(), (kind, np.flatnonzero(bad), worst[kind][bad])
    g = mission.geometry
    if g.n_zones:
        t = traj.shape[0]
        dist, _ = g.keepout_distance(traj.reshape(-1, 3))
        worst_zone = dist.reshape(t, b, -1).min(axis=0)  # [B, Z]
        dh, _ = g.keepout_horizontal(pos)
        down = pos[:, 2:3]
        dv = np.maximum(g.zone_top_down_m - down, down - g.zone_bottom_down_m)
        # Out of a zone horizontally or vertically, whichever way the barrier chose: by the margin,
        # or (recovery inside the band) by no less than it started.
        way_out = np.where(dv > 0, np.minimum(dh, dv), dh)
        want = m.keepout_m + margin
        bad = certified[:, None] & (worst_zone < np.minimum(want, way_out) - tol)
        assert not bad.any(), ("keepout", np.argwhere(bad), worst_zone[bad])
    return int(certified.sum())


# ---------------------------------------------------------------------------------------------
# Barrier soundness: the certified command keeps the vehicle inside even if the agent dies now.


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1), margin=st.floats(0.0, 2.0), flavour=st.sampled_from(["px4", "ardupilot"])
)
def test_certified_setpoint_is_safe_if_the_agent_dies_demo(seed: int, margin: float, flavour: str) -> None:
    mission = demo()
    silence = SilenceBehavior.default(flavour)
    assert check_sound(mission, silence, seed, margin) > 0


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), margin=st.floats(0.0, 2.0), delay=st.floats(0.0, 0.5))
def test_certified_setpoint_is_safe_if_the_agent_dies_polygon(seed: int, margin: float, delay: float) -> None:
    mission = polygon()
    silence = SilenceBehavior(3.0, 1.0, 1.0, delay, "ardupilot")
    assert check_sound(mission, silence, seed, margin) > 0


def test_unshielded_random_actions_do_breach() -> None:
    """The soundness check above can fail: without the shield the same draws cross boundaries."""
    mission = demo()
    silence = SilenceBehavior.default("px4")
    rng = np.random.default_rng(1)
    pos, vel, action = random_states(mission, rng, 256)
    traj = silence_trajectory(NominalModel(), silence, pos, vel, action[:, :3], dt_s=0.01)
    worst = worst_distances(mission, traj)
    m = mission.margins
    assert (worst["fence"] < m.fence_m).sum() > 10
    assert (worst["keepout"] < m.keepout_m).sum() > 5


def test_safe_action_passes_bit_identical() -> None:
    mission = demo()
    shield = Shield(mission, NominalModel(), SilenceBehavior.default("px4"), n=3)
    pos = np.array([[-20.0, -20.0, -10.0], [20.0, 20.0, -12.0], [-15.0, 18.0, -15.0]])
    vel = np.array([[0.5, 0.3, 0.0], [-1.0, 0.0, 0.2], [0.0, 0.0, 0.0]])
    action = np.array([[0.7123456789, 0.3, -0.1, 0.2], [-1.1, 0.05, 0.1, -0.3], [0.0, 0.0, 0.0, 0.0]])
    res = shield.certify(make_input(pos, vel, action, margin=0.3))
    assert res.setpoint.tobytes() == action.tobytes()
    assert not res.intervened.any()
    assert (res.layer == 0).all() and (res.reason == Reason.NONE).all()
    assert (res.min_slack_m > 0).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_actions_satisfying_the_conditions_are_untouched(seed: int) -> None:
    """Whatever the barrier accepts as it is (slack ≥ 0, within limits) comes out bit-identical."""
    mission = polygon()
    shield = Shield(mission, NominalModel(), SilenceBehavior.default("ardupilot"), n=64)
    rng = np.random.default_rng(seed)
    pos, vel, action = random_states(mission, rng, 64)
    action *= 0.3
    res = shield.certify(make_input(pos, vel, action))
    prep = shield.barrier.prepare(pos, vel, np.zeros(64), np.full(64, shield.config.latency_s))
    slack = shield.barrier.min_slack_m(prep, action[:, :3])
    lim = mission.limits
    within = (np.hypot(action[:, 0], action[:, 1]) <= lim.horizontal_m_s) & (action[:, 2] <= lim.down_m_s)
    within &= (action[:, 2] >= -lim.up_m_s) & (np.abs(action[:, 3]) <= lim.yaw_rate_rad_s)
    safe = within & (slack >= 0)
    assert safe.any()
    assert (res.layer[safe] == 0).all()
    assert res.setpoint[safe].tobytes() == action[safe].tobytes()


def test_speed_limits_clip_and_name_the_reason() -> None:
    mission = demo()
    shield = Shield(mission, NominalModel(), SilenceBehavior.default("px4"), n=1)
    res = shield.certify(
        make_input(np.array([[-20.0, -20, -15]]), np.zeros((1, 3)), np.array([[0.0, 9.0, 0.0, 5.0]]))
    )
    # The zone and fence are far enough to the east that only the limits bite.
    assert res.reason[0] in (Reason.SPEED_LIMIT, Reason.FENCE)
    assert np.hypot(*res.setpoint[0, :2]) <= 5.0 + 1e-12
    assert res.setpoint[0, 3] == 1.0
    res = shield.certify(
        make_input(np.array([[-20.0, -20, -15]]), np.zeros((1, 3)), np.array([[0.0, 0.0, 3.0, 0.0]]))
    )
    assert res.setpoint[0, 2] == 1.5 and res.reason[0] == Reason.SPEED_LIMIT and res.layer[0] == 2


def test_barrier_names_the_binding_constraint() -> None:
    mission = demo()
    shield = Shield(mission, NominalModel(), SilenceBehavior.default("px4"), n=3)
    # East of the mast (centre (9, 4), radius 3) heading west into it; clear of the box zone.
    pos = np.array([[25.0, -20.0, -10.0], [9.0, 11.0, -10.0], [-20.0, -20.0, -4.0]])
    vel = np.array([[2.0, 0, 0], [0, -2.0, 0], [0, 0, 1.0]])
    action = np.array([[5.0, 0, 0, 0], [0, -5.0, 0, 0], [0, 0, 1.5, 0]])
    res = shield.certify(make_input(pos, vel, action))
    assert list(res.reason) == [Reason.FENCE, Reason.KEEPOUT, Reason.ALTITUDE]
    assert (res.layer == 2).all()
    assert res.setpoint[0, 0] < 5.0 and res.setpoint[1, 1] < 5.0 and res.setpoint[2, 2] < 1.5


def test_zone_with_a_ceiling_can_be_overflown() -> None:
    """The demo's mast ends at 25 m: above it (by its margin) the vehicle may cross it horizontally."""
    mission = demo()
    shield = Shield(mission, NominalModel(), SilenceBehavior.default("px4"), n=2)
    # South of the mast (centre (9, 4), radius 3) heading north at east = 6, beside the box zone.
    pos = np.array([[3.0, 6.0, -28.0], [3.0, 6.0, -10.0]])
    action = np.array([[3.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0]])
    res = shield.certify(make_input(pos, np.zeros((2, 3)), action))
    assert res.layer[0] == 0  # overflying: untouched
    assert res.layer[1] == 2 and res.reason[1] == Reason.KEEPOUT


# ---------------------------------------------------------------------------------------------
# Watchdog


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("age0", 0.2, Reason.STALE_POSITION),
        ("age1", np.inf, Reason.STALE_VELOCITY),
        ("age2", 0.06, Reason.STALE_ATTITUDE),
        ("age3", 0.051, Reason.STALE_RATES),
        ("pos", np.nan, Reason.NON_FINITE),
        ("vel", np.inf, Reason.NON_FINITE),
        ("action", np.nan, Reason.NON_FINITE),
        ("margin", np.nan, Reason.NON_FINITE),
        ("link", False, Reason.LINK_DOWN),
        ("inference", False, Reason.DEADLINE),
        ("stage", False, Reason.STAGE_ERROR),
    ],
)
def test_each_watchdog_reason_fires_on_its_own_input(field: str, value: Any, reason: Reason) -> None:
    mission = demo()
    shield = Shield(mission, NominalModel(), SilenceBehavior.default("px4"), n=2)
    pos = np.array([[-20.0, -20.0, -10.0]] * 2)
    vel = np.array([[1.0, 0.0, 0.0]] * 2)
    action = np.array([[1.0, 0.5, 0.0, 0.1]] * 2)
    margin = np.zeros(2)
    ages = np.full((2, 4), 0.01)
    link, inference, stage = np.ones(2, bool), np.ones(2, bool), np.ones(2, bool)
    if field.startswith("age"):
        ages[0, int(field[3])] = value
    elif field == "pos":
        pos[0, 1] = value
    elif field == "vel":
        vel[0, 2] = value
    elif field == "action":
        action[0, 3] = value
    elif field == "margin":
        margin[0] = value
    else:
        {"link": link, "inference": inference, "stage": stage}[field][0] = value
    inp = ShieldInput(0.0, pos, vel, action, margin, ages, link, inference, np.zeros(2, bool), stage)
    res = shield.certify(inp)
    assert res.reason[0] == reason and res.layer[0] == 1 and res.intervened[0]
    assert (res.setpoint[0] == 0.0).all()
    assert res.layer[1] == 0 and res.reason[1] == Reason.NONE  # the healthy neighbour is untouched


@settings(max_examples=60, deadline=None)
@given(
    where=st.sampled_from(["pos", "vel", "action", "margin", "ages"]),
    index=st.integers(0, 3),
    value=st.sampled_from([np.nan, np.inf, -np.inf]),
    seed=st.integers(0, 2**16),
)
def test_non_finite_input_never_yields_non_finite_setpoint(
    where: str, index: int, value: float, seed: int
) -> None:
    mission = polygon()
    shield = Shield(mission, NominalModel(), SilenceBehavior.default("ardupilot"), n=8)
    rng = np.random.default_rng(seed)
    pos, vel, action = random_states(mission, rng, 8)
    margin, ages = np.zeros(8), np.zeros((8, 4))
    arrays = {"pos": pos, "vel": vel, "action": action, "margin": margin, "ages": ages}
    target = arrays[where]
    if target.ndim == 1:
        target[index % 8] = value
    else:
        target[index % 8, index % target.shape[1]] = value
    res = shield.certify(make_input(pos, vel, action, margin=margin, ages=ages))
    assert np.isfinite(res.setpoint).all()
    assert res.layer[index % 8] == 1


# ---------------------------------------------------------------------------------------------
# Fallback latch


def _fast_at_fence(shield: Shield, now: float, vel_n: float = 5.0) -> Any:
    """A vehicle 2 m from the north fence at full speed: no command can save the margins."""
    return shield.certify(
        make_input(
            np.array([[28.0, -20.0, -10.0]]),
            np.array([[vel_n, 0.0, 0.0]]),
            np.array([[5.0, 0, 0, 0]]),
            now_s=now,
        )
    )


def test_infeasible_latches_brake_then_hold_then_land() -> None:
    mission = demo()  # fallback: land after hold_s = 3 s
    shield = Shield(mission, NominalModel(), SilenceBehavior.default("px4"), ShieldConfig(), n=1)
    res = _fast_at_fence(shield, 0.0)
    assert res.layer[0] == 3 and res.fallback_stage[0] == Stage.BRAKE
    assert res.reason[0] in (Reason.INFEASIBLE, Reason.NOT_RECOVERABLE)
    assert (res.setpoint[0] == 0.0).all()
    # Still moving: stays in BRAKE even though the policy now behaves.
    p, here = np.array([[29.0, -20.0, -10.0]]), np.array([[0.0, 0.0, 0.0, 0.0]])
    res = shield.certify(make_input(p, np.array([[1.0, 0, 0]]), here, now_s=0.5))
    assert res.fallback_stage[0] == Stage.BRAKE
    # Stopped: HOLD at the point where it stopped, velocity toward it.
    res = shield.certify(make_input(p, np.zeros((1, 3)), here, now_s=1.0))
    assert res.fallback_stage[0] == Stage.HOLD
    res = shield.certify(make_input(p + np.array([[0.5, 0, 0]]), np.zeros((1, 3)), here, now_s=1.1))
    assert res.setpoint[0, 0] < 0.0  # back toward the hold point (and away from the fence)
    # The policy keeps pushing at the fence, so no release; after hold_s from entry: LAND.
    push = np.array([[5.0, 0, 0, 0]])
    res = shield.certify(make_input(p, np.zeros((1, 3)), push, now_s=2.9))
    assert res.fallback_stage[0] == Stage.HOLD
    res = shield.certify(make_input(p, np.zeros((1, 3)), push, now_s=3.0))
    assert res.fallback_stage[0] == Stage.LAND
    assert res.setpoint[0, 2] == pytest.approx(0.7)  # descending at the mission's land speed
    # Landing ignores the altitude floor (2 m) but nothing else.
    low = np.array([[29.0, -20.0, -1.0]])
    res = shield.certify(make_input(low, np.zeros((1, 3)), push, now_s=4.0))
    assert res.setpoint[0, 2] == pytest.approx(0.7) and res.fallback_stage[0] == Stage.LAND
    # LAND is final: a perfect policy does not get control back.
    for t in np.arange(4.0, 7.0, 0.1):
        res = shield.certify(
            make_input(np.array([[0.0, -20.0, -10.0]]), np.zeros((1, 3)), here, now_s=float(t))
        )
    assert res.fallback_stage[0] == Stage.LAND


def test_release_needs_an_unbroken_dwell() -> None:
    mission = demo()
    cfg = ShieldConfig(release_dwell_s=1.0, release_slack_m=1.0)
    shield = Shield(mission, NominalModel(), SilenceBehavior.default("px4"), cfg, n=1)
    _fast_at_fence(shield, 0.0)
    safe_pos, still = np.array([[0.0, -20.0, -10.0]]), np.zeros((1, 3))
    gentle = np.array([[0.2, 0.0, 0.0, 0.0]])

    def tick(t: float, action: np.ndarray = gentle, alarm: bool = False) -> Any:
        return shield.certify(make_input(safe_pos, still, action, now_s=t, alarm=alarm))

    assert tick(0.1).fallback_stage[0] == Stage.HOLD  # clear from 0.1 s
    assert tick(0.6).fallback_stage[0] == Stage.HOLD
    assert tick(1.0).fallback_stage[0] == Stage.HOLD  # 0.9 s < dwell
    assert tick(1.05, alarm=True).reason[0] != Reason.NONE  # a break in the dwell
    assert tick(1.2).fallback_stage[0] == Stage.HOLD  # the dwell restarts at 1.2 s
    assert tick(2.1).fallback_stage[0] == Stage.HOLD
    res = tick(2.2)
    assert res.fallback_stage[0] == Stage.NONE and res.layer[0] == 0
    assert res.setpoint.tobytes() == gentle.tobytes()


def test_calibrator_alarm_enters_the_fallback() -> None:
    mission = demo()
    shield = Shield(mission, NominalModel(), SilenceBehavior.default("px4"), n=2)
    pos = np.array([[0.0, -20.0, -10.0]] * 2)
    res = shield.certify(make_input(pos, np.zeros((2, 3)), np.zeros((2, 4)), alarm=np.array([True, False])))
    assert res.layer.tolist() == [3, 0]
    # Already at rest, so the brake is complete on the same tick: HOLD where it stands.
    assert res.reason[0] == Reason.CALIBRATION_ALARM and res.fallback_stage[0] == Stage.HOLD
    shield.reset(np.array([True, False]))
    res = shield.certify(make_input(pos, np.zeros((2, 3)), np.zeros((2, 4))))
    assert res.layer.tolist() == [0, 0]


def test_an_alarm_alone_holds_and_hands_back_instead_of_landing() -> None:
    """A calibrator alarm means the margin lags the conditions: hold, then hand back when it clears;
    commit to the mission's land only if it persists for alarm_commit_s."""
    mission = demo()  # fallback: land after hold_s = 3 s
    shield = Shield(
        mission, NominalModel(), SilenceBehavior.default("px4"), ShieldConfig(alarm_commit_s=20.0), n=2
    )
    pos, still = np.array([[0.0, -20.0, -10.0]] * 2), np.zeros((2, 3))
    gentle = np.tile([0.5, 0.0, 0.0, 0.0], (2, 1))
    alarm = np.array([True, True])
    for t in np.arange(0.0, 10.0, 0.1):  # both alarmed for 10 s: HOLD throughout, no LAND
        res = shield.certify(make_input(pos, still, gentle, now_s=float(t), alarm=alarm))
        assert res.fallback_stage.tolist() == [Stage.HOLD, Stage.HOLD], t
    alarm = np.array([False, True])  # the first one's alarm clears; the second persists
    for t in np.arange(10.0, 21.0, 0.1):
        res = shield.certify(make_input(pos, still, gentle, now_s=float(t), alarm=alarm))
    assert res.fallback_stage.tolist() == [Stage.NONE, Stage.LAND]
    assert res.layer[0] == 0 and np.array_equal(res.setpoint[0], gentle[0])  # the policy flies again


def test_return_flies_home_at_the_return_altitude_then_lands() -> None:
    mission = polygon()  # return to (-25, 25) at 10 m
    # Entered through the alarm for convenience; commit after the mission's 3 s hold like any entry.
    config = ShieldConfig(alarm_commit_s=3.0)
    shield = Shield(mission, NominalModel(), SilenceBehavior.default("ardupilot"), config, n=1)
    here, still = np.array([[-20.0, -20.0, -20.0]]), np.zeros((1, 3))
    shield.certify(make_input(here, still, np.zeros((1, 4)), alarm=True))
    res = shield.certify(make_input(here, still, np.zeros((1, 4)), now_s=0.1, alarm=True))
    assert res.fallback_stage[0] == Stage.HOLD
    res = shield.certify(make_input(here, still, np.zeros((1, 4)), now_s=3.5, alarm=True))
    assert res.fallback_stage[0] == Stage.RETURN
    assert res.setpoint[0, 2] > 0 and res.setpoint[0, :2].tolist() == [0.0, 0.0]  # descend to 10 m first
    at_alt = np.array([[-20.0, -20.0, -10.0]])
    res = shield.certify(make_input(at_alt, still, np.zeros((1, 4)), now_s=4.0, alarm=True))
    assert res.setpoint[0, 1] > 0  # then east, toward home
    home = np.array([[-25.0, 25.0, -10.0]])
    res = shield.certify(make_input(home, still, np.zeros((1, 4)), now_s=20.0, alarm=True))
    assert res.fallback_stage[0] == Stage.LAND


# ---------------------------------------------------------------------------------------------
# Batch consistency and configuration


def test_batch_result_equals_per_element_results() -> None:
    mission = polygon()
    silence = SilenceBehavior.default("ardupilot")
    rng = np.random.default_rng(7)
    b = 40
    pos, vel, action = random_states(mission, rng, b)
    margin = rng.uniform(0, 1, b)
    ages = rng.uniform(0, 0.12, (b, 4))
    batch = Shield(mission, NominalModel(), silence, n=b)
    singles = [Shield(mission, NominalModel(), silence, n=1) for _ in range(b)]
    for tick in range(3):
        now = 0.02 * tick
        res = batch.certify(make_input(pos, vel, action, now_s=now, margin=margin, ages=ages))
        for i, s in enumerate(singles):
            one = s.certify(
                make_input(
                    pos[i : i + 1],
                    vel[i : i + 1],
                    action[i : i + 1],
                    now_s=now,
                    margin=margin[i : i + 1],
                    ages=ages[i : i + 1],
                )
            )
            # Batch 1 takes a scalar fast path whose rounding may differ in the last bits.
            np.testing.assert_allclose(one.setpoint[0], res.setpoint[i], rtol=0, atol=1e-12)
            assert (one.layer[0], one.reason[0], one.fallback_stage[0]) == (
                res.layer[i],
                res.reason[i],
                res.fallback_stage[i],
            )
            np.testing.assert_allclose(one.min_slack_m[0], res.min_slack_m[i], rtol=0, atol=1e-9)


def test_shield_rejects_a_wrong_batch_and_bad_config() -> None:
    mission = demo()
    shield = Shield(mission, NominalModel(), SilenceBehavior.default("px4"), n=2)
    with pytest.raises(ConfigError, match=re.escape("Shield was built for a batch of 2, got 1")):
        shield.certify(make_input(np.zeros((1, 3)), np.zeros((1, 3)), np.zeros((1, 4))))
    with pytest.raises(
        ConfigError, match=re.escape("ShieldConfig.freshness_limits_s must be 4 positive seconds")
    ):
        ShieldConfig(freshness_limits_s=(0.1, 0.1, 0.0, 0.05))
    with pytest.raises(
        ConfigError, match=re.escape("ShieldConfig.release_dwell_s must be finite and >= 0, got -1.0")
    ):
        ShieldConfig(release_dwell_s=-1.0)
