"""The shield's nominal model of the autopilot's velocity loop, and of what it does when we go silent.

Velocity loop (per tick, command ``u`` held)::

    horizontal:  v̇_h = sat_{a_xy}((u_h − v_h) / τ_xy)     (vector saturation: |v̇_h| ≤ a_xy)
    vertical:    v̇_d = clip((u_d − v_d) / τ_z, ±a_z)

With vector saturation the velocity error keeps its direction and its magnitude E obeys
Ė = −min(E/τ, a): a linear decrease down to E = a·τ, then an exponential tail. That has a
closed form (:func:`lag_error`), so :meth:`NominalModel.step` and :meth:`NominalModel.predict`
are exact for the model, not integrated.

Silence (the companion stops sending): the autopilot keeps tracking the last setpoint for
``SilenceBehavior.hold_last_s + brake_delay_s`` and then stops: horizontally by decelerating
along its velocity at ``brake_decel_m_s2`` (norm), vertically at ``brake_decel_z_m_s2``.

Default τ and a: the simulated PX4 loop's figures were not yet documented when this was written
(docs/sitl.md), so the defaults are PX4-like: τ = 0.4 s, a_xy = 3 m/s² (MPC_ACC_HOR), a_z = 3 m/s².
The calibrator's margin q_t absorbs the difference between this model and the vehicle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge_agent.errors import ConfigError
from edge_agent.mission import FAILSAFE_DELAY_S, SILENCE_DEFAULTS, Mission, VehicleSpec

F64 = NDArray[np.float64]

#: The autopilot parameter that holds the offboard-loss timeout, per flavour.
SILENCE_PARAM = {"px4": "COM_OF_LOSS_T", "ardupilot": "GUID_TIMEOUT"}


def lag_error(e0: F64, accel: F64 | float, tau: F64 | float, t: F64 | float) -> tuple[F64, F64]:
    """Error magnitude after time t and its integral over [0, t], for Ė = −min(E/τ, a), E(0) = e0.

    All arguments broadcast. Returns (E(t), ∫₀ᵗ E). Branch-free so it vectorises.
    """
    t_lin = np.maximum(e0 - accel * tau, 0.0) / accel  # time spent saturated
    tl = np.minimum(t, t_lin)
    e1 = e0 - accel * tl
    decay = np.exp(-(t - tl) / tau)
    return e1 * decay, 0.5 * (e0 + e1) * tl + e1 * tau * (1.0 - decay)


def lag_error_one(e0: float, accel: float, tau: float, t: float) -> tuple[float, float]:
    """:func:`lag_error` for one error magnitude, in Python floats (the batch-1 onboard path)."""
    tl = min(t, max(e0 - accel * tau, 0.0) / accel)
    e1 = e0 - accel * tl
    decay = math.exp(-(t - tl) / tau)
    return e1 * decay, 0.5 * (e0 + e1) * tl + e1 * tau * (1.0 - decay)


@dataclass(frozen=True, slots=True)
class NominalModel:
    """First-order, acceleration-limited velocity loop (see the module docstring)."""

    # Defaults from the velocity loop measured in the built-in SITL (docs/sitl.md: τ_xy 0.55 s,
    # τ_z 0.30 s, a_max 5 / 4 / 3 m/s²): τ as measured or slower, accelerations at the slowest
    # axis, so the model never stops sooner than the loop it stands for. The loop's 0.1 s dead
    # time is ShieldConfig.latency_s. A real airframe gets its own fit (docs/shield.md).
    tau_xy_s: float = 0.55
    tau_z_s: float = 0.4
    accel_xy_m_s2: float = 3.0
    accel_z_m_s2: float = 3.0

    def __post_init__(self) -> None:
        for name in ("tau_xy_s", "tau_z_s", "accel_xy_m_s2", "accel_z_m_s2"):
            value = getattr(self, name)
            if not (value > 0 and np.isfinite(value)):
                raise ConfigError(f"NominalModel.{name} must be a finite number > 0, got {value!r}")

    def _advance(self, pos: F64, vel: F64, cmd: F64, t: float) -> tuple[F64, F64]:
        err = cmd - vel  # [B, 3]
        e_h = np.sqrt(err[:, 0] ** 2 + err[:, 1] ** 2)
        e_z = np.abs(err[:, 2])
        eh_t, ih = lag_error(e_h, self.accel_xy_m_s2, self.tau_xy_s, t)
        ez_t, iz = lag_error(e_z, self.accel_z_m_s2, self.tau_z_s, t)
        safe_h = np.where(e_h > 0, e_h, 1.0)
        safe_z = np.where(e_z > 0, e_z, 1.0)
        g = np.stack([eh_t / safe_h, eh_t / safe_h, ez_t / safe_z], axis=-1)
        big_g = np.stack([ih / safe_h, ih / safe_h, iz / safe_z], axis=-1)
        return pos + cmd * t - err * big_g, cmd - err * g

    @classmethod
    def for_vehicle(cls, vehicle: VehicleSpec) -> NominalModel:
        """The model for a mission's [vehicle] constants; the defaults where none are given."""
        given = {
            "tau_xy_s": vehicle.velocity_tau_xy_s,
            "tau_z_s": vehicle.velocity_tau_z_s,
            "accel_xy_m_s2": vehicle.accel_m_s2,
            "accel_z_m_s2": vehicle.accel_m_s2,
        }
        return cls(**{k: x for k, x in given.items() if x is not None})

    def step(self, pos_ned_m: F64, vel_ned_m_s: F64, vel_cmd_ned_m_s: F64, dt_s: float) -> tuple[F64, F64]:
        """Advance [B, 3] position and velocity by dt_s with the command held; exact for the model."""
        return self._advance(pos_ned_m, vel_ned_m_s, vel_cmd_ned_m_s, dt_s)

    def predict(self, pos_ned_m: F64, vel_ned_m_s: F64, vel_cmd_ned_m_s: F64, horizon_s: float) -> F64:
        """Position [B, 3] after horizon_s with the command held (closed form)."""
        return self._advance(pos_ned_m, vel_ned_m_s, vel_cmd_ned_m_s, horizon_s)[0]


