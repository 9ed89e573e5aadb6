"""The simulator: n quadrotors with a PX4-style controller, disturbances and faults, in lock-step.

Randomness. Every per-vehicle random stream (gusts, measurement noise, glitch/dropout events)
comes from its own ``numpy.random.SeedSequence(entropy, spawn_key=(vehicle_id, stream))``,
where ``entropy`` is drawn once from the injected Generator and ``vehicle_id`` defaults to the
vehicle's index. Draws are made in fixed-size blocks per vehicle, so what vehicle i sees does
not depend on how many other vehicles share the batch: ``Sim(1, rng=same seed, vehicle_ids=[i])``
flies exactly like element i of ``Sim(1024, rng=same seed)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sitl.airframe import G_M_S2, X500, Airframe
from sitl.control import Cascade, ControllerParams
from sitl.disturbance import Disturbances, Faults, per_vehicle
from sitl.physics import STATE_WIDTH, RigidBodies

F64 = NDArray[np.float64]
BoolArr = NDArray[np.bool_]

_GUST, _NOISE, _EVENTS = 0, 1, 2
_BLOCK = 64
"""Random draws are made per vehicle in blocks of this many steps (or measure() calls)."""


class SetpointKind(IntEnum):
    """What the five setpoint values mean (see ``Sim.set_setpoint``)."""

    POSITION = 0
    VELOCITY = 1
    ACCELERATION = 2
    ATTITUDE = 3
    RATES = 4


@dataclass(frozen=True, slots=True)
class Measurement:
    """What the autopilot's estimator reports: noisy, delayed, glitched; arrays [n, ...]."""

    stamp_s: float
    """Sim time the values describe (now minus the configured latency)."""
    pos_ned_m: F64
    vel_ned_m_s: F64
    q_wxyz: F64
    rates_frd_rad_s: F64
    acc_ned_m_s2: F64
    valid: BoolArr
    """[n] False during a telemetry dropout (values then repeat the last valid ones)."""
    battery_v: F64
    battery_frac: F64


@dataclass(frozen=True, slots=True)
class VelocityLoopModel:
    """First-order, acceleration-limited approximation of the closed velocity loop.

    v̇ = clip((v_sp − v)/tau_s, ±limits), horizontal limit on the norm, vertical limits up/down.
    """

    tau_s: float
    """Effective horizontal time constant."""
    tau_z_s: float
    """Effective vertical time constant."""
    acc_hor_max_m_s2: float
    acc_up_max_m_s2: float
    acc_down_max_m_s2: float
    delay_s: float = field(default=0.0)
    """Dead time before the response starts (attitude/motor lag)."""


# Measured on the X500 with default gains by tests/sitl/test_control.py::test_velocity_loop_model_matches
# (least-squares fit of the clipped first-order model to 0→2 m/s and 0→-1 m/s steps); see docs/sitl.md.
_MEASURED_TAU_XY_S = 0.55
_MEASURED_TAU_Z_S = 0.30
_MEASURED_DELAY_S = 0.10


def velocity_loop_model(params: ControllerParams | None = None) -> VelocityLoopModel:
    """The velocity loop's first-order time constants (measured) and acceleration limits (from params)."""
    p = ControllerParams() if params is None else params
    return VelocityLoopModel(
        tau_s=_MEASURED_TAU_XY_S,
        tau_z_s=_MEASURED_TAU_Z_S,
        acc_hor_max_m_s2=min(p.acc_hor_max_m_s2, G_M_S2 * float(np.tan(p.tilt_max_rad))),
        acc_up_max_m_s2=p.acc_up_max_m_s2,
        acc_down_max_m_s2=p.acc_down_max_m_s2,
        delay_s=_MEASURED_DELAY_S,
    )


def _mask(mask: ArrayLike | None, n: int) -> BoolArr:
    if mask is None:
        return np.ones(n, dtype=bool)
    m = np.asarray(mask)
    if m.dtype != np.bool_ or m.shape != (n,):
        raise ValueError(f"mask must be a bool array of shape ({n},), got dtype {m.dtype} shape {m.shape}")
    return m


def _rows(value: ArrayLike, k: int, width: int, name: str) -> F64:
    arr = np.asarray(value, dtype=np.float64)
    try:
        return np.array(np.broadcast_to(arr, (k, width)))
    except ValueError:
        raise ValueError(
            f"{name} has shape {arr.shape}; expected [{width}] or [k, {width}] for the k = {k} masked vehicles"
        ) from None


