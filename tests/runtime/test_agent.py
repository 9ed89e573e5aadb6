"""The assembled tick (AgentCore): waypoint progress, stale telemetry, batch-1 vs batched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.agent import build_agent
from edge_agent.bundle import load_bundle
from edge_agent.mission import load_mission
from edge_agent.observation import StateArrays
from edge_agent.policy import PolicyRunner
from edge_agent.shield import Reason
from examples.scripted_policies import export_goal_seeker

DEMO = Path(__file__).resolve().parents[2] / "examples" / "missions" / "demo.toml"


@pytest.fixture(scope="module")
def goal_seeker(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("b") / "goal_seeker"
    export_goal_seeker(out)
    return load_bundle(out)


def _state(pos: list[list[float]], age_s: float = 0.0) -> StateArrays:
    n = len(pos)
    return StateArrays(
        pos_ned_m=np.array(pos, dtype=float),
        vel_ned_m_s=np.zeros((n, 3)),
        q_wxyz=np.tile([1.0, 0, 0, 0], (n, 1)),
        rates_frd_rad_s=np.zeros((n, 3)),
        battery_frac=np.ones(n),
        signal_age_s=np.full((n, 4), age_s),
    )


@pytest.mark.parametrize("n", [1, 2])
def test_mission_completes_only_at_the_last_waypoint(goal_seeker, n: int) -> None:
    mission = load_mission(DEMO)
    core = build_agent(policy=PolicyRunner(goal_seeker), manifest=goal_seeker.manifest, mission=mission, n=n)
    ok = np.ones(n, dtype=bool)
    wps = [list(w) for w in mission.waypoints_ned_m]
    assert len(wps) == 3
    for i, wp in enumerate(wps):
        d = core.step(_state([wp] * n), 0.02 * i, ok)
        assert list(d.mission_complete) == [i == len(wps) - 1] * n, f"waypoint {i}"
        assert list(d.goal_index) == [min(i + 1, len(wps) - 1)] * n


def test_stale_position_gives_a_hold_on_the_same_tick(goal_seeker) -> None:
    mission = load_mission(DEMO)
    core = build_agent(policy=PolicyRunner(goal_seeker), manifest=goal_seeker.manifest, mission=mission)
    ok = np.ones(1, dtype=bool)
    fresh = core.step(_state([[-5.0, -5.0, -10.0]]), 0.0, ok)
    assert np.abs(fresh.setpoint[0, :3]).max() > 1.0  # the policy flies toward its goal
    stale = core.step(_state([[-5.0, -5.0, -10.0]], age_s=0.5), 0.02, ok)
    assert stale.layer[0] == 1 and stale.reason[0] == Reason.STALE_POSITION
    assert np.all(stale.setpoint[0] == 0.0)


@pytest.mark.parametrize("n", [1, 3])
def test_score_is_zero_when_the_vehicle_is_the_nominal_model_even_as_commands_change(
    goal_seeker, n: int
) -> None:
    """The calibrator scores the model against the commands actually sent, not one held command:
    a plant that *is* the nominal model scores 0 through waypoint turns."""
    mission = load_mission(DEMO)
    core = build_agent(policy=PolicyRunner(goal_seeker), manifest=goal_seeker.manifest, mission=mission, n=n)
    dt = 1.0 / goal_seeker.manifest.control_rate_hz
    # Start just short of the first waypoint, so the command turns round within the run.
    pos = np.tile([-17.0, -17.0, -10.0], (n, 1)) + np.arange(n)[:, None] * 0.5
    vel = np.zeros((n, 3))
    ok = np.ones(n, dtype=bool)
    scores = []
    for k in range(400):
        st = _state(pos.tolist())
        st = StateArrays(
            st.pos_ned_m, vel.copy(), st.q_wxyz, st.rates_frd_rad_s, st.battery_frac, st.signal_age_s
        )
        d = core.step(st, k * dt, ok)
        scores.append(d.score_m)
        pos, vel = core.nominal.step(pos, vel, d.setpoint[:, :3], dt)
    s = np.array(scores)[core.calibrator.config.horizon_ticks + 1 :]
    assert (core.goal_index >= 1).all()  # every vehicle turned at the first waypoint
    assert np.isfinite(s).all()
    assert np.abs(s).max() < 1e-6, np.abs(s).max()
