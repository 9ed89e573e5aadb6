"""Physics of the simulated quadrotor: hover, free fall, drag, ground, determinism, batch independence."""

from __future__ import annotations

import re

import numpy as np
import pytest

from sitl.airframe import G_M_S2, X500, Airframe
from sitl.control import ControllerParams
from sitl.disturbance import Battery, Disturbances, Faults, MeasurementNoise
from sitl.sim import SetpointKind, Sim


def _hovering(n: int = 1, seed: int = 0, **kw: object) -> Sim:
    sim = Sim(n, rng=np.random.default_rng(seed), **kw)  # type: ignore[arg-type]
    sim.reset(on_ground=False, pos_ned_m=(0.0, 0.0, -10.0))
    return sim


def test_hover_motor_speed_reproduces_weight_within_one_percent() -> None:
    sim = _hovering()
    sim.step(1500)  # 6 s: integrators and battery sag settle
    thrust = X500.motor_constant_n_s2_rad2 * np.sum(sim.motor_speed[0] ** 2)
    weight = X500.mass_kg * G_M_S2
    assert abs(thrust - weight) / weight < 0.01
    assert abs(sim.vel_ned_m_s[0, 2]) < 0.02
    assert abs(sim.pos_ned_m[0, 2] + 10.0) < 0.1


def test_disarmed_vehicle_in_air_falls_at_g_until_drag_matters() -> None:
    sim = _hovering()
    sim.disarm()
    sim.step(50)  # 0.2 s: rotors spin down (τ_down = 25 ms)
    assert np.all(sim.motor_speed[0] < 1.0)
    k = 0.5 * X500.air_density_kg_m3 * X500.drag_area_frd_m2[2] / X500.mass_kg
    for _ in range(4):
        v = sim.vel_ned_m_s[0, 2]
        sim.step(1)
        a = sim.acc_ned_m_s2[0, 2]
        # g less quadratic drag on the body's z axis, nothing else (no thrust, level attitude).
        assert a == pytest.approx(G_M_S2 - k * v * abs(v), rel=1e-3)
        sim.step(24)
    # Early in the fall drag is under 1 % of the weight.
    assert k * 1.0 < 0.01 * G_M_S2
    # Falling from 10 m at g hits the ground at ~14 m/s: a crash.
    sim.step(500)
    assert sim.crashed[0]
    assert sim.pos_ned_m[0, 2] == 0.0


def test_drag_limited_top_speed_at_full_tilt_is_plausible() -> None:
    # Ask for far more speed than drag allows with the acceleration limit lifted: the cascade then
    # flies at its 45° tilt limit while holding altitude, and speed saturates through drag.
    params = ControllerParams(acc_hor_max_m_s2=100.0, xy_vel_max_m_s=50.0)
    sim = _hovering(controller=params)
    sim.set_setpoint(SetpointKind.VELOCITY, [50.0, 0.0, 0.0, 0.0, 0.0])
    speeds = []
    for _ in range(30):
        sim.step(250)
        speeds.append(sim.vel_ned_m_s[0, 0])
    assert not sim.crashed[0]
    v_top = speeds[-1]
    assert abs(speeds[-1] - speeds[-5]) < 0.2  # converged
    tilt = np.arccos(1.0 - 2.0 * (sim.q_wxyz[0, 1] ** 2 + sim.q_wxyz[0, 2] ** 2))
    # Near the tilt limit; the last degrees are lost to the thrust limit (PX4 keeps altitude first).
    assert 35.0 < np.rad2deg(tilt) <= 45.5, np.rad2deg(tilt)
    assert abs(sim.vel_ned_m_s[0, 2]) < 0.2
    assert 15.0 < v_top < 25.0, v_top  # a 2 kg quad at 45° tops out around 20 m/s


