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

import math
from collections.abc import Callable, Sequence
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


# ----------------------------------------------------------------------------- batch of one
#: A feature of one vehicle from Python floats: (pos, vel, q, rates, goal, prev_action, battery).
ScalarFeature = Callable[..., tuple[float, ...]]

_S = float(np.sqrt(0.5))  # frames._Q_NED_TO_ENU's √½


def _quat_mul1(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, float, float, float]:
    """:func:`firmware_bridge.frames.quat_mul` for one pair, the same operations in the same order."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return (
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    )


def _q_enu_flu(q: tuple[float, ...]) -> tuple[float, float, float, float]:
    return _quat_mul1(_quat_mul1((0.0, _S, _S, 0.0), q), (0.0, 1.0, 0.0, 0.0))


# With finite inputs the frame swaps are exact (the batched matmul multiplies by 0 and ±1 and
# adds zeros), so these equal _column's numbers; non-finite values are left to the batched path.
_SCALAR: dict[str, ScalarFeature] = {
    "goal_rel_ned_m": lambda p, v, q, r, g, a, b: (g[0] - p[0], g[1] - p[1], g[2] - p[2]),
    "goal_rel_enu_m": lambda p, v, q, r, g, a, b: (g[1] - p[1], g[0] - p[0], -(g[2] - p[2])),
    "pos_ned_m": lambda p, v, q, r, g, a, b: p,
    "pos_enu_m": lambda p, v, q, r, g, a, b: (p[1], p[0], -p[2]),
    "vel_ned_m_s": lambda p, v, q, r, g, a, b: v,
    "vel_enu_m_s": lambda p, v, q, r, g, a, b: (v[1], v[0], -v[2]),
    "q_wxyz_ned_frd": lambda p, v, q, r, g, a, b: q,
    "q_wxyz_enu_flu": lambda p, v, q, r, g, a, b: _q_enu_flu(q),
    "rates_frd_rad_s": lambda p, v, q, r, g, a, b: r,
    "rates_flu_rad_s": lambda p, v, q, r, g, a, b: (r[0], -r[1], -r[2]),
    "prev_action": lambda p, v, q, r, g, a, b: a,
    "battery_frac": lambda p, v, q, r, g, a, b: (b,),
}
#: Which of (pos, vel, q, rates, battery) each scalar feature reads.
SCALAR_INPUTS: dict[str, frozenset[str]] = {
    "goal_rel_ned_m": frozenset({"pos"}),
    "goal_rel_enu_m": frozenset({"pos"}),
    "pos_ned_m": frozenset({"pos"}),
    "pos_enu_m": frozenset({"pos"}),
    "vel_ned_m_s": frozenset({"vel"}),
    "vel_enu_m_s": frozenset({"vel"}),
    "q_wxyz_ned_frd": frozenset({"q"}),
    "q_wxyz_enu_flu": frozenset({"q"}),
    "rates_frd_rad_s": frozenset({"rates"}),
    "rates_flu_rad_s": frozenset({"rates"}),
    "prev_action": frozenset(),
    "battery_frac": frozenset({"battery"}),
}


class ScalarObservation:
    """:func:`build_observation` for one vehicle in Python floats (the onboard batch of one).

    Made by :func:`scalar_observation` for feature lists it can build exactly; call it with
    sequences of floats (pos, vel, q, rates, goal, prev_action) and the battery fraction. It
    returns the clipped values in the manifest's order, or None when one is not finite (NaN and
    ±inf inputs, or an overflow): then :func:`build_observation` must decide, as it alone keeps
    the batched path's handling of non-finite numbers. Finite results equal build_observation's.
    """

    __slots__ = ("_bounds", "_parts", "inputs", "size")

    def __init__(self, parts: list[ScalarFeature], lo: list[float], hi: list[float], inputs: frozenset[str]):
        self._parts = tuple(parts)
        self._bounds = tuple(zip(lo, hi, strict=True))
        self.size = len(lo)
        self.inputs = inputs
        """Which of pos, vel, q, rates, battery the features read (the others may be passed as ())."""

    def __call__(
        self,
        pos: Sequence[float],
        vel: Sequence[float],
        q: Sequence[float],
        rates: Sequence[float],
        goal: Sequence[float],
        prev_action: Sequence[float],
        battery: float,
    ) -> list[float] | None:
        raw: list[float] = []
        for part in self._parts:
            raw.extend(part(pos, vel, q, rates, goal, prev_action, battery))
        if len(raw) != self.size:
            raise ValueError(f"observation has {len(raw)} values, the clip ranges {self.size}")
        # A NaN or ±inf anywhere makes the sum non-finite (so does an overflowing sum: rare, and
        # the batched path then decides just the same).
        if not math.isfinite(sum(raw)):
            return None
        out: list[float] = []
        for x, (lo, hi) in zip(raw, self._bounds):  # np.maximum(x, lo), then np.minimum(., hi)
            if x < lo:
                x = lo
            if x > hi:
                x = hi
            out.append(x)
        return out


def scalar_observation(
    names: list[str] | tuple[str, ...], clip_lo: F64, clip_hi: F64, action_size: int = 4
) -> ScalarObservation | None:
    """The batch-1 builder of these features, or None if one has no exact scalar form (the
    geometry features, computed by the mission; the heading's sin and cos, whose numpy and libm
    values may differ in the last bit)."""
    if any(n not in _SCALAR for n in names):
        return None
    lo = [float(x) for x in np.asarray(clip_lo, dtype=np.float64).reshape(-1)]
    hi = [float(x) for x in np.asarray(clip_hi, dtype=np.float64).reshape(-1)]
    if len(lo) != observation_size(names, action_size) or len(hi) != len(lo):
        return None
    inputs = frozenset().union(*(SCALAR_INPUTS[n] for n in names))
    return ScalarObservation([_SCALAR[n] for n in names], lo, hi, inputs)
