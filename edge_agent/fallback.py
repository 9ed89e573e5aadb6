"""Layer 3 of the shield: the Simplex fallback, a batched latch brake → hold → land or return.

Entered when the barrier has no safe command (not even zero velocity), when the calibrator
raises its alarm, or when a boundary is already crossed. An alarm alone holds for up to
``alarm_commit_s`` before committing to land/return. Once latched, the policy gets control
back only from BRAKE or HOLD, and only after the release conditions (watchdog clear, no alarm,
the policy's own action certified with at least ``release_slack_m`` to spare) have held without
a break for ``release_dwell_s``. LAND and RETURN are commitments: they end on the ground.

The latch only decides *what* to aim for; the shield passes every fallback command except the
brake through the barrier again (landing switches the altitude floor off).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

from edge_agent.mission import FallbackPlan

F64 = NDArray[np.float64]
B8 = NDArray[np.bool_]


class Stage(IntEnum):
    """Where a vehicle is in the fallback sequence."""

    NONE = 0
    BRAKE = 1
    HOLD = 2
    LAND = 3
    RETURN = 4


class FallbackLatch:
    """Per-vehicle latch state (arrays [n]) and the commands each stage flies."""

    def __init__(
        self,
        plan: FallbackPlan,
        n: int,
        *,
        release_slack_m: float,
        release_dwell_s: float,
        brake_done_speed_m_s: float,
        brake_timeout_s: float,
        hold_gain_1_s: float,
        hold_speed_m_s: float,
        trim_gain_1_s2: float,
        trim_max_m_s: float,
        return_speed_m_s: float,
        return_accept_m: float,
        alarm_reason: int,
        alarm_commit_s: float,
    ) -> None:
        self.plan = plan
        self.alarm_reason = alarm_reason
        self.alarm_commit_s = alarm_commit_s
        self.release_slack_m = release_slack_m
        self.release_dwell_s = release_dwell_s
        self.brake_done_speed_m_s = brake_done_speed_m_s
        self.brake_timeout_s = brake_timeout_s
        self.gain = hold_gain_1_s
        self.hold_speed = hold_speed_m_s
        self.trim_gain = trim_gain_1_s2
        self.trim_max = trim_max_m_s
        self.return_speed = return_speed_m_s
        self.return_accept = return_accept_m
        self.home = np.asarray(plan.home_ned_m, dtype=np.float64)
        self.after_hold = {"hold": Stage.HOLD, "land": Stage.LAND, "return": Stage.RETURN}[plan.action]
        self.stage = np.zeros(n, dtype=np.int64)
        self.reason = np.zeros(n, dtype=np.int64)
        self.entered_s = np.full(n, np.nan)
        self.stage_since_s = np.full(n, np.nan)
        self.clear_since_s = np.full(n, np.nan)
        self.target_ned_m = np.zeros((n, 3))
        self.trim_ned_m_s = np.zeros((n, 3))
        """The hold's integral term: the velocity command that keeps the vehicle still (m/s)."""
        self._last_s = np.nan

    def reset(self, mask: B8 | None = None) -> None:
        """Back to NONE (policy in control) for the masked vehicles (all if None)."""
        sel = slice(None) if mask is None else mask
        self.stage[sel] = Stage.NONE
        self.reason[sel] = 0
        self.entered_s[sel] = np.nan
        self.stage_since_s[sel] = np.nan
        self.clear_since_s[sel] = np.nan
        self.trim_ned_m_s[sel] = 0.0

    def _go(self, mask: B8, stage: Stage, now_s: float) -> None:
        self.stage[mask] = stage
        self.stage_since_s[mask] = now_s

    def update(
        self,
        now_s: float,
        pos_ned_m: F64,
        vel_ned_m_s: F64,
        enter: B8,
        enter_reason: NDArray[np.int64],
        clear: B8,
        valid: B8,
    ) -> None:
        """Advance the latch one tick. ``valid``: position and velocity are trustworthy (watchdog)."""
        stage = self.stage
        dt = now_s - self._last_s
        self._last_s = now_s
        if not stage.any() and not enter.any():
            return  # the common case, kept cheap for batch 1
        holding = ((stage == Stage.HOLD) | (stage == Stage.LAND)) & valid
        if holding.any() and 0.0 < dt < 1.0:
            # Integrate the position error (horizontal; vertical too while holding, the descent is
            # commanded while landing), clamped: the trim that cancels what the vehicle does on
            # its own when told to stand still.
            err = self.target_ned_m - pos_ned_m
            err[stage == Stage.LAND, 2] = 0.0
            trim = np.clip(self.trim_ned_m_s + self.trim_gain * dt * err, -self.trim_max, self.trim_max)
            self.trim_ned_m_s[holding] = trim[holding]
        new = enter & (stage == Stage.NONE)
        if new.any():
            self._go(new, Stage.BRAKE, now_s)
            self.entered_s[new] = now_s
            self.reason[new] = enter_reason[new]
            self.clear_since_s[new] = np.nan
        active = stage != Stage.NONE
        if not active.any():
            return
        # Hysteresis: the release conditions must hold without a break for the dwell time.
        releasable = active & ((stage == Stage.BRAKE) | (stage == Stage.HOLD))
        is_clear = releasable & clear & ~new
        self.clear_since_s[is_clear & np.isnan(self.clear_since_s)] = now_s
        self.clear_since_s[~is_clear] = np.nan
        release = is_clear & (now_s - self.clear_since_s >= self.release_dwell_s)
        if release.any():
            self.reset(release)

        speed = np.sqrt((vel_ned_m_s**2).sum(axis=1))
        stopped = (
            (stage == Stage.BRAKE)
            & valid
            & ((speed <= self.brake_done_speed_m_s) | (now_s - self.stage_since_s >= self.brake_timeout_s))
        )
        if stopped.any():
            self.target_ned_m[stopped] = pos_ned_m[stopped]
            self.trim_ned_m_s[stopped] = 0.0
            self._go(stopped, Stage.HOLD, now_s)
        if self.after_hold != Stage.HOLD:
            # An entry on the calibrator's alarm alone means the margin lags the conditions, not
            # that the vehicle is in danger: it holds while the tracker widens the margin and hands
            # back once the alarm clears; it commits to land/return only if the alarm persists.
            wait_s = np.where(self.reason == self.alarm_reason, self.alarm_commit_s, self.plan.hold_s)
            done = (stage == Stage.HOLD) & (now_s - self.entered_s >= wait_s)
            if done.any():
                self._go(done, self.after_hold, now_s)
        arrived = (stage == Stage.RETURN) & valid
        if arrived.any():
            err = self.home - pos_ned_m
            arrived &= np.hypot(err[:, 0], err[:, 1]) <= self.return_accept
            if arrived.any():
                self.target_ned_m[arrived] = self.home
                self._go(arrived, Stage.LAND, now_s)

    def command(self, pos_ned_m: F64) -> tuple[F64, B8]:
        """Velocity commands [B, 3] for the current stages (zero where NONE or BRAKE) and the
        mask of vehicles landing (whose altitude floor the barrier must ignore)."""
        stage = self.stage
        cmd = np.zeros((stage.shape[0], 3))
        holding = (stage == Stage.HOLD) | (stage == Stage.LAND)
        if holding.any():
            err = self.target_ned_m - pos_ned_m
            v = self.gain * err
            speed = np.sqrt((v**2).sum(axis=1, keepdims=True))
            v *= np.minimum(1.0, self.hold_speed / np.maximum(speed, 1e-12))
            cmd[holding] = v[holding] + self.trim_ned_m_s[holding]
        landing = stage == Stage.LAND
        cmd[landing, 2] = self.plan.land_speed_m_s
        returning = stage == Stage.RETURN
        if returning.any():
            err = self.home - pos_ned_m
            v = self.gain * err
            climb_first = np.abs(err[:, 2]) > 1.0  # reach the return altitude before going home
            v[climb_first, :2] = 0.0
            h = np.hypot(v[:, 0], v[:, 1])
            v[:, :2] *= np.minimum(1.0, self.return_speed / np.maximum(h, 1e-12))[:, None]
            cmd[returning] = v[returning]
        return cmd, landing

    def still_command(self) -> F64:
        """[B, 3]: what keeps each vehicle where it is (the hold's trim; the descent while landing)."""
        cmd = self.trim_ned_m_s.copy()
        landing = self.stage == Stage.LAND
        cmd[landing, 2] = self.plan.land_speed_m_s
        return cmd


__all__ = ["FallbackLatch", "Stage"]