def test_same_seed_gives_identical_trajectory_with_all_disturbances() -> None:
    dist = Disturbances(
        wind_ned_m_s=(2.0, -1.0, 0.0), gust_std_m_s=1.0, noise=MeasurementNoise(0.1, 0.05, 0.01, 0.01, 0.1)
    )
    faults = Faults(glitch_rate_hz=0.5, glitch_magnitude_m=3.0, dropout_rate_hz=0.5)

    def run(seed: int) -> np.ndarray:
        sim = _hovering(1, seed, disturbances=dist, faults=faults)
        sim.set_setpoint(SetpointKind.VELOCITY, [1.0, 0.0, 0.0, 0.2, 0.0])
        out = []
        for _ in range(50):
            sim.step(10)
            m = sim.measure()
            out.append(np.concatenate([sim.pos_ned_m[0], m.pos_ned_m[0], m.valid.astype(float)]))
        return np.array(out)

    a, b, c = run(7), run(7), run(8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_element_of_batch_of_1024_equals_vehicle_simulated_alone() -> None:
    n = 1024
    rng = np.random.default_rng(3)
    wind = rng.uniform(-4.0, 4.0, (n, 3)) * [1, 1, 0]
    dist = Disturbances(wind_ned_m_s=wind, gust_std_m_s=0.8, mass_scale=rng.uniform(0.8, 1.2, n))
    faults = Faults(motor_efficiency=rng.uniform(0.85, 1.0, (n, 4)))
    vel_sp = np.column_stack(
        [rng.uniform(-3, 3, (n, 3)) * [1, 1, 0.3], rng.uniform(-0.5, 0.5, n), np.zeros(n)]
    )

    big = Sim(n, rng=np.random.default_rng(42), disturbances=dist, faults=faults)
    big.reset(on_ground=False, pos_ned_m=(0.0, 0.0, -20.0))
    big.set_setpoint(SetpointKind.VELOCITY, vel_sp)
    big.step(250)
    for i in (0, 517, 1023):
        alone = Sim(
            1,
            rng=np.random.default_rng(42),
            disturbances=Disturbances(
                wind_ned_m_s=wind[i],
                gust_std_m_s=0.8,
                mass_scale=dist.mass_scale[i],  # type: ignore[index]
            ),
            faults=Faults(motor_efficiency=faults.motor_efficiency[i]),  # type: ignore[index]
            vehicle_ids=[i],
        )
        alone.reset(on_ground=False, pos_ned_m=(0.0, 0.0, -20.0))
        alone.set_setpoint(SetpointKind.VELOCITY, vel_sp[i])
        alone.step(250)
        np.testing.assert_allclose(alone.body.x[0], big.body.x[i], rtol=0, atol=1e-12)
        np.testing.assert_allclose(alone.motor_speed[0], big.motor_speed[i], rtol=0, atol=1e-9)


def test_wind_acts_through_drag_and_position_hold_rejects_it() -> None:
    # Without control, a vehicle in 5 m/s wind drifts downwind; with position hold it stays put.
    sim = _hovering(disturbances=Disturbances(wind_ned_m_s=(0.0, 5.0, 0.0)))
    sim.step(2500)  # 10 s
    assert np.linalg.norm(sim.pos_ned_m[0, :2]) < 0.5
    # Air moving east pushes the vehicle east; holding means rolling left (φ < 0, q_x < 0) to push west.
    assert sim.q_wxyz[0, 1] < -0.01
    drifting = _hovering(disturbances=Disturbances(wind_ned_m_s=(0.0, 5.0, 0.0)))
    drifting.set_setpoint(SetpointKind.ATTITUDE, [1.0, 0.0, 0.0, 0.0, X500.hover_thrust_frac])
    drifting.step(1250)  # 5 s level, no position control
    assert drifting.vel_ned_m_s[0, 1] > 1.0


def test_touchdown_rests_and_hard_impact_crashes() -> None:
    sim = Sim(2, rng=np.random.default_rng(0))
    sim.reset(on_ground=False, pos_ned_m=(0.0, 0.0, -3.0))
    sim.set_setpoint(SetpointKind.VELOCITY, [0.0, 0.0, 1.0, 0.0, 0.0])  # descend at 1 m/s
    sim.disarm(np.array([False, True]))  # vehicle 1 drops from 3 m (7.7 m/s at impact)
    sim.step(1500)
    assert not sim.crashed[0] and sim.on_ground[0]
    assert sim.pos_ned_m[0, 2] == 0.0 and np.all(sim.vel_ned_m_s[0] == 0.0)
    assert sim.crashed[1] and not sim.armed[1]


def test_takeoff_from_ground_with_velocity_setpoint() -> None:
    sim = Sim(1, rng=np.random.default_rng(0))
    sim.reset(on_ground=True)
    sim.step(10)
    assert sim.on_ground[0] and sim.pos_ned_m[0, 2] == 0.0
    sim.arm()
    sim.set_setpoint(SetpointKind.VELOCITY, [0.0, 0.0, -1.0, 0.0, 0.0])
    sim.step(750)
    assert not sim.on_ground[0]
    assert sim.vel_ned_m_s[0, 2] == pytest.approx(-1.0, abs=0.05)


def test_battery_drains_and_sags_under_load() -> None:
    sim = _hovering(faults=Faults(battery=Battery(capacity_mah=1000.0, internal_resistance_ohm=0.05)))
    v_full = X500.battery_full_v
    sim.step(250)
    assert sim.battery_v[0] < v_full - 0.5  # ~20 A × 0.05 Ω = 1 V sag at hover
    f0 = sim.battery_frac[0]
    sim.step(2500)  # 10 s at ~22 A from 1 Ah: ~6 % gone
    assert 0.03 < f0 - sim.battery_frac[0] < 0.1


def test_measurement_latency_noise_dropouts_and_glitches() -> None:
    lag = Disturbances(latency_s=0.1)
    sim = _hovering(disturbances=lag)
    sim.set_setpoint(SetpointKind.VELOCITY, [2.0, 0.0, 0.0, 0.0, 0.0])
    history = []
    for _ in range(100):
        sim.step(1)
        history.append(sim.pos_ned_m[0].copy())
    m = sim.measure()
    np.testing.assert_array_equal(m.pos_ned_m[0], history[-1 - 25])  # 0.1 s = 25 steps ago
    assert m.stamp_s == pytest.approx(sim.time_s - 0.1)

    noisy = _hovering(disturbances=Disturbances(noise=MeasurementNoise(pos_std_m=0.5)))
    err = [noisy.measure().pos_ned_m[0] - noisy.pos_ned_m[0] for _ in range(400)]
    assert np.std(err) == pytest.approx(0.5, rel=0.15)

    faulty = _hovering(
        faults=Faults(dropout_rate_hz=1.0, dropout_duration_s=0.5, glitch_rate_hz=1.0, glitch_magnitude_m=5.0)
    )
    valid, jumps = [], []
    for _ in range(500):  # 20 s at 25 Hz
        faulty.step(10)
        m = faulty.measure()
        valid.append(bool(m.valid[0]))
        jumps.append(float(np.linalg.norm(m.pos_ned_m[0, :2] - faulty.pos_ned_m[0, :2])))
    invalid_frac = 1.0 - np.mean(valid)
    assert 0.1 < invalid_frac < 0.6  # ~1/(1+1/0.5)... dropouts cover about a third of the time
    assert max(jumps) == pytest.approx(5.0, abs=0.5)


def test_bad_configuration_is_refused_with_a_clear_message() -> None:
    with pytest.raises(
        ValueError, match=re.escape("Disturbances.wind_ned_m_s has shape (2,); expected [3] or [n, 3]")
    ):
        Sim(1, rng=np.random.default_rng(0), disturbances=Disturbances(wind_ned_m_s=(1.0, 2.0)))
    with pytest.raises(ValueError, match=re.escape("reset(on_ground=False) needs pos_ned_m with down < 0")):
        Sim(1, rng=np.random.default_rng(0)).reset(on_ground=False)
    with pytest.raises(ValueError, match=re.escape("Airframe cannot lift itself")):
        Airframe(**{**{f: getattr(X500, f) for f in X500.__dataclass_fields__}, "mass_kg": 5.0})
    sim = Sim(2, rng=np.random.default_rng(0))
    with pytest.raises(
        ValueError, match=re.escape("setpoint values must have shape [5] or [2, 5], got (4,)")
    ):
        sim.set_setpoint(SetpointKind.VELOCITY, [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(
        ValueError, match=re.escape("setpoint for vehicle 0 (kind VELOCITY) has non-finite values")
    ):
        sim.set_setpoint(SetpointKind.VELOCITY, [np.nan, 0.0, 0.0, 0.0, 0.0])
