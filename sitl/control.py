"""A vectorised PX4-style flight controller: position → velocity → thrust vector → attitude → rates → mixer.

It follows PX4's ``PositionControl``, ``AttitudeControl``, ``RateControl`` and the pseudo-inverse
control allocation (v1.14), with PX4's default gains, over arrays with a leading batch axis.
Where it departs from PX4 it says so (search for "PX4 differs"). Every stage runs at the
physics rate (250 Hz by default) on the true state: the simulated estimator is perfect, and
noise, latency and glitches only affect what the vehicle *reports* (``Sim.measure``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from sitl.airframe import G_M_S2, Airframe

F64 = NDArray[np.float64]
BoolArr = NDArray[np.bool_]

# Setpoint kinds (mirrors sitl.sim.SetpointKind, kept as ints here to avoid an import cycle).
_POSITION, _VELOCITY, _ACCELERATION, _ATTITUDE, _RATES = 0, 1, 2, 3, 4


@dataclass(frozen=True, slots=True)
class ControllerParams:
    """Gains and limits of the cascade; defaults are PX4 v1.14 parameter defaults (name in each docstring)."""

    xy_pos_p_1_s: float = 0.95
    """MPC_XY_P"""
    z_pos_p_1_s: float = 1.0
    """MPC_Z_P"""
    xy_vel_p_1_s: float = 1.8
    """MPC_XY_VEL_P_ACC (m/s² per m/s)"""
    xy_vel_i_1_s2: float = 0.4
    """MPC_XY_VEL_I_ACC"""
    xy_vel_d: float = 0.2
    """MPC_XY_VEL_D_ACC (m/s² per m/s²)"""
    z_vel_p_1_s: float = 4.0
    """MPC_Z_VEL_P_ACC"""
    z_vel_i_1_s2: float = 2.0
    """MPC_Z_VEL_I_ACC"""
    z_vel_d: float = 0.0
    """MPC_Z_VEL_D_ACC"""
    xy_vel_max_m_s: float = 12.0
    """MPC_XY_VEL_MAX"""
    z_vel_max_up_m_s: float = 3.0
    """MPC_Z_VEL_MAX_UP"""
    z_vel_max_dn_m_s: float = 1.5
    """MPC_Z_VEL_MAX_DN"""
    acc_hor_max_m_s2: float = 5.0
    """MPC_ACC_HOR_MAX. PX4 differs: it applies this in the trajectory generator of its own modes;
    we also clip the velocity PID's horizontal output with it, so offboard velocity steps are
    acceleration-limited as in Position mode (and the loop is the clipped first-order lag the
    shield's nominal model assumes)."""
    acc_up_max_m_s2: float = 4.0
    """MPC_ACC_UP_MAX (applied like acc_hor_max_m_s2)"""
    acc_down_max_m_s2: float = 3.0
    """MPC_ACC_DOWN_MAX (applied like acc_hor_max_m_s2)"""
    tilt_max_rad: float = float(np.deg2rad(45.0))
    """MPC_TILTMAX_AIR"""
    thr_min: float = 0.12
    """MPC_THR_MIN (collective thrust fraction)"""
    thr_max: float = 1.0
    """MPC_THR_MAX"""
    thr_hover: float | None = None
    """MPC_THR_HOVER; None = the airframe's nominal hover thrust (what PX4's hover-thrust estimator converges to)."""
    roll_p_1_s: float = 6.5
    """MC_ROLL_P"""
    pitch_p_1_s: float = 6.5
    """MC_PITCH_P"""
    yaw_p_1_s: float = 2.8
    """MC_YAW_P. PX4 differs: MC_YAW_WEIGHT's reduced-attitude split is not modelled (full quaternion error)."""
    roll_rate_max_rad_s: float = float(np.deg2rad(220.0))
    """MC_ROLLRATE_MAX"""
    pitch_rate_max_rad_s: float = float(np.deg2rad(220.0))
    """MC_PITCHRATE_MAX"""
    yaw_rate_max_rad_s: float = float(np.deg2rad(200.0))
    """MC_YAWRATE_MAX"""
    rollrate_pid: tuple[float, float, float] = (0.15, 0.2, 0.003)
    """MC_ROLLRATE_P, _I, _D (normalised torque per rad/s, per rad, per rad/s²)"""
    pitchrate_pid: tuple[float, float, float] = (0.15, 0.2, 0.003)
    """MC_PITCHRATE_P, _I, _D"""
    yawrate_pid: tuple[float, float, float] = (0.2, 0.1, 0.0)
    """MC_YAWRATE_P, _I, _D"""
    rate_int_lim: tuple[float, float, float] = (0.3, 0.3, 0.3)
    """MC_RR_INT_LIM, MC_PR_INT_LIM, MC_YR_INT_LIM"""

    def __post_init__(self) -> None:
        if not 0.0 < self.tilt_max_rad < np.pi / 2:
            raise ValueError(f"ControllerParams.tilt_max_rad must be in (0, π/2), got {self.tilt_max_rad}")
        if not 0.0 <= self.thr_min < self.thr_max <= 1.0:
            raise ValueError(
                f"ControllerParams needs 0 <= thr_min < thr_max <= 1, got {self.thr_min} and {self.thr_max}"
            )


def mixer_matrix(airframe: Airframe) -> F64:
    """[4 motors, 3 torques] normalised roll/pitch/yaw → motor thrust fraction, PX4-style.

    The pseudo-inverse of the rotor effectiveness, with columns rescaled as PX4's
    ``normalizeControlAllocationMatrix`` does (roll/pitch by √(Σ/(N/2)), yaw by √(Σ/N)), so a
    normalised torque of 1 means the same thing as on PX4.
    """
    xy = np.asarray(airframe.rotor_pos_frd_m, dtype=np.float64)
    sign = np.asarray(airframe.rotor_yaw_sign, dtype=np.float64)
    # Torque per unit thrust of each rotor, FRD: roll = -y·T, pitch = x·T, yaw = ±km·T.
    effectiveness = np.stack([-xy[:, 1], xy[:, 0], sign * airframe.moment_constant_m])
    mix: F64 = np.asarray(np.linalg.pinv(effectiveness), dtype=np.float64)  # [4, 3]
    n = mix.shape[0]
    for axis, count in ((0, n / 2), (1, n / 2), (2, n)):
        mix[:, axis] /= np.sqrt(np.sum(mix[:, axis] ** 2) / count)
    # Exact zeros stay exact so that symmetric airframes mix symmetrically.
    mix[np.abs(mix) < 1e-12] = 0.0
    return mix


def torque_per_unit_nm(airframe: Airframe) -> F64:
    """[3] physical torque (N·m) produced by a normalised torque of 1 about each axis at full battery."""
    mix = mixer_matrix(airframe)
    xy = np.asarray(airframe.rotor_pos_frd_m, dtype=np.float64)
    sign = np.asarray(airframe.rotor_yaw_sign, dtype=np.float64)
    t_max = airframe.motor_constant_n_s2_rad2 * airframe.max_rot_velocity_rad_s**2
    return np.array(
        [
            np.sum(-xy[:, 1] * mix[:, 0]) * t_max,
            np.sum(xy[:, 0] * mix[:, 1]) * t_max,
            np.sum(sign * airframe.moment_constant_m * mix[:, 2]) * t_max,
        ]
    )


class Cascade:
    """Controller state for n vehicles and the update that turns setpoints into motor thrust fractions."""

    def __init__(self, n: int, params: ControllerParams, airframe: Airframe, dt_s: float) -> None:
        self.n = n
        self.params = params
        self.dt_s = dt_s
        p = params
        self.thr_hover = airframe.hover_thrust_frac if p.thr_hover is None else p.thr_hover
        self.mix = mixer_matrix(airframe)
        self._mix_yaw = self.mix[:, 2].copy()
        self._pos_p = np.array([p.xy_pos_p_1_s, p.xy_pos_p_1_s, p.z_pos_p_1_s])
        self._vel_p = np.array([p.xy_vel_p_1_s, p.xy_vel_p_1_s, p.z_vel_p_1_s])
        self._vel_i = np.array([p.xy_vel_i_1_s2, p.xy_vel_i_1_s2, p.z_vel_i_1_s2])
        self._vel_d = np.array([p.xy_vel_d, p.xy_vel_d, p.z_vel_d])
        self._att_p = np.array([p.roll_p_1_s, p.pitch_p_1_s, p.yaw_p_1_s])
        self._rate_max = np.array([p.roll_rate_max_rad_s, p.pitch_rate_max_rad_s, p.yaw_rate_max_rad_s])
        pids = np.array([p.rollrate_pid, p.pitchrate_pid, p.yawrate_pid])
        self._rate_p, self._rate_i, self._rate_d = pids[:, 0].copy(), pids[:, 1].copy(), pids[:, 2].copy()
        self._rate_int_lim = np.asarray(p.rate_int_lim, dtype=np.float64)
        self._tilt_cos = float(np.cos(p.tilt_max_rad))
        self._tilt_sin = float(np.sin(p.tilt_max_rad))
        self._arw_gain = 2.0 / p.xy_vel_p_1_s
        # Controller memory, [n, ...].
        self._zeros = np.zeros(n)
        self.vel_int = np.zeros((n, 3))
        self.rate_int = np.zeros((n, 3))
        self.yaw_sp_rad = np.zeros(n)
        # Last stage outputs, kept for telemetry and tests.
        self.vel_sp_ned_m_s = np.zeros((n, 3))
        self.acc_sp_ned_m_s2 = np.zeros((n, 3))
        self.q_sp_wxyz = np.zeros((n, 4))
        self.q_sp_wxyz[:, 0] = 1.0
        self.rate_sp_frd_rad_s = np.zeros((n, 3))
        self.thrust_frac = np.zeros(n)
        self.torque_norm = np.zeros((n, 3))

    def reset(self, mask: BoolArr, yaw_rad: F64) -> None:
        """Clear integrators and hold the given heading for the masked vehicles."""
        self.vel_int[mask] = 0.0
        self.rate_int[mask] = 0.0
        self.yaw_sp_rad[mask] = yaw_rad[mask]

    def update(
        self,
        kind: NDArray[np.int64],
        uniform_kind: int | None,
        sp: F64,
        pos: F64,
        vel: F64,
        acc: F64,
        q: F64,
        rates: F64,
        ang_acc: F64,
        on_ground: BoolArr,
    ) -> F64:
        """One controller tick; returns motor thrust fractions [n, 4] in [0, 1].

        ``sp`` is [n, 5] as documented on ``Sim.set_setpoint``; ``uniform_kind`` is the kind all
        vehicles share (lets stages that no vehicle needs be skipped), or None when mixed.
        """
        p = self.params
        dt = self.dt_s
        lowest = uniform_kind if uniform_kind is not None else int(kind.min())

        # Yaw setpoint: absolute in POSITION, integrated from the yaw rate in VELOCITY/ACCELERATION.
        # Fast paths when every vehicle flies the same kind skip the per-vehicle selections.
        uniform = uniform_kind is not None
        any_ground = bool(on_ground.any())
        if uniform_kind in (_VELOCITY, _ACCELERATION):
            yaw_rate_ff = sp[:, 3]
        elif uniform:
            yaw_rate_ff = self._zeros
        else:
            yaw_rate_ff = np.where((kind == _VELOCITY) | (kind == _ACCELERATION), sp[:, 3], 0.0)
        if lowest <= _ACCELERATION:
            if uniform_kind == _POSITION:
                self.yaw_sp_rad = np.where(np.isfinite(sp[:, 3]), sp[:, 3], self.yaw_sp_rad)
            elif uniform:
                self.yaw_sp_rad = self.yaw_sp_rad + yaw_rate_ff * dt
            else:
                yaw_abs = np.where(np.isfinite(sp[:, 3]), sp[:, 3], self.yaw_sp_rad)
                self.yaw_sp_rad = np.where(kind == _POSITION, yaw_abs, self.yaw_sp_rad + yaw_rate_ff * dt)

            # Position P → velocity setpoint, limited like PX4 (horizontal norm, vertical up/down).
            if lowest == _POSITION:
                vel_sp = (sp[:, :3] - pos) * self._pos_p
                if not uniform:
                    vel_sp = np.where((kind == _POSITION)[:, None], vel_sp, sp[:, :3])
            else:
                vel_sp = sp[:, :3].copy()
            vxy = np.sqrt(vel_sp[:, 0] ** 2 + vel_sp[:, 1] ** 2)
            scale = np.minimum(1.0, p.xy_vel_max_m_s / np.maximum(vxy, 1e-9))
            vel_sp[:, 0] *= scale
            vel_sp[:, 1] *= scale
            np.clip(vel_sp[:, 2], -p.z_vel_max_up_m_s, p.z_vel_max_dn_m_s, out=vel_sp[:, 2])
            self.vel_sp_ned_m_s = vel_sp

            # Velocity PID → acceleration setpoint (D on the measured acceleration, as PX4).
            vel_err = vel_sp - vel
            # The acceleration limits bound the demand (P and D), not the integral: the integrator
            # must still be able to carry a payload, a weak motor or a steady wind.
            demand = vel_err * self._vel_p - acc * self._vel_d
            axy = np.sqrt(demand[:, 0] ** 2 + demand[:, 1] ** 2)
            ascale = np.minimum(1.0, p.acc_hor_max_m_s2 / np.maximum(axy, 1e-9))
            demand[:, 0] *= ascale
            demand[:, 1] *= ascale
            np.clip(demand[:, 2], -p.acc_up_max_m_s2, p.acc_down_max_m_s2, out=demand[:, 2])
            acc_pid = demand + self.vel_int
            vel_active = ((kind == _POSITION) | (kind == _VELOCITY))[:, None]
            if uniform_kind == _ACCELERATION:
                acc_sp = sp[:, :3].copy()
            elif not uniform:
                acc_sp = np.where(vel_active, acc_pid, sp[:, :3])
            else:
                acc_sp = acc_pid
            acc_lim = acc_sp
            self.acc_sp_ned_m_s2 = acc_lim

            # Acceleration → thrust vector (PX4 _accelerationControl), tilt-limited.
            thr_sp = self._acceleration_to_thrust(acc_lim)

            # Integrator with PX4's anti-windup: vertical freeze at thrust limits, horizontal tracking.
            ez = vel_err[:, 2]
            sat_z = ((thr_sp[:, 2] >= -p.thr_min) & (ez >= 0.0)) | (
                (thr_sp[:, 2] <= -p.thr_max) & (ez <= 0.0)
            )
            vel_err[:, 2] = np.where(sat_z, 0.0, ez)
            g_over_h = G_M_S2 / self.thr_hover
            prod_x = thr_sp[:, 0] * g_over_h
            prod_y = thr_sp[:, 1] * g_over_h
            use_sp = prod_x**2 + prod_y**2 > acc_sp[:, 0] ** 2 + acc_sp[:, 1] ** 2
            vel_err[:, 0] -= self._arw_gain * np.where(use_sp, 0.0, acc_sp[:, 0] - prod_x)
            vel_err[:, 1] -= self._arw_gain * np.where(use_sp, 0.0, acc_sp[:, 1] - prod_y)
            # Landed: PX4 keeps the horizontal integrator at zero until airborne.
            if uniform_kind in (_POSITION, _VELOCITY):
                self.vel_int += vel_err * self._vel_i * dt
            elif not uniform:
                self.vel_int = np.where(vel_active, self.vel_int + vel_err * self._vel_i * dt, self.vel_int)
            if any_ground:
                # Landed: PX4 keeps the horizontal integrator at zero until airborne.
                self.vel_int[:, 0] = np.where(on_ground, 0.0, self.vel_int[:, 0])
                self.vel_int[:, 1] = np.where(on_ground, 0.0, self.vel_int[:, 1])

            thrust = np.sqrt(thr_sp[:, 0] ** 2 + thr_sp[:, 1] ** 2 + thr_sp[:, 2] ** 2)
            q_sp = _thrust_yaw_to_quat(thr_sp, thrust, self.yaw_sp_rad)
        else:
            thrust = np.zeros(self.n)
            q_sp = np.zeros((self.n, 4))

        if lowest <= _ATTITUDE:
            if uniform_kind is None or uniform_kind == _ATTITUDE:
                att = (kind == _ATTITUDE)[:, None]
                with np.errstate(divide="ignore", invalid="ignore"):  # rows of other kinds: discarded
                    qn = sp[:, :4] / np.sqrt(np.sum(sp[:, :4] ** 2, axis=1, keepdims=True))
                q_sp = np.where(att, qn, q_sp)
                thrust = np.where(att[:, 0], sp[:, 4], thrust)
            self.q_sp_wxyz = q_sp
            # Attitude P on the quaternion error (PX4 AttitudeControl), with yaw-rate feedforward.
            qe = _quat_mul_conj_left(q, q_sp)  # q⁻¹ ⊗ q_sp
            sgn = np.where(qe[:, 0] >= 0.0, 2.0, -2.0)[:, None]
            rate_sp = qe[:, 1:] * sgn * self._att_p
            # World z expressed in body axes, times the world yaw rate (PX4 adds q⁻¹·e_z·ψ̇).
            w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
            rate_sp[:, 0] += 2.0 * (x * z - w * y) * yaw_rate_ff
            rate_sp[:, 1] += 2.0 * (y * z + w * x) * yaw_rate_ff
            rate_sp[:, 2] += (w * w - x * x - y * y + z * z) * yaw_rate_ff
            np.clip(rate_sp, -self._rate_max, self._rate_max, out=rate_sp)
            if uniform_kind is None:
                rates_kind = (kind == _RATES)[:, None]
                rate_sp = np.where(rates_kind, sp[:, :3], rate_sp)
                thrust = np.where(rates_kind[:, 0], sp[:, 3], thrust)
        else:
            rate_sp = sp[:, :3].copy()
            thrust = sp[:, 3].copy()
        self.rate_sp_frd_rad_s = rate_sp
        self.thrust_frac = thrust

        # Rate PID (PX4 RateControl): D on the measured angular acceleration, I clamped.
        rate_err = rate_sp - rates
        torque = rate_err * self._rate_p + self.rate_int - ang_acc * self._rate_d
        # PX4 shrinks integration for large errors (i_factor) and stops it while landed.
        i_factor = np.maximum(0.0, 1.0 - (rate_err * (1.0 / np.deg2rad(400.0))) ** 2)
        new_int = self.rate_int + i_factor * self._rate_i * rate_err * dt
        np.clip(new_int, -self._rate_int_lim, self._rate_int_lim, out=new_int)
        self.rate_int = np.where(on_ground[:, None], 0.0, new_int) if any_ground else new_int
        np.clip(torque, -1.0, 1.0, out=torque)
        self.torque_norm = torque
        return self._mix(thrust, torque)

    def _acceleration_to_thrust(self, acc_sp: F64) -> F64:
        """PX4 ``_accelerationControl``: body z from the acceleration, tilt limit, collective thrust."""
        p = self.params
        bx = -acc_sp[:, 0]
        by = -acc_sp[:, 1]
        norm = np.sqrt(bx * bx + by * by + G_M_S2 * G_M_S2)
        bx = bx / norm
        by = by / norm
        bz = G_M_S2 / norm
        # Tilt limit: rotate body z towards vertical until its angle is at most tilt_max.
        hor = np.sqrt(bx * bx + by * by)
        over = bz < self._tilt_cos
        k = np.where(over, self._tilt_sin / np.maximum(hor, 1e-12), 1.0)
        bx = bx * k
        by = by * k
        bz = np.where(over, self._tilt_cos, bz)
        h = self.thr_hover
        collective = (acc_sp[:, 2] * (h / G_M_S2) - h) / bz
        collective = np.minimum(collective, -p.thr_min)
        thr = np.stack([bx * collective, by * collective, bz * collective], axis=1)
        # Saturation: vertical first, then what is left for the horizontal (PX4 keeps a margin; we do not).
        np.clip(thr[:, 2], -p.thr_max, -p.thr_min, out=thr[:, 2])
        xy_max = np.sqrt(np.maximum(p.thr_max**2 - thr[:, 2] ** 2, 0.0))
        xy = np.sqrt(thr[:, 0] ** 2 + thr[:, 1] ** 2)
        s = np.minimum(1.0, xy_max / np.maximum(xy, 1e-12))
        thr[:, 0] *= s
        thr[:, 1] *= s
        return thr

    def _mix(self, thrust: F64, torque: F64) -> F64:
        """Normalised torque and collective thrust → motor thrust fractions, with PX4-like desaturation.

        Roll/pitch keep priority over collective thrust (thrust is shifted to make room, roll and
        pitch are scaled down only if their spread alone exceeds the range); yaw gets what is left.
        """
        mix = self.mix
        rp = torque[:, 0:1] * mix[:, 0] + torque[:, 1:2] * mix[:, 1]  # [n, 4]
        hi = _max4(rp)
        lo = _min4(rp)
        spread = hi - lo
        shrink = np.where(spread > 1.0, 1.0 / np.maximum(spread, 1e-12), 1.0)
        rp *= shrink[:, None]
        hi = hi * shrink
        lo = lo * shrink
        t = np.clip(thrust, 0.0, 1.0)
        t = np.minimum(np.maximum(t, -lo), 1.0 - hi)
        u = rp + t[:, None]
        # Yaw: largest |τz| of the requested sign that keeps every motor inside [0, 1].
        s = self._mix_yaw
        pos = s > 0.0
        room_up = np.where(pos, (1.0 - u) / np.where(pos, s, 1.0), u / np.where(pos, 1.0, -s))
        room_dn = np.where(pos, u / np.where(pos, s, 1.0), (1.0 - u) / np.where(pos, 1.0, -s))
        tz = np.clip(torque[:, 2], -_min4(room_dn), _min4(room_up))
        u = u + tz[:, None] * s
        return np.clip(u, 0.0, 1.0)


def _min4(a: F64) -> F64:
    """``a.min(axis=1)`` of [n, 4] (the same values): numpy reduces a short last axis ~30× slower
    than three elementwise minimums at n = 4096."""
    return np.minimum(np.minimum(a[:, 0], a[:, 1]), np.minimum(a[:, 2], a[:, 3]))


def _max4(a: F64) -> F64:
    """``a.max(axis=1)`` of [n, 4], as :func:`_min4`."""
    return np.maximum(np.maximum(a[:, 0], a[:, 1]), np.maximum(a[:, 2], a[:, 3]))


def _quat_mul_conj_left(a: F64, b: F64) -> F64:
    """a⁻¹ ⊗ b for unit quaternions [n, 4]."""
    aw, ax, ay, az = a[:, 0], -a[:, 1], -a[:, 2], -a[:, 3]
    bw, bx, by, bz = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=1,
    )


