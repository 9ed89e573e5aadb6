"""Layer 1 of the shield: is there anything trustworthy to filter at all?

Checks, batched: per-signal freshness, non-finite values anywhere in what the shield consumes,
link health, inference deadline/error and other stage errors. Any of them yields a hold setpoint
(zero velocity, i.e. "brake and stay") with a named :class:`Reason`. It runs before the barrier
because the barrier needs a fresh, finite position and velocity; and it must fire long before the
autopilot's own offboard-loss timeout (PX4 COM_OF_LOSS_T = 1 s, ArduPilot GUID_TIMEOUT = 3 s),
which is why the default limits are tenths of a second.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
B8 = NDArray[np.bool_]


class Reason(IntEnum):
    """Why the shield changed (or replaced) the policy's action."""

    NONE = 0
    STALE_POSITION = 1
    STALE_VELOCITY = 2
    STALE_ATTITUDE = 3
    STALE_RATES = 4
    NON_FINITE = 5
    DEADLINE = 6
    LINK_DOWN = 7
    STAGE_ERROR = 8
    FENCE = 9
    ALTITUDE = 10
    KEEPOUT = 11
    SPEED_LIMIT = 12
    INFEASIBLE = 13
    CALIBRATION_ALARM = 14
    NOT_RECOVERABLE = 15


#: Priority of the watchdog's reasons when several hold at once: what makes filtering impossible
#: first (no position, no velocity, garbage numbers), then the link, then the policy's own health.
WATCHDOG_ORDER = (
    Reason.STALE_POSITION,
    Reason.STALE_VELOCITY,
    Reason.NON_FINITE,
    Reason.LINK_DOWN,
    Reason.STAGE_ERROR,
    Reason.DEADLINE,
    Reason.STALE_ATTITUDE,
    Reason.STALE_RATES,
)


class Watchdog:
    """Batched checks; ``check`` returns Reason codes [B] (0 = all clear)."""

    def __init__(self, freshness_limits_s: tuple[float, float, float, float], n: int) -> None:
        self.limits = np.asarray(freshness_limits_s, dtype=np.float64)
        self._codes = np.array([0, *(int(r) for r in WATCHDOG_ORDER)], dtype=np.int64)
        # Buffers reused every tick (batch 1 runs at up to 250 Hz): column 0 stays False.
        self._cond = np.zeros((n, len(WATCHDOG_ORDER) + 1), dtype=bool)
        self._values = np.empty((n, 15))

    def check(
        self,
        pos_ned_m: F64,
        vel_ned_m_s: F64,
        action: F64,
        margin_m: F64,
        signal_age_s: F64,
        link_ok: B8,
        inference_ok: B8,
        stage_ok: B8 | None,
    ) -> NDArray[np.int64]:
        """Reason [B] of the first failed check in WATCHDOG_ORDER, 0 where everything is fine."""
        n = pos_ned_m.shape[0]
        if self._cond.shape[0] != n:
            self._cond = np.zeros((n, len(WATCHDOG_ORDER) + 1), dtype=bool)
            self._values = np.empty((n, 15))
        vals = self._values
        vals[:, 0:3] = pos_ned_m
        vals[:, 3:6] = vel_ned_m_s
        vals[:, 6:10] = action
        vals[:, 10] = margin_m
        # Ages may be inf (never received: stale, not garbage) but never NaN or negative.
        vals[:, 11:15] = np.where(signal_age_s == np.inf, 0.0, signal_age_s)
        fresh = signal_age_s <= self.limits  # NaN compares False: stale
        cond = self._cond
        cond[:, 1] = ~fresh[:, 0]
        cond[:, 2] = ~fresh[:, 1]
        cond[:, 3] = ~np.isfinite(vals).all(axis=1) | (signal_age_s < 0).any(axis=1)
        cond[:, 4] = ~link_ok
        cond[:, 5] = False if stage_ok is None else ~stage_ok
        cond[:, 6] = ~inference_ok
        cond[:, 7] = ~fresh[:, 2]
        cond[:, 8] = ~fresh[:, 3]
        # argmax finds the first True column; an all-clear row gives column 0, which maps to NONE.
        first = np.argmax(cond, axis=1)
        return self._codes[first]


__all__ = ["WATCHDOG_ORDER", "Reason", "Watchdog"]
