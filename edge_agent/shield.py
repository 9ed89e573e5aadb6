"""The layered safety shield: watchdog → barrier filter → Simplex fallback, batched.

``Shield.certify`` takes the policy's physical action (vn, ve, vd in NED m/s and yaw rate in
rad/s) for a batch of B vehicles and returns a certified setpoint that is always finite, with
the layer that acted and a named :class:`Reason`. The flying loop calls it with B = 1 at the
control rate; certification calls the very same code with B in the thousands.

Layers (docs/shield.md has the derivations):

1. :mod:`edge_agent.watchdog` — stale or non-finite inputs, link down, inference deadline or a
   stage error → zero velocity (hold), reason named. Nothing else can run without a position.
2. :mod:`edge_agent.barrier` — speed limits, then the barrier conditions of the fence, altitude
   band and keep-out zones, including what the autopilot does if the agent dies on this tick,
   tightened by q_t and the mission margins. A safe action passes bit-identical.
3. :mod:`edge_agent.fallback` — when no safe command exists, on a calibrator alarm or after a
   breach: brake → hold → land/return, latched, released only after a dwell with margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge_agent.barrier import Barrier
from edge_agent.errors import ConfigError
from edge_agent.fallback import FallbackLatch, Stage
from edge_agent.mission import Mission
from edge_agent.nominal import NominalModel, SilenceBehavior
from edge_agent.watchdog import Reason, Watchdog

F64 = NDArray[np.float64]
B8 = NDArray[np.bool_]
I64 = NDArray[np.int64]

# Plain ints: IntEnum attribute lookups cost microseconds on the batch-1 path.
_NONE, _SPEED, _NON_FINITE = int(Reason.NONE), int(Reason.SPEED_LIMIT), int(Reason.NON_FINITE)
_ALARM, _BREACH, _INFEASIBLE = (
    int(Reason.CALIBRATION_ALARM),
    int(Reason.NOT_RECOVERABLE),
    int(Reason.INFEASIBLE),
)


@dataclass(frozen=True, slots=True)
class ShieldConfig:
    """Every tunable of the shield, loaded once at start-up."""

    freshness_limits_s: tuple[float, float, float, float] = (0.1, 0.1, 0.05, 0.05)
    """Max age of position, velocity, attitude, rates. PX4's neural module uses 100 ms for position
    and 50 ms for attitude but 10 ms for rates, which assumes in-autopilot rates; over MAVLink at
    50–250 Hz a 10 ms limit would trip on ordinary jitter, so rates get 50 ms here."""
    heartbeat_timeout_s: float = 1.5
    """The loop derives ShieldInput.link_ok from it (no autopilot heartbeat for this long)."""
    latency_s: float = 0.12
    """Actuation latency added to the state's age when extrapolating the approach (s): the
    autopilot loop's dead time (0.10 s measured in the SITL, attitude and motor lag) plus the
    link and scheduling delay of one 50 Hz tick."""
    projection_iterations: int = 4
    release_slack_m: float = 1.0
    """Slack the policy's own action must keep before the fallback hands control back (m)."""
    release_dwell_s: float = 1.0
    """How long the release conditions must hold without a break (s)."""
    brake_done_speed_m_s: float = 0.2
    brake_timeout_s: float = 5.0
    hold_gain_1_s: float = 1.0
    hold_speed_m_s: float = 1.0
    hold_trim_gain_1_s2: float = 0.5
    """Integral gain of the fallback's position hold (1/s²). A vehicle whose velocity loop does not
    bring it to rest on a zero command (velocity-estimate bias, integrator memory: real PX4 SIH
    drifted 0.5–0.7 m/s while reporting ~0) is seen only in its position; the integral learns the
    command that really holds it still (docs/safety.md, the PX4 breach)."""
    hold_trim_max_m_s: float = 1.0
    """Largest velocity the hold's integral may add, per axis (m/s)."""
    alarm_commit_s: float = 30.0
    """A fallback entered on the calibrator's alarm alone holds (and hands back when the alarm
    clears) for up to this long before committing to the mission's land/return (s)."""
    return_speed_m_s: float = 3.0
    return_accept_m: float = 1.0
    tolerance_m: float = 1e-9

    def __post_init__(self) -> None:
        if len(self.freshness_limits_s) != 4 or not all(x > 0 for x in self.freshness_limits_s):
            raise ConfigError(
                f"ShieldConfig.freshness_limits_s must be 4 positive seconds (position, velocity, "
                f"attitude, rates), got {self.freshness_limits_s!r}"
            )
        if self.projection_iterations < 0:
            raise ConfigError(
                f"ShieldConfig.projection_iterations must be >= 0, got {self.projection_iterations}"
            )
        for name in (
            "heartbeat_timeout_s",
            "latency_s",
            "release_slack_m",
            "release_dwell_s",
            "brake_done_speed_m_s",
            "brake_timeout_s",
            "tolerance_m",
        ):
            value = getattr(self, name)
            if not (value >= 0 and np.isfinite(value)):
                raise ConfigError(f"ShieldConfig.{name} must be finite and >= 0, got {value!r}")
        for name in (
            "hold_gain_1_s",
            "hold_speed_m_s",
            "return_speed_m_s",
            "return_accept_m",
            "alarm_commit_s",
            "hold_trim_gain_1_s2",
            "hold_trim_max_m_s",
        ):
            value = getattr(self, name)
            if not (value > 0 and np.isfinite(value)):
                raise ConfigError(f"ShieldConfig.{name} must be finite and > 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class ShieldInput:
    """One tick's inputs, batched over B vehicles."""

    now_s: float
    """Monotonic time of this tick (from the injected clock)."""
    pos_ned_m: F64
    """[B, 3] relative to the mission origin."""
    vel_ned_m_s: F64
    """[B, 3]"""
    action: F64
    """[B, 4] the policy's (vn, ve, vd) m/s NED and yaw rate rad/s, physical units."""
    margin_m: F64
    """[B] the calibrator's q_t."""
    signal_age_s: F64
    """[B, 4] ages of position, velocity, attitude, rates; inf = never received."""
    link_ok: B8
    """[B] the autopilot link is alive."""
    inference_ok: B8
    """[B] the policy met its deadline without error."""
    calibrator_alarm: B8
    """[B] the calibrator's alarm."""
    stage_ok: B8 | None = None
    """[B] every other stage of the tick ran without error (None = no report)."""


@dataclass(frozen=True, slots=True)
class ShieldResult:
    """The shield's decision, batched (arrays [B] unless noted)."""

    setpoint: F64
    """[B, 4] (vn, ve, vd, yaw rate), always finite."""
    intervened: B8
    layer: I64
    """0 none, 1 watchdog, 2 barrier, 3 fallback."""
    reason: I64
    """Reason values."""
    fallback_stage: I64
    """Stage values."""
    min_slack_m: F64
    """Smallest d − D − margin over the constraints for the setpoint (NaN where the watchdog held)."""


class Shield:
    """Watchdog → barrier → fallback, over a fixed batch of n vehicles."""

    def __init__(
        self,
        mission: Mission,
        nominal: NominalModel,
        silence: SilenceBehavior,
        config: ShieldConfig | None = None,
        n: int = 1,
    ) -> None:
        if n < 1:
            raise ConfigError(f"Shield batch size n must be >= 1, got {n}")
        config = config or ShieldConfig()
        self.mission = mission
        self.nominal = nominal
        self.silence = silence
        self.config = config
        self.n = n
        lim = mission.limits
        self.action_low = np.array(
            [-lim.horizontal_m_s, -lim.horizontal_m_s, -lim.up_m_s, -lim.yaw_rate_rad_s]
        )
        """[4] lower bounds of a setpoint (horizontal components bounded by the norm too)."""
        self.action_high = np.array(
            [lim.horizontal_m_s, lim.horizontal_m_s, lim.down_m_s, lim.yaw_rate_rad_s]
        )
        """[4] upper bounds of a setpoint."""
        self.watchdog = Watchdog(config.freshness_limits_s, n)
        self.barrier = Barrier(
            mission,
            nominal,
            silence,
            projection_iterations=config.projection_iterations,
            tolerance_m=config.tolerance_m,
        )
        self.latch = FallbackLatch(
            mission.fallback,
            n,
            release_slack_m=config.release_slack_m,
            release_dwell_s=config.release_dwell_s,
            brake_done_speed_m_s=config.brake_done_speed_m_s,
            brake_timeout_s=config.brake_timeout_s,
            hold_gain_1_s=config.hold_gain_1_s,
            hold_speed_m_s=config.hold_speed_m_s,
            trim_gain_1_s2=config.hold_trim_gain_1_s2,
            trim_max_m_s=config.hold_trim_max_m_s,
            return_speed_m_s=config.return_speed_m_s,
            return_accept_m=config.return_accept_m,
            alarm_reason=int(Reason.CALIBRATION_ALARM),
            alarm_commit_s=config.alarm_commit_s,
        )
        self._vmax_h = lim.horizontal_m_s
        # Batch 1 (onboard) takes the scalar path when it can: see _certify_one.
        self._fast = n == 1
        self._limits = tuple(float(x) for x in config.freshness_limits_s)
        self._low = self.action_low.tolist()
        self._high = self.action_high.tolist()
        #: Slack the scalar path needs before it decides alone: far above rounding (~1e-12 m).
        self._guard_m = 1e-6 + config.tolerance_m
        #: Calls decided by the batched path (at batch 1: those the scalar path handed over).
        self.batched_calls = 0

    def reset(self, mask: B8 | None = None) -> None:
        """Forget the fallback latch (activation, new episode) for the masked vehicles (all if None)."""
        self.latch.reset(mask)

    def clip_to_limits(self, vel_cmd: F64) -> F64:
        """Velocity commands [B, 3] clipped to the mission's speed limits (horizontal by norm)."""
        out = np.empty_like(vel_cmd)
        h = np.sqrt(vel_cmd[:, 0] ** 2 + vel_cmd[:, 1] ** 2)
        scale = np.where(h > self._vmax_h, self._vmax_h / np.where(h > 0, h, 1.0), 1.0)
        out[:, 0] = vel_cmd[:, 0] * scale
        out[:, 1] = vel_cmd[:, 1] * scale
        out[:, 2] = np.clip(vel_cmd[:, 2], self.action_low[2], self.action_high[2])
        return out

    def certify(self, inp: ShieldInput) -> ShieldResult:
        """Certify one tick's actions; never raises on bad numbers, never returns a non-finite setpoint."""
        if inp.pos_ned_m.shape[0] != self.n:
            raise ConfigError(
                f"Shield was built for a batch of {self.n}, got {inp.pos_ned_m.shape[0]}; "
                f"build one Shield per batch size"
            )
        if self._fast:
            fast = self._certify_one(inp)
            if fast is not None:
                return fast
        self.batched_calls += 1
        with np.errstate(all="ignore"):
            return self._certify(inp)

    def _certify_one(self, inp: ShieldInput) -> ShieldResult | None:
        """The common onboard tick in Python floats, or None when the batched path must decide.

        Handles one vehicle whose inputs are all fresh and finite, with no alarm and no fallback
        latched, whose command (speed-clipped or not) the barrier passes or projects onto a
        verified safe command (:meth:`Barrier.filter_one`): then the batched path returns the same
        layer, reason and stage, the same setpoint bits where the command passed and the same
        setpoint up to rounding where it was projected. Anything else (the watchdog, an infeasible
        tick, the fallback, a decision within 1 µm of a threshold) goes to :meth:`_certify`.
        """
        if (
            self.latch.stage[0] != 0
            or inp.calibrator_alarm[0]
            or not inp.link_ok[0]
            or not inp.inference_ok[0]
        ):
            return None
        if inp.stage_ok is not None and not inp.stage_ok[0]:
            return None
        pn, pe, pd = pos = inp.pos_ned_m[0].tolist()
        vn, ve, vd = vel = inp.vel_ned_m_s[0].tolist()
        an, ae, ad, yaw = inp.action[0].tolist()
        a_pos, a_vel, a_att, a_rate = inp.signal_age_s[0].tolist()
        margin = inp.margin_m[0].item()
        lim = self._limits
        # Fresh (a NaN age compares False) and finite: otherwise the watchdog holds.
        if not (0.0 <= a_pos <= lim[0] and 0.0 <= a_vel <= lim[1] and 0.0 <= a_att <= lim[2]):
            return None
        if not (0.0 <= a_rate <= lim[3] and math.isfinite(margin)):
            return None
        if not math.isfinite(pn + pe + pd + vn + ve + vd + an + ae + ad + yaw):
            return None
        lo, hi = self._low, self._high
        # clip_to_limits, same operations on the same doubles
        h = math.sqrt(an * an + ae * ae)
        scale = self._vmax_h / h if h > self._vmax_h else 1.0
        u = (an * scale, ae * scale, min(max(ad, lo[2]), hi[2]))
        yaw_c = min(max(yaw, lo[3]), hi[3])
        clipped = u[0] != an or u[1] != ae or u[2] != ad or yaw_c != yaw
        latency = self.config.latency_s + max(a_pos, a_vel)
        got = self.barrier.filter_one(pos, vel, max(margin, 0.0), latency, u, self._guard_m)
        if got is None:
            return None
        cmd, code, slack = got
        modified = cmd != u
        if not modified:
            code = _SPEED if clipped else _NONE
        return ShieldResult(
            setpoint=np.array([[cmd[0], cmd[1], cmd[2], yaw_c]]),
            intervened=np.array([clipped or modified]),
            layer=np.array([2 if clipped or modified else 0], dtype=np.int64),
            reason=np.array([code], dtype=np.int64),
            fallback_stage=self.latch.stage.copy(),
            min_slack_m=np.array([slack]),
        )

    def _certify(self, inp: ShieldInput) -> ShieldResult:
        action = inp.action
        wd = self.watchdog.check(
            inp.pos_ned_m,
            inp.vel_ned_m_s,
            action,
            inp.margin_m,
            inp.signal_age_s,
            inp.link_ok,
            inp.inference_ok,
            inp.stage_ok,
        )
        wd_ok = wd == 0
        all_ok = bool(wd_ok.all())
        pos, vel, margin, raw = inp.pos_ned_m, inp.vel_ned_m_s, inp.margin_m, action
        ages = inp.signal_age_s[:, :2]
        if not all_ok:
            # Rows the watchdog holds get harmless numbers, so the batched algebra stays quiet.
            keep = wd_ok[:, None]
            pos = np.where(keep, pos, 0.0)
            vel = np.where(keep, vel, 0.0)
            raw = np.where(keep, raw, 0.0)
            margin = np.where(wd_ok, margin, 0.0)
            ages = np.where(keep, ages, 0.0)
        margin = np.maximum(margin, 0.0)  # a negative margin would loosen the barrier
        latency = self.config.latency_s + np.maximum(ages[:, 0], ages[:, 1])  # position, velocity

        u = self.clip_to_limits(raw[:, :3])
        yaw = np.clip(raw[:, 3], self.action_low[3], self.action_high[3])
        clipped = np.any(u != raw[:, :3], axis=1) | (yaw != raw[:, 3])

        barrier = self.barrier
        prep = barrier.prepare(pos, vel, margin, latency)
        res = barrier.certify(prep, u)

        alarm = inp.calibrator_alarm & wd_ok
        enter = wd_ok & (~res.ok | alarm)
        enter_reason = np.where(alarm, _ALARM, np.where(res.breached, _BREACH, _INFEASIBLE))
        clear = wd_ok & ~alarm & (res.raw_min_slack_m >= self.config.release_slack_m)
        latch = self.latch
        latch.update(inp.now_s, pos, vel, enter, enter_reason, clear, wd_ok)

        setpoint = np.empty((self.n, 4))
        setpoint[:, :3] = res.vel_cmd_ned_m_s
        setpoint[:, 3] = yaw
        min_slack = res.min_slack_m.copy()
        layer = np.where(res.modified | clipped, 2, 0)
        reason = np.where(res.modified, res.reason, np.where(clipped, _SPEED, _NONE))

        in_fb = latch.stage != 0
        if in_fb.any():
            cmd, landing = latch.command(pos)
            fb = barrier.certify(prep, self.clip_to_limits(cmd), floor_off=landing)
            # A fallback command the barrier cannot certify becomes the brake (the hold's learnt
            # trim: what really keeps this vehicle still, zero for a vehicle that follows its
            # commands; plus the descent while landing), with a push out of every margin band the
            # vehicle is in: a bare zero-velocity setpoint has no position feedback, and in wind a
            # vehicle parked in a band (where noise in the measured velocity keeps every command
            # uncertifiable) drifted into keep-out zones.
            fb_cmd = fb.vel_cmd_ned_m_s
            stuck = in_fb & ~fb.ok
            if stuck.any():
                cfg = self.config
                push = barrier.recovery_command(
                    prep,
                    self.clip_to_limits(latch.still_command()),
                    cfg.hold_gain_1_s,
                    cfg.hold_speed_m_s,
                    floor_off=landing,
                )
                fb_cmd = np.where(stuck[:, None], self.clip_to_limits(push), fb_cmd)
            setpoint[in_fb, :3] = fb_cmd[in_fb]
            setpoint[in_fb, 3] = 0.0
            min_slack[in_fb] = fb.min_slack_m[in_fb]
            layer[in_fb] = 3
            reason[in_fb] = latch.reason[in_fb]
        if not all_ok:
            hold = ~wd_ok
            setpoint[hold] = 0.0
            layer[hold] = 1
            reason[hold] = wd[hold]
            min_slack[hold] = np.nan
        finite = np.isfinite(setpoint).all(axis=1)
        if not finite.all():  # belt and braces: nothing non-finite ever reaches the bridge
            bad = ~finite
            setpoint[bad] = 0.0
            layer[bad] = 1
            reason[bad] = _NON_FINITE
        return ShieldResult(
            setpoint=setpoint,
            intervened=layer > 0,
            layer=layer,
            reason=reason,
            fallback_stage=latch.stage.copy(),
            min_slack_m=min_slack,
        )


__all__ = ["Reason", "Shield", "ShieldConfig", "ShieldInput", "ShieldResult", "Stage"]