def _thrust_yaw_to_quat(thr: F64, thrust: F64, yaw: F64) -> F64:
    """Attitude whose body z is along −thr, with heading yaw: q_tilt(world) ⊗ q_yaw.

    PX4 differs slightly: its ``bodyzToAttitude`` keeps body x orthogonal to the heading's y axis,
    where we take the shortest tilt from level; both have the same body z and agree on heading
    when level. This form has no branches and is smooth for any tilt below 180°.
    """
    inv = 1.0 / np.maximum(thrust, 1e-12)
    # Body z in world: -thr/|thr|; level when there is no thrust.
    zx = np.where(thrust > 1e-12, -thr[:, 0] * inv, 0.0)
    zy = np.where(thrust > 1e-12, -thr[:, 1] * inv, 0.0)
    zz = np.where(thrust > 1e-12, -thr[:, 2] * inv, 1.0)
    # Shortest arc from e_z = (0, 0, 1) to (zx, zy, zz): (1 + zz, -zy, zx, 0), normalised.
    tw = 1.0 + zz
    tn = np.sqrt(tw * tw + zy * zy + zx * zx)
    tw = tw / tn
    tx = -zy / tn
    ty = zx / tn
    c = np.cos(0.5 * yaw)
    s = np.sin(0.5 * yaw)
    # (tw, tx, ty, 0) ⊗ (c, 0, 0, s)
    return np.stack([tw * c, tx * c + ty * s, ty * c - tx * s, tw * s], axis=1)


