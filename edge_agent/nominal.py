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
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge_agent.errors import ConfigError
from edge_agent.mission import SILENCE_DEFAULTS, Mission, VehicleSpec

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
        cls, mission: Mission, params: Mapping[str, float] | None = None, brake_delay_s: float = 0.2
    ) -> SilenceBehavior:
        """From the autopilot's own parameter when it answered (``VehicleState.params``), else the mission.

        The timeout parameter is COM_OF_LOSS_T (PX4) or GUID_TIMEOUT (ArduPilot); a value that is
        missing, non-finite or negative falls back to the mission's ``silence_hold_s``.
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
            brake_delay_s=brake_delay_s,
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
    """

    def __init__(self, model: NominalModel, horizon_ticks: int, n: int = 1) -> None:
        self.model = model
        self.h, self.n = horizon_ticks, n
        self._pos = np.zeros((horizon_ticks, n, 3))
        self._vel = np.zeros((horizon_ticks, n, 3))
        self._ok = np.zeros((horizon_ticks, n), dtype=bool)
        self._cmd = np.zeros((n, 3))
        self._last_s: float | None = None
        self._tick = 0

    def reset(self, mask: NDArray[np.bool_] | None = None) -> None:
        """Forget the shadows of the masked vehicles (all when None): no score for H ticks."""
        self._ok[:, slice(None) if mask is None else mask] = False

    def tick(
        self, now_s: float, pos_ned_m: F64, vel_ned_m_s: F64, valid: NDArray[np.bool_], cmd_ned_m_s: F64
    ) -> tuple[F64, NDArray[np.bool_]]:
        """Score now ([B] metres, and which scores count), then start a shadow from this state;
        ``cmd_ned_m_s`` [B, 3] is the velocity command sent this tick (flown from the next tick)."""
        h, n = self.h, self.n
        if self._last_s is not None:
            dt = min(max(now_s - self._last_s, 0.0), 1.0)
            cmd = np.broadcast_to(self._cmd[None], (h, n, 3)).reshape(h * n, 3)
            pos, vel = self.model.step(self._pos.reshape(h * n, 3), self._vel.reshape(h * n, 3), cmd, dt)
            self._pos[...] = pos.reshape(h, n, 3)
            self._vel[...] = vel.reshape(h, n, 3)
        i = self._tick % h
        d = pos_ned_m - self._pos[i]
        score = np.sqrt(np.einsum("ij,ij->i", d, d))
        counts = valid & self._ok[i]
        self._pos[i] = pos_ned_m
        self._vel[i] = vel_ned_m_s
        self._ok[i] = valid
        self._cmd = np.array(cmd_ned_m_s, dtype=np.float64)
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
