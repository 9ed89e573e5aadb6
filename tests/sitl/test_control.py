"""The PX4-style cascade: every setpoint kind does what it says; step response; faults; the loop model."""

from __future__ import annotations

import numpy as np
import pytest

from sitl.airframe import X500
from sitl.control import mixer_matrix, torque_per_unit_nm
from sitl.disturbance import Faults
from sitl.sim import SetpointKind, Sim, velocity_loop_model


def _hovering(n: int = 1, **kw: object) -> Sim:
    sim = Sim(n, rng=np.random.default_rng(0), **kw)  # type: ignore[arg-type]
    sim.reset(on_ground=False, pos_ned_m=(0.0, 0.0, -10.0))
    sim.step(250)
    return sim


def step_response(axis: int, target: float, seconds: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Time [s] and velocity along ``axis`` after a velocity step from hover at t = 0."""
    sim = _hovering()
    sp = np.zeros(5)
    sp[axis] = target
    sim.set_setpoint(SetpointKind.VELOCITY, sp)
    t, v = [0.0], [float(sim.vel_ned_m_s[0, axis])]
    for _ in range(round(seconds / sim.dt_s)):
        sim.step(1)
        t.append(t[-1] + sim.dt_s)
        v.append(float(sim.vel_ned_m_s[0, axis]))
    return np.array(t), np.array(v)


def rise_time_and_overshoot(t: np.ndarray, v: np.ndarray, target: float) -> tuple[float, float]:
    """10–90 % rise time [s] and overshoot [fraction of the step]."""
    frac = v / target
    t10 = t[np.argmax(frac >= 0.1)]
    t90 = t[np.argmax(frac >= 0.9)]
    return float(t90 - t10), float(max(frac.max() - 1.0, 0.0))


def test_mixer_is_px4_normalised_for_the_x500() -> None:
    mix = mixer_matrix(X500)
    # PX4 quad-X: roll/pitch entries ±1/√2 after normalisation, yaw ±1; motor order FR, BL, FL, BR.
    np.testing.assert_allclose(np.abs(mix[:, :2]), np.sqrt(0.5), rtol=1e-12)
    np.testing.assert_allclose(mix[:, 2], [1.0, 1.0, -1.0, -1.0], rtol=1e-12)
    assert mix[0, 0] < 0 < mix[2, 0]  # roll right: right motor (FR) down, left motor (FL) up
    assert mix[0, 1] > 0 > mix[1, 1]  # pitch up: front motors up
    torque = torque_per_unit_nm(X500)
    assert torque[0] == pytest.approx(4 * 0.174 * np.sqrt(0.5) * 8.54858, rel=1e-6)


def test_velocity_step_rise_time_and_overshoot_are_plausible_for_px4_defaults() -> None:
    t, v = step_response(0, 2.0)
    rise, overshoot = rise_time_and_overshoot(t, v, 2.0)
    # A 2 kg quad under PX4's default MPC_XY_VEL_* gains: about a second to rise, mild overshoot.
    assert 0.6 < rise < 1.6, rise
    assert overshoot < 0.15, overshoot
    assert v[-1] == pytest.approx(2.0, abs=0.1)  # the integrator's slow tail is still settling at 4 s

    t, v = step_response(2, -1.0)
    rise_z, overshoot_z = rise_time_and_overshoot(t, v, -1.0)
    assert 0.15 < rise_z < 0.8, rise_z
    assert overshoot_z < 0.15, overshoot_z


def _simulate_model(t: np.ndarray, target: float, tau: float, a_max: float, delay: float) -> np.ndarray:
    v = np.zeros_like(t)
    dt = t[1] - t[0]
    for k in range(1, t.size):
        sp = target if t[k] > delay else 0.0
        v[k] = v[k - 1] + dt * float(np.clip((sp - v[k - 1]) / tau, -a_max, a_max))
    return v


def test_velocity_loop_model_matches_the_simulated_loop() -> None:
    model = velocity_loop_model()
    t, v = step_response(0, 2.0)
    pred = _simulate_model(t, 2.0, model.tau_s, model.acc_hor_max_m_s2, model.delay_s)
    assert np.sqrt(np.mean((pred - v) ** 2)) < 0.1
    t, v = step_response(2, -1.0, seconds=2.0)
    pred = _simulate_model(t, -1.0, model.tau_z_s, model.acc_up_max_m_s2, model.delay_s)
    assert np.sqrt(np.mean((pred - v) ** 2)) < 0.08


def test_position_setpoint_reaches_the_point_and_heading() -> None:
    sim = _hovering()
    sim.set_setpoint(SetpointKind.POSITION, [5.0, -3.0, -12.0, 1.0, 0.0])
    sim.step(2500)
    np.testing.assert_allclose(sim.pos_ned_m[0], [5.0, -3.0, -12.0], atol=0.05)
    q = sim.q_wxyz[0]
    yaw = np.arctan2(2 * (q[0] * q[3] + q[1] * q[2]), 1 - 2 * (q[2] ** 2 + q[3] ** 2))
    assert yaw == pytest.approx(1.0, abs=0.02)


def test_velocity_setpoint_tracks_velocity_and_yaw_rate() -> None:
    sim = _hovering()
    sim.set_setpoint(SetpointKind.VELOCITY, [1.0, -1.5, -0.5, 0.3, 0.0])
    sim.step(1250)
    np.testing.assert_allclose(sim.vel_ned_m_s[0], [1.0, -1.5, -0.5], atol=0.05)
    assert sim.rates_frd_rad_s[0, 2] == pytest.approx(0.3, abs=0.02)


def test_acceleration_setpoint_accelerates() -> None:
    sim = _hovering()
    sim.set_setpoint(SetpointKind.ACCELERATION, [1.5, 0.0, 0.0, 0.0, 0.0])
    v0 = sim.vel_ned_m_s[0, 0]
    sim.step(250)  # let the tilt settle
    v1 = sim.vel_ned_m_s[0, 0]
    sim.step(250)
    a = (sim.vel_ned_m_s[0, 0] - v1) / 1.0
    assert v1 > v0
    # Drag at 2–3 m/s (rotor drag ≈ 0.25 N per m/s) takes ~0.35 m/s² off the commanded 1.5 m/s²;
    # PX4's acceleration setpoints are feed-forward and do not compensate it either.
    assert 1.0 < a < 1.5, a


def test_attitude_and_thrust_setpoint_holds_the_attitude() -> None:
    sim = _hovering()
    roll = np.deg2rad(10.0)
    q = [np.cos(roll / 2), np.sin(roll / 2), 0.0, 0.0]
    sim.set_setpoint(SetpointKind.ATTITUDE, [*q, 0.7])
    sim.step(125)
    np.testing.assert_allclose(sim.q_wxyz[0], q, atol=2e-3)
    assert sim.acc_ned_m_s2[0, 1] > 1.0  # rolled right: accelerates east
    assert sim.acc_ned_m_s2[0, 2] < 0.0  # 0.7 > hover thrust / cos(10°): climbs


def test_rates_and_thrust_setpoint_tracks_the_rates() -> None:
    sim = _hovering()
    sim.set_setpoint(SetpointKind.RATES, [0.0, 0.0, 1.0, X500.hover_thrust_frac, 0.0])
    sim.step(500)
    # PX4's default yaw-rate PI (0.2, 0.1) with no aerodynamic yaw damping overshoots ~12 % and
    # settles slowly; the roll axis below is the crisp one.
    assert sim.rates_frd_rad_s[0, 2] == pytest.approx(1.0, abs=0.15)
    sim.set_setpoint(SetpointKind.RATES, [0.5, 0.0, 0.0, X500.hover_thrust_frac, 0.0])
    sim.step(25)
    assert sim.rates_frd_rad_s[0, 0] == pytest.approx(0.5, abs=0.05)


def test_mixed_setpoint_kinds_in_one_batch_match_separate_runs() -> None:
    kinds = np.array([0, 1, 2, 3, 4])
    values = np.array(
        [
            [3.0, 0.0, -10.0, 0.0, 0.0],
            [1.0, 0.0, 0.0, 0.0, 0.0],
            [0.5, 0.0, 0.0, 0.0, 0.0],
            [1.0, 0.0, 0.0, 0.0, 0.6],
            [0.0, 0.0, 0.2, 0.6, 0.0],
        ]
    )
    mixed = _hovering(5)
    mixed.set_setpoint(kinds, values)
    mixed.step(200)
    for i in range(5):
        alone = _hovering(1)
        alone.set_setpoint(SetpointKind(int(kinds[i])), values[i])
        alone.step(200)
        np.testing.assert_allclose(alone.body.x[0], mixed.body.x[i], atol=1e-12)


def test_motor_efficiency_loss_still_hovers_with_integral_action() -> None:
    faults = Faults(motor_efficiency=(0.8, 1.0, 1.0, 1.0), motor_fault_onset_s=2.0)
    sim = _hovering(faults=faults)  # 1 s after reset
    sim.step(250)  # fault hits at 2 s
    sim.step(2500)
    assert not sim.crashed[0]
    np.testing.assert_allclose(sim.pos_ned_m[0], [0.0, 0.0, -10.0], atol=0.1)
    assert abs(sim.vel_ned_m_s[0]).max() < 0.05
    # The weak front-right motor spins faster than its diagonal partner to make the same thrust.
    assert sim.motor_speed[0, 0] > sim.motor_speed[0, 1] * 1.05


def test_heavier_vehicle_hovers_after_integrator_settles() -> None:
    sim = Sim(1, rng=np.random.default_rng(0))
    sim.set_params(mass_scale=1.3)
    sim.reset(on_ground=False, pos_ned_m=(0.0, 0.0, -10.0))
    sim.ctrl.vel_int[:] = 0.0  # forget the preload: the controller has to find the extra thrust itself
    sim.step(2500)
    assert sim.pos_ned_m[0, 2] == pytest.approx(-10.0, abs=0.1)
