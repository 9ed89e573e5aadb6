"""Nonconformity scores from recorded flights: edge-agent logs (.eal), MAVLink .tlog, PX4 ULog (.ulg).

Every format is reduced to the same three time series: realised position and velocity (NED) and
the velocity command in force. The score is the onboard one (``edge_agent.calibrator``): at
sample i, ``‖pos(t_i) − NominalModel.predict(pos(t_j), vel(t_j), cmd(t_j), H)‖`` with
t_j ≈ t_i − H, the same nominal model and horizon the shield uses. Only samples where a fresh
velocity command was in force at both ends are scored.

An edge-agent log has one record per control tick, so it is scored exactly as the onboard agent
scores (``edge_agent.agent.AgentCore``): a shadow of the nominal model (the mission's [vehicle]
constants, from the log header) starts at tick j = i − H and flies, tick by tick, the time that
really passed with the commands sent at ticks j … i − 1; it is scored at tick i (H ticks later,
whatever the wall time: a late tick must not shift the pairing); valid where the position is
finite and under 1 s old at both ends. The replay equals the ``score_m`` the agent recorded (tested). Telemetry logs (.tlog, .ulg) have no ticks:
they are paired by time stamp and predicted with the command at t − H held.

MAVLink: commands are SET_POSITION_TARGET_LOCAL_NED with a velocity type mask (frame LOCAL_NED),
positions LOCAL_POSITION_NED. A companion's own recording and the vehicle's may be separate files
(as in data/ardupilot): give them all, they are merged by their recorded timestamps.
PX4 ULog: ``trajectory_setpoint`` velocity vs ``vehicle_local_position``, only while
``vehicle_status.nav_state`` is OFFBOARD (14).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.errors import CalibrationError
from edge_agent.flightlog import read_log
from edge_agent.mission import VehicleSpec
from edge_agent.nominal import NominalModel, ShadowPredictions

F64 = NDArray[np.float64]

#: A command older than this is not "in force" (the runtime sends at ≥ 20 Hz).
COMMAND_FRESH_S = 0.5
PX4_NAV_STATE_OFFBOARD = 14
#: type_mask bits 8, 16, 32 (vx, vy, vz ignored) must be clear for a velocity command.
_VEL_IGNORE_BITS = 8 | 16 | 32
_MAV_FRAME_LOCAL_NED = 1


@dataclass(frozen=True, slots=True)
class Track:
    """One flight reduced to what scoring needs (arrays [T] / [T, 3]; commands [C] / [C, 3])."""

    t_s: F64
    pos_ned_m: F64
    vel_ned_m_s: F64
    cmd_t_s: F64
    cmd_vel_ned_m_s: F64
    source: str
    tick_rate_hz: float | None = None
    """Set for logs with one sample per control tick (.eal): pair by tick count, as onboard."""
    valid: NDArray[np.bool_] | None = None
    """[T] the onboard validity flag of each tick (position finite and fresh), when known."""
    nominal: NominalModel | None = None
    """The nominal model the agent flew with (from the log's mission), when known."""


@dataclass(frozen=True, slots=True)
class LogScores:
    """Scores from one or more logs, in time order per log."""

    scores_m: F64
    sources: tuple[str, ...]


def scores_from_track(track: Track, horizon_s: float, nominal: NominalModel | None = None) -> F64:
    """The onboard score at every sample with a fresh command at t − H and at t."""
    model = nominal or track.nominal or NominalModel()
    t, cmd_t = track.t_s, track.cmd_t_s
    if t.size < 2 or cmd_t.size == 0:
        return np.zeros(0)
    if track.tick_rate_hz is not None:
        return _scores_by_tick(track, horizon_s, track.tick_rate_hz, model)
    dt = float(np.median(np.diff(t)))
    j = np.searchsorted(t, t - horizon_s)
    j = np.clip(j, 0, t.size - 1)
    ok = np.abs(t[j] - (t - horizon_s)) <= max(0.6 * dt, 1e-3)
    # Command in force at a time: the last one sent at or before it, if fresh.
    k_j = np.searchsorted(cmd_t, t[j], side="right") - 1
    k_i = np.searchsorted(cmd_t, t, side="right") - 1
    ok &= (k_j >= 0) & (k_i >= 0)
    k_j, k_i = np.maximum(k_j, 0), np.maximum(k_i, 0)
    ok &= (t[j] - cmd_t[k_j] <= COMMAND_FRESH_S) & (t - cmd_t[k_i] <= COMMAND_FRESH_S)
    ok &= np.isfinite(track.pos_ned_m).all(axis=1) & np.isfinite(track.pos_ned_m[j]).all(axis=1)
    ok &= np.isfinite(track.vel_ned_m_s[j]).all(axis=1) & np.isfinite(track.cmd_vel_ned_m_s[k_j]).all(axis=1)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return np.zeros(0)
    pred = model.predict(
        track.pos_ned_m[j[idx]], track.vel_ned_m_s[j[idx]], track.cmd_vel_ned_m_s[k_j[idx]], horizon_s
    )
    return np.asarray(np.linalg.norm(track.pos_ned_m[idx] - pred, axis=1), dtype=np.float64)


def _scores_by_tick(track: Track, horizon_s: float, rate_hz: float, model: NominalModel) -> F64:
    """The onboard score for per-tick samples, replayed with the very ring the agent flies
    (``edge_agent.nominal.ShadowPredictions``), so it equals the recorded score_m."""
    shadows = ShadowPredictions(model, max(1, round(horizon_s * rate_hz)))
    ok = np.asarray(np.isfinite(track.pos_ned_m).all(axis=1), dtype=bool)
    if track.valid is not None:
        ok = ok & track.valid
    out: list[float] = []
    with np.errstate(invalid="ignore"):
        for k in range(track.t_s.size):
            score, counts = shadows.tick(
                float(track.t_s[k]),
                track.pos_ned_m[k : k + 1],
                track.vel_ned_m_s[k : k + 1],
                ok[k : k + 1],
                track.cmd_vel_ned_m_s[k : k + 1],
            )
            if counts[0] and math.isfinite(score[0]):
                out.append(float(score[0]))
    return np.asarray(out, dtype=np.float64)


def nominal_for_vehicle(vehicle: Mapping[str, Any] | None) -> NominalModel:
    """The shield's nominal model for a logged mission's [vehicle] table (None: the defaults)."""
    return NominalModel.for_vehicle(VehicleSpec(**(vehicle or {})))


def read_eal(path: Path) -> Track:
    """An edge-agent flight log: measured position/velocity and the certified setpoint of every tick."""
    t, pos, vel, sp, fresh = [], [], [], [], []
    rate_hz: float | None = None
    vehicle: Mapping[str, Any] | None = None
    for rec in read_log(path):
        if rec.get("k") == "header":
            rate_hz = float(rec["rate_hz"]) if rec.get("rate_hz") else None
            mission = rec.get("mission")
            vehicle = mission.get("vehicle") if isinstance(mission, dict) else None
        if rec.get("k") != "tick":
            continue
        t.append(float(rec["t_s"]))
        pos.append(rec["pos_ned_m"])
        vel.append(rec["vel_ned_m_s"])
        sp.append(rec["setpoint"][:3])
        age = rec.get("age_s")
        # edge_agent.agent: a sample is valid while the position signal is under 1 s old.
        fresh.append(bool(age is None or float(age[0]) < 1.0))
    if not t:
        raise CalibrationError(
            f"{path} holds no tick records: the agent never flew; nothing to calibrate from"
        )
    ta = np.asarray(t, dtype=np.float64)
    # Setpoint of tick i is sent right after the state of tick i was read: same time stamp.
    return Track(
        ta,
        np.asarray(pos, float),
        np.asarray(vel, float),
        ta,
        np.asarray(sp, float),
        str(path),
        tick_rate_hz=rate_hz,
        valid=np.asarray(fresh, dtype=bool),
        nominal=nominal_for_vehicle(vehicle),
    )


def read_tlogs(paths: Sequence[Path]) -> Track:
    """MAVLink telemetry logs (one or several, merged by recorded time)."""
    from pymavlink import mavutil

    t, pos, vel, ct, cv = [], [], [], [], []
    for p in paths:
        try:
            conn = mavutil.mavlink_connection(str(p))
        except OSError as exc:
            raise CalibrationError(f"cannot open {p}: {exc}") from exc
        while (
            msg := conn.recv_match(type=["LOCAL_POSITION_NED", "SET_POSITION_TARGET_LOCAL_NED"])
        ) is not None:
            stamp = float(msg._timestamp)
            if msg.get_type() == "LOCAL_POSITION_NED":
                t.append(stamp)
                pos.append((msg.x, msg.y, msg.z))
                vel.append((msg.vx, msg.vy, msg.vz))
            elif msg.coordinate_frame == _MAV_FRAME_LOCAL_NED and not (msg.type_mask & _VEL_IGNORE_BITS):
                ct.append(stamp)
                cv.append((msg.vx, msg.vy, msg.vz))
    names = ", ".join(map(str, paths))
    if not t:
        raise CalibrationError(
            f"{names}: no LOCAL_POSITION_NED messages; give the vehicle's telemetry log as well as the companion's"
        )
    if not ct:
        raise CalibrationError(
            f"{names}: no velocity SET_POSITION_TARGET_LOCAL_NED (frame LOCAL_NED) commands; give the companion's "
            f"recording too (commands and telemetry may be in separate files)"
        )
    o, oc = np.argsort(t, kind="stable"), np.argsort(ct, kind="stable")
    return Track(
        np.asarray(t)[o],
        np.asarray(pos, float)[o],
        np.asarray(vel, float)[o],
        np.asarray(ct)[oc],
        np.asarray(cv, float)[oc],
        names,
    )


def read_ulog(path: Path) -> Track:
    """A PX4 ULog: trajectory_setpoint velocity vs vehicle_local_position while in OFFBOARD."""
    from pyulog import ULog

    try:
        log = ULog(str(path), ["trajectory_setpoint", "vehicle_local_position", "vehicle_status"])
    except Exception as exc:  # pyulog raises bare exceptions on corrupt files
        raise CalibrationError(f"cannot read {path} as a PX4 ULog: {exc}") from exc
    data = {d.name: d.data for d in log.data_list}
    if "vehicle_local_position" not in data:
        raise CalibrationError(f"{path} has no vehicle_local_position topic: no realised positions to score")
    status = data.get("vehicle_status")
    if status is None:
        raise CalibrationError(f"{path} has no vehicle_status topic, so offboard flight cannot be told apart")
    st_t = status["timestamp"] * 1e-6
    nav = status["nav_state"]
    if "trajectory_setpoint" not in data or not np.any(nav == PX4_NAV_STATE_OFFBOARD):
        modes = sorted({int(x) for x in nav})
        raise CalibrationError(
            f"{path} holds no offboard flight with velocity setpoints (vehicle_status.nav_state was "
            f"{modes}, never OFFBOARD = {PX4_NAV_STATE_OFFBOARD}"
            f"{'; no trajectory_setpoint topic at all' if 'trajectory_setpoint' not in data else ''}); "
            f"calibrate from a log of a flight the companion controlled with velocity setpoints"
        )
    sp = data["trajectory_setpoint"]
    keys = ("velocity[0]", "velocity[1]", "velocity[2]") if "velocity[0]" in sp else ("vx", "vy", "vz")
    cmd_t = sp["timestamp"] * 1e-6
    cmd = np.column_stack([sp[k] for k in keys]).astype(np.float64)
    mode_at = nav[np.clip(np.searchsorted(st_t, cmd_t, side="right") - 1, 0, nav.size - 1)]
    keep = (mode_at == PX4_NAV_STATE_OFFBOARD) & np.isfinite(cmd).all(axis=1)
    if not keep.any():
        raise CalibrationError(
            f"{path} holds no offboard flight with velocity setpoints (no finite trajectory_setpoint "
            f"velocity while in OFFBOARD); calibrate from a log of a velocity-controlled offboard flight"
        )
    lp = data["vehicle_local_position"]
    return Track(
        lp["timestamp"] * 1e-6,
        np.column_stack([lp["x"], lp["y"], lp["z"]]).astype(np.float64),
        np.column_stack([lp["vx"], lp["vy"], lp["vz"]]).astype(np.float64),
        cmd_t[keep],
        cmd[keep],
        str(path),
    )


def scores_from_logs(paths: Sequence[str | Path], horizon_s: float) -> LogScores:
    """Scores from the given logs: .eal and .ulg one by one, all .tlog files merged into one flight."""
    ps = [Path(p) for p in paths]
    if not ps:
        raise CalibrationError("no log given: pass --from-log PATH (an .eal, .tlog or .ulg file)")
    for p in ps:
        if not p.is_file():
            raise CalibrationError(f"log file {p} does not exist; check the path")
    tracks: list[Track] = []
    tlogs = [p for p in ps if p.suffix == ".tlog"]
    if tlogs:
        tracks.append(read_tlogs(tlogs))
    for p in ps:
        if p.suffix == ".eal":
            tracks.append(read_eal(p))
        elif p.suffix == ".ulg":
            tracks.append(read_ulog(p))
        elif p.suffix != ".tlog":
            raise CalibrationError(
                f"{p}: unknown log type {p.suffix!r}; give .eal (edge-agent run --log), .tlog (MAVLink) or .ulg (PX4)"
            )
    parts = [scores_from_track(tr, horizon_s) for tr in tracks]
    scores = np.concatenate(parts) if parts else np.zeros(0)
    if scores.size == 0:
        raise CalibrationError(
            f"{', '.join(map(str, ps))}: no sample had a fresh velocity command {horizon_s:g} s before it "
            f"and at it; nothing to score"
        )
    return LogScores(scores, tuple(tr.source for tr in tracks))


__all__ = [
    "COMMAND_FRESH_S",
    "LogScores",
    "Track",
    "nominal_for_vehicle",
    "read_eal",
    "read_tlogs",
    "read_ulog",
    "scores_from_logs",
    "scores_from_track",
]
