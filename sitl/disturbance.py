"""Disturbance and fault configuration of the simulator (frozen configs; the Sim applies them).

Scalars apply to every vehicle; where a field says "per vehicle" an array with a leading axis
of the batch size may be given instead, so certification can randomise vehicle by vehicle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

F64 = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class MeasurementNoise:
    """Standard deviation of white Gaussian noise on each reported signal (per axis)."""

    pos_std_m: float = 0.0
    vel_std_m_s: float = 0.0
    att_std_rad: float = 0.0
    """Small-angle rotation noise applied to the reported attitude quaternion."""
    rates_std_rad_s: float = 0.0
    acc_std_m_s2: float = 0.0


@dataclass(frozen=True, slots=True)
class Disturbances:
    """Wind, gusts, payload and what the estimator reports (noise, latency)."""

    wind_ned_m_s: ArrayLike = (0.0, 0.0, 0.0)
    """Steady wind [3] or per vehicle [n, 3]; acts through drag (air-relative velocity)."""
    gust_std_m_s: ArrayLike = 0.0
    """Stationary standard deviation of the gust velocity per axis (Ornstein–Uhlenbeck), scalar or [n]."""
    gust_time_constant_s: float = 2.0
    """Correlation time of the gust process."""
    mass_scale: ArrayLike = 1.0
    """Actual mass / airframe mass (payload), scalar or [n]; the controller is not told."""
    noise: MeasurementNoise = field(default_factory=MeasurementNoise)
    latency_s: float = 0.0
    """Age of what ``Sim.measure`` reports, rounded to whole physics steps."""

    def __post_init__(self) -> None:
        if self.gust_time_constant_s <= 0.0:
            raise ValueError(
                f"Disturbances.gust_time_constant_s must be > 0, got {self.gust_time_constant_s}"
            )
        if self.latency_s < 0.0:
            raise ValueError(f"Disturbances.latency_s must be >= 0, got {self.latency_s}")


@dataclass(frozen=True, slots=True)
class Battery:
    """Battery pack: capacity, internal resistance (voltage sag under load) and initial charge."""

    capacity_mah: float = 5000.0
    internal_resistance_ohm: float = 0.03
    initial_frac: ArrayLike = 1.0
    """State of charge at reset, scalar or [n]."""

    def __post_init__(self) -> None:
        if self.capacity_mah <= 0.0 or self.internal_resistance_ohm < 0.0:
            raise ValueError(
                f"Battery needs capacity_mah > 0 and internal_resistance_ohm >= 0, "
                f"got {self.capacity_mah} and {self.internal_resistance_ohm}"
            )


@dataclass(frozen=True, slots=True)
class Faults:
    """Motor efficiency loss, position glitches, telemetry dropouts and the battery."""

    motor_efficiency: ArrayLike = (1.0, 1.0, 1.0, 1.0)
    """Thrust factor per motor after onset [4] or per vehicle [n, 4]; 1 = healthy, 0.8 = lost 20%."""
    motor_fault_onset_s: ArrayLike = 0.0
    """Time since reset at which motor_efficiency takes effect, scalar or [n]."""
    glitch_rate_hz: float = 0.0
    """Mean rate of reported-position glitches (Poisson)."""
    glitch_magnitude_m: float = 0.0
    """Size of the jump in the reported horizontal position during a glitch (random direction)."""
    glitch_duration_s: float = 1.0
    dropout_rate_hz: float = 0.0
    """Mean rate of telemetry dropouts (Poisson); ``Measurement.valid`` is False during one."""
    dropout_duration_s: float = 0.5
    battery: Battery = field(default_factory=Battery)

    def __post_init__(self) -> None:
        for name in ("glitch_rate_hz", "glitch_magnitude_m", "dropout_rate_hz"):
            if getattr(self, name) < 0.0:
                raise ValueError(f"Faults.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("glitch_duration_s", "dropout_duration_s"):
            if getattr(self, name) <= 0.0:
                raise ValueError(f"Faults.{name} must be > 0, got {getattr(self, name)}")


def per_vehicle(value: ArrayLike, n: int, width: int, name: str) -> F64:
    """Broadcast a scalar/[width] config value to a fresh [n, width] (or [n] when width == 0) array."""
    arr = np.asarray(value, dtype=np.float64)
    shape = (n,) if width == 0 else (n, width)
    try:
        return np.array(np.broadcast_to(arr, shape), dtype=np.float64)
    except ValueError:
        expected = "a scalar or [n]" if width == 0 else f"[{width}] or [n, {width}]"
        raise ValueError(f"{name} has shape {arr.shape}; expected {expected} with n = {n} vehicles") from None
