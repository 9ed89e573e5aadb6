"""Observation builder: ``VehicleState`` + mission → the policy's input vector.

The manifest's feature list decides what is built (firmware_bridge.features holds the
vocabulary and does the frame conversions); this module only gathers the inputs from the
bridge's snapshot, measures the age of every signal, and keeps the arrays allocated once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from firmware_bridge.features import FeatureInputs, ScalarObservation, build_observation, scalar_observation
from firmware_bridge.types import Signal, VehicleState

F64 = NDArray[np.float64]

#: The signals whose freshness the shield checks, in this order (ShieldInput.signal_age_s columns).
SIGNALS = ("position", "velocity", "attitude", "rates")

_NAN3 = (float("nan"),) * 3
_UNIT_Q = (1.0, 0.0, 0.0, 0.0)
_F32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True, slots=True)
class StateArrays:
    """Vehicle states as arrays with a leading batch axis B, plus the age of each signal."""

    pos_ned_m: F64
    """[B, 3]"""
    vel_ned_m_s: F64
    """[B, 3]"""
    q_wxyz: F64
    """[B, 4]"""
    rates_frd_rad_s: F64
    """[B, 3]"""
    battery_frac: F64
    """[B]"""
    signal_age_s: F64
    """[B, 4] seconds since each of SIGNALS was received; inf if never."""


def _value(sig: Signal | None, default: tuple[float, ...]) -> tuple[float, ...]:
    return default if sig is None else sig.value


def _age(sig: Signal | None, now_ns: int) -> float:
    return float("inf") if sig is None else (now_ns - sig.stamp_ns) * 1e-9


def state_arrays(state: VehicleState, now_ns: int) -> StateArrays:
    """Convert one snapshot; missing signals become NaN (the watchdog turns them into a hold)."""
    pos = _value(state.pos_ned_m, _NAN3)
    vel = _value(state.vel_ned_m_s, _NAN3)
    q = _value(state.q_wxyz, _UNIT_Q)
    rates = _value(state.rates_frd_rad_s, _NAN3)
    battery = _value(state.battery, (float("nan"),))[0]
    ages = (
        _age(state.pos_ned_m, now_ns),
        _age(state.vel_ned_m_s, now_ns),
        _age(state.q_wxyz, now_ns),
        _age(state.rates_frd_rad_s, now_ns),
    )
    if len(pos) != 3 or len(vel) != 3 or len(q) != 4 or len(rates) != 3:
        # A malformed snapshot keeps the shapes it has (and fails where they are checked).
        return StateArrays(
            pos_ned_m=np.array([pos], dtype=np.float64),
            vel_ned_m_s=np.array([vel], dtype=np.float64),
            q_wxyz=np.array([q], dtype=np.float64),
            rates_frd_rad_s=np.array([rates], dtype=np.float64),
            battery_frac=np.array([battery], dtype=np.float64),
            signal_age_s=np.array([ages]),
        )
    # One allocation, handed out as views: this runs every tick of the onboard loop.
    row = np.array([(*pos, *vel, *q, *rates, *ages, battery)], dtype=np.float64)
    return StateArrays(
        pos_ned_m=row[:, 0:3],
        vel_ned_m_s=row[:, 3:6],
        q_wxyz=row[:, 6:10],
        rates_frd_rad_s=row[:, 10:13],
        battery_frac=row[0, 17:18],
        signal_age_s=row[:, 13:17],
    )


GeometryFn = Callable[[F64], dict[str, F64]]
"""pos_ned_m [B, 3] → the geometry fields of FeatureInputs (Mission.geometry_features)."""


class ObservationBuilder:
    """Builds the policy input [B, D] float32, as the manifest declares."""

    def __init__(
        self,
        feature_names: tuple[str, ...],
        clip_lo: F64,
        clip_hi: F64,
        geometry: GeometryFn | None,
        action_size: int,
    ) -> None:
        self.feature_names = feature_names
        self._clip_lo = np.asarray(clip_lo, dtype=np.float64)
        self._clip_hi = np.asarray(clip_hi, dtype=np.float64)
        self._geometry = geometry
        self._needs_geometry = any(
            n
            in (
                "fence_dist_m",
                "alt_floor_dist_m",
                "alt_ceiling_dist_m",
                "keepout_rel_ned_m",
                "keepout_dist_m",
            )
            for n in feature_names
        )
        self._action_size = action_size
        self._one: ScalarObservation | None = scalar_observation(feature_names, clip_lo, clip_hi, action_size)
        if self._one is not None and not (
            np.all(np.abs(self._clip_lo) <= _F32_MAX) and np.all(np.abs(self._clip_hi) <= _F32_MAX)
        ):
            self._one = None  # a clipped value could overflow float32: the batched path checks that
        inputs = self._one.inputs if self._one is not None else frozenset()
        self._one_q = "q" in inputs
        self._one_rates = "rates" in inputs
        self._one_battery = "battery" in inputs
        self._n = 0
        self._out64 = np.empty((0, 0))
        self._out32 = np.empty((0, 0), dtype=np.float32)

    def build(self, s: StateArrays, goal_ned_m: F64, prev_action: F64) -> NDArray[np.float32]:
        """Observation [B, D] float32 (a buffer reused every call: copy it to keep it)."""
        n = s.pos_ned_m.shape[0]
        if n != self._n:  # allocated once per batch size
            self._n = n
            self._out64 = np.empty((n, self._clip_lo.shape[0]), dtype=np.float64)
            self._out32 = np.empty((n, self._clip_lo.shape[0]), dtype=np.float32)
        geo: dict[str, F64] = {}
        if self._needs_geometry:
            if self._geometry is None:
                raise ValueError("the bundle's features need mission geometry, but no mission was given")
            geo = self._geometry(s.pos_ned_m)
        inputs = FeatureInputs(
            pos_ned_m=s.pos_ned_m,
            vel_ned_m_s=s.vel_ned_m_s,
            q_wxyz=s.q_wxyz,
            rates_frd_rad_s=s.rates_frd_rad_s,
            goal_ned_m=goal_ned_m,
            prev_action=prev_action,
            battery_frac=s.battery_frac,
            **geo,
        )
        build_observation(self.feature_names, self._clip_lo, self._clip_hi, inputs, out=self._out64)
        self._out32[...] = self._out64
        return self._out32

    def build_one(
        self,
        s: StateArrays,
        pos: Sequence[float],
        vel: Sequence[float],
        goal: Sequence[float],
        prev_action: Sequence[float],
    ) -> list[float] | None:
        """One vehicle's observation as Python floats, for the onboard tick (pos and vel are
        ``s``'s row 0 as floats, ``goal`` and ``prev_action`` likewise). Cast to float32, the
        values equal :meth:`build`'s. None when :meth:`build` must be used instead: a feature
        without a scalar form (geometry, heading) or a value that is not finite."""
        one = self._one
        if one is None:
            return None
        q = s.q_wxyz[0].tolist() if self._one_q else _UNIT_Q
        rates = s.rates_frd_rad_s[0].tolist() if self._one_rates else _NAN3
        battery = s.battery_frac.item(0) if self._one_battery else 0.0
        return one(pos, vel, q, rates, goal, prev_action, battery)
