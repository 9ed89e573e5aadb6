"""The agent's tick as a pure, batched core: observation → policy → calibrator → shield.

``AgentCore.step`` takes vehicle states with a leading batch axis and returns a batched
:class:`Decision`. The onboard loop calls it with B = 1 at the control rate; certification
calls the very same object with B in the thousands. No I/O happens here: the loop owns the
bridge and the flight log, and time comes in as an argument.

Order within a tick (why): the calibrator's margin q_t must exist before the shield filters,
and the nominal prediction that the calibrator scores must be flown with the commands
*actually sent*, known only after the shield. So: read q_t → shield → advance the predictions with
the certified command → calibrator update (its new margin is used next tick).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from edge_agent.bundle import Manifest
from edge_agent.calibrator import Calibrator, CalibratorConfig, CalibratorTick
from edge_agent.errors import BundleContractError
from edge_agent.mission import Mission
from edge_agent.nominal import NominalModel, ShadowPredictions, SilenceBehavior
from edge_agent.observation import ObservationBuilder, StateArrays
from edge_agent.shield import Reason, Shield, ShieldConfig, ShieldInput

F64 = NDArray[np.float64]

_NAN4 = [math.nan] * 4
# Templates copied for the batch-1 tick's [1]-arrays (a copy is cheaper than np.array([x])).
_TRUE = np.ones(1, dtype=bool)
_FALSE = np.zeros(1, dtype=bool)
_ZERO_INDEX = np.zeros(1, dtype=np.int_)

#: Action kinds the runtime flies today. The others are declared in the bundle format but the
#: shield reasons about velocity commands only, so the runtime refuses them at start-up.
FLYABLE_ACTION_KINDS = ("velocity_ned_yaw_rate", "velocity_enu_yaw_rate")


class PolicyLike(Protocol):
    """Anything that maps observations [B, D] float32 to physical actions [B, A] float32."""

    def act(self, obs: NDArray[np.float32]) -> NDArray[np.float32]: ...


@dataclass(frozen=True, slots=True)
class Decision:
    """What one tick decided, for every vehicle of the batch (arrays [B] unless noted)."""

    raw_action: F64
    """[B, 4] the policy's action in NED (vn, ve, vd, yaw rate), before the shield."""
    setpoint: F64
    """[B, 4] the certified velocity setpoint sent to the autopilot; always finite."""
    intervened: NDArray[np.bool_]
    layer: NDArray[np.int_]
    """0 none, 1 watchdog, 2 barrier, 3 fallback."""
    reason: NDArray[np.int_]
    """edge_agent.shield.Reason values."""
    fallback_stage: NDArray[np.int_]
    margin_m: F64
    """q_t used by the shield this tick."""
    score_m: F64
    miscoverage: F64
    alarm: NDArray[np.bool_]
    min_slack_m: F64
    goal_index: NDArray[np.int_]
    mission_complete: NDArray[np.bool_]
    inference_s: float
    """Wall time the policy took this tick (whole batch)."""


def action_to_ned(kind: str, action: F64) -> F64:
    """Convert a velocity action [B, 4] of the bundle's kind into NED + NED yaw rate."""
    if kind == "velocity_ned_yaw_rate":
        return action
    if kind == "velocity_enu_yaw_rate":
        out = np.empty_like(action)
        out[:, 0] = action[:, 1]
        out[:, 1] = action[:, 0]
        out[:, 2] = -action[:, 2]
        out[:, 3] = -action[:, 3]  # ENU yaw rate is about up (counter-clockwise), NED about down
        return out
    raise BundleContractError(
        f"action kind {kind!r} cannot be flown: the shield certifies velocity commands only "
        f"({', '.join(FLYABLE_ACTION_KINDS)}); export the policy with a velocity action"
    )


def ned_to_action(kind: str, ned: F64) -> F64:
    """Inverse of :func:`action_to_ned` (the previous action fed back to the policy)."""
    return action_to_ned(kind, ned)  # both conversions are involutions


