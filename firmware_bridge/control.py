"""What every vehicle adapter shares: the contract the loop drives, and the loss-of-control latch.

The MAVLink adapters (:mod:`firmware_bridge.adapters`) and the custom-firmware adapter
(:mod:`firmware_bridge.custom_adapter`) both build on this module, so neither imports the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from firmware_bridge.errors import BridgeError
from firmware_bridge.types import (
    AccelerationNedYawRate,
    AttitudeThrust,
    Autopilot,
    PositionNedYaw,
    RatesThrust,
    Setpoint,
    VehicleState,
    VelocityNedYawRate,
)


@dataclass(frozen=True, slots=True)
class ControlLost:
    """The autopilot or pilot took control away; reported once, never undone by the bridge."""

    stamp_ns: int
    mode: str
    armed: bool
    reason: str


@dataclass(frozen=True, slots=True)
class ActivationStatus:
    """Where taking control stands: ``done`` once in control; ``error`` if it gave up."""

    phase: str
    done: bool = False
    error: str | None = None
    detail: str = ""


class VehicleAdapter(Protocol):
    """What the onboard loop needs from a vehicle adapter."""

    autopilot: Autopilot
    external_mode: str
    prestream: bool
    """Whether setpoints must stream while taking control (PX4) or must not (ArduPilot's takeoff)."""

    def send(self, setpoint: Setpoint) -> None:
        """Send one setpoint now."""
        ...

    def in_control(self, state: VehicleState) -> bool:
        """Whether the companion's setpoints are being flown (right mode, armed)."""
        ...

    def check_control(self, state: VehicleState, now_ns: int) -> ControlLost | None:
        """Report, once, that control was taken away since activation."""
        ...

    def start_activation(self, now_ns: int, takeoff_alt_m: float = 0.0) -> None:
        """Begin taking control (non-blocking); drive it with activation_step."""
        ...

    def activation_step(self, now_ns: int) -> ActivationStatus:
        """Advance activation; call once per tick after poll and send."""
        ...


def check_setpoint_finite(setpoint: Setpoint) -> None:
    """Refuse (BridgeError) a setpoint that is not one of ours, non-finite, or with thrust outside [0, 1]."""
    values: tuple[float, ...]
    if isinstance(setpoint, PositionNedYaw):
        values = setpoint.pos_ned_m  # yaw NaN means "keep heading"
    elif isinstance(setpoint, VelocityNedYawRate):
        values = (*setpoint.vel_ned_m_s, setpoint.yaw_rate_rad_s)
    elif isinstance(setpoint, AccelerationNedYawRate):
        values = (*setpoint.acc_ned_m_s2, setpoint.yaw_rate_rad_s)
    elif isinstance(setpoint, AttitudeThrust):
        values = (*setpoint.q_wxyz, setpoint.thrust_frac)
    elif isinstance(setpoint, RatesThrust):
        values = (*setpoint.rates_frd_rad_s, setpoint.thrust_frac)
    else:
        raise BridgeError(
            f"not a setpoint: {setpoint!r}; use one of the dataclasses in firmware_bridge.types"
        )
    if not all(math.isfinite(v) for v in values):
        raise BridgeError(f"refusing to send a non-finite setpoint {setpoint!r}; the shield must replace it")
    if isinstance(setpoint, (AttitudeThrust, RatesThrust)) and not 0.0 <= setpoint.thrust_frac <= 1.0:
        raise BridgeError(f"thrust_frac must be in [0, 1], got {setpoint.thrust_frac}")


class ControlLatch:
    """Shared bookkeeping: had control → lost it → latched until acknowledged."""

    # one per adapter; acknowledge_loss replaces it

    def __init__(self) -> None:
        self.had_control = False
        self.lost: ControlLost | None = None
        self.reported = False

    def check(
        self, in_control: bool, state: VehicleState, now_ns: int, external_mode: str
    ) -> ControlLost | None:
        if in_control:
            self.had_control = True
            return None
        if self.had_control and self.lost is None:
            if state.mode != external_mode:
                reason = f"mode changed to {state.mode} by the autopilot or the pilot"
            else:
                reason = "vehicle disarmed"
            self.lost = ControlLost(now_ns, state.mode, state.armed, reason)
        if self.lost is not None and not self.reported:
            self.reported = True
            return self.lost
        return None


class LatchedControl:
    """What every adapter says about control: in it (mode, armed, autopilot alive), lost (reported
    once, latched until a person acknowledges). Subclasses set ``external_mode`` and ``_latch``."""

    external_mode: str
    _latch: ControlLatch
    _phase: str

    def in_control(self, state: VehicleState) -> bool:
        """Mode is the external one (OFFBOARD/GUIDED), armed, and the autopilot is alive."""
        return state.mode == self.external_mode and state.armed and state.link_up

    def check_control(self, state: VehicleState, now_ns: int) -> ControlLost | None:
        """Report, once, that the autopilot or the pilot took control away after activation."""
        return self._latch.check(self.in_control(state), state, now_ns, self.external_mode)

    @property
    def control_lost(self) -> ControlLost | None:
        """The loss of control, if it happened (latched until acknowledge_loss)."""
        return self._latch.lost

    def acknowledge_loss(self) -> None:
        """A person decided control may be taken again; clears the latch. Never called by the bridge."""
        self._latch = ControlLatch()
        self._phase = "idle"


__all__ = [
    "ActivationStatus",
    "ControlLatch",
    "ControlLost",
    "LatchedControl",
    "VehicleAdapter",
    "check_setpoint_finite",
]