@dataclass(frozen=True, slots=True)
class SilenceBehavior:
    """What the autopilot does if the companion falls silent right after a setpoint."""

    hold_last_s: float
    """Seconds it keeps tracking the last setpoint (PX4 COM_OF_LOSS_T, ArduPilot GUID_TIMEOUT)."""
    brake_decel_m_s2: float
    """Horizontal deceleration (norm) of its own stop afterwards."""
    brake_decel_z_m_s2: float = 1.0
    """Vertical deceleration of that stop."""
    brake_delay_s: float = 0.0
    """Extra time before the stop bites (mode switch, jerk limit): the last setpoint still flies."""
    flavour: str = "px4"

    def __post_init__(self) -> None:
        if not (self.hold_last_s >= 0 and np.isfinite(self.hold_last_s)):
            raise ConfigError(
                f"SilenceBehavior.hold_last_s must be finite and >= 0, got {self.hold_last_s!r}"
            )
        if not (self.brake_delay_s >= 0 and np.isfinite(self.brake_delay_s)):
            raise ConfigError(
                f"SilenceBehavior.brake_delay_s must be finite and >= 0, got {self.brake_delay_s!r}"
            )
        for name in ("brake_decel_m_s2", "brake_decel_z_m_s2"):
            value = getattr(self, name)
            if not (value > 0 and np.isfinite(value)):
                raise ConfigError(f"SilenceBehavior.{name} must be a finite number > 0, got {value!r}")

    @property
    def total_hold_s(self) -> float:
        """Time the last setpoint keeps flying: hold plus brake delay."""
        return self.hold_last_s + self.brake_delay_s

    @classmethod
    def for_autopilot(
        cls, mission: Mission, params: Mapping[str, float] | None = None, brake_delay_s: float | None = None
    ) -> SilenceBehavior:
        """From the autopilot's own parameter when it answered (``VehicleState.params``), else the mission.

        The timeout parameter is COM_OF_LOSS_T (PX4) or GUID_TIMEOUT (ArduPilot); a value that is
        missing, non-finite or negative falls back to the mission's ``silence_hold_s``. The brake
        starts ``brake_delay_s`` after it, by default the delay measured on that firmware
        (``edge_agent.mission.FAILSAFE_DELAY_S``).
        """
        ap = mission.autopilot
        hold = ap.silence_hold_s
        value = (params or {}).get(SILENCE_PARAM[ap.flavour])
        if value is not None and np.isfinite(value) and value >= 0:
            hold = float(value)
        return cls(
            hold_last_s=hold,
            brake_decel_m_s2=ap.brake_decel_m_s2,
            brake_decel_z_m_s2=ap.brake_decel_m_s2,
            brake_delay_s=FAILSAFE_DELAY_S[ap.flavour] if brake_delay_s is None else brake_delay_s,
            flavour=ap.flavour,
        )

    @classmethod
    def default(cls, flavour: str) -> SilenceBehavior:
        """The documented defaults of a flavour (no delay): PX4 1.0 s / 2.0 m/s², ArduPilot 3.0 s / 1.0 m/s²."""
        hold, brake = SILENCE_DEFAULTS[flavour]
        return cls(hold, brake, brake, 0.0, flavour)