class AgentCore:
    """The tick, batched. Owns per-vehicle progress (goal index, previous action)."""

    def __init__(
        self,
        *,
        policy: PolicyLike,
        action_kind: str,
        builder: ObservationBuilder,
        mission: Mission,
        shield: Shield,
        calibrator: Calibrator,
        nominal: NominalModel,
        n: int = 1,
        shield_enabled: bool = True,
        inference_deadline_s: float = float("inf"),
        timer: Callable[[], float] | None = None,
    ) -> None:
        if action_kind not in FLYABLE_ACTION_KINDS:
            action_to_ned(action_kind, np.zeros((1, 4)))  # raises the explanatory error
        self.policy = policy
        self.action_kind = action_kind
        self.builder = builder
        self.mission = mission
        self.shield = shield
        self.calibrator = calibrator
        self.nominal = nominal
        self.n = n
        self.shield_enabled = shield_enabled
        self.inference_deadline_s = inference_deadline_s
        self._timer = timer
        self._waypoints = np.asarray(mission.waypoints_ned_m, dtype=np.float64)
        self._goals = [tuple(w) for w in self._waypoints.tolist()]
        self._enu = action_kind == "velocity_enu_yaw_rate"
        self._accept_m = float(mission.acceptance_radius_m)
        self._shadows = ShadowPredictions(nominal, calibrator.config.horizon_ticks, n)
        self.goal_index = np.zeros(n, dtype=np.int_)
        self.prev_action = np.zeros((n, 4))
        self.margin_m = calibrator.margin_m.copy()
        self._alarm = np.zeros(n, dtype=bool)
        #: Batch 1 with the shield on takes :meth:`_step_one` (tests switch it off to compare).
        self._fast = n == 1

    def _calibrate(
        self, s: StateArrays, now_s: float, setpoint: F64, valid: NDArray[np.bool_]
    ) -> CalibratorTick:
        """Score the nominal model and update the margin (edge_agent.nominal.ShadowPredictions)."""
        score, counts = self._shadows.tick(now_s, s.pos_ned_m, s.vel_ned_m_s, valid, setpoint[:, :3])
        return self.calibrator.update(score, counts)

    def reset(self, mask: NDArray[np.bool_] | None = None) -> None:
        """Restart progress (activation, or a new certification episode) for the masked vehicles."""
        sel = slice(None) if mask is None else mask
        self.goal_index[sel] = 0
        self.prev_action[sel] = 0.0
        self._alarm[sel] = False
        self._shadows.reset(mask)
        self.shield.reset(mask)
        self.calibrator.reset(mask)
        self.margin_m[sel] = self.calibrator.margin_m[sel]

    def step(self, s: StateArrays, now_s: float, link_ok: NDArray[np.bool_]) -> Decision:
        """One tick for every vehicle of the batch."""
        if self._fast and self.shield_enabled:
            return self._step_one(s, now_s, link_ok)
        # Waypoint progress: advance while within the acceptance radius of the current goal.
        last = len(self._waypoints) - 1
        goal = self._waypoints[self.goal_index]
        reached = np.linalg.norm(s.pos_ned_m - goal, axis=-1) < self._accept_m
        # Complete only on reaching the LAST waypoint (judged before advancing past others).
        complete = reached & (self.goal_index == last)
        advance = reached & (self.goal_index < last)
        if advance.any():
            self.goal_index[advance] += 1
            goal = self._waypoints[self.goal_index]

        obs = self.builder.build(s, goal, ned_to_action(self.action_kind, self.prev_action))
        obs_finite = np.isfinite(obs).all(axis=-1)
        t0 = self._timer() if self._timer else 0.0
        try:
            raw = self.policy.act(np.nan_to_num(obs, nan=0.0, posinf=0.0, neginf=0.0))
            inference_ok = np.ones(self.n, dtype=bool)
        except Exception:  # an inference failure is a watchdog event, never a crash
            raw = np.full((self.n, 4), np.nan, dtype=np.float32)
            inference_ok = np.zeros(self.n, dtype=bool)
        inference_s = (self._timer() - t0) if self._timer else 0.0
        if inference_s > self.inference_deadline_s:
            inference_ok[:] = False
        raw_ned = action_to_ned(self.action_kind, raw.astype(np.float64))
        # A non-finite observation poisons the action even if the policy produced numbers.
        raw_ned[~obs_finite] = np.nan

        margin = self.margin_m
        res = self.shield.certify(
            ShieldInput(
                now_s=now_s,
                pos_ned_m=s.pos_ned_m,
                vel_ned_m_s=s.vel_ned_m_s,
                action=raw_ned,
                margin_m=margin,
                signal_age_s=s.signal_age_s,
                link_ok=link_ok,
                inference_ok=inference_ok,
                calibrator_alarm=self._alarm,
            )
        )
        setpoint = res.setpoint
        if not self.shield_enabled:
            # Demonstration mode (--no-shield): the barrier and fallback are bypassed, but a
            # non-finite command still never reaches the bridge (the watchdog's hold stays).
            setpoint = np.where(res.layer[:, None] == 1, res.setpoint, np.nan_to_num(raw_ned))
            setpoint = np.clip(setpoint, self.shield.action_low, self.shield.action_high)

        valid = np.isfinite(s.pos_ned_m).all(axis=-1) & (s.signal_age_s[:, 0] < 1.0)
        cal = self._calibrate(s, now_s, setpoint, valid)
        self.margin_m = cal.margin_m
        self._alarm = cal.alarm
        self.prev_action = setpoint
        return Decision(
            raw_action=raw_ned,
            setpoint=setpoint,
            intervened=res.intervened if self.shield_enabled else (res.layer == 1),
            layer=res.layer,
            reason=res.reason,
            fallback_stage=res.fallback_stage,
            margin_m=margin,
            score_m=cal.score_m,
            miscoverage=cal.miscoverage,
            alarm=cal.alarm,
            min_slack_m=res.min_slack_m,
            goal_index=self.goal_index.copy(),
            mission_complete=complete,
            inference_s=inference_s,
        )

    def _step_one(self, s: StateArrays, now_s: float, link_ok: NDArray[np.bool_]) -> Decision:
        """:meth:`step` for the onboard batch of one, with Python floats where numpy's per-call
        overhead on [1]-arrays would dominate. Same stages, same order, same results (tested).

        The observation goes from Python floats straight into the policy's bound input buffer
        (``ObservationBuilder.build_one``, ``PolicyRunner.act_one``); features without a scalar
        form and non-finite values take the batched builder. The shield gets the arrays it takes.
        """
        gi = int(self.goal_index[0])
        last = len(self._waypoints) - 1
        pos = s.pos_ned_m[0].tolist()
        vel = s.vel_ned_m_s[0].tolist()
        pn, pe, pd = pos
        gn, ge, gd = self._goals[gi]
        dn, de, dd = pn - gn, pe - ge, pd - gd
        reached = math.sqrt(dn * dn + de * de + dd * dd) < self._accept_m
        complete = reached and gi == last
        if reached and gi < last:
            gi += 1
            self.goal_index[0] = gi

        prev = self.prev_action[0].tolist()
        if self._enu:  # ned_to_action
            prev = [prev[1], prev[0], -prev[2], -prev[3]]
        values = self.builder.build_one(s, pos, vel, self._goals[gi], prev)
        policy = self.policy
        act_one = getattr(policy, "act_one", None)
        timer = self._timer
        raw: list[float] | None = None
        failed = False
        if values is not None:  # finite (build_one returns None otherwise)
            obs_finite = True
            t0 = timer() if timer else 0.0
            try:
                if act_one is not None:
                    raw = act_one(values)
                else:
                    out = policy.act(np.array([values], dtype=np.float32))
                inference_ok = True
            except Exception:  # an inference failure is a watchdog event, never a crash
                inference_ok = False
                failed = True
        else:
            obs = self.builder.build(
                s, self._waypoints[gi : gi + 1], ned_to_action(self.action_kind, self.prev_action)
            )
            obs_finite = bool(np.isfinite(obs).all())
            clean = obs.copy() if obs_finite else np.nan_to_num(obs, nan=0.0, posinf=0.0, neginf=0.0)
            t0 = timer() if timer else 0.0
            try:
                out = policy.act(clean)
                inference_ok = True
            except Exception:  # an inference failure is a watchdog event, never a crash
                inference_ok = False
                failed = True
        inference_s = (timer() - t0) if timer else 0.0
        if inference_s > self.inference_deadline_s:
            inference_ok = False
        if failed or not obs_finite:  # a non-finite observation poisons the action
            raw_ned = _NAN4
        else:
            if raw is None:
                raw = out[0].tolist()  # float32 → float64, as astype
            if self._enu:  # action_to_ned
                raw_ned = [raw[1], raw[0], -raw[2], -raw[3]]
            else:
                raw_ned = raw
        raw_action = np.array([raw_ned], dtype=np.float64)

        margin = self.margin_m
        res = self.shield.certify(
            ShieldInput(
                now_s=now_s,
                pos_ned_m=s.pos_ned_m,
                vel_ned_m_s=s.vel_ned_m_s,
                action=raw_action,
                margin_m=margin,
                signal_age_s=s.signal_age_s,
                link_ok=link_ok,
                inference_ok=(_TRUE if inference_ok else _FALSE).copy(),
                calibrator_alarm=self._alarm,
            )
        )
        setpoint = res.setpoint
        u0, u1, u2, _ = setpoint[0].tolist()
        valid = math.isfinite(pn) and math.isfinite(pe) and math.isfinite(pd) and s.signal_age_s.item(0) < 1.0
        score, counts = self._shadows.tick_one(now_s, pos, vel, valid, (u0, u1, u2))
        cal = self.calibrator.update(score, counts)
        self.margin_m = cal.margin_m
        self._alarm = cal.alarm
        self.prev_action = setpoint
        goal_index = _ZERO_INDEX.copy()
        goal_index[0] = gi
        return Decision(
            raw_action=raw_action,
            setpoint=setpoint,
            intervened=res.intervened,
            layer=res.layer,
            reason=res.reason,
            fallback_stage=res.fallback_stage,
            margin_m=margin,
            score_m=cal.score_m,
            miscoverage=cal.miscoverage,
            alarm=cal.alarm,
            min_slack_m=res.min_slack_m,
            goal_index=goal_index,
            mission_complete=(_TRUE if complete else _FALSE).copy(),
            inference_s=inference_s,
        )


