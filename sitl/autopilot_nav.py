"""How the emulated autopilot flies its own navigation modes: LAND, RTL and the uploaded mission.

A mixin of :class:`sitl.autopilot.Autopilot` (which owns the state named below), kept apart so
that the autopilot's core (modes, failsafes, external setpoints) stays one readable module.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from firmware_bridge.types import LandedState
from sitl.autopilot_rules import Mode, Rules
from sitl.mission import MissionPlan, NavKind
from sitl.sim import SetpointKind, Sim

F64 = NDArray[np.float64]


class Navigation:
    """LAND, RTL, goto and mission flight, on the state :class:`Autopilot` keeps."""

    sim: Sim
    rules: Rules
    plan: MissionPlan
    home_ned_m: F64
    landed_state: LandedState
    _hold_ned_m: F64
    _hold_yaw_rad: float
    _carrot_ned_m: F64
    _rtl_phase: int
    _mission_landing: bool
    _land_target_d_m: float
    _flew: bool

    @property
    def in_air(self) -> bool:
        raise NotImplementedError

    def param(self, name: str) -> float:
        raise NotImplementedError

    def _set(self, kind: SetpointKind, a: float, b: float, c: float, d: float, e: float = 0.0) -> None:
        raise NotImplementedError

    def _hold(self) -> None:
        raise NotImplementedError

    def _enter(self, mode: Mode) -> None:
        raise NotImplementedError

    def _fly_land(self, dt: float) -> None:
        h = self._hold_ned_m
        speed = self.param(self.rules.land_speed_param) * self.rules.land_speed_scale
        d = float(self.sim.pos_ned_m[0, 2])
        # the target runs ahead at the land speed but never more than 1 m below the vehicle,
        # so touching down does not wind up a huge altitude error
        self._land_target_d_m = min(self._land_target_d_m + speed * dt, d + 1.0)
        self._set(SetpointKind.POSITION, h[0], h[1], self._land_target_d_m, self._hold_yaw_rad)

    def _fly_rtl(self, dt: float) -> None:
        home = self.home_ned_m
        pos = np.asarray(self.sim.pos_ned_m[0])
        rtl_d = home[2] - self.param(self.rules.rtl_alt_param) * self.rules.rtl_alt_scale
        if self._rtl_phase == 0:
            self._hold_ned_m[2] = min(self._hold_ned_m[2], rtl_d)
            self._set(
                SetpointKind.POSITION,
                self._hold_ned_m[0],
                self._hold_ned_m[1],
                self._hold_ned_m[2],
                self._hold_yaw_rad,
            )
            if pos[2] <= self._hold_ned_m[2] + 0.5:
                self._rtl_phase = 1
            return
        if self._rtl_phase == 1:
            self._set(SetpointKind.POSITION, home[0], home[1], self._hold_ned_m[2], self._hold_yaw_rad)
            if float(np.hypot(pos[0] - home[0], pos[1] - home[1])) < 1.0:
                self._rtl_phase = 2
                self._hold_ned_m = np.array([home[0], home[1], pos[2]])
                self._land_target_d_m = float(pos[2])
                self.landed_state = LandedState.LANDING
            return
        self._fly_land(dt)

    def _cruise_m_s(self) -> float:
        return self.param(self.rules.cruise_speed_param) * self.rules.distance_scale

    def _radius_m(self) -> float:
        return self.param(self.rules.acceptance_radius_param) * self.rules.distance_scale

    def _fly_towards(self, goal_ned_m: F64, speed_m_s: float, dt: float, radius_m: float) -> bool:
        """Fly a carrot towards ``goal_ned_m`` (NaN: keep that coordinate); True once within reach.

        The carrot moves at the cruise speed horizontally and the climb speed vertically; it waits
        while the vehicle lags more than ~1.5 s behind it, and it does not move sideways until the
        vehicle is 1 m up, so a mission started on the ground climbs before it travels (PX4).
        """
        pos = np.asarray(self.sim.pos_ned_m[0])
        goal = np.where(np.isfinite(goal_ned_m), goal_ned_m, self._hold_ned_m)
        c = self._carrot_ned_m
        dz = float(np.clip(goal[2] - c[2], -self.rules.climb_speed_m_s * dt, 1.0 * dt))
        c[2] += dz
        dxy = goal[:2] - c[:2]
        dist = float(np.hypot(dxy[0], dxy[1]))
        lag = float(np.hypot(c[0] - pos[0], c[1] - pos[1]))
        up_m = float(self.home_ned_m[2] - pos[2])
        if (
            dist > 0
            and lag < max(1.5 * speed_m_s, 2.0)
            and (up_m > 1.0 or goal[2] > self.home_ned_m[2] - 1.0)
        ):
            c[:2] += dxy * min(1.0, speed_m_s * dt / dist)
        self._set(SetpointKind.POSITION, c[0], c[1], c[2], self._hold_yaw_rad)
        self._hold_ned_m = np.array(c)
        horiz = float(np.hypot(goal[0] - pos[0], goal[1] - pos[1]))
        return horiz <= max(radius_m, 0.3) and abs(float(goal[2] - pos[2])) <= 0.8

    def _fly_mission(self, now: float, dt: float) -> None:
        plan = self.plan
        item = plan.item
        while item is not None and item.kind in (NavKind.SPEED, NavKind.SKIP, NavKind.HOME):
            if item.kind is NavKind.SPEED and item.speed_m_s > 0:
                plan.speed_m_s = item.speed_m_s
            plan.advance()
            item = plan.item
        if item is None:
            if self.rules.family == "px4" and self.in_air:
                self._enter(Mode.HOLD)  # PX4 loiters in AUTO.LOITER after the last item
            elif self.in_air:
                self._hold()
            else:  # landed by the mission: stay down until the land detector disarms
                pos = self.sim.pos_ned_m[0]
                self._set(SetpointKind.POSITION, pos[0], pos[1], pos[2] + 1.0, self._hold_yaw_rad)
            return
        speed = plan.speed_m_s if plan.speed_m_s > 0 else self._cruise_m_s()
        radius = item.radius_m if item.radius_m > 0 else self._radius_m()
        if item.kind in (NavKind.WAYPOINT, NavKind.TAKEOFF):
            goal = np.array(item.pos_ned_m, dtype=np.float64)
            if item.kind is NavKind.TAKEOFF:
                goal[:2] = np.nan  # a takeoff climbs where the vehicle stands
            if self._fly_towards(goal, speed, dt, radius):
                plan.arrive(now)
                if now - plan.arrived_s >= item.hold_s - 1e-9:
                    plan.advance()
            return
        if item.kind is NavKind.LAND:
            if not self._mission_landing:
                goal = np.array([item.pos_ned_m[0], item.pos_ned_m[1], math.nan])
                goal[2] = self._carrot_ned_m[2]
                if self._fly_towards(goal, speed, dt, radius):
                    self._mission_landing = True
                    self._land_target_d_m = float(self.sim.pos_ned_m[0, 2])
                return
            self._fly_land(dt)
        else:  # RTL: climb, fly home, land, all inside the mission
            self._fly_rtl(dt)
            self._mission_landing = self._rtl_phase == 2
        if self._flew and self.landed_state is LandedState.ON_GROUND:
            plan.arrive(now)
            plan.advance()