class ShadowPredictions:
    """The calibrator's score: the nominal model flown through the commands actually sent.

    Every tick starts a shadow of the model from the state then; between ticks every shadow flies
    the time that really passed (clipped to [0, 1] s) with the command sent at the earlier tick. The
    shadow started H ticks ago has flown the H commands sent since, so its position is the model's
    prediction for now, and its distance to the position now is the score. A policy that changes
    its command within the horizon, or a loop that cannot hold its rate, is not mistaken for model
    error. One implementation, used by the onboard tick and by calibration from flight logs.

    The ring of H·n shadows is kept component-major, [3, H·n] (shadow j of ring slot i at column
    i·n + j), and advanced in place with preallocated buffers: :meth:`NominalModel.step`'s
    arithmetic, op for op, without its temporaries. When no shadow's velocity error exceeds the
    saturation bound (horizontal ‖e‖ ≤ a_xy·τ_xy, vertical |e| ≤ a_z·τ_z) the saturated phase
    of :func:`lag_error` is empty for every shadow and the step is the plain first-order lag,
    ``v' = u − e·exp(−t/τ)``, ``p' = p + u·t − e·τ(1 − exp(−t/τ))`` (e = u − v): the same
    numbers up to rounding, in a third of the operations. :meth:`tick_one` is the onboard batch
    of one with Python floats in and out.
    """

    def __init__(self, model: NominalModel, horizon_ticks: int, n: int = 1) -> None:
        self.model = model
        self.h, self.n = horizon_ticks, n
        m = horizon_ticks * n
        self._pos = np.zeros((3, m))  # [3, H·n]: the ring, component-major
        self._vel = np.zeros((3, m))
        self._ok = np.zeros((horizon_ticks, n), dtype=bool)
        self._ok_flat = self._ok.reshape(m)  # a view
        self._cmd_ring = np.zeros((3, m))  # the command being flown, repeated for every slot
        self._cmd_view = self._cmd_ring.reshape(3, horizon_ticks, n)
        self._cmd_rows = (self._cmd_ring[0], self._cmd_ring[1], self._cmd_ring[2])
        self._last_s: float | None = None
        self._tick = 0
        #: Take the unsaturated step when it is exact (tests switch it off to compare).
        self._linear = True
        self._thr_h2 = (model.accel_xy_m_s2 * model.tau_xy_s) ** 2
        self._thr_z2 = (model.accel_z_m_s2 * model.tau_z_s) ** 2
        # Work buffers and views of them, allocated once (the tick is overhead-bound at n = 1).
        self._e = np.empty((3, m))
        self._w = np.empty((3, m))
        self._eh = np.empty(m)
        self._w_rows = (self._w[0], self._w[1], self._w[2])
        self._views = (self._e[:2], self._e[2], self._w[:2])
        self._r = [np.empty(m) for _ in range(6)]
        self._mask = np.empty(m, dtype=bool)
        # 0-d operands: numpy takes them as fast as arrays, unlike Python floats.
        self._dt = np.zeros(())
        self._k_h, self._k_z = np.zeros(()), np.zeros(())
        self._d_h, self._d_z = np.zeros(()), np.zeros(())
        self._zero, self._half, self._one = np.array(0.0), np.array(0.5), np.array(1.0)
        a_xy, t_xy, a_z, t_z = model.accel_xy_m_s2, model.tau_xy_s, model.accel_z_m_s2, model.tau_z_s
        self._consts_h = (np.array(a_xy * t_xy), np.array(a_xy), np.array(t_xy))
        self._consts_z = (np.array(a_z * t_z), np.array(a_z), np.array(t_z))

    def reset(self, mask: NDArray[np.bool_] | None = None) -> None:
        """Forget the shadows of the masked vehicles (all when None): no score for H ticks."""
        self._ok[:, slice(None) if mask is None else mask] = False

    def _set_cmd(self, cmd: F64) -> None:
        """The command [n, 3] flown from the next tick on."""
        self._cmd_view[...] = np.asarray(cmd, dtype=np.float64).T[:, None, :]

    def _advance(self, dt: float) -> None:
        """Every shadow flies dt with the held command: exact for the model (NominalModel.step)."""
        pos, vel, cmd, e, w, eh = self._pos, self._vel, self._cmd_ring, self._e, self._w, self._eh
        w0, w1, w2 = self._w_rows
        e_xy, e_z, w_xy = self._views
        np.subtract(cmd, vel, out=e)  # err = cmd − vel
        np.multiply(e, e, out=w)
        np.add(w0, w1, out=eh)  # squared horizontal error
        if self._linear and eh.max() <= self._thr_h2 and w2.max() <= self._thr_z2:
            # No shadow saturates (NaN compares False, so non-finite shadows take the general
            # path): lag_error with t_lin = 0 is E·exp(−t/τ) and E·τ(1 − exp(−t/τ)).
            m = self.model
            d_h = math.exp(-dt / m.tau_xy_s)
            d_z = math.exp(-dt / m.tau_z_s)
            self._dt[()] = dt
            self._k_h[()] = m.tau_xy_s * (1.0 - d_h)
            self._k_z[()] = m.tau_z_s * (1.0 - d_z)
            self._d_h[()] = d_h
            self._d_z[()] = d_z
            np.multiply(cmd, self._dt, out=w)
            np.add(pos, w, out=pos)  # pos + cmd·t
            np.multiply(e_xy, self._k_h, out=w_xy)
            np.multiply(e_z, self._k_z, out=w2)
            np.subtract(pos, w, out=pos)  # − err·G
            np.multiply(e_xy, self._d_h, out=w_xy)
            np.multiply(e_z, self._d_z, out=w2)
            np.subtract(cmd, w, out=vel)  # cmd − err·g
            return
        self._advance_general(dt)

    def _lag(self, e0: F64, consts: tuple[F64, F64, F64], out_e: F64, out_i: F64) -> None:
        """:func:`lag_error` into buffers, op for op, for t = self._dt and (a·τ, a, τ) = consts;
        then out_e and out_i divided by e0 (g and G of NominalModel._advance: 0 and NaN by 1)."""
        a_tau, accel, tau = consts
        t, zero, half, one = self._dt, self._zero, self._half, self._one
        t_lin, tl, e1, dec, tmp, _ = self._r
        np.subtract(e0, a_tau, out=t_lin)
        np.maximum(t_lin, zero, out=t_lin)
        np.divide(t_lin, accel, out=t_lin)
        np.minimum(t, t_lin, out=tl)
        np.multiply(accel, tl, out=e1)
        np.subtract(e0, e1, out=e1)
        np.subtract(t, tl, out=dec)
        np.negative(dec, out=dec)
        np.divide(dec, tau, out=dec)
        np.exp(dec, out=dec)
        np.multiply(e1, dec, out=out_e)  # E(t)
        np.add(e0, e1, out=tmp)
        np.multiply(half, tmp, out=tmp)
        np.multiply(tmp, tl, out=tmp)
        np.multiply(e1, tau, out=e1)
        np.subtract(one, dec, out=dec)
        np.multiply(e1, dec, out=e1)
        np.add(tmp, e1, out=out_i)  # ∫ E
        safe, mask = tmp, self._mask
        np.greater(e0, zero, out=mask)
        np.copyto(safe, e0)
        np.logical_not(mask, out=mask)
        np.copyto(safe, one, where=mask)
        np.divide(out_e, safe, out=out_e)
        np.divide(out_i, safe, out=out_i)

    def _advance_general(self, dt: float) -> None:
        pos, vel, cmd, e, w = self._pos, self._vel, self._cmd_ring, self._e, self._w
        e_h, e_z, tmp, t = self._eh, self._r[5], self._r[4], self._dt
        t[()] = dt
        np.sqrt(e_h, out=e_h)  # it held the squared norm
        np.abs(e[2], out=e_z)
        g_h, big_h = w[0], w[1]  # the squares in w are no longer needed
        self._lag(e_h, self._consts_h, g_h, big_h)
        g_z, big_z = e_h, w[2]  # nor is e_h now
        self._lag(e_z, self._consts_z, g_z, big_z)
        for c, big in ((0, big_h), (1, big_h), (2, big_z)):  # pos + cmd·t − err·G
            np.multiply(cmd[c], t, out=tmp)
            np.add(pos[c], tmp, out=pos[c])
            np.multiply(e[c], big, out=tmp)
            np.subtract(pos[c], tmp, out=pos[c])
        for c, g in ((0, g_h), (1, g_h), (2, g_z)):  # cmd − err·g
            np.multiply(e[c], g, out=tmp)
            np.subtract(cmd[c], tmp, out=vel[c])

    def tick(
        self, now_s: float, pos_ned_m: F64, vel_ned_m_s: F64, valid: NDArray[np.bool_], cmd_ned_m_s: F64
    ) -> tuple[F64, NDArray[np.bool_]]:
        """Score now ([B] metres, and which scores count), then start a shadow from this state;
        ``cmd_ned_m_s`` [B, 3] is the velocity command sent this tick (flown from the next tick)."""
        h, n = self.h, self.n
        if self._last_s is not None:
            self._advance(min(max(now_s - self._last_s, 0.0), 1.0))
        i = self._tick % h
        cols = slice(i * n, (i + 1) * n)
        d = pos_ned_m - self._pos[:, cols].T
        score = np.sqrt(np.einsum("ij,ij->i", d, d))
        counts = valid & self._ok[i]
        self._pos[:, cols] = np.asarray(pos_ned_m, dtype=np.float64).T
        self._vel[:, cols] = np.asarray(vel_ned_m_s, dtype=np.float64).T
        self._ok[i] = valid
        self._set_cmd(cmd_ned_m_s)
        self._last_s = now_s
        self._tick += 1
        return score, counts

    def tick_one(
        self,
        now_s: float,
        pos_ned_m: Sequence[float],
        vel_ned_m_s: Sequence[float],
        valid: bool,
        cmd_ned_m_s: Sequence[float],
    ) -> tuple[float, bool]:
        """:meth:`tick` for a batch of one (the onboard loop), in Python floats: (score, counts)."""
        if self.n != 1:
            raise ConfigError(f"ShadowPredictions.tick_one needs n = 1, this ring holds n = {self.n}")
        if self._last_s is not None:
            self._advance(min(max(now_s - self._last_s, 0.0), 1.0))
        i = self._tick % self.h
        pos = self._pos
        a, b, c = pos[:, i].tolist()
        x, y, z = pos_ned_m
        score = math.sqrt((x - a) * (x - a) + (y - b) * (y - b) + (z - c) * (z - c))
        counts = valid and bool(self._ok_flat[i])
        pos[:, i] = pos_ned_m
        self._vel[:, i] = vel_ned_m_s
        self._ok_flat[i] = valid
        c0, c1, c2 = self._cmd_rows
        u0, u1, u2 = cmd_ned_m_s
        c0.fill(u0)
        c1.fill(u1)
        c2.fill(u2)
        self._last_s = now_s
        self._tick += 1
        return score, counts


