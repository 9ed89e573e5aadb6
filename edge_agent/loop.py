"""The onboard loop: the I/O shell around :class:`edge_agent.agent.AgentCore`.

Per tick, at a fixed rate on a monotonic clock::

    session.poll → VehicleState → AgentCore.step (obs → policy → calibrator → shield)
      → adapter.send(certified setpoint) → flight-log record → (every 0.5 s) ground-station report

Phases: connect (wait for the autopilot's HEARTBEAT and fresh telemetry) → checks that refuse
before anything is commanded (the mission's autopilot flavour, PX4's offboard-loss action, the
take-off column, and the end action's path from the final waypoint, against the fence and
keep-outs) → activate (PX4: take off, pre-stream, OFFBOARD; ArduPilot: GUIDED, arm, take off) →
climb (unshielded, so it holds its column and is watched: near the fence or a keep-out, or off
its column, it is aborted, comes back down and the autopilot lands it; exit CLIMB_ABORTED) → fly
→ finish. Finishing leaves the vehicle safe: on mission completion, SIGINT or SIGTERM the loop
commands the end action (land, rtl or hold) once its path is checked against the mission
(unshielded.choose_end_action; not clear, or not knowable, becomes hold, said everywhere); when
the autopilot or the pilot takes control away, the loop stops commanding at once and never takes
control back (DESIGN.md).

The companion HEARTBEAT goes out only while this loop says it is healthy: a stuck or dying loop
goes silent, so the autopilot's own offboard-loss failsafe takes over.

Link faults (docs/safety.md): the loop keeps ticking through them. A pulled cable, a TCP reset or
a silent peer makes the telemetry stale, so the watchdog holds (zero velocity: the vehicle may
still hear us) within the position freshness limit; link and session events (a ReconnectingLink
reopening the device, the autopilot's HEARTBEAT timing out and returning) go to the flight log,
the ground station and, as fallback stages and a loss of control do, stderr. While the autopilot's
HEARTBEAT is absent the loop cannot know its mode, so it does not judge control then; when the
HEARTBEAT returns, the policy resumes only if the vehicle is still in OFFBOARD/GUIDED and armed.
Anything else (the autopilot's offboard-loss failsafe fired, it rebooted into its default mode, a
pilot switched) is a loss of control: the loop stops commanding and never switches back.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent import unshielded
from edge_agent.agent import AgentCore, build_agent
from edge_agent.bundle import Bundle
from edge_agent.errors import ActivationError, ConfigError
from edge_agent.fallback import Stage
from edge_agent.flightlog import FlightLog
from edge_agent.guarantees import valid_certificate
from edge_agent.loop_config import LAYER_NAMES, LoopConfig, RunSummary, StopRequested
from edge_agent.mission import Mission
from edge_agent.observation import state_arrays
from edge_agent.policy import PolicyRunner
from edge_agent.preflight import check_takeoff_alt, failsafe_refusal, flavour_refusal, takeoff_column_refusal
from edge_agent.shield import Reason
from edge_agent.timing import LatencyHistogram, set_realtime_priority, set_timer_slack, wait_until
from edge_agent.vehicle import describe, identity, mismatch
from firmware_bridge.adapters import ArduPilotGuided, Px4Offboard, VehicleAdapter, activate
from firmware_bridge.errors import CommandError
from firmware_bridge.exitcodes import ExitCode
from firmware_bridge.links import Link, ReconnectingLink
from firmware_bridge.session import (
    OPTIONAL_PARAMS,
    PX4_FAILSAFE_PARAMS,
    MavlinkSession,
    SessionConfig,
    SessionEventKind,
    stream_rates_for,
)
from firmware_bridge.types import Autopilot, LandedState, VehicleState, VelocityNedYawRate

if TYPE_CHECKING:
    from firmware_bridge.custom_adapter import CustomFirmware

# MAV_SEVERITY
_WARNING, _NOTICE, _INFO = 4, 5, 6
_REASON_NAMES = {int(r): r.name for r in Reason}
"""Reason code → name without building an enum member every tick."""
_STAGE_LAND = int(Stage.LAND)


class Runtime:
    """One flight of one bundle over one link."""

    def __init__(
        self,
        bundle: Bundle,
        mission: Mission,
        link: Link,
        *,
        protocol: str = "mavlink",
        config: LoopConfig | None = None,
        log_path: str | Path = "flight.eal",
        clock: Callable[[], int] = time.monotonic_ns,
        sleep: Callable[[float], None] = time.sleep,
        session_config: SessionConfig | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.bundle = bundle
        self.timer = timer
        """Seconds for the inference deadline; tests on a fake clock pass one derived from it."""
        self.mission = mission
        self.link = link
        self.config = config or LoopConfig()
        self.clock = clock
        self.sleep = sleep
        self.rate_hz = self.config.rate_hz or bundle.manifest.control_rate_hz
        self.period_ns = round(1e9 / self.rate_hz)
        self.log_path = Path(log_path)
        self._stop_reason: str | None = None
        self._stop_code = ExitCode.SIGINT
        check_takeoff_alt(self.config.takeoff_alt_m, mission)
        self.custom: CustomFirmware | None = None
        self.session: MavlinkSession | None = None
        if protocol == "custom":
            from firmware_bridge.custom_adapter import CustomFirmware  # not imported for MAVLink flights

            self.custom = CustomFirmware(link, clock)
        elif protocol == "mavlink":
            cfg = session_config or SessionConfig()
            rates = stream_rates_for(self.rate_hz, cfg.message_rates_hz)
            self.session = MavlinkSession(link, clock, dataclasses.replace(cfg, message_rates_hz=rates))
        else:
            raise ConfigError(f"protocol {protocol!r} must be 'mavlink' or 'custom'")
        self.policy = PolicyRunner(bundle)
        self.adapter: VehicleAdapter | None = None
        self.core: AgentCore | None = None
        self.log: FlightLog | None = None
        self.summary = RunSummary(log_path=str(self.log_path))
        self._column_ne: tuple[float, float] | None = None
        """Where the take-off climb starts: the column it holds (check_takeoff_column)."""
        self._home_ned: tuple[float, float, float] | None = None
        """Where the autopilot's home is, when the agent arms the vehicle there; None = unknown."""

    # -- the outside world -------------------------------------------------------------------

    def request_stop(self, reason: str, code: ExitCode = ExitCode.SIGINT) -> None:
        """Ask the loop to finish safely at the next tick (signal handlers call this); while it
        still waits for the autopilot, it stops at once. ``code`` becomes the summary's exit code."""
        self._stop_reason, self._stop_code = reason, code

    def _poll(self, now_ns: int) -> None:
        if self.session is not None:
            self.session.poll(now_ns)
        else:
            assert self.custom is not None
            self.custom.poll(now_ns)

    @property
    def state(self) -> VehicleState:
        """The bridge's current snapshot."""
        return self.session.state if self.session is not None else self.custom.state  # type: ignore[union-attr]

    def _set_healthy(self, healthy: bool) -> None:
        if self.session is not None:
            self.session.set_healthy(healthy)
        else:
            assert self.custom is not None
            self.custom.set_healthy(healthy)

    def _gcs_text(self, severity: int, text: str, console: bool = False) -> None:
        if console:
            self._status(text.removeprefix("edge-agent: "), end="\n")
        if self.session is not None:
            self.session.send_statustext(severity, text)

    # -- phases --------------------------------------------------------------------------------

    def connect(self) -> VehicleState:
        """Wait for the autopilot's HEARTBEAT, then until it is ready to fly (as QGroundControl and
        MAVSDK do): a fresh position and velocity estimate, and its own pre-arm checks passing.
        Nothing is bypassed: the autopilot's PreArm/Arm texts are shown as they come."""
        self._set_healthy(True)
        start = self.clock()
        heard: int | None = None
        texts_shown_ns = 0
        next_status = 0
        shown = False
        status_every_ns = int(1e9 if sys.stderr.isatty() else 10e9)
        while True:
            now = self.clock()
            self._poll(now)
            st = self.state
            fresh = st.pos_ned_m is not None and (now - st.pos_ned_m.stamp_ns) < 0.5e9
            position = fresh and st.vel_ned_m_s is not None
            if st.link_up and heard is None:
                heard = now
                next_status = now + int(1e9)  # say nothing if it is ready within a second
            if heard is not None:
                estimator = st.position_ok is not False
                if position and estimator and st.prearm_ok is not False:
                    if shown:
                        self._status(f"autopilot ready after {(now - heard) * 1e-9:.1f} s", end="\n")
                    return st
                texts_shown_ns = self._show_prearm_texts(texts_shown_ns)
                waited = (now - heard) * 1e-9
                missing = ", ".join(
                    w
                    for w, ok in (
                        ("position estimate", position),
                        ("valid absolute position from the estimator", estimator),
                        ("pre-arm checks", st.prearm_ok is not False),
                    )
                    if not ok
                )
                if now >= next_status:
                    shown = True
                    self._status(f"waiting for the autopilot to be ready ({waited:.0f} s): no {missing} yet")
                    next_status = now + status_every_ns
                if waited > self.config.ready_timeout_s:
                    last = self._last_prearm_text()
                    raise ActivationError(
                        f"the autopilot on {self.link.url} was not ready to fly within "
                        f"{self.config.ready_timeout_s:.0f} s (no {missing}"
                        + (f"; it last said {last!r}" if last else "")
                        + "): a cold vehicle needs a GPS fix and its estimator to converge; raise --ready-timeout, "
                        "or fix what the autopilot reports"
                    )
            elif now - start > self.config.connect_timeout_s * 1e9:
                bad_sig = self.session.parser.signature_errors if self.session is not None else 0
                hint = (
                    f"{bad_sig} frames failed their MAVLink signature: check that --signing-key matches "
                    f"the autopilot's key"
                    if bad_sig
                    else "check the cable or URL, the baud rate, and that the autopilot streams telemetry"
                )
                raise ActivationError(
                    f"no HEARTBEAT from the autopilot on {self.link.url} within "
                    f"{self.config.connect_timeout_s:.0f} s: {hint}"
                )
            if self._stop_reason is not None:
                raise StopRequested(self._stop_reason, self._stop_code)
            self.sleep(0.01)

    def _status(self, text: str, end: str = "\r") -> None:
        """A live status line on the console (stderr): rewritten in place on a terminal."""
        if sys.stderr.isatty():
            sys.stderr.write(f"\r\x1b[K{text}{end}")
        else:
            sys.stderr.write(f"edge-agent run: {text}\n")
        sys.stderr.flush()

    def _prearm_entries(self) -> list[Any]:
        if self.session is None:
            return []
        return [
            e for e in self.session.telemetry.statustexts if e.text.startswith(("PreArm", "Arm", "Preflight"))
        ]

    def _show_prearm_texts(self, shown_ns: int) -> int:
        """Print the autopilot's pre-arm texts newer than ``shown_ns``, verbatim; the newest stamp."""
        for e in self._prearm_entries():
            if e.stamp_ns > shown_ns:
                sys.stderr.write(("\r\x1b[K" if sys.stderr.isatty() else "") + f"autopilot: {e.text}\n")
                shown_ns = e.stamp_ns
        return shown_ns

    def _last_prearm_text(self) -> str | None:
        entries = self._prearm_entries()
        return entries[-1].text if entries else None

    def check_flavour(self) -> None:
        """Refuse a mission written for another autopilot than the one whose HEARTBEAT we hear: the
        shield's silence model (what the vehicle does if the agent dies) comes from the flavour."""
        why = (
            None
            if self.custom is not None
            else flavour_refusal(self.mission, self.state.autopilot, self.link.url)
        )
        if why is not None:
            raise ActivationError(why)

    def _await_params(self, names: tuple[str, ...], counts: tuple[int, ...] = ()) -> None:
        """Wait while reads of ``names`` (and of the mission ``counts``) are still being retried
        (at most ``param_wait_s``)."""
        s = self.session
        assert s is not None
        deadline = self.clock() + int(self.config.param_wait_s * 1e9)
        while self.clock() <= deadline and (
            any(s.reading(n) for n in names) or any(s.reading_mission_count(t) for t in counts)
        ):
            if self._stop_reason is not None:
                raise StopRequested(self._stop_reason, self._stop_code)
            self._poll(self.clock())
            self.sleep(0.01)

    def check_failsafe(self) -> None:
        """Refuse, before anything is commanded, an autopilot whose own reaction to the agent falling
        silent cannot stop the vehicle where the shield assumes it stops (preflight.failsafe_refusal).

        The parameters it needs are read at connect and may still be on their way: it waits for
        them, as long as the session's bounded retries of each read last."""
        if self.session is None or self.state.autopilot != Autopilot.PX4:
            return
        self._await_params(PX4_FAILSAFE_PARAMS + OPTIONAL_PARAMS[Autopilot.PX4])
        why = failsafe_refusal(self.state.autopilot.name, self.state.params)
        if why is not None:
            raise ActivationError(f"refusing to take control of the vehicle on {self.link.url}: {why}")

    def check_takeoff_column(self) -> None:
        """Refuse a take-off whose unshielded vertical climb would pass too near the fence or a
        keep-out zone (preflight.takeoff_column_refusal), before anything is commanded. Notes the
        column the climb holds and, when the agent arms the vehicle, home (set on arming)."""
        pos, st = self.state.pos_ned_m, self.state
        if pos is None:
            return
        self._column_ne = (pos.value[0], pos.value[1])
        if not st.armed or st.landed_state == LandedState.ON_GROUND:
            self._home_ned = (pos.value[0], pos.value[1], pos.value[2])
        why = takeoff_column_refusal(self.mission, pos.value, self.config.takeoff_alt_m)
        if why is not None:
            raise ActivationError(f"refusing to take off from where the vehicle is: {why}")

    def check_end_action(self) -> None:
        """Refuse an end action whose path from the mission's final waypoint is never clear
        (unshielded.end_action_refusal): ``--end rtl`` across a keep-out or above the ceiling."""
        end, st = self.config.end_action, self.state
        if self.session is None or end == "hold":
            return
        names, counts = unshielded.end_action_reads(end, st.autopilot.name)
        for name in names:
            self.session.request_param(name, optional=True)
        for mission_type in counts:
            self.session.request_mission_count(mission_type)
        self._await_params(names, counts)
        why = unshielded.end_action_refusal(self.mission, end, self.state, self._home_ned)
        if why is not None:
            raise ActivationError(f"refusing the end action: {why}")

    def check_vehicle(self) -> str | None:
        """Report (console, log, ground station) when the bundle's calibration is for another vehicle.

        Not a refusal: the margin and any certificate then lack their evidence for this vehicle,
        and the calibrator's live score is what guards the flight (it widens the margin, and its
        alarm enters the fallback). The message says what to do."""
        cal = self.bundle.manifest.calibration
        flown = identity(self.state.autopilot.name, self.state.params)
        why = mismatch(cal.get("vehicle") if cal else None, flown)
        if why is None:
            return None
        text = (
            f"the bundle's calibration is for another vehicle ({why}): its margin and certificate are not "
            f"evidence for this one; calibrate from a flight of it: edge-agent calibrate BUNDLE --from-log FLIGHT.eal"
        )
        print(f"edge-agent run: WARNING: {text}", file=sys.stderr, flush=True)
        assert self.log is not None
        self.log.event(self._t(), "vehicle_mismatch", detail=why, flown=describe(flown))
        self._gcs_text(_WARNING, "edge-agent: calibrated for another vehicle")
        return why

    def activate(self) -> None:
        """Take control: the flavour's activation sequence, holding position throughout."""
        st = self.state
        if self.custom is not None:
            self.adapter = self.custom
        elif st.autopilot == Autopilot.ARDUPILOT:
            assert self.session is not None
            self.adapter = ArduPilotGuided(self.session)
        else:
            assert self.session is not None
            self.adapter = Px4Offboard(self.session)
        hold = VelocityNedYawRate((0.0, 0.0, 0.0), 0.0)
        takeoff = self.config.takeoff_alt_m if st.landed_state in (0, 1) or not st.armed else 0.0
        try:
            activate(
                self.adapter,
                self._poll,
                hold,
                self.clock,
                takeoff_alt_m=takeoff,
                timeout_s=self.config.activation_timeout_s,
                sleep=self.sleep,
            )
        except CommandError as exc:
            raise ActivationError(f"could not take control of the vehicle: {exc}") from exc

    def climb(self) -> str | None:
        """Climb to the take-off height if activation left the vehicle lower; returns why the
        climb was aborted, or None when it reached the height (or a stop was requested).

        PX4 OFFBOARD activation arms on the ground; ArduPilot's adapter already took off. The
        policy and the shield take over only above the mission's altitude floor, where the
        barrier's conditions hold; below it every command would be a floor breach. The climb is
        not the policy's, so the shield does not filter it: it holds its column (a horizontal
        velocity back to where it started, against the wind), is watched every step
        (unshielded.ClimbGuard: within a margin of the fence or a keep-out along the rest of the
        climb, or off its column, aborts it), never commands a climb at or above the mission's
        ceiling less its altitude margin, slows down as it nears it, and every step is a ``climb``
        record (a tick record's fields) so that a flight that never reached the policy still has
        a log ``edge-agent report`` reads.
        """
        assert self.adapter is not None and self.log is not None
        target_down = -self.config.takeoff_alt_m
        top_alt = self.mission.geofence.ceiling_alt_m - self.mission.margins.altitude_m
        speed = min(self.mission.limits.up_m_s, 1.5)
        ground = self._home_ned[2] if self._home_ned is not None else 0.0
        guard: unshielded.ClimbGuard | None = None
        aborted: str | None = None
        start = self.clock()
        while True:
            now = self.clock()
            self._poll(now)
            pos = self.state.pos_ned_m
            if aborted is None and pos is not None and pos.value[2] <= target_down + 0.3:
                return None
            if aborted is not None and (
                self.state.landed_state == LandedState.ON_GROUND or pos is None or pos.value[2] > ground - 0.5
            ):
                return aborted  # down (or blind): the autopilot lands it from here
            if self._stop_reason is not None:
                return aborted  # the first tick finishes the flight with the end action
            lost = self.adapter.check_control(self.state, now)
            if lost is not None:
                raise ActivationError(f"control lost during the climb: {lost.reason} (mode {lost.mode})")
            if now - start > 30e9 and aborted is None:
                raise ActivationError(
                    f"the vehicle did not climb to {self.config.takeoff_alt_m:.1f} m within 30 s; "
                    f"check thrust, the autopilot's mode, and --takeoff-alt"
                )
            if now - start > 90e9:
                return aborted  # 60 s to come back down, or the autopilot's LAND does it
            alt = None if pos is None else -pos.value[2]
            # Never up at or above the ceiling less its margin (slower as it nears it); without a
            # position nothing tells how far the ceiling is, or where the column is, so hold.
            up = 0.0 if alt is None else min(speed, max(0.0, top_alt - alt))
            vel_sp = (0.0, 0.0, -up)
            if pos is not None:
                guard = guard or unshielded.ClimbGuard(
                    self.mission, self._column_ne or pos.value, target_down, ground
                )
                vel = self.state.vel_ned_m_s
                step = guard.step(pos.value, None if vel is None else vel.value, up, now * 1e-9)
                self.summary.climb_max_drift_m = guard.max_drift_m
                if step.abort is not None and aborted is None:
                    aborted = step.abort
                    self._announce_abort(aborted)
                vel_sp = step.vel_sp_ned_m_s
            setpoint = (*vel_sp, 0.0)
            self.adapter.send(VelocityNedYawRate(vel_sp, 0.0))
            self.log.write(unshielded.climb_record(self.state, now, self._t0_ns, setpoint, self.clock()))
            if alt is not None and up == 0.0 and aborted is None:
                return None  # at the ceiling less its margin: the shielded loop takes over from here
            self.sleep(0.02)

    def _announce_abort(self, why: str) -> None:
        """Say on the console, in the log and to the ground station that the climb was aborted."""
        assert self.log is not None
        print(
            f"edge-agent run: WARNING: take-off climb aborted: {why}; coming back down over the take-off column",
            file=sys.stderr,
            flush=True,
        )
        self.log.event(self._t(), "climb_aborted", reason=why, max_drift_m=self.summary.climb_max_drift_m)
        self._gcs_text(_WARNING, "edge-agent: climb aborted, descending")
        self.summary.climb_aborted = why

    def _build(self) -> AgentCore:
        deadline = self.config.deadline_frac / self.rate_hz
        return build_agent(
            policy=self.policy,
            manifest=self.bundle.manifest,
            mission=self.mission,
            n=1,
            params=self.state.params,
            shield_enabled=self.config.shield_enabled,
            inference_deadline_s=deadline,
            timer=self.timer,
        )

    def _header(self) -> dict[str, Any]:
        m = self.bundle.manifest
        return {
            "bundle": str(self.bundle.path),
            "manifest_sha256": m.manifest_sha256,
            "features": list(m.feature_names),
            "action_kind": m.action.kind,
            "rate_hz": self.rate_hz,
            "mission": _mission_record(self.mission),
            "shield_enabled": self.config.shield_enabled,
            "certificate": dict(cert) if (cert := valid_certificate(m)) else None,  # never a stale ε
            "calibration": dict(m.calibration) if m.calibration else None,
            "autopilot": self.state.autopilot.name,
            "params": dict(self.state.params),
            "link": self.link.url,
        }

    def run(self) -> RunSummary:
        """Connect, activate, fly until done or stopped; returns the summary. Closes the log."""
        if self.config.realtime_priority is not None:
            set_realtime_priority(self.config.realtime_priority)
        self.connect()
        self.check_flavour()
        self.check_failsafe()
        self.check_takeoff_column()
        self.check_end_action()
        self._t0_ns = self.clock()
        self.log = FlightLog(self.log_path, self._header(), self.config.log_limits)
        try:
            self.log.event(0.0, "connected", autopilot=self.state.autopilot.name, mode=self.state.mode)
            self.activate()
            aborted = self.climb()
            if aborted is not None:  # back down: the autopilot touches down and disarms
                self._finish(
                    self._t(), f"take-off climb aborted: {aborted}", ExitCode.CLIMB_ABORTED, end_action="land"
                )
            else:
                self._take_over()
        finally:
            gc.unfreeze()  # back to normal for whoever runs next in this process (tests)
            self._set_healthy(False)
            self.log.close()
        self.summary.log_records_dropped = max(self.summary.log_records_dropped, self.log.dropped)
        if self.summary.log_records_dropped and self.summary.exit_code == ExitCode.OK:
            self.summary.exit_code = ExitCode.LOG_INCOMPLETE  # the flight went well, its record did not
        return self.summary

    def _take_over(self) -> None:
        """Hand the vehicle to the policy behind the shield and fly until the flight ends."""
        assert self.log is not None
        self.check_vehicle()
        self.core = self._build()
        self.policy.reset()
        self.log.event(self._t(), "activated", mode=self.state.mode)
        self._drain_startup_events()
        self.log.sync()
        self._gcs_text(_INFO, "edge-agent: in control")
        if self.config.timer_slack_ns > 0:
            set_timer_slack(self.config.timer_slack_ns)
        # Everything built so far lives for the whole flight: collect once now and move it out of
        # the collector's sight, so that a full collection in flight walks only what the ticks
        # allocate (~36k start-up objects made one a ~7 ms stall, seven ticks at 1 kHz).
        gc.collect()
        gc.freeze()
        self._fly()

    # -- flying ---------------------------------------------------------------------------------

    def _t(self) -> float:
        return (self.clock() - self._t0_ns) * 1e-9

    _t0_ns: int = 0

    def _fly(self) -> None:
        latencies = LatencyHistogram()
        lateness = LatencyHistogram()
        start = self.clock()
        try:
            self._fly_ticks(start, latencies, lateness)
        finally:
            s = self.summary
            s.duration_s = (self.clock() - start) * 1e-9
            if latencies.count:
                s.tick_latency_us_p50 = latencies.percentile_ns(50) * 1e-3
                s.tick_latency_us_p99 = latencies.percentile_ns(99) * 1e-3
                s.jitter_us_p99 = lateness.percentile_ns(99) * 1e-3

    def _fly_ticks(self, start: int, latencies: LatencyHistogram, lateness: LatencyHistogram) -> None:
        assert self.core is not None and self.adapter is not None and self.log is not None
        core, adapter, log, s = self.core, self.adapter, self.log, self.summary
        self._t0_ns = start
        next_tick = start
        next_gcs = start
        link_ok = np.ones(1, dtype=bool)
        hb_timeout_ns = core.shield.config.heartbeat_timeout_s * 1e9
        spin_ns = round(self.config.spin_us * 1e3)
        while True:
            now = wait_until(next_tick, self.clock, self.sleep, spin_ns)
            late = now - next_tick
            lateness.add(late)
            if late > self.period_ns:
                s.overruns += 1
                next_tick = now  # drop the missed ticks rather than bursting to catch up
            next_tick += self.period_ns
            t = (now - start) * 1e-9

            self._poll(now)
            st = self.state
            self._link_events(t)
            # Without the autopilot's HEARTBEAT its mode is unknown: hold (the watchdog does) and
            # judge control again only when it returns; never treat silence as a mode change.
            lost = adapter.check_control(st, now) if st.link_up else None
            if lost is not None:
                s.control_lost = f"{lost.reason} (mode {lost.mode})"
                log.event(t, "control_lost", mode=lost.mode, armed=lost.armed, reason=lost.reason)
                self._gcs_text(_WARNING, f"edge-agent: control lost to {lost.mode}; not taking it back", True)
                self._finish(t, "control lost: " + lost.reason, ExitCode.CONTROL_LOST, command_end=False)
                return
            link_ok[0] = st.link_up and (now - st.heartbeat_stamp_ns) < hb_timeout_ns
            arrays = state_arrays(st, now)
            d = core.step(arrays, t, link_ok)
            sp = d.setpoint[0].tolist()  # Python floats, as float(sp[i]) gives them
            adapter.send(VelocityNedYawRate((sp[0], sp[1], sp[2]), sp[3]))
            done_ns = self.clock()
            latencies.add(done_ns - now)
            if d.inference_s > core.inference_deadline_s:
                s.deadline_misses += 1

            layer = int(d.layer[0])
            reason = int(d.reason[0])
            stage = int(d.fallback_stage[0])
            self._track_hold(t, layer, reason)
            if d.intervened[0]:
                s.interventions[LAYER_NAMES[layer]] += 1
                name = _REASON_NAMES[reason]
                s.reasons[name] = s.reasons.get(name, 0) + 1
            slack = float(d.min_slack_m[0])
            if math.isfinite(slack):
                s.min_slack_m = min(s.min_slack_m, slack)
            s.max_margin_m = max(s.max_margin_m, float(d.margin_m[0]))
            s.final_miscoverage = float(d.miscoverage[0])
            s.ticks += 1
            log.write(
                {
                    "k": "tick",
                    "t_s": t,
                    "pos_ned_m": arrays.pos_ned_m[0].tolist(),
                    "vel_ned_m_s": arrays.vel_ned_m_s[0].tolist(),
                    "age_s": arrays.signal_age_s[0].tolist(),
                    "raw_action": d.raw_action[0].tolist(),
                    "setpoint": sp,
                    "layer": layer,
                    "reason": reason,
                    "stage": stage,
                    "margin_m": float(d.margin_m[0]),
                    "score_m": float(d.score_m[0]),
                    "miscoverage": float(d.miscoverage[0]),
                    "alarm": bool(d.alarm[0]),
                    "slack_m": slack,
                    "goal": int(d.goal_index[0]),
                    "infer_us": d.inference_s * 1e6,
                    "tick_us": (done_ns - now) * 1e-3,
                    "late_us": late * 1e-3,
                    "mode": st.mode,
                }
            )
            if now >= next_gcs:
                next_gcs = now + round(self.config.gcs_period_s * 1e9)
                self._report_gcs(d.margin_m[0], d.miscoverage[0], s)
                if log.dropped > s.log_records_dropped:
                    if s.log_records_dropped == 0:
                        self._gcs_text(_WARNING, "edge-agent: flight log write failing (disk full?)")
                    s.log_records_dropped = log.dropped
            if d.intervened[0] and layer == 3 and stage != self._last_stage:
                why = _REASON_NAMES[reason]
                log.event(t, "fallback", stage=stage, reason=why)
                self._gcs_text(_WARNING, f"edge-agent: fallback {Stage(stage).name} ({why})", True)
            self._last_stage = stage

            if stage == _STAGE_LAND and st.landed_state == LandedState.ON_GROUND:
                self._finish(
                    t, "landed by the shield's fallback", ExitCode.FALLBACK_LANDED, command_end=False
                )
                break
            if d.mission_complete[0]:
                s.mission_complete = True
                self._finish(t, "mission complete", ExitCode.OK)
                break
            if self._stop_reason is not None:
                self._finish(t, self._stop_reason, self._stop_code)
                break
            if t > self.config.max_duration_s:
                self._finish(t, f"time limit {self.config.max_duration_s:.0f} s", ExitCode.TIME_LIMIT)
                break

    _last_stage: int = 0
    _hold_since_s: float | None = None
    _hold_reason: str = ""
    _next_hold_text_s: float = 0.0

    def _drain_startup_events(self) -> None:
        """Log what the link and session reported while connecting, so flight events start clean."""
        assert self.log is not None
        if isinstance(self.link, ReconnectingLink):
            for ev in self.link.events():
                self.log.event(self._t(), "startup_link", kind=ev.kind.value, detail=ev.reason)
        if self.session is not None:
            for sev in self.session.events():
                self.log.event(self._t(), "startup_session", kind=sev.kind.value, detail=sev.detail)

    def _link_events(self, t: float) -> None:
        """Log link and session events; tell the ground station (it may hear us if the FC routes it)."""
        assert self.log is not None
        if isinstance(self.link, ReconnectingLink):
            for ev in self.link.events():
                self.log.event(t, f"link_{ev.kind.value}", url=ev.url, detail=ev.reason)
                if ev.kind.value == "down":
                    self.summary.link_downs += 1
                    self._gcs_text(_WARNING, "edge-agent: link lost, holding; reconnecting", True)
                else:
                    self._gcs_text(_NOTICE, "edge-agent: link reconnected", True)
        if self.session is not None:
            for sev in self.session.events():
                if sev.kind == SessionEventKind.LINK_DOWN:
                    self.log.event(t, "autopilot_lost", detail=sev.detail)
                    self.summary.link_downs += 1
                    self._gcs_text(_WARNING, "edge-agent: autopilot heartbeat lost, holding", True)
                elif sev.kind == SessionEventKind.LINK_UP:
                    self.log.event(t, "autopilot_back", detail=sev.detail, mode=self.state.mode)
                    self._gcs_text(_NOTICE, f"edge-agent: autopilot back in {self.state.mode}")
                else:
                    self.log.event(t, sev.kind.value, detail=sev.detail)

    def _track_hold(self, t: float, layer: int, reason: int) -> None:
        """Log the start and end of each watchdog hold, with its reason and length."""
        assert self.log is not None
        holding = layer == 1
        if holding and self._hold_since_s is None:
            self._hold_since_s = t
            self._hold_reason = _REASON_NAMES[reason]
            self.summary.holds += 1
            self.log.event(t, "hold", reason=self._hold_reason)
            if t >= self._next_hold_text_s:
                self._next_hold_text_s = t + self.config.gcs_text_min_interval_s
                self._gcs_text(_WARNING, f"edge-agent: hold ({self._hold_reason})")
        elif not holding and self._hold_since_s is not None:
            length = t - self._hold_since_s
            self.summary.longest_hold_s = max(self.summary.longest_hold_s, length)
            self.log.event(t, "resume", after_s=length, reason=self._hold_reason)
            if t >= self._next_hold_text_s:
                self._next_hold_text_s = t + self.config.gcs_text_min_interval_s
                self._gcs_text(_NOTICE, f"edge-agent: resumed after {length:.2f} s hold")
            self._hold_since_s = None

    def _report_gcs(self, margin: float, miscoverage: float, s: RunSummary) -> None:
        if self.session is None:
            return
        self.session.send_named_value_float("EA_MARGIN", float(margin))
        self.session.send_named_value_float(
            "EA_MISCOV", float(miscoverage) if math.isfinite(miscoverage) else -1.0
        )
        self.session.send_named_value_float("EA_INTERV", float(sum(s.interventions.values())))

    def _finish(
        self,
        t: float,
        reason: str,
        code: ExitCode,
        *,
        command_end: bool = True,
        end_action: str | None = None,
    ) -> None:
        """End the flight leaving the vehicle safe; never re-enter the external mode afterwards.

        The end action (``end_action``, else the configured one after its path is checked against
        the mission: unshielded.choose_end_action) is the autopilot's, unshielded: a path that is
        not clear becomes Hold, said on the console, in the log and to the ground station."""
        assert self.log is not None
        self.summary.end_reason = reason
        self.summary.exit_code = code
        self.log.event(t, "finish", reason=reason)
        if command_end:
            # Hold still while the end command is acknowledged, then hand over to the autopilot.
            hold = VelocityNedYawRate((0.0, 0.0, 0.0), 0.0)
            assert self.adapter is not None
            if self.session is not None:
                end = end_action or self._checked_end_action(t)
                handle = (
                    self.session.land()
                    if end == "land"
                    else self.session.return_to_launch()
                    if end == "rtl"
                    else self.session.set_mode("HOLD")
                )
                deadline = self.clock() + 3_000_000_000
                while not handle.done and self.clock() < deadline:
                    self.adapter.send(hold)
                    self._poll(self.clock())
                    self.sleep(0.02)
                self.summary.end_action = end
                self.log.event(self._t(), "end_command", action=end, accepted=handle.accepted)
            else:
                self.adapter.send(hold)
        self._gcs_text(_NOTICE, f"edge-agent: finished ({reason})")
        self.log.sync()

    def _checked_end_action(self, t: float) -> str:
        """The configured end action if its path is clear from where the vehicle is, else Hold."""
        assert self.log is not None
        asked = self.config.end_action
        end = unshielded.choose_end_action(self.mission, asked, self.state, self._home_ned)
        if end.refused is not None:
            self.summary.end_action_refused = end.refused
            text = f"not commanding --end {asked}: {end.refused}; holding instead"
            print(f"edge-agent run: WARNING: {text}", file=sys.stderr, flush=True)
            self.log.event(t, "end_action_refused", action=asked, instead=end.action, reason=end.refused)
            self._gcs_text(_WARNING, f"edge-agent: {asked} path not clear, holding")
        return end.action


def _mission_record(m: Mission) -> dict[str, Any]:
    """The mission as plain data for the log header (the report draws the fence from it)."""
    from dataclasses import asdict

    out = asdict(m)
    out.pop("geometry", None)
    return out
