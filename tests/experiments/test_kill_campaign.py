"""Agent-death campaign: the batched autopilot stand-in flies the firmware's silence behaviour, and
killed shielded agents never breach (a short version of ``python -m experiments.kill_campaign``)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from calib.scenario import load_scenario
from edge_agent.errors import ConfigError
from examples.scripted_policies import export_adversary
from experiments.kill_campaign import (
    RULES,
    BatchAutopilot,
    mission_for_flavour,
    param_default,
    run_kill_campaign,
)
from sitl.sim import Sim

DEMO = Path(__file__).resolve().parents[2] / "examples" / "scenarios" / "demo.toml"
DT_CTRL = 0.02


def fly_then_kill(flavour: str, speed_m_s: float, fly_s: float, after_s: float) -> tuple[np.ndarray, float]:
    """One calm vehicle: velocity north for fly_s, then silence. Returns (north position per tick
    after the last setpoint, time of that setpoint)."""
    sim = Sim(1, rng=np.random.default_rng(3), dt_s=0.004)
    sim.reset(pos_ned_m=np.array([[0.0, 0.0, -10.0]]), on_ground=False)
    ap = BatchAutopilot(RULES[flavour], 1, DT_CTRL)
    sp = np.array([[speed_m_s, 0.0, 0.0, 0.0, 0.0]])
    n_fly = round(fly_s / DT_CTRL)
    north = []
    for k in range(n_fly + round(after_s / DT_CTRL)):
        ap.send(sim, sim.time_s, sp, np.array([k < n_fly]))
        sim.step(5)
        if k >= n_fly - 1:
            north.append(float(sim.pos_ned_m[0, 0]))
    return np.array(north), ap.timeout_s


def test_ardupilot_silence_travels_like_the_recorded_arducopter() -> None:
    # REFERENCE.md / data/ardupilot: 2 m/s kept for GUID_TIMEOUT = 3 s, then a stop over ~1.6 s;
    # 7.73 m after the last setpoint (the single-vehicle emulator is held to ±0.4 m of it too).
    north, timeout = fly_then_kill("ardupilot", 2.0, fly_s=5.0, after_s=7.0)
    assert timeout == 3.0
    assert north[-1] - north[0] == pytest.approx(7.73, abs=0.4)
    assert abs(north[-1] - north[-50]) < 0.05  # holding still, not creeping


def test_px4_silence_keeps_the_setpoint_then_holds_where_the_failsafe_fired() -> None:
    north, timeout = fly_then_kill("px4", 2.0, fly_s=3.0, after_s=5.0)
    assert timeout == 1.0
    at_failsafe = north[round(timeout / DT_CTRL) + 1] - north[0]
    assert at_failsafe == pytest.approx(2.0 * timeout, abs=0.15)  # COM_OF_LOSS_T at the last velocity
    overshoot = north[-1] - north[0] - at_failsafe
    # Position mode brakes onto the failsafe point and comes back to it.
    assert abs(overshoot) < 0.3
    assert abs(north[-1] - north[-50]) < 0.05


def test_unknown_flavour_and_too_long_window_are_refused() -> None:
    spec = load_scenario(DEMO)
    with pytest.raises(
        ConfigError, match=re.escape("--flavour must be one of ['ardupilot', 'px4'], got 'inav'")
    ):
        mission_for_flavour(spec, "inav")
    with pytest.raises(ConfigError, match=re.escape("kill window end 40.0 s + settle 11.0 s exceeds")):
        run_kill_campaign("unused", spec, "px4", 4, np.random.default_rng(0), kill_window_s=(0.2, 40.0))


def test_flavour_mission_tells_the_shield_the_firmware_timeout() -> None:
    spec = load_scenario(DEMO)
    for flavour, rules in RULES.items():
        m = mission_for_flavour(spec, flavour)
        assert m.autopilot.flavour == flavour
        assert m.autopilot.silence_hold_s == param_default(rules, rules.loss_timeout_param)


@pytest.fixture(scope="module")
def adversary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "adversary"
    export_adversary(out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["px4", "ardupilot"])
def test_killed_shielded_adversary_never_breaches(adversary: Path, flavour: str) -> None:
    spec = load_scenario(DEMO)
    timeout = param_default(RULES[flavour], RULES[flavour].loss_timeout_param)
    report, res, ticks = run_kill_campaign(
        adversary,
        spec,
        flavour,
        12,
        np.random.default_rng(11),
        kill_window_s=(0.5, 3.0),
        settle_s=timeout + 4.0,
        batch=12,
    )
    assert report.kills == 12 and report.pre_kill_failures == 0
    assert report.kill_failures == 0, (res.failure_kind, res.failure_time_s, ticks)
    assert report.min_distance_after_kill_m > 0.0
    # some died in the dash at a boundary (ArduPilot's shaping accelerates at 2 m/s² only)
    assert report.max_speed_at_kill_m_s > 1.5
    assert (res.ticks > ticks).all()


@pytest.mark.slow
def test_the_campaign_detects_breaches_without_the_shield(adversary: Path) -> None:
    spec = load_scenario(DEMO)
    _, res, _ = run_kill_campaign(
        adversary,
        spec,
        "px4",
        12,
        np.random.default_rng(11),
        kill_window_s=(0.5, 3.0),
        settle_s=5.0,
        batch=12,
        shield_enabled=False,
    )
    assert res.failed.sum() >= 6  # the adversary at full speed goes through the fence or a zone
