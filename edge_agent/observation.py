"""Observation builder: ``VehicleState`` + mission → the policy's input vector.

The manifest's feature list decides what is built (firmware_bridge.features holds the
vocabulary and does the frame conversions); this module only gathers the inputs from the
bridge's snapshot, measures the age of every signal, and keeps the arrays allocated once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from firmware_bridge.features import FeatureInputs, build_observation
from firmware_bridge.types import Signal, VehicleState

F64 = NDArray[np.float64]

#: The signals whose freshness the shield checks, in this order (ShieldInput.signal_age_s columns).
SIGNALS = ("position", "velocity", "attitude", "rates")

_NAN3 = (float("nan"),) * 3
_UNIT_Q = (1.0, 0.0, 0.0, 0.0)


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
    battery = np.array([_value(state.battery, (float("nan"),))[0]])
    return StateArrays(
        pos_ned_m=np.array([_value(state.pos_ned_m, _NAN3)], dtype=np.float64),
        vel_ned_m_s=np.array([_value(state.vel_ned_m_s, _NAN3)], dtype=np.float64),
        q_wxyz=np.array([_value(state.q_wxyz, _UNIT_Q)], dtype=np.float64),
        rates_frd_rad_s=np.array([_value(state.rates_frd_rad_s, _NAN3)], dtype=np.float64),
        battery_frac=battery,
        signal_age_s=np.array(
            [
                [
                    _age(state.pos_ned_m, now_ns),
                    _age(state.vel_ned_m_s, now_ns),
                    _age(state.q_wxyz, now_ns),
                    _age(state.rates_frd_rad_s, now_ns),
                ]
            ]
        ),
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
