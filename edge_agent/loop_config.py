"""The settings of one flight (:class:`LoopConfig`, from the command line) and what it did
(:class:`RunSummary`, for the terminal and the report); :mod:`edge_agent.loop` flies them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edge_agent.errors import ConfigError, EdgeAgentError
from edge_agent.flightlog import LogLimits
from firmware_bridge.exitcodes import ExitCode

LAYER_NAMES = ("none", "watchdog", "barrier", "fallback")
"""The shield's layers by index, as its step reports them (0: none acted)."""
END_ACTIONS = ("land", "hold", "rtl")


@dataclass(frozen=True, slots=True)
class LoopConfig:
    """Settings of one flight, given on the command line."""

    rate_hz: float | None = None
    """Control rate; None = the bundle's training rate (the policy was trained at it)."""
    takeoff_alt_m: float = 5.0
    """Take-off height above the origin when the vehicle starts on the ground."""
    connect_timeout_s: float = 15.0
    """How long to wait for the autopilot's first HEARTBEAT."""
    ready_timeout_s: float = 120.0
    """How long to wait, after the HEARTBEAT, until the autopilot can fly: position estimate
    flowing and its pre-arm checks passing (a cold real ArduCopter needs ~42 s for its EKF)."""
    activation_timeout_s: float = 60.0
    param_wait_s: float = 10.0
    """How long to wait after connect for the failsafe parameters still being read."""
    max_duration_s: float = math.inf
    shield_enabled: bool = True
    """False only to demonstrate what the shield prevents (the watchdog stays on)."""
    deadline_frac: float = 0.5
    """Inference deadline as a fraction of the control period."""
    gcs_period_s: float = 0.5
    """How often margin, coverage and interventions go to the ground station."""
    gcs_text_min_interval_s: float = 1.0
    """Hold/resume STATUSTEXTs closer together than this are folded (a flapping link must not flood)."""
    end_action: str = "land"
    """What the vehicle does when the mission completes or the agent is stopped (END_ACTIONS): the
    autopilot's own LAND; its position hold (PX4 Hold, ArduCopter BRAKE: never a stick-following
    mode); or its return to launch."""
    log_limits: LogLimits = field(default_factory=LogLimits)
    timer_slack_ns: int = 1000
    """Linux timer slack asked for the loop's thread while flying: the kernel's default (50 µs) lets
    every tick's sleep end up to 50 µs late. 0 leaves it alone."""
    realtime_priority: int | None = None
    """SCHED_FIFO priority (1-99) for the agent from connect on, so that no ordinary process (the
    SITL woken by our own setpoint write, a log shipper) preempts a tick; None keeps the default
    scheduler. Needs CAP_SYS_NICE; refused at start-up, before connecting, when not granted."""
    spin_us: float = 0.0
    """Sleep until this long before each tick is due, then wait for it on the clock (a busy wait):
    a wake-up from sleep can be hundreds of µs late on a loaded or virtual machine, the clock is
    read within ~1 µs. Costs that much CPU per tick; 0 (the default) only sleeps."""

    def __post_init__(self) -> None:
        if self.rate_hz is not None and not 1.0 <= self.rate_hz <= 1000.0:
            raise ConfigError(f"control rate {self.rate_hz} Hz is outside 1–1000 Hz")
        if self.end_action not in END_ACTIONS:
            raise ConfigError(f"end action {self.end_action!r} must be one of {', '.join(END_ACTIONS)}")
        if self.realtime_priority is not None and not 1 <= self.realtime_priority <= 99:
            raise ConfigError(f"realtime priority {self.realtime_priority} must lie in 1..99 (SCHED_FIFO)")
        if not 0.0 < self.deadline_frac <= 1.0:
            raise ConfigError(f"deadline_frac {self.deadline_frac} must lie in (0, 1]")
        if not (self.ready_timeout_s > 0 and math.isfinite(self.ready_timeout_s)):
            raise ConfigError(f"--ready-timeout {self.ready_timeout_s} s must be a finite number > 0")
        if not 0.0 <= self.spin_us <= 10_000.0:
            raise ConfigError(f"spin {self.spin_us} µs must lie in 0–10000 µs")


@dataclass
class RunSummary:
    """What a flight did, for the terminal and the report."""

    ticks: int = 0
    duration_s: float = 0.0
    mission_complete: bool = False
    end_reason: str = ""
    interventions: dict[str, int] = field(default_factory=lambda: {n: 0 for n in LAYER_NAMES[1:]})
    reasons: dict[str, int] = field(default_factory=dict)
    deadline_misses: int = 0
    overruns: int = 0
    min_slack_m: float = math.inf
    max_margin_m: float = 0.0
    final_miscoverage: float = float("nan")
    tick_latency_us_p50: float = float("nan")
    tick_latency_us_p99: float = float("nan")
    jitter_us_p99: float = float("nan")
    control_lost: str | None = None
    log_path: str = ""
    link_downs: int = 0
    """Link or autopilot-HEARTBEAT losses seen while flying."""
    holds: int = 0
    """Watchdog hold episodes (stale telemetry, link down, deadline, non-finite input)."""
    longest_hold_s: float = 0.0
    log_records_dropped: int = 0
    """Flight-log records lost to a full or failing disk."""
    climb_max_drift_m: float = 0.0
    """Largest horizontal distance from the take-off column during the climb."""
    climb_aborted: str | None = None
    """Why the take-off climb was aborted (exit CLIMB_ABORTED), or None."""
    end_action: str = ""
    """The end action commanded ("land", "rtl", "hold"); "" when none was (control lost, fallback landed)."""
    end_action_refused: str | None = None
    """Why the configured end action's path was not clear, so Hold was commanded instead; or None."""
    exit_code: ExitCode = ExitCode.OK
    """What the end of the flight means as a process status (firmware_bridge.exitcodes)."""


class StopRequested(EdgeAgentError):
    """A stop (a signal) came before the agent took control: nothing was commanded."""

    def __init__(self, reason: str, code: ExitCode) -> None:
        super().__init__(f"stopped before taking control ({reason}); nothing was commanded")
        self.code = code
