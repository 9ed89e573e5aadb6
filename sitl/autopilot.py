"""The flight controller the built-in SITL pretends to be: modes, arming, failsafes, schedules.

This is the protocol-free core behind every flavour (PX4 and ArduPilot over MAVLink, custom
firmware over COBS+msgpack). It owns one simulated vehicle (a :class:`~sitl.sim.Sim` of batch
size 1), advances it in the Sim's fixed steps and runs the autopilot's own logic at
``LOGIC_RATE_HZ``: the mode state machine, the offboard/guided setpoint rules, the land detector,
the geofence and battery failsafes. The wire flavours only translate messages to calls on
:class:`Autopilot` and its state back to messages.

What differs between PX4 and ArduPilot is data (:class:`Rules`, ``PX4_RULES`` and
``ARDUPILOT_RULES``), measured against REFERENCE.md and the real ArduCopter recordings in
``data/ardupilot`` (see docs/sitl_autopilot.md for each figure and where it comes from).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from firmware_bridge.frames import yaw_from_quat
from firmware_bridge.types import LandedState
from sitl.autopilot_nav import Navigation
from sitl.autopilot_rules import (
    ARDUPILOT_RULES,
    CUSTOM_RULES,
    GUIDED_KI,
    GUIDED_KP,
    GUIDED_KV,
    PX4_RULES,
    Action,
    MavResult,
    Mode,
    ParamSpec,
    ParamType,
    Rules,
    Severity,
    StatusText,
    Target,
    battery_stages,
    fence_limits,
    with_params,
)
from sitl.control import VelocityShaper as _Shaper
from sitl.mission import MissionPlan, NavItem, NavKind
from sitl.sim import SetpointKind, Sim

LOGIC_RATE_HZ = 50.0
"""Rate of the autopilot's own logic (mode machine, failsafes, setpoint shaping)."""

GRAVITY_M_S2 = 9.80665

NO_RC_BRAKE_M_S2 = 2.5
"""PX4 in a stick mode without RC: the deceleration its brake commands (real SIH braked from 2 m/s
over 0.9-2.2 m after its 1 s offboard timeout; with this Sim's velocity lag 2.5 m/s² gives ~2 m,
4.1 m in all as against real 3.9-4.2 m in the conformance suite)."""
PX4_HOLD_BRAKE_M_S2 = 1.5
"""Deceleration behind PX4 Hold's stop point (real SIH: from 2 m/s, 1.4 m past the timeout)."""
NO_RC_DESCENT_M_S = 0.6
"""... and its descent afterwards (real SIH 0.5-0.7 m/s)."""

F64 = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class CommandReply:
    """The answer to a command: the result plus the status texts that go with it."""

    result: MavResult
    texts: tuple[StatusText, ...] = ()
    texts_after: bool = False
    """True when the texts follow the ACK on the wire instead of preceding it."""


