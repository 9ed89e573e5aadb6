"""Gymnasium environments: API conformance, layout geometry, reward/cost, auto-reset, randomisation."""

from __future__ import annotations

import re

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from sitl.envs import KeepOut, Layout, Randomization, WaypointEnv, WaypointTaskConfig, WaypointVecEnv


def _towards_goal(obs: np.ndarray) -> np.ndarray:
    """A scripted policy for the default features: fly at the goal, brake near it."""
    goal_rel, vel = obs[..., :3], obs[..., 3:6]
    cmd = np.clip(0.8 * goal_rel - 0.2 * vel, [-5, -5, -2], [5, 5, 2]) / [5, 5, 2]
    return np.concatenate([cmd, np.zeros((*cmd.shape[:-1], 1))], axis=-1).astype(np.float32)


def test_check_env_passes() -> None:
    check_env(WaypointEnv(), skip_render_check=True)


def test_env_exposes_what_the_exporter_and_certification_need() -> None:
    env = WaypointEnv()
    assert env.feature_names == ("goal_rel_ned_m", "vel_ned_m_s")
    np.testing.assert_array_equal(env.action_low, [-5.0, -5.0, -2.0, -1.0])
    np.testing.assert_array_equal(env.action_high, [5.0, 5.0, 2.0, 1.0])
    assert env.control_rate_hz == 50.0
    assert env.layout.keepouts
    env.reset(seed=0)
    assert env.sim.n == 1 and env.sim.armed[0] and not env.sim.on_ground[0]
    # Action -1/+1 map to the bounds.
    np.testing.assert_allclose(env.task.unscale(np.array([[-1.0, 1.0, 0.0, 1.0]])), [[-5.0, 5.0, 0.0, 1.0]])


def test_scripted_policy_reaches_all_waypoints_for_positive_return() -> None:
    env = WaypointEnv(WaypointTaskConfig(n_waypoints=2))
    obs, _ = env.reset(seed=3)
    total, cost = 0.0, 0.0
    for _ in range(env.task.max_steps):
        obs, r, term, trunc, info = env.step(_towards_goal(obs))
        total += r
        cost += info["cost"]
        if term or trunc:
            break
    assert term and info["waypoint_index"] == 2 and not info["crashed"]
    assert total > 20.0  # two bonuses of 10 plus progress


def test_same_seed_same_episode() -> None:
    def run() -> list[float]:
        env = WaypointEnv(
            WaypointTaskConfig(
                randomization=Randomization(wind_speed_m_s=(0.0, 5.0), gust_std_m_s=(0.0, 1.0))
            )
        )
        obs, _ = env.reset(seed=11)
        out = []
        for _ in range(50):
            obs, r, *_ = env.step(_towards_goal(obs))
            out.append(r)
        return out

    assert run() == run()


def test_geometry_of_fence_floor_ceiling_and_keepouts() -> None:
    layout = Layout(
        north_m=(-10.0, 10.0),
        east_m=(-5.0, 5.0),
        alt_floor_m=2.0,
        alt_ceiling_m=8.0,
        keepouts=(KeepOut(0.0, 0.0, 1.0),),
    )
    pos = np.array([[3.0, 4.0, -5.0], [0.5, 0.0, -1.0], [12.0, 0.0, -9.0]])
    g = layout.geometry(pos)
    np.testing.assert_allclose(g.fence_dist_m, [1.0, 5.0, -2.0])
    np.testing.assert_allclose(g.alt_floor_dist_m, [3.0, -1.0, 7.0])
    np.testing.assert_allclose(g.alt_ceiling_dist_m, [3.0, 7.0, -1.0])
    np.testing.assert_allclose(g.keepout_dist_m, [4.0, -0.5, 11.0])
    np.testing.assert_allclose(g.keepout_rel_ned_m[0], [-3.0 * 0.8, -4.0 * 0.8, 0.0])
    np.testing.assert_allclose(g.keepout_rel_ned_m[1], [0.5, 0.0, 0.0])
    np.testing.assert_allclose(g.violation_m, [0.0, 1.0, 2.0])


def test_cost_and_termination_on_fence_breach() -> None:
    cfg = WaypointTaskConfig(waypoints_ned_m=((0.0, 0.0, -10.0),), breach_terminate_m=1.0)
    env = WaypointEnv(cfg)
    env.reset(seed=0)
    costs = []
    for _ in range(env.task.max_steps):
        _, _r, term, trunc, info = env.step(np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32))  # 5 m/s north
        costs.append(info["cost"])
        if term or trunc:
            break
    assert term and not info["crashed"]
    assert info["violation_m"] > 1.0
    assert costs[0] == 0.0 and costs[-1] == 1.0


def test_vec_env_autoresets_and_matches_spaces() -> None:
    cfg = WaypointTaskConfig(
        time_limit_s=0.5, randomization=Randomization(mass_scale=(0.9, 1.1), motor_strength=(0.9, 1.0))
    )
    env = WaypointVecEnv(8, cfg)
    obs, info = env.reset(seed=1)
    assert obs.shape == (8, 6) and env.observation_space.contains(obs)
    assert len(np.unique(env.sim.mass_scale)) == 8
    for _ in range(25):
        obs, _rew, _term, trunc, info = env.step(_towards_goal(obs))
    assert np.all(trunc) and "final_obs" in info and np.all(info["_final_obs"])
    assert env.task.steps.max() == 0  # restarted in the same call
    assert info["cost"].shape == (8,)


def test_bad_config_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match=re.escape("unknown feature 'goal_rel_m'")):
        WaypointTaskConfig(feature_names=("goal_rel_m",))
    with pytest.raises(
        ValueError, match=re.escape("control_rate_hz 33.0 must divide the physics rate 250 Hz")
    ):
        WaypointTaskConfig(control_rate_hz=33.0)
    with pytest.raises(ValueError, match=re.escape("clip_lo has 2 elements; the features")):
        WaypointTaskConfig(clip_lo=(0.0, 1.0))