def silence_trajectory(
    model: NominalModel,
    silence: SilenceBehavior,
    pos_ned_m: F64,
    vel_ned_m_s: F64,
    vel_cmd_ned_m_s: F64,
    dt_s: float = 0.01,
) -> F64:
    """Positions [T, B, 3] if the companion dies right after sending the command: the model
    tracks the command for ``silence.total_hold_s``, then brakes to a stop (until all stopped)."""
    pos = np.array(pos_ned_m, dtype=np.float64)
    vel = np.array(vel_ned_m_s, dtype=np.float64)
    cmd = np.asarray(vel_cmd_ned_m_s, dtype=np.float64)
    out = [pos.copy()]
    n_hold = int(np.ceil(silence.total_hold_s / dt_s))
    for i in range(n_hold):
        h = min(dt_s, silence.total_hold_s - i * dt_s)
        pos, vel = model.step(pos, vel, cmd, h)
        out.append(pos.copy())
    # Constant-deceleration stop: horizontal along the velocity vector, vertical on its own.
    while True:
        sh = np.sqrt(vel[:, 0] ** 2 + vel[:, 1] ** 2)
        sz = np.abs(vel[:, 2])
        if not ((sh > 0).any() or (sz > 0).any()):
            break
        th = np.minimum(dt_s, sh / silence.brake_decel_m_s2)
        tz = np.minimum(dt_s, sz / silence.brake_decel_z_m_s2)
        scale_h = np.where(
            sh > 0, np.maximum(sh - silence.brake_decel_m_s2 * dt_s, 0.0) / np.where(sh > 0, sh, 1), 0
        )
        new_vz = np.sign(vel[:, 2]) * np.maximum(sz - silence.brake_decel_z_m_s2 * dt_s, 0.0)
        # Exact for the piece: mean of start and end speed over the time actually spent moving.
        new_h = vel[:, :2] * scale_h[:, None]
        pos[:, :2] += 0.5 * (vel[:, :2] + new_h) * th[:, None]
        pos[:, 2] += 0.5 * (vel[:, 2] + new_vz) * tz
        vel = np.column_stack([new_h, new_vz])
        out.append(pos.copy())
    return np.stack(out)


__all__ = [
    "SILENCE_PARAM",
    "NominalModel",
    "ShadowPredictions",
    "SilenceBehavior",
    "lag_error",
    "lag_error_one",
    "silence_trajectory",
]