def _scalars(value: ArrayLike, k: int, name: str) -> F64:
    arr = np.asarray(value, dtype=np.float64)
    try:
        return np.array(np.broadcast_to(arr, (k,)))
    except ValueError:
        raise ValueError(
            f"{name} has shape {arr.shape}; expected a scalar or [k] for the k = {k} masked vehicles"
        ) from None


class Sim:
    """n simulated quadrotors (physics + PX4-style cascade + disturbances + faults), stepped together."""

    def __init__(
        self,
        n: int,
        *,
        rng: np.random.Generator,
        airframe: Airframe = X500,
        controller: ControllerParams | None = None,
        disturbances: Disturbances | None = None,
        faults: Faults | None = None,
        dt_s: float = 0.004,
        vehicle_ids: ArrayLike | None = None,
    ) -> None:
        if n < 1:
            raise ValueError(f"Sim needs n >= 1 vehicles, got {n}")
        if not 0.0 < dt_s <= 0.02:
            raise ValueError(f"Sim dt_s must be in (0, 0.02] s for a stable inner loop, got {dt_s}")
        self.n = n
        self.dt_s = dt_s
        self.time_s = 0.0
        self.airframe = airframe
        self.controller_params = ControllerParams() if controller is None else controller
        self.disturbances = Disturbances() if disturbances is None else disturbances
        self.faults = Faults() if faults is None else faults
        ids = np.arange(n) if vehicle_ids is None else np.asarray(vehicle_ids, dtype=np.int64)
        if ids.shape != (n,):
            raise ValueError(f"vehicle_ids must have shape ({n},), got {ids.shape}")
        self.vehicle_ids = ids
        self._entropy = [int(v) for v in rng.integers(0, 2**32, size=4, dtype=np.uint64)]
        self._streams: dict[int, list[np.random.Generator]] = {}

        self.body = RigidBodies(n, airframe, dt_s)
        self.ctrl = Cascade(n, self.controller_params, airframe, dt_s)
        b = self.body
        self.pos_ned_m: F64 = b.x[:, 0:3]
        """[n, 3] true position (views into the state; do not mutate from outside)."""
        self.vel_ned_m_s: F64 = b.x[:, 3:6]
        self.acc_ned_m_s2: F64 = b.x[:, 6:9]
        self.q_wxyz: F64 = b.x[:, 9:13]
        self.rates_frd_rad_s: F64 = b.x[:, 13:16]
        self.motor_speed: F64 = b.motor_speed_rad_s
        """[n, 4] rotor speeds, rad/s."""
        self.battery_frac: F64 = b.battery_frac
        self.battery_v: F64 = b.battery_v
        self.on_ground: BoolArr = b.on_ground
        self.crashed: BoolArr = b.crashed
        self.armed: BoolArr = np.zeros(n, dtype=bool)
        self._fault_applied = np.zeros(n, dtype=bool)
        self.age_s: F64 = np.zeros(n)
        """[n] time since each vehicle's last reset."""
        self.setpoint_kind = np.zeros(n, dtype=np.int64)
        self.setpoint = np.zeros((n, 5))
        self._uniform_kind: int | None = 0

        d, f = self.disturbances, self.faults
        self.wind_mean_ned_m_s = per_vehicle(d.wind_ned_m_s, n, 3, "Disturbances.wind_ned_m_s")
        self.gust_std_m_s = per_vehicle(d.gust_std_m_s, n, 0, "Disturbances.gust_std_m_s")
        self.mass_scale = per_vehicle(d.mass_scale, n, 0, "Disturbances.mass_scale")
        self.motor_efficiency = per_vehicle(f.motor_efficiency, n, 4, "Faults.motor_efficiency")
        self.motor_fault_onset_s = per_vehicle(f.motor_fault_onset_s, n, 0, "Faults.motor_fault_onset_s")
        self._battery_init = per_vehicle(f.battery.initial_frac, n, 0, "Battery.initial_frac")
        b.capacity_as[:] = f.battery.capacity_mah * 3.6
        b.resistance_ohm[:] = f.battery.internal_resistance_ohm
        self._check_params()
        self.gust_ned_m_s = np.zeros((n, 3))
        self._gust_a = float(np.exp(-dt_s / d.gust_time_constant_s))
        self._gust_b = float(np.sqrt(1.0 - self._gust_a**2))
        self._gust_buf = np.zeros((n, _BLOCK, 3))
        self._gust_k = _BLOCK
        self._noise_buf = np.zeros((n, _BLOCK, 15))
        self._noise_k = _BLOCK
        self._wind = np.zeros((n, 3))

        # Reported-state pipeline: latency ring, glitches, dropouts.
        self._lag = round(d.latency_s / dt_s)
        self._hist = np.zeros((self._lag + 1, n, STATE_WIDTH))
        self._hist_i = 0
        self._glitch_next_s = np.full(n, np.inf)
        self._glitch_until_s = np.full(n, -np.inf)
        self._glitch_off = np.zeros((n, 3))
        self._drop_next_s = np.full(n, np.inf)
        self._drop_until_s = np.full(n, -np.inf)
        self._last_meas = np.zeros((n, STATE_WIDTH))
        self._last_meas[:, 9] = 1.0
        self._noise_std = np.repeat(
            [
                d.noise.pos_std_m,
                d.noise.vel_std_m_s,
                d.noise.att_std_rad,
                d.noise.rates_std_rad_s,
                d.noise.acc_std_m_s2,
            ],
            3,
        )
        self.reset()

    # ------------------------------------------------------------------ configuration
    def _check_params(self) -> None:
        if np.any(self.mass_scale <= 0.0):
            raise ValueError(f"mass_scale must be > 0, got min {self.mass_scale.min()}")
        if np.any((self.motor_efficiency < 0.0) | (self.motor_efficiency > 1.5)):
            raise ValueError("motor_efficiency must be in [0, 1.5] (1 = healthy)")
        if np.any(self.gust_std_m_s < 0.0):
            raise ValueError(f"gust_std_m_s must be >= 0, got min {self.gust_std_m_s.min()}")

    def set_params(
        self,
        mask: ArrayLike | None = None,
        *,
        mass_scale: ArrayLike | None = None,
        motor_efficiency: ArrayLike | None = None,
        motor_fault_onset_s: ArrayLike | None = None,
        wind_ned_m_s: ArrayLike | None = None,
        gust_std_m_s: ArrayLike | None = None,
    ) -> None:
        """Change per-vehicle physical parameters of the masked vehicles (values: scalar/[width] or [k, width])."""
        m = _mask(mask, self.n)
        k = int(m.sum())
        if mass_scale is not None:
            self.mass_scale[m] = _scalars(mass_scale, k, "mass_scale")
        if motor_efficiency is not None:
            self.motor_efficiency[m] = _rows(motor_efficiency, k, 4, "motor_efficiency")
        if motor_fault_onset_s is not None:
            self.motor_fault_onset_s[m] = _scalars(motor_fault_onset_s, k, "motor_fault_onset_s")
        if wind_ned_m_s is not None:
            self.wind_mean_ned_m_s[m] = _rows(wind_ned_m_s, k, 3, "wind_ned_m_s")
        if gust_std_m_s is not None:
            self.gust_std_m_s[m] = _scalars(gust_std_m_s, k, "gust_std_m_s")
        self._check_params()
        # Physical changes take effect now (mass, and motor efficiency where its onset has passed).
        self.body.mass_kg[m] = self.airframe.mass_kg * self.mass_scale[m]
        self._fault_applied[m] = self.age_s[m] >= self.motor_fault_onset_s[m]
        self.body.motor_eff[m] = np.where(self._fault_applied[m][:, None], self.motor_efficiency[m], 1.0)

    # ------------------------------------------------------------------ random streams
    def _stream(self, which: int) -> list[np.random.Generator]:
        gens = self._streams.get(which)
        if gens is None:
            gens = [
                np.random.Generator(
                    np.random.PCG64(np.random.SeedSequence(self._entropy, spawn_key=(int(i), which)))
                )
                for i in self.vehicle_ids
            ]
            self._streams[which] = gens
        return gens

    def _next_gust_noise(self) -> F64:
        if self._gust_k == _BLOCK:
            for i, g in enumerate(self._stream(_GUST)):
                self._gust_buf[i] = g.standard_normal((_BLOCK, 3))
            self._gust_k = 0
        out = self._gust_buf[:, self._gust_k]
        self._gust_k += 1
        return out

    def _next_meas_noise(self) -> F64:
        if self._noise_k == _BLOCK:
            for i, g in enumerate(self._stream(_NOISE)):
                self._noise_buf[i] = g.standard_normal((_BLOCK, 15))
            self._noise_k = 0
        out = self._noise_buf[:, self._noise_k]
        self._noise_k += 1
        return out

    def _schedule(self, idx: NDArray[np.intp], rate_hz: float, after_s: F64) -> F64:
        gens = self._stream(_EVENTS)
        return np.array([after_s[j] + gens[i].exponential(1.0 / rate_hz) for j, i in enumerate(idx)])

    # ------------------------------------------------------------------ commands
    def reset(
        self,
        mask: ArrayLike | None = None,
        *,
        pos_ned_m: ArrayLike | None = None,
        vel_ned_m_s: ArrayLike | None = None,
        yaw_rad: ArrayLike | None = None,
        on_ground: bool = True,
    ) -> None:
        """Put the masked vehicles back at rest (values: [3]/scalar or one row per masked vehicle).

        ``on_ground=True``: disarmed, motors stopped, on the ground below ``pos_ned_m``'s north/east.
        ``on_ground=False``: armed and already hovering (rotors at hover speed, position-hold
        setpoint at the reset position and heading); ``pos_ned_m`` must then be above the ground.
        Battery, controller memory, faults' clocks and the reported-state pipeline restart too.
        """
        m = _mask(mask, self.n)
        k = int(m.sum())
        if k == 0:
            return
        pos = _rows(np.zeros(3) if pos_ned_m is None else pos_ned_m, k, 3, "pos_ned_m")
        vel = _rows(np.zeros(3) if vel_ned_m_s is None else vel_ned_m_s, k, 3, "vel_ned_m_s")
        yaw = _scalars(0.0 if yaw_rad is None else yaw_rad, k, "yaw_rad")
        if on_ground:
            pos[:, 2] = 0.0
            vel[:] = 0.0
        elif np.any(pos[:, 2] >= 0.0):
            raise ValueError(
                "reset(on_ground=False) needs pos_ned_m with down < 0 (above the ground); "
                f"got down = {pos[:, 2].max()}"
            )
        b = self.body
        x = np.zeros((k, STATE_WIDTH))
        x[:, 0:3] = pos
        x[:, 3:6] = vel
        x[:, 9] = np.cos(0.5 * yaw)
        x[:, 12] = np.sin(0.5 * yaw)
        b.x[m] = x
        b.ang_acc_frd_rad_s2[m] = 0.0
        b.crashed[m] = False
        b.on_ground[m] = on_ground
        b.battery_frac[m] = self._battery_init[m]
        b.current_a[m] = 0.0
        self.age_s[m] = 0.0
        b.mass_kg[m] = self.airframe.mass_kg * self.mass_scale[m]
        applied = self.motor_fault_onset_s[m] <= 0.0
        self._fault_applied[m] = applied
        eff = np.where(applied[:, None], self.motor_efficiency[m], 1.0)
        b.motor_eff[m] = eff
        a = self.airframe
        full_yaw = np.zeros(self.n)
        full_yaw[m] = yaw
        self.ctrl.reset(m, full_yaw)
        if on_ground:
            b.motor_speed_rad_s[m] = 0.0
            self.armed[m] = False
            sp = np.zeros((k, 5))
            sp[:, 0:2] = pos[:, 0:2]
            sp[:, 3] = yaw
        else:
            weight = b.mass_kg[m] * G_M_S2
            per_motor = weight[:, None] / (4.0 * a.motor_constant_n_s2_rad2 * np.maximum(eff, 1e-3))
            b.motor_speed_rad_s[m] = np.sqrt(per_motor)
            self.armed[m] = True
            # Start as if the hover-thrust estimate had converged: preload the vertical integrator.
            ratio = self.mass_scale[m] / np.maximum(eff.mean(axis=1), 1e-3)
            self.ctrl.vel_int[m, 2] = -G_M_S2 * (ratio - 1.0)
            sp = np.zeros((k, 5))
            sp[:, 0:3] = pos
            sp[:, 3] = yaw
        self.setpoint_kind[m] = SetpointKind.POSITION
        self.setpoint[m] = sp
        self._refresh_uniform()
        gstd = self.gust_std_m_s[m]
        self.gust_ned_m_s[m] = 0.0
        if np.any(self.gust_std_m_s > 0.0):
            # Start the gust process in its stationary distribution (one block draw for everyone).
            self.gust_ned_m_s[m] = self._next_gust_noise()[m] * gstd[:, None]
        # Reported-state pipeline.
        self._hist[:, m] = b.x[m]
        self._last_meas[m] = b.x[m]
        self._glitch_until_s[m] = -np.inf
        self._drop_until_s[m] = -np.inf
        self._glitch_off[m] = 0.0
        idx = np.flatnonzero(m)
        f = self.faults
        self._glitch_next_s[m] = (
            self._schedule(idx, f.glitch_rate_hz, np.zeros(k)) if f.glitch_rate_hz > 0.0 else np.inf
        )
        self._drop_next_s[m] = (
            self._schedule(idx, f.dropout_rate_hz, np.zeros(k)) if f.dropout_rate_hz > 0.0 else np.inf
        )

    def arm(self, mask: ArrayLike | None = None) -> None:
        """Arm the masked vehicles (crashed ones stay disarmed)."""
        m = _mask(mask, self.n)
        self.armed[m & ~self.crashed] = True

    def disarm(self, mask: ArrayLike | None = None) -> None:
        """Disarm the masked vehicles: motors spin down, a vehicle in the air falls."""
        m = _mask(mask, self.n)
        self.armed[m] = False

    def set_setpoint(
        self, kind: SetpointKind | int | ArrayLike, values: ArrayLike, mask: ArrayLike | None = None
    ) -> None:
        """Command the masked vehicles; ``values`` is [5] or [n, 5] (rows outside the mask are ignored).

        POSITION (n, e, d, yaw_rad, –) with yaw NaN = keep heading; VELOCITY (vn, ve, vd, yaw_rate, –);
        ACCELERATION (an, ae, ad, yaw_rate, –); ATTITUDE (qw, qx, qy, qz, thrust_frac);
        RATES (p, q, r, thrust_frac, –). Units m, m/s, m/s², rad, rad/s; NED world, FRD body.
        """
        m = _mask(mask, self.n)
        kinds = np.broadcast_to(np.asarray(kind, dtype=np.int64), (self.n,))
        if np.any((kinds < 0) | (kinds > 4)):
            raise ValueError(f"setpoint kind must be 0..4 (SetpointKind), got {np.unique(kinds).tolist()}")
        vals = np.asarray(values, dtype=np.float64)
        try:
            vals = np.broadcast_to(vals, (self.n, 5))
        except ValueError:
            raise ValueError(
                f"setpoint values must have shape [5] or [{self.n}, 5], got {vals.shape}"
            ) from None
        used = np.ones((self.n, 5), dtype=bool)
        used[:, 4] = kinds == SetpointKind.ATTITUDE
        used[:, 3] &= kinds != SetpointKind.POSITION  # POSITION yaw may be NaN (= hold heading)
        bad = m[:, None] & used & ~np.isfinite(vals)
        if np.any(bad):
            row = int(np.flatnonzero(bad.any(axis=1))[0])
            raise ValueError(
                f"setpoint for vehicle {row} (kind {SetpointKind(int(kinds[row])).name}) has non-finite "
                f"values {vals[row].tolist()}; only a POSITION yaw may be NaN"
            )
        changed = m & (kinds != self.setpoint_kind)
        if np.any(changed):
            # A new kind starts from the current heading (PX4 holds the yaw it has).
            q = self.q_wxyz
            yaw_now = np.arctan2(
                2.0 * (q[:, 0] * q[:, 3] + q[:, 1] * q[:, 2]), 1.0 - 2.0 * (q[:, 2] ** 2 + q[:, 3] ** 2)
            )
            self.ctrl.yaw_sp_rad[changed] = yaw_now[changed]
        self.setpoint_kind[m] = kinds[m]
        self.setpoint[m] = vals[m]
        self._refresh_uniform()

    def _refresh_uniform(self) -> None:
        k = self.setpoint_kind
        self._uniform_kind = int(k[0]) if np.all(k == k[0]) else None

    # ------------------------------------------------------------------ time
    def step(self, n_steps: int = 1) -> None:
        """Advance physics and controller by n_steps·dt_s."""
        if n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}")
        b = self.body
        ctrl = self.ctrl
        dt = self.dt_s
        any_gust = bool(np.any(self.gust_std_m_s > 0.0))
        onset_pending = not bool(self._fault_applied.all())
        lagged = self._lag > 0
        for _ in range(n_steps):
            if onset_pending:
                due = self.age_s >= self.motor_fault_onset_s
                b.motor_eff[:] = np.where(due[:, None], self.motor_efficiency, 1.0)
                self._fault_applied[:] = due
                onset_pending = not bool(due.all())
            if any_gust:
                xi = self._next_gust_noise()
                self.gust_ned_m_s *= self._gust_a
                self.gust_ned_m_s += (self._gust_b * self.gust_std_m_s)[:, None] * xi
                np.add(self.wind_mean_ned_m_s, self.gust_ned_m_s, out=self._wind)
                wind = self._wind
            else:
                wind = self.wind_mean_ned_m_s
            u = ctrl.update(
                self.setpoint_kind,
                self._uniform_kind,
                self.setpoint,
                self.pos_ned_m,
                self.vel_ned_m_s,
                self.acc_ned_m_s2,
                self.q_wxyz,
                self.rates_frd_rad_s,
                b.ang_acc_frd_rad_s2,
                b.on_ground,
            )
            b.step(u, self.armed, wind)
            self.age_s += dt
            self.time_s += dt
            if lagged:
                self._hist_i = (self._hist_i + 1) % (self._lag + 1)
                self._hist[self._hist_i] = b.x
        if np.any(self.crashed & self.armed):
            self.armed[self.crashed] = False

    # ------------------------------------------------------------------ reporting
    def measure(self) -> Measurement:
        """The estimator's report: the state ``latency`` ago, plus noise, glitches and dropouts."""
        f = self.faults
        if self._lag > 0:
            oldest = (self._hist_i + 1) % (self._lag + 1)
            src = self._hist[oldest].copy()
        else:
            src = self.body.x.copy()
        age = self.age_s
        if f.glitch_rate_hz > 0.0 and f.glitch_magnitude_m > 0.0:
            due = np.flatnonzero(age >= self._glitch_next_s)
            if due.size:
                gens = self._stream(_EVENTS)
                for i in due:
                    ang = gens[i].uniform(0.0, 2.0 * np.pi)
                    self._glitch_off[i] = (
                        f.glitch_magnitude_m * np.cos(ang),
                        f.glitch_magnitude_m * np.sin(ang),
                        0.0,
                    )
                self._glitch_until_s[due] = age[due] + f.glitch_duration_s
                self._glitch_next_s[due] = self._schedule(due, f.glitch_rate_hz, self._glitch_until_s[due])
            active = age < self._glitch_until_s
            src[:, 0:3] += np.where(active[:, None], self._glitch_off, 0.0)
        if np.any(self._noise_std > 0.0):
            xi = self._next_meas_noise() * self._noise_std
            # xi columns: pos 0:3, vel 3:6, attitude 6:9, rates 9:12, acc 12:15.
            src[:, 0:6] += xi[:, 0:6]
            src[:, 6:9] += xi[:, 12:15]
            src[:, 13:16] += xi[:, 9:12]
            # Attitude noise as a small rotation: q ⊗ (1, δ/2), renormalised.
            dx, dy, dz = 0.5 * xi[:, 6], 0.5 * xi[:, 7], 0.5 * xi[:, 8]
            w, x, y, z = src[:, 9].copy(), src[:, 10].copy(), src[:, 11].copy(), src[:, 12].copy()
            src[:, 9] = w - x * dx - y * dy - z * dz
            src[:, 10] = x + w * dx + y * dz - z * dy
            src[:, 11] = y + w * dy + z * dx - x * dz
            src[:, 12] = z + w * dz + x * dy - y * dx
            src[:, 9:13] /= np.sqrt(np.sum(src[:, 9:13] ** 2, axis=1, keepdims=True))
        valid = np.ones(self.n, dtype=bool)
        if f.dropout_rate_hz > 0.0:
            due = np.flatnonzero(age >= self._drop_next_s)
            if due.size:
                self._drop_until_s[due] = age[due] + f.dropout_duration_s
                self._drop_next_s[due] = self._schedule(due, f.dropout_rate_hz, self._drop_until_s[due])
            valid = age >= self._drop_until_s
            src = np.where(valid[:, None], src, self._last_meas)
        self._last_meas[:] = src
        return Measurement(
            stamp_s=self.time_s - self._lag * self.dt_s,
            pos_ned_m=src[:, 0:3],
            vel_ned_m_s=src[:, 3:6],
            q_wxyz=src[:, 9:13],
            rates_frd_rad_s=src[:, 13:16],
            acc_ned_m_s2=src[:, 6:9],
            valid=valid,
            battery_v=self.battery_v.copy(),
            battery_frac=self.battery_frac.copy(),
        )

    @property
    def hover_thrust_frac(self) -> float:
        """The controller's hover-thrust assumption (collective fraction)."""
        return self.ctrl.thr_hover