#: Margin used when a bundle has never been calibrated (metres). Deliberately generous: an
#: uncalibrated policy flies with a wide berth until `edge-agent calibrate` has measured better.
UNCALIBRATED_MARGIN_M = 2.0
#: The shield's prediction horizon, which is also the calibrator's scoring horizon (seconds).
HORIZON_S = 1.0


def calibrator_config_for(
    manifest_calibration: Mapping[str, Any] | None, rate_hz: float
) -> tuple[CalibratorConfig, float]:
    """The onboard calibrator's settings and warm-start margin from a bundle's calibration section."""
    horizon_ticks = max(1, round(HORIZON_S * rate_hz))
    if not manifest_calibration:
        return CalibratorConfig(horizon_ticks=horizon_ticks, lr=0.02, alpha=0.1), UNCALIBRATED_MARGIN_M
    cal = manifest_calibration
    return (
        CalibratorConfig(horizon_ticks=horizon_ticks, lr=0.02, alpha=float(cal["alpha"])),
        float(cal["quantile_m"]),
    )


def build_agent(
    *,
    policy: PolicyLike,
    manifest: Manifest,
    mission: Mission,
    n: int = 1,
    params: Mapping[str, float] | None = None,
    shield_config: ShieldConfig | None = None,
    nominal: NominalModel | None = None,
    shield_enabled: bool = True,
    inference_deadline_s: float = float("inf"),
    timer: Callable[[], float] | None = None,
) -> AgentCore:
    """Assemble the tick from a verified bundle's manifest and a mission: the one way both the
    onboard loop (n = 1) and certification (n in the thousands) build it."""
    rate_hz = manifest.control_rate_hz
    v = mission.vehicle
    nominal = nominal or NominalModel.for_vehicle(v)
    if shield_config is None:
        shield_config = ShieldConfig() if v.latency_s is None else ShieldConfig(latency_s=v.latency_s)
    silence = SilenceBehavior.for_autopilot(mission, params)
    shield = Shield(mission, nominal, silence, shield_config, n=n)
    cal_config, warm = calibrator_config_for(manifest.calibration, rate_hz)
    builder = ObservationBuilder(
        manifest.feature_names,
        manifest.clip_lo,
        manifest.clip_hi,
        mission.geometry_features,
        manifest.action.size,
    )
    return AgentCore(
        policy=policy,
        action_kind=manifest.action.kind,
        builder=builder,
        mission=mission,
        shield=shield,
        calibrator=Calibrator(cal_config, n=n, warm_quantile_m=warm),
        nominal=nominal,
        n=n,
        shield_enabled=shield_enabled,
        inference_deadline_s=inference_deadline_s,
        timer=timer,
    )


__all__ = [
    "FLYABLE_ACTION_KINDS",
    "AgentCore",
    "Decision",
    "PolicyLike",
    "Reason",
    "action_to_ned",
    "build_agent",
]
