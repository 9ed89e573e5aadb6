"""The fixed observation-feature vocabulary, and a batched builder for it.

A bundle's manifest names its observation as an ordered list of these features (each with
its own clip range). The onboard runtime and the simulator's Gymnasium environments both
build observations with :func:`build_observation`, so a policy sees the same numbers in
training, in certification and in flight. It lives in the bridge because DESIGN.md lets both
``edge_agent`` and ``sitl`` import the bridge and nothing else they share.

Geometry (distance to the fence or to keep-out zones) is computed by whoever owns the
mission and passed in through :class:`FeatureInputs`; this module only converts frames,
orders and clips.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from firmware_bridge.frames import frd_to_flu, ned_to_enu, quat_ned_frd_to_enu_flu, yaw_from_quat

F64 = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One entry of the vocabulary."""

    name: str
    size: int
    unit: str
    frame: str
    """NED, ENU, FRD, FLU, or '-' for frame-free quantities."""
    default_clip: tuple[float, float]
    description: str


def _spec(name: str, size: int, unit: str, frame: str, clip: float, description: str) -> FeatureSpec:
    return FeatureSpec(name, size, unit, frame, (-clip, clip), description)


VOCABULARY: dict[str, FeatureSpec] = {
    s.name: s
    for s in (
        _spec("goal_rel_ned_m", 3, "m", "NED", 20.0, "goal position minus vehicle position"),
        _spec("goal_rel_enu_m", 3, "m", "ENU", 20.0, "goal position minus vehicle position"),
        _spec("pos_ned_m", 3, "m", "NED", 200.0, "vehicle position relative to the mission origin"),
        _spec("pos_enu_m", 3, "m", "ENU", 200.0, "vehicle position relative to the mission origin"),
        _spec("vel_ned_m_s", 3, "m/s", "NED", 15.0, "vehicle velocity"),
        _spec("vel_enu_m_s", 3, "m/s", "ENU", 15.0, "vehicle velocity"),
        _spec("q_wxyz_ned_frd", 4, "-", "NED/FRD", 1.0, "attitude quaternion, body FRD to world NED"),
        _spec("q_wxyz_enu_flu", 4, "-", "ENU/FLU", 1.0, "attitude quaternion, body FLU to world ENU"),
        _spec("rates_frd_rad_s", 3, "rad/s", "FRD", 10.0, "body angular rates"),
        _spec("rates_flu_rad_s", 3, "rad/s", "FLU", 10.0, "body angular rates"),
        _spec("yaw_sin_cos_ned", 2, "-", "NED", 1.0, "sin and cos of heading (0 = north, clockwise)"),
        _spec(
            "fence_dist_m", 1, "m", "-", 50.0, "horizontal distance to the geofence edge (negative outside)"
        ),
        _spec("alt_floor_dist_m", 1, "m", "-", 50.0, "height above the altitude floor (negative below)"),
        _spec(
            "alt_ceiling_dist_m", 1, "m", "-", 50.0, "distance below the altitude ceiling (negative above)"
        ),
        _spec(
            "keepout_rel_ned_m",
            3,
            "m",
            "NED",
            50.0,
            "from the vehicle to the nearest point of the nearest keep-out zone",
        ),
        _spec(
            "keepout_dist_m", 1, "m", "-", 50.0, "distance to the nearest keep-out surface (negative inside)"
        ),
        _spec("prev_action", 4, "action units", "action", 20.0, "the previous certified action"),
        _spec("battery_frac", 1, "-", "-", 1.0, "remaining battery fraction in [0, 1]"),
    )
}


@dataclass(frozen=True, slots=True)
class FeatureInputs:
    """Everything a feature can be built from, batched: arrays have a leading axis of size B."""

    pos_ned_m: F64
    """[B, 3] relative to the mission origin."""
    vel_ned_m_s: F64
    """[B, 3]"""
    q_wxyz: F64
    """[B, 4] body FRD → world NED."""
    rates_frd_rad_s: F64
    """[B, 3]"""
    goal_ned_m: F64
    """[B, 3] current goal, relative to the mission origin."""
    fence_dist_m: F64 | None = None
    """[B]"""
    alt_floor_dist_m: F64 | None = None
    """[B]"""
    alt_ceiling_dist_m: F64 | None = None
    """[B]"""
    keepout_rel_ned_m: F64 | None = None
    """[B, 3]"""
    keepout_dist_m: F64 | None = None
    """[B]"""
    prev_action: F64 | None = None
    """[B, A]"""
    battery_frac: F64 | None = None
    """[B]"""


def observation_size(names: list[str] | tuple[str, ...], action_size: int = 4) -> int:
    """Length of the observation vector the named features make."""
    return sum(action_size if n == "prev_action" else VOCABULARY[n].size for n in names)


def _column(name: str, x: FeatureInputs) -> F64:
    """One feature as [B, size] (unclipped)."""
    if name == "goal_rel_ned_m":
        return x.goal_ned_m - x.pos_ned_m
    if name == "goal_rel_enu_m":
        return ned_to_enu(x.goal_ned_m - x.pos_ned_m)
    if name == "pos_ned_m":
        return x.pos_ned_m
    if name == "pos_enu_m":
        return ned_to_enu(x.pos_ned_m)
    if name == "vel_ned_m_s":
        return x.vel_ned_m_s
    if name == "vel_enu_m_s":
        return ned_to_enu(x.vel_ned_m_s)
    if name == "q_wxyz_ned_frd":
        return x.q_wxyz
    if name == "q_wxyz_enu_flu":
        return quat_ned_frd_to_enu_flu(x.q_wxyz)
    if name == "rates_frd_rad_s":
        return x.rates_frd_rad_s
    if name == "rates_flu_rad_s":
        return frd_to_flu(x.rates_frd_rad_s)
    if name == "yaw_sin_cos_ned":
        yaw = yaw_from_quat(x.q_wxyz)
        return np.stack([np.sin(yaw), np.cos(yaw)], axis=-1)
    optional = {
        "fence_dist_m": x.fence_dist_m,
        "alt_floor_dist_m": x.alt_floor_dist_m,
        "alt_ceiling_dist_m": x.alt_ceiling_dist_m,
        "keepout_rel_ned_m": x.keepout_rel_ned_m,
        "keepout_dist_m": x.keepout_dist_m,
        "prev_action": x.prev_action,
        "battery_frac": x.battery_frac,
    }
    if name not in optional:
        raise KeyError(f"unknown observation feature {name!r}; the vocabulary is: {', '.join(VOCABULARY)}")
    value = optional[name]
    if value is None:
        raise ValueError(f"feature {name!r} needs FeatureInputs.{name}, which was not given")
    return value.reshape(value.shape[0], -1)


def build_observation(
    names: list[str] | tuple[str, ...],
    clip_lo: F64,
    clip_hi: F64,
    inputs: FeatureInputs,
    out: F64 | None = None,
) -> F64:
    """Observation [B, D] in the manifest's order, each element clipped to its declared range.

    ``clip_lo`` and ``clip_hi`` are [D] (per element). Non-finite inputs stay non-finite (the
    clip would hide them); the runtime's watchdog rejects them before the policy runs.
    """
    cols = [_column(n, inputs) for n in names]
    obs = np.concatenate(cols, axis=-1, out=out)
    finite = np.isfinite(obs)
    # np.clip's Python wrapper costs more than the clip at batch 1 (the onboard case); the two
    # ufuncs are what it computes: min(max(x, lo), hi), non-finite elements left as they are.
    np.maximum(obs, clip_lo, out=obs, where=finite)
    np.minimum(obs, clip_hi, out=obs, where=finite)
    return obs