@dataclass(slots=True)
class VelocityShaper:
    """Jerk- and acceleration-limited tracking of a velocity target (ArduPilot's input shaping),
    which the emulated ArduCopter's GUIDED velocity control flies (sitl.autopilot)."""

    accel_max_m_s2: float
    jerk_max_m_s3: float
    vel_m_s: F64 = field(default_factory=lambda: np.zeros(3))
    acc_m_s2: F64 = field(default_factory=lambda: np.zeros(3))

    def reset(self, vel_m_s: F64) -> None:
        """Start from the vehicle's velocity with no acceleration."""
        self.vel_m_s = np.array(vel_m_s, dtype=np.float64)
        self.acc_m_s2 = np.zeros(3)

    def update(self, target_m_s: F64, dt_s: float) -> F64:
        """One step of ``dt_s`` towards ``target_m_s``; returns the shaped velocity."""
        err = target_m_s - self.vel_m_s
        # sqrt controller: the largest acceleration from which the jerk limit still stops at the
        # target without overshoot; the braking profile of AC_PosControl has the same shape.
        acc_des = np.sign(err) * np.minimum(
            self.accel_max_m_s2, np.sqrt(2.0 * self.jerk_max_m_s3 * np.abs(err))
        )
        step = self.jerk_max_m_s3 * dt_s
        self.acc_m_s2 = self.acc_m_s2 + np.clip(acc_des - self.acc_m_s2, -step, step)
        self.vel_m_s = self.vel_m_s + self.acc_m_s2 * dt_s
        # snap to the target once within one jerk step so that a zero target is exactly zero
        close = np.abs(target_m_s - self.vel_m_s) < step * dt_s
        self.vel_m_s = np.where(close, target_m_s, self.vel_m_s)
        self.acc_m_s2 = np.where(close, 0.0, self.acc_m_s2)
        return self.vel_m_s
