"""The nominal model: closed form against integration, predict/step consistency, silence behaviour."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from edge_agent.errors import ConfigError
from edge_agent.mission import load_mission
from edge_agent.nominal import NominalModel, SilenceBehavior, lag_error, silence_trajectory

DEMO = Path(__file__).resolve().parents[2] / "examples" / "missions" / "demo.toml"


def euler(model: NominalModel, pos: np.ndarray, vel: np.ndarray, cmd: np.ndarray, t: float, h: float = 1e-4):
    """Reference: the model's ODE integrated with tiny explicit steps."""
    pos, vel = pos.copy(), vel.copy()
    for _ in range(round(t / h)):
        err = cmd - vel
        acc_h = err[:, :2] / model.tau_xy_s
        norm = np.linalg.norm(acc_h, axis=1, keepdims=True)
        acc_h *= np.minimum(1.0, model.accel_xy_m_s2 / np.maximum(norm, 1e-12))
        acc_z = np.clip(err[:, 2] / model.tau_z_s, -model.accel_z_m_s2, model.accel_z_m_s2)
        pos += vel * h
        vel[:, :2] += acc_h * h
        vel[:, 2] += acc_z * h
    return pos, vel


def test_closed_form_matches_integration_saturated_and_not() -> None:
    model = NominalModel(tau_xy_s=0.4, tau_z_s=0.3, accel_xy_m_s2=3.0, accel_z_m_s2=2.0)
    pos = np.zeros((3, 3))
    vel = np.array([[0.0, 0.0, 0.0], [4.0, -3.0, 1.0], [0.2, 0.1, 0.0]])
    cmd = np.array([[5.0, 0.0, -2.0], [-4.0, 3.0, 1.5], [0.25, 0.1, 0.05]])  # large, reversal, tiny
    for t in (0.05, 0.5, 2.0):
        p, v = model.step(pos, vel, cmd, t)
        p_ref, v_ref = euler(model, pos, vel, cmd, t)
        np.testing.assert_allclose(p, p_ref, atol=2e-3)
        np.testing.assert_allclose(v, v_ref, atol=2e-3)


def test_predict_equals_repeated_steps() -> None:
    model = NominalModel()
    rng = np.random.default_rng(3)
    pos, vel, cmd = rng.normal(0, 5, (16, 3)), rng.normal(0, 3, (16, 3)), rng.normal(0, 4, (16, 3))
    p, v = pos, vel
    for _ in range(25):
        p, v = model.step(p, v, cmd, 0.02)
    np.testing.assert_allclose(model.predict(pos, vel, cmd, 0.5), p, atol=1e-9)


def test_lag_error_limits() -> None:
    e, integral = lag_error(np.array([0.0, 0.3, 10.0]), 3.0, 0.4, 1.0)
    assert e[0] == 0.0 and integral[0] == 0.0
    assert e[1] == pytest.approx(0.3 * np.exp(-2.5))  # 0.3 < a·τ = 1.2: never saturated
    assert e[2] == pytest.approx(7.0) and integral[2] == pytest.approx(8.5)  # saturated all along


def test_ardupilot_silence_covers_the_recorded_stop() -> None:
    """data/ardupilot: 2 m/s kept for GUID_TIMEOUT = 3 s (6 m), 7.75 m in all after the last setpoint."""
    model = NominalModel()
    silence = SilenceBehavior.default("ardupilot")
    v = np.array([[2.0, 0.0, 0.0]])
    traj = silence_trajectory(model, silence, np.zeros((1, 3)), v, v, dt_s=0.01)
    assert traj[300, 0, 0] == pytest.approx(6.0, abs=1e-9)
    total = traj[-1, 0, 0]
    assert 7.75 <= total <= 8.5  # conservative, but not absurdly so


def test_silence_from_autopilot_params_or_mission() -> None:
    mission = load_mission(DEMO)  # PX4, silence_hold_s 1.0
    assert SilenceBehavior.for_autopilot(mission).hold_last_s == 1.0
    assert SilenceBehavior.for_autopilot(mission, {"COM_OF_LOSS_T": 0.5}).hold_last_s == 0.5
    assert SilenceBehavior.for_autopilot(mission, {"GUID_TIMEOUT": 9.0}).hold_last_s == 1.0  # other flavour's
    assert SilenceBehavior.for_autopilot(mission, {"COM_OF_LOSS_T": float("nan")}).hold_last_s == 1.0
    s = SilenceBehavior.for_autopilot(mission, brake_delay_s=0.25)
    assert s.total_hold_s == 1.25 and s.brake_decel_m_s2 == 2.0


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(
        ConfigError, match=re.escape("NominalModel.tau_xy_s must be a finite number > 0, got 0.0")
    ):
        NominalModel(tau_xy_s=0.0)
    with pytest.raises(
        ConfigError, match=re.escape("SilenceBehavior.brake_decel_m_s2 must be a finite number > 0")
    ):
        SilenceBehavior(1.0, -1.0)
    with pytest.raises(ConfigError, match=re.escape("SilenceBehavior.hold_last_s must be finite and >= 0")):
        SilenceBehavior(float("inf"), 1.0)