class Autopilot(Navigation):
    """One emulated flight controller over a batch-1 :class:`Sim`.

    Time is the Sim's own (``sim.time_s``); the autopilot's boot time is ``boot_s`` so a
    reboot restarts ``time_since_boot_s`` without rewinding physics.
    """

    def __init__(
        self,
        sim: Sim,
        rules: Rules,
        *,
        params: Mapping[str, float] | None = None,
        ready_delay_s: float | None = None,
        fast_boot: bool = False,
    ) -> None:
        if sim.n != 1:
            raise ValueError(
                f"Autopilot flies one vehicle: got a Sim with n={sim.n}; build Sim(1, ...) for it"
            )
        self.sim = sim
        self.rules = rules
        self._specs = {p.name: p for p in rules.params}
        self.params: dict[str, float] = {p.name: float(p.default) for p in rules.params}
        for name, value in (params or {}).items():
            self.set_param(name, value)
        default = rules.fast_ready_delay_s if fast_boot else rules.ready_delay_s
        self.ready_delay_s = default if ready_delay_s is None else float(ready_delay_s)
        # a fast boot (tests) skips the boot state and the sensors' warm-up refusals: the one
        # refusal left is the position estimate's (the last of arm_not_ready_texts)
        self.boot_status_s = 0.0 if fast_boot else min(rules.boot_status_s, self.ready_delay_s)
        self._warm_up = not fast_boot
        if self.ready_delay_s < 0:
            raise ValueError(f"ready_delay_s must be >= 0 s, got {self.ready_delay_s}")
        self._logic_every = max(1, round(1.0 / (LOGIC_RATE_HZ * sim.dt_s)))
        self._steps = 0
        self._sp = np.zeros((1, 5))
        self.setpoint_kind = SetpointKind.POSITION
        self._texts: deque[StatusText] = deque(maxlen=64)
        self._shaper = _Shaper(max(rules.shape_accel_m_s2, 1e-9), max(rules.shape_jerk_m_s3, 1e-9))
        self.home_ned_m = np.array(sim.pos_ned_m[0], dtype=np.float64)
        self.plan = MissionPlan()
        """The uploaded mission; it survives a reboot, as the firmware keeps it in storage."""
        self._boot(sim.time_s)

    # ------------------------------------------------------------------ state
    def _boot(self, now_s: float) -> None:
        self.boot_s = now_s
        self.mode = self.rules.initial_mode
        self.mode_changed_s = now_s
        self.landed_state = LandedState.ON_GROUND if bool(self.sim.on_ground[0]) else LandedState.IN_AIR
        self.target: Target | None = None
        self.last_target_s = -math.inf
        self._stream_last_s = -math.inf
        self._goal_ned_m: F64 | None = None
        self._goal_speed_m_s = math.nan
        self._carrot_ned_m = np.array(self.sim.pos_ned_m[0], dtype=np.float64)
        self._mission_landing = False
        self._armed_s = math.inf
        self._flew = not bool(self.sim.on_ground[0])
        self._ground_since_s = math.inf
        self._hold_ned_m = np.array(self.sim.pos_ned_m[0], dtype=np.float64)
        self._hold_yaw_rad = float(yaw_from_quat(np.asarray(self.sim.q_wxyz[0])))
        self._takeoff_alt_m = 0.0
        self._takeoff_start_s = math.inf
        self._takeoff_active = False
        self._land_target_d_m = 0.0
        self._rtl_phase = 0
        self._braking = False
        self._g_pos_ned_m = np.array(self.sim.pos_ned_m[0], dtype=np.float64)
        self._g_integ = np.zeros(3)
        self._battery_stage = 0
        self._fence_breached = False
        self._arm_refusals = 0
        self._descending = False
        """PX4 in a stick mode it cannot fly (no RC): braking, then descending to a landing."""
        self._descent_from = (now_s, np.zeros(2))
        self.failsafe: str | None = None
        self.mode_events = 0
        """Incremented on every mode change (the MAVLink flavour sends a HEARTBEAT at once)."""

    @property
    def armed(self) -> bool:
        """Whether the motors are armed."""
        return bool(self.sim.armed[0])

    @property
    def time_since_boot_s(self) -> float:
        """Seconds since the autopilot (re)booted."""
        return self.sim.time_s - self.boot_s

    @property
    def ready(self) -> bool:
        """Whether the position estimate is usable (arming allowed)."""
        return self.time_since_boot_s >= self.ready_delay_s

    @property
    def booting(self) -> bool:
        """Whether the firmware still reports its boot state (the first HEARTBEATs)."""
        return self.time_since_boot_s < self.boot_status_s

    @property
    def in_air(self) -> bool:
        """Whether the land detector says the vehicle flies."""
        return self.landed_state in (LandedState.IN_AIR, LandedState.TAKEOFF, LandedState.LANDING)

    def take_texts(self) -> list[StatusText]:
        """Status texts raised since the last call, oldest first."""
        out = list(self._texts)
        self._texts.clear()
        return out

    def _say(self, severity: Severity, text: str) -> None:
        self._texts.append(StatusText(severity, text))

    def param(self, name: str) -> float:
        """The current value of a parameter (KeyError names the known ones)."""
        try:
            return self.params[name]
        except KeyError:
            raise KeyError(f"unknown parameter {name!r}; this autopilot has {sorted(self.params)}") from None

    def param_spec(self, name: str) -> ParamSpec:
        """The declaration of a parameter."""
        return self._specs[name]

    def set_param(self, name: str, value: float) -> None:
        """Set a parameter; unknown names and non-finite values are refused."""
        if name not in self._specs:
            raise KeyError(f"unknown parameter {name!r}; this autopilot has {sorted(self._specs)}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"parameter {name} must be finite, got {value}")
        if self._specs[name].mav_type is not ParamType.REAL32:
            value = float(round(value))
        self.params[name] = value

    # ------------------------------------------------------------------ time
    def advance(self, now_s: float) -> None:
        """Run physics and autopilot logic up to ``now_s`` (sim time) in the Sim's fixed steps."""
        dt = self.sim.dt_s
        remaining = math.floor((now_s - self.sim.time_s) / dt + 1e-6)
        while remaining > 0:
            if self._steps % self._logic_every == 0:
                self._logic()
            chunk = min(remaining, self._logic_every - self._steps % self._logic_every)
            self.sim.step(chunk)
            self._steps += chunk
            remaining -= chunk

    # ------------------------------------------------------------------ commands
    def arm(self, *, force: bool = False) -> CommandReply:
        """MAV_CMD_COMPONENT_ARM_DISARM p1=1."""
        if self.armed:
            return CommandReply(MavResult.ACCEPTED)
        if not force and not self.ready:
            rules = self.rules
            names = rules.arm_not_ready_texts
            if self.time_since_boot_s < self.boot_status_s and rules.arm_boot_texts:
                names = rules.arm_boot_texts
            elif rules.arm_texts_rotate:
                names = (names[self._arm_refusals % len(names)] if self._warm_up else names[-1],)
                self._arm_refusals += 1
            texts = tuple(StatusText(Severity.CRITICAL, t) for t in names)
            return CommandReply(self.rules.arm_not_ready_result, texts, self.rules.arm_texts_after_ack)
        if (
            not force
            and self.rules.external_needs_stream
            and self.mode is Mode.OFFBOARD
            and not self.stream_ok()
        ):
            return CommandReply(MavResult.TEMPORARILY_REJECTED)
        self.sim.arm(np.array([True]))
        now = self.sim.time_s
        self._armed_s = now
        self._flew = not bool(self.sim.on_ground[0])
        self._ground_since_s = now
        self._hold_here()
        self._say(Severity.INFO, self.rules.arm_text)
        return CommandReply(MavResult.ACCEPTED)

    def disarm(self, *, force: bool = False, reason: str | None = None) -> CommandReply:
        """MAV_CMD_COMPONENT_ARM_DISARM p1=0 (refused in the air unless forced)."""
        if not self.armed:
            return CommandReply(MavResult.ACCEPTED)
        if self.in_air and not force and not bool(self.sim.on_ground[0]):
            return CommandReply(
                MavResult.FAILED if self.rules.arm_texts_after_ack else MavResult.TEMPORARILY_REJECTED
            )
        self._do_disarm(reason or self.rules.disarm_text)
        return CommandReply(MavResult.ACCEPTED)

    def _do_disarm(self, text: str) -> None:
        self.sim.disarm(np.array([True]))
        self._armed_s = math.inf
        self._takeoff_active = False
        self.failsafe = None
        self.target = None
        self._say(Severity.INFO, text)
        if bool(self.sim.on_ground[0]):
            self.landed_state = LandedState.ON_GROUND

    def set_mode(self, mode: Mode) -> CommandReply:
        """DO_SET_MODE with a normalised mode."""
        rules = self.rules
        # PX4 (measured): armed, OFFBOARD needs a setpoint within COM_OF_LOSS_T; disarmed it is
        # accepted without one (arming then waits for setpoints, see arm())
        refuse = (
            mode is rules.external_mode
            and rules.external_needs_stream
            and self.armed
            and not self.stream_ok()
        )
        if mode is Mode.MISSION and not any(i.kind is not NavKind.HOME for i in self.plan.items):
            refuse = True  # no mission to fly
        if refuse:
            label = {Mode.OFFBOARD: "Offboard", Mode.MISSION: "Mission"}.get(mode, mode.value)
            text = StatusText(Severity.CRITICAL, rules.mode_reject_text.format(mode=label))
            return CommandReply(MavResult.TEMPORARILY_REJECTED, (text,), True)
        if mode is Mode.TAKEOFF:
            return self.takeoff(math.nan)
        self.failsafe = None  # a commanded mode change ends the failsafe state
        self._enter(mode)
        if mode is Mode.MISSION:
            if self.plan.complete:
                self.plan.set_current(self._first_item())
            self.plan.started = True
        return CommandReply(MavResult.ACCEPTED)

    def _first_item(self) -> int:
        return 1 if self.rules.mission_has_home_item and len(self.plan.items) > 1 else 0

    def load_mission(self, items: tuple[NavItem, ...]) -> None:
        """A mission uploaded (or cleared, with no items); flying restarts from its first item."""
        self.plan.load(items)
        self.plan.current = self._first_item() if items else 0

    def goto(self, pos_ned_m: tuple[float, float, float], speed_m_s: float = math.nan) -> CommandReply:
        """DO_REPOSITION: fly to a point in the Sim's NED frame (NaN keeps that coordinate).

        PX4 flies there in Hold (AUTO.LOITER) and loiters; ArduCopter takes it as a GUIDED
        position target. Both need the vehicle armed and in the air.
        """
        if not self.armed or not self._flew:
            return CommandReply(MavResult.DENIED if self.rules.family == "px4" else MavResult.FAILED)
        if self.rules.family == "px4":
            self.failsafe = None
            self._enter(Mode.HOLD)
            self._goal_ned_m = np.array(pos_ned_m, dtype=np.float64)
            self._goal_speed_m_s = speed_m_s
            return CommandReply(MavResult.ACCEPTED)
        if self.mode is not Mode.GUIDED:
            self._enter(Mode.GUIDED)
        goal = np.where(np.isfinite(pos_ned_m), pos_ned_m, self.sim.pos_ned_m[0])
        values = (float(goal[0]), float(goal[1]), float(goal[2]), self._hold_yaw_rad, 0.0)
        self.external_setpoint(Target(SetpointKind.POSITION, values, self.sim.time_s))
        return CommandReply(MavResult.ACCEPTED)

    def takeoff(self, alt_m: float) -> CommandReply:
        """MAV_CMD_NAV_TAKEOFF to ``alt_m`` above home (NaN: the firmware's default)."""
        rules = self.rules
        if rules.takeoff_needs_armed and not self.armed:
            return CommandReply(MavResult.FAILED)
        if rules.takeoff_in_external_mode_only and self.mode is not rules.external_mode:
            return CommandReply(MavResult.FAILED)
        if rules.takeoff_needs_armed and self.in_air and self._flew:
            return CommandReply(MavResult.FAILED)
        if not self.ready:
            return CommandReply(
                MavResult.TEMPORARILY_REJECTED if not rules.takeoff_needs_armed else MavResult.FAILED
            )
        if not math.isfinite(alt_m) or alt_m <= 0:
            alt_m = self.param(rules.takeoff_alt_param) if rules.takeoff_alt_param else 0.0
            if alt_m <= 0:
                return CommandReply(MavResult.FAILED)
        self._takeoff_alt_m = float(alt_m)
        self._takeoff_active = True
        self._takeoff_start_s = self.sim.time_s
        if rules.takeoff_mode is not None and self.mode is not rules.takeoff_mode:
            self._enter(rules.takeoff_mode)
        self.target = None
        return CommandReply(MavResult.ACCEPTED)

    def land(self) -> CommandReply:
        """MAV_CMD_NAV_LAND at the current position."""
        self._enter(Mode.LAND)
        return CommandReply(MavResult.ACCEPTED)

    def return_to_launch(self) -> CommandReply:
        """MAV_CMD_NAV_RETURN_TO_LAUNCH."""
        if not self.armed:
            return CommandReply(
                MavResult.FAILED if self.rules.arm_texts_after_ack else MavResult.TEMPORARILY_REJECTED
            )
        self._enter(Mode.RTL)
        return CommandReply(MavResult.ACCEPTED)

    def reboot(self) -> None:
        """Restart the autopilot: disarmed, initial mode, boot clock from zero, physics on the ground."""
        # physics is not rewound: a reboot in the air drops the vehicle, as it would for real
        if self.armed:
            self.sim.disarm(np.array([True]))
        self._boot(self.sim.time_s)

    # ------------------------------------------------------------------ setpoints
    def stream_ok(self) -> bool:
        """PX4's offboard-signal gate: a setpoint received within the last COM_OF_LOSS_T seconds."""
        return self.sim.time_s - self._stream_last_s <= self.param(self.rules.loss_timeout_param) + 1e-9

    def external_setpoint(self, target: Target) -> bool:
        """A setpoint from the companion; returns whether it was used.

        PX4 counts every setpoint toward the OFFBOARD stream gate whatever the mode; outside the
        external mode the setpoint itself is dropped silently (ArduPilot: no ACK, no text).
        """
        now = self.sim.time_s
        self._stream_last_s = now
        if self.rules.external_needs_stream:
            # PX4 keeps the latest offboard setpoint even before OFFBOARD is entered
            self.target = target
            self.last_target_s = now
            return self.mode is Mode.OFFBOARD
        if self.mode is not self.rules.external_mode:
            return False
        if not self._braking and (self.target is None or self.target.kind != target.kind):
            self._start_tracker()
        self._braking = False
        self.target = target
        self.last_target_s = now
        # a new guided target replaces a guided takeoff in progress, as in ArduCopter
        self._takeoff_active = False
        return True

    # ------------------------------------------------------------------ logic
    def _enter(self, mode: Mode) -> None:
        if mode is self.mode:
            return
        self.mode = mode
        self.mode_changed_s = self.sim.time_s
        self.mode_events += 1
        self._braking = False
        self._descending = False
        self._rtl_phase = 0
        self._goal_ned_m = None
        self._mission_landing = False
        self._carrot_ned_m = np.array(self.sim.pos_ned_m[0], dtype=np.float64)
        if mode is not self.rules.external_mode and not self.rules.external_needs_stream:
            # ArduPilot forgets guided targets on leaving GUIDED; PX4 keeps the offboard stream's
            # latest setpoint (it is what OFFBOARD flies on re-entry)
            self.target = None
        if mode is Mode.LAND:
            self._land_target_d_m = float(self.sim.pos_ned_m[0, 2])
        if mode is not Mode.TAKEOFF and self.rules.takeoff_mode is not None:
            self._takeoff_active = False
        if mode is Mode.LAND and self.in_air:
            self.landed_state = LandedState.LANDING
        self._hold_here()
        if mode is Mode.HOLD and self.rules.family == "px4" and self.in_air:
            # PX4's Hold loiters at the braking stop point ahead, not where it was entered
            # (navigator calculate_breaking_stop): real SIH went 3.6 m from 2 m/s incl. the 1 s timeout
            v = np.asarray(self.sim.vel_ned_m_s[0, :2], dtype=np.float64)
            self._hold_ned_m[:2] += v * float(np.hypot(v[0], v[1])) / (2.0 * PX4_HOLD_BRAKE_M_S2)

    def _start_tracker(self) -> None:
        self._shaper.reset(np.asarray(self.sim.vel_ned_m_s[0]))
        self._g_pos_ned_m = np.array(self.sim.pos_ned_m[0], dtype=np.float64)
        self._g_integ = np.zeros(3)

    def _track(self, vel_target_m_s: F64, yaw_rate_rad_s: float, dt: float) -> None:
        """Fly a shaped velocity target (ArduCopter's guided velocity control)."""
        v = self._shaper.update(vel_target_m_s, dt)
        self._g_pos_ned_m = self._g_pos_ned_m + v * dt
        err = v + GUIDED_KP * (self._g_pos_ned_m - self.sim.pos_ned_m[0]) - self.sim.vel_ned_m_s[0]
        self._g_integ = self._g_integ + GUIDED_KI * err * dt
        acc = self._shaper.acc_m_s2 + GUIDED_KV * err + self._g_integ
        self._set(SetpointKind.ACCELERATION, acc[0], acc[1], acc[2], yaw_rate_rad_s)

    def _hold_here(self) -> None:
        self._hold_ned_m = np.array(self.sim.pos_ned_m[0], dtype=np.float64)
        self._hold_yaw_rad = float(yaw_from_quat(np.asarray(self.sim.q_wxyz[0])))

    def _logic(self) -> None:
        now = self.sim.time_s
        dt = self._logic_every * self.sim.dt_s
        self._land_detector(now)
        if self.armed:
            self._check_setpoint_loss(now)
            self._check_battery()
            self._check_fence()
        if self.armed:
            self._fly(now, dt)

    def _land_detector(self, now: float) -> None:
        on_ground = bool(self.sim.on_ground[0])
        if not self.armed:
            self.landed_state = LandedState.ON_GROUND if on_ground else LandedState.IN_AIR
            self._ground_since_s = now if on_ground else math.inf
            return
        if not on_ground:
            self._ground_since_s = math.inf
            if not self._flew and float(self.sim.pos_ned_m[0, 2]) < self.home_ned_m[2] - 0.3:
                self._flew = True
            if self._takeoff_active:
                self.landed_state = LandedState.TAKEOFF
            elif (
                self.mode is Mode.LAND
                or (self.mode is Mode.RTL and self._rtl_phase == 2)
                or (self.mode is Mode.MISSION and self._mission_landing)
            ):
                self.landed_state = LandedState.LANDING
            elif self._flew:
                self.landed_state = LandedState.IN_AIR
            return
        if self._ground_since_s == math.inf:
            self._ground_since_s = now
        grounded_s = now - self._ground_since_s
        if not self._flew:
            self.landed_state = (
                LandedState.TAKEOFF
                if self._takeoff_active and now >= self._takeoff_start_s + self.rules.takeoff_spool_s
                else LandedState.ON_GROUND
            )
            waiting = now - self._armed_s
            if not self._takeoff_active and waiting >= self.param(self.rules.disarm_preflight_param) > 0:
                self._do_disarm(self.rules.disarm_text)
            return
        if grounded_s >= self.rules.land_detect_s:
            self.landed_state = LandedState.ON_GROUND
            # PX4 disarms after any landing (COM_DISARM_LAND); ArduCopter in its landing modes
            auto_modes = (Mode.LAND, Mode.RTL, Mode.MISSION)
            if grounded_s >= self.rules.land_detect_s + self.rules.disarm_after_land_s and (
                self.rules.family == "px4" or self.mode in auto_modes
            ):
                self._do_disarm(self.rules.disarm_text)

    def _check_setpoint_loss(self, now: float) -> None:
        if self.mode is not self.rules.external_mode or self.target is None:
            return
        timeout = self.param(self.rules.loss_timeout_param)
        if now - self.last_target_s <= timeout:
            return
        if self.rules.loss_brakes_in_mode:
            if self.target.kind is not SetpointKind.POSITION and not self._braking:
                if self.target.kind is not SetpointKind.VELOCITY:
                    self._start_tracker()
                self._braking = True
            return
        code = int(self.param(self.rules.loss_action_param)) if self.rules.loss_action_param else 0
        action = self.rules.loss_action_codes.get(code, Action.POSCTL)
        self.failsafe = "offboard signal lost"
        self._say(Severity.CRITICAL, "Failsafe activated")
        self._run_action(action)
        if action in (Action.POSCTL, Action.ALTCTL) and self.rules.no_rc_descends and self.no_rc:
            self._descending = True
            self._descent_from = (now, np.array(self.sim.vel_ned_m_s[0, :2], dtype=np.float64))

    @property
    def no_rc(self) -> bool:
        """PX4's COM_RC_IN_MODE says no RC is there (1 joystick only, 4 none): the emulator's stick
        modes then have no sticks to hold the vehicle with."""
        return self.rules.family == "px4" and int(self.param("COM_RC_IN_MODE")) in (1, 4)

    def _run_action(self, action: Action) -> None:
        if action is Action.POSCTL:
            self._enter(Mode.POSCTL)
        elif action is Action.ALTCTL:
            self._enter(Mode.ALTCTL)
        elif action is Action.HOLD:
            self._enter(Mode.HOLD)
        elif action is Action.RETURN:
            self._enter(Mode.RTL)
        elif action is Action.LAND:
            self._enter(Mode.LAND)
        elif action is Action.DISARM:
            self._do_disarm("Failsafe: disarming")

    def _check_battery(self) -> None:
        frac = float(self.sim.battery_frac[0])
        stages = battery_stages(self.rules, self.param)
        for i, (threshold, action, text) in enumerate(stages, start=1):
            if self._battery_stage < i and frac <= threshold:
                self._battery_stage = i
                self._say(Severity.CRITICAL if i > 1 else Severity.WARNING, text)
                if action not in (Action.NONE, Action.WARN) and self.in_air:
                    self.failsafe = "battery"
                    if not (action is Action.RETURN and self.mode in (Mode.RTL, Mode.LAND)):
                        self._run_action(action)

    def _check_fence(self) -> None:
        radius, alt_max, action = fence_limits(self.rules, self.param)
        if (radius <= 0 and alt_max <= 0) or action is Action.NONE:
            return
        rel = np.asarray(self.sim.pos_ned_m[0]) - self.home_ned_m
        horiz = float(np.hypot(rel[0], rel[1]))
        breach = (radius > 0 and horiz > radius) or (alt_max > 0 and -float(rel[2]) > alt_max)
        if breach and not self._fence_breached:
            self._fence_breached = True
            self.failsafe = "geofence"
            self._say(
                Severity.CRITICAL,
                # real PX4 SIH's text for the horizontal limit; ArduCopter's
                (
                    "Geofence: exceeding maximum distance to Home"
                    if radius > 0 and horiz > radius
                    else "Geofence breached"
                )
                if self.rules.family == "px4"
                else "Fence Breached",
            )
            if action is not Action.WARN and self.mode not in (Mode.LAND,):
                self._run_action(action)
                if action is Action.HOLD:
                    self._hold_inside(radius, alt_max)
        elif not breach:
            self._fence_breached = False

    def _hold_inside(self, radius: float, alt_max: float) -> None:
        rel = self._hold_ned_m - self.home_ned_m
        horiz = float(np.hypot(rel[0], rel[1]))
        if radius > 0 and horiz > radius:
            rel[:2] *= radius / horiz
        if alt_max > 0:
            rel[2] = max(rel[2], -alt_max)
        self._hold_ned_m = self.home_ned_m + rel

    # ------------------------------------------------------------------ flying
    def _set(self, kind: SetpointKind, a: float, b: float, c: float, d: float, e: float = 0.0) -> None:
        sp = self._sp
        sp[0, 0], sp[0, 1], sp[0, 2], sp[0, 3], sp[0, 4] = a, b, c, d, e
        self.setpoint_kind = kind
        self.sim.set_setpoint(kind, sp)

    @property
    def setpoint(self) -> tuple[SetpointKind, tuple[float, ...]]:
        """What the autopilot's controller flies now (POSITION_TARGET_LOCAL_NED reports it)."""
        return self.setpoint_kind, tuple(float(x) for x in self._sp[0])

    def _hold(self) -> None:
        h = self._hold_ned_m
        self._set(SetpointKind.POSITION, h[0], h[1], h[2], self._hold_yaw_rad)

    def _yaw_rate_for(self, target: Target) -> float:
        if math.isfinite(target.yaw_rate_rad_s):
            return target.yaw_rate_rad_s
        if math.isfinite(target.yaw_rad):
            yaw = float(yaw_from_quat(np.asarray(self.sim.q_wxyz[0])))
            err = math.remainder(target.yaw_rad - yaw, math.tau)
            return max(-1.0, min(1.0, 2.0 * err))
        return 0.0

    def _fly(self, now: float, dt: float) -> None:
        mode = self.mode
        if self._takeoff_active:
            self._fly_takeoff(now)
            return
        if mode is self.rules.external_mode:
            self._fly_external(now, dt)
        elif mode is Mode.LAND:
            self._fly_land(dt)
        elif mode is Mode.RTL:
            self._fly_rtl(dt)
        elif mode is Mode.MISSION:
            self._fly_mission(now, dt)
        elif self._descending:
            self._fly_no_rc_descent()
        elif mode is Mode.HOLD and self._goal_ned_m is not None:
            speed = self._goal_speed_m_s if self._goal_speed_m_s > 0 else self._cruise_m_s()
            self._fly_towards(self._goal_ned_m, speed, dt, self._radius_m())
        elif self._flew:
            self._hold()
        else:
            self._idle_on_ground()

    def _idle_on_ground(self) -> None:
        """Armed on the ground: idle thrust, stay down."""
        h = self._hold_ned_m
        self._set(SetpointKind.POSITION, h[0], h[1], h[2] + 1.0, self._hold_yaw_rad)

    def _fly_takeoff(self, now: float) -> None:
        h = self._hold_ned_m
        if now < self._takeoff_start_s + self.rules.takeoff_spool_s:
            self._set(SetpointKind.POSITION, h[0], h[1], h[2] + 1.0, self._hold_yaw_rad)
            return
        goal_d = self.home_ned_m[2] - self._takeoff_alt_m
        d = float(self.sim.pos_ned_m[0, 2])
        # climb as a velocity command so the climb rate is the firmware's, then capture altitude
        if d - goal_d > 0.5:
            vd = -min(self.rules.climb_speed_m_s, max(0.3, 1.0 * (d - goal_d)))
            self._set(SetpointKind.VELOCITY, 0.0, 0.0, vd, 0.0)
            return
        self._set(SetpointKind.POSITION, h[0], h[1], goal_d, self._hold_yaw_rad)
        if abs(d - goal_d) < 0.15 or d < goal_d:
            self._takeoff_active = False
            self._flew = True
            self.landed_state = LandedState.IN_AIR
            self._hold_ned_m = np.array([h[0], h[1], goal_d])
            after = self.rules.after_takeoff_mode
            if after is not None and self.mode is Mode.TAKEOFF:
                self._enter(after)
                self._hold_ned_m = np.array([h[0], h[1], goal_d])

    def _fly_external(self, now: float, dt: float) -> None:
        target = self.target
        if self.rules.family == "ardupilot" and self.landed_state is LandedState.ON_GROUND:
            # ArduCopter's GUIDED flies no setpoint while landed (land_complete: the motors idle
            # until NAV_TAKEOFF), as real ArduCopter SITL did in the conformance suite
            self._idle_on_ground()
            return
        if target is None or (
            not self.rules.loss_brakes_in_mode
            and now - self.last_target_s > self.param(self.rules.loss_timeout_param)
        ):
            self._hold()
            return
        if self._braking:
            # after GUID_TIMEOUT: shape down to zero and keep the point where the shaping ends
            self._track(np.zeros(3), 0.0, dt)
            self._hold_here()
            return
        if target.kind is SetpointKind.POSITION:
            v = target.values
            yaw = target.yaw_rad if math.isfinite(target.yaw_rad) else self._hold_yaw_rad
            self._set(SetpointKind.POSITION, v[0], v[1], v[2], yaw)
            self._hold_ned_m = np.array(v[:3])
            return
        if target.kind is SetpointKind.VELOCITY:
            vel = np.array(target.values[:3], dtype=np.float64)
            if self.rules.shape_accel_m_s2 > 0:
                self._track(vel, self._yaw_rate_for(target), dt)
            else:
                self._set(SetpointKind.VELOCITY, vel[0], vel[1], vel[2], self._yaw_rate_for(target))
            self._hold_here()
            return
        if target.kind is SetpointKind.ACCELERATION:
            v = target.values
            self._set(SetpointKind.ACCELERATION, v[0], v[1], v[2], self._yaw_rate_for(target))
            self._hold_here()
            return
        self.sim.set_setpoint(target.kind, np.array([target.values]))
        self._hold_here()

    def _fly_no_rc_descent(self) -> None:
        """What real PX4 SIH did in Position mode with no RC: brake (zero velocity, no position
        hold, so it creeps), then descend at ~0.6 m/s to a landing; the land detector disarms."""
        t0, v0 = self._descent_from
        speed0 = float(np.hypot(v0[0], v0[1]))
        left = max(0.0, speed0 - NO_RC_BRAKE_M_S2 * (self.sim.time_s - t0))
        v = v0 * (left / speed0) if speed0 > 0 else v0 * 0.0
        down = NO_RC_DESCENT_M_S if left < 0.5 else 0.0
        self._set(SetpointKind.VELOCITY, v[0], v[1], down, 0.0)

    # ------------------------------------------------------------------ reporting
    def system_status(self) -> int:
        """MAV_STATE: the firmware's boot state (PX4 UNINIT 0, ArduCopter BOOT 1) while it starts,
        STANDBY (3) disarmed or armed on the ground, ACTIVE (4) flying, CRITICAL (5) in failsafe."""
        if not self.armed:
            return self.rules.boot_status if self.booting else 3
        if self.rules.family == "px4":
            return 5 if self.failsafe else 4
        return 4 if self.landed_state in (LandedState.IN_AIR, LandedState.TAKEOFF, LandedState.LANDING) else 3


__all__ = [
    "ARDUPILOT_RULES",
    "CUSTOM_RULES",
    "GUIDED_KI",
    "GUIDED_KP",
    "GUIDED_KV",
    "LOGIC_RATE_HZ",
    "PX4_RULES",
    "Action",
    "Autopilot",
    "CommandReply",
    "MavResult",
    "Mode",
    "ParamSpec",
    "ParamType",
    "Rules",
    "SetpointKind",
    "Severity",
    "StatusText",
    "Target",
    "with_params",
]
