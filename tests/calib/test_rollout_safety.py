"""Shielded rollouts stay out of keep-out zones: the certification breaches, replayed end to end.

The demo mission's first version put the mast (radius 5 m) at the origin, on the diagonal leg. The
goal seeker then stalls in front of it, the fallback lands it next to the building, and with the
old zero-velocity "plain brake" episode 488 (3.9 m/s wind, 1.2 m/s gusts) drifted downwind to
0.25 m of the building by 45 s; six such episodes of 2,048 went in. See
tests/runtime/test_shield_regression.py for the mechanism on the nominal model.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from calib.rollout import KillPlan, run_episodes
from calib.scenario import load_scenario, scenario_mission
from edge_agent.bundle import load_bundle
from edge_agent.errors import ConfigError
from edge_agent.policy import PolicyRunner
from examples.scripted_policies import export_goal_seeker

ROOT = Path(__file__).resolve().parents[2]


def old_demo(folder: Path) -> Path:
    """The demo scenario over the first demo mission (mast at the origin, radius 5 m)."""
    mission = (ROOT / "examples" / "missions" / "demo.toml").read_text()
    mission = mission.replace("center_ne_m = [9.0, 4.0]", "center_ne_m = [0.0, 0.0]")
    mission = mission.replace("radius_m = 3.0", "radius_m = 5.0")
    mission = mission.replace("east_min_m = -12.0", "east_min_m = -4.0").replace(
        "east_max_m = -6.0", "east_max_m = 4.0"
    )
    assert "center_ne_m = [0.0, 0.0]" in mission and "radius_m = 5.0" in mission
    assert "east_min_m = -4.0" in mission and "east_max_m = 4.0" in mission  # the building where it was
    (folder / "missions").mkdir(parents=True)
    (folder / "scenarios").mkdir()
    (folder / "missions" / "demo.toml").write_text(mission)
    scenario = (ROOT / "examples" / "scenarios" / "demo.toml").read_text()
    path = folder / "scenarios" / "demo.toml"
    path.write_text(scenario)
    return path


@pytest.fixture(scope="module")
def goal_seeker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "goal_seeker"
    export_goal_seeker(out)
    return out


@pytest.mark.slow
def test_episode_488_of_the_first_demo_mission_lands_clear_of_the_building(
    goal_seeker: Path, tmp_path: Path
) -> None:
    spec = load_scenario(old_demo(tmp_path))
    mission = scenario_mission(spec)
    bundle = load_bundle(goal_seeker)
    res, tr = run_episodes(PolicyRunner(bundle), bundle.manifest, mission, spec, [488], trace=True)
    assert tr is not None
    assert not res.failed[0]
    assert res.fallback_engaged[0]  # the scenario that broke: landing in the fallback, in wind
    # Was 0.25 m (and falling) with the zero-velocity brake; the push out of the band keeps the
    # 1 m keep-out margin up to the measurement noise.
    assert res.min_keepout_m[0] > 0.9, res.min_keepout_m[0]
    # (It used to land: its fallback came from the calibrator's alarm, which now holds and hands
    # back instead of committing to land; see edge_agent/fallback.py, alarm_commit_s.)


def test_kill_plan_needs_one_tick_per_episode(goal_seeker: Path, tmp_path: Path) -> None:
    spec = load_scenario(old_demo(tmp_path))
    bundle = load_bundle(goal_seeker)

    class Never:
        def send(self, sim: object, now_s: float, setpoint5: np.ndarray, alive: np.ndarray) -> None:
            raise AssertionError("not reached")

    plan = KillPlan(tick=np.array([5, 6, 7]), settle_s=1.0, autopilot=Never())
    with pytest.raises(
        ConfigError, match=re.escape("KillPlan.tick must have one tick per episode (2), got shape (3,)")
    ):
        run_episodes(PolicyRunner(bundle), bundle.manifest, scenario_mission(spec), spec, [0, 1], kill=plan)
