"""Link faults in flight: the agent detects each within its documented limit, holds or hands over
as designed, never re-enters OFFBOARD/GUIDED by itself, and reports to the log and the ground station.

Every flight runs the real :class:`edge_agent.loop.Runtime` against the SITL flight controller
over a real pty / TCP / UDP link, on a fake clock (see fault_world.py), so the detection times
below are exact in simulated time. The limits are the ones docs/safety.md documents.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fault_world import MAV_CMD_COMPONENT_ARM_DISARM, MAV_CMD_DO_SET_MODE, World, events

from edge_agent.bundle import load_bundle
from edge_agent.fallback import Stage
from edge_agent.flightlog import read_log
from edge_agent.loop import Runtime
from edge_agent.loop_config import LoopConfig, RunSummary
from edge_agent.mission import Mission, parse_mission
from edge_agent.watchdog import Reason
from firmware_bridge.exitcodes import ExitCode
from firmware_bridge.links import ReconnectingLink
from firmware_bridge.session import SessionConfig

HERE = Path(__file__).resolve().parent


def fault_mission(flavor: str) -> Mission:
    """faults.toml for ``flavor``: ArduPilot's silence model (GUID_TIMEOUT 3 s, brake 1 m/s²) and an
    autopilot fence far enough out for it, since the agent refuses a mission for another autopilot."""
    raw = tomllib.loads((HERE / "faults.toml").read_text())
    if flavor == "ardupilot":
        raw["autopilot"].update(flavour="ardupilot", silence_hold_s=3.0, brake_decel_m_s2=1.0)
        for side in ("north", "east"):
            raw["autopilot"]["fence"][f"{side}_min_m"] = -80.0
            raw["autopilot"]["fence"][f"{side}_max_m"] = 80.0
    return parse_mission(raw)


RATE_HZ = 50.0
PERIOD_S = 1.0 / RATE_HZ

# Documented limits (docs/safety.md, "Link faults").
HOLD_LIMIT_S = 0.1 + 2 * PERIOD_S
"""Stale telemetry → watchdog hold: position freshness (0.1 s) plus one telemetry and one control period."""
LINK_EVENT_LIMIT_S = 2 * PERIOD_S
"""A read error (pty EIO, TCP reset) → link_down event: the next tick's read, one period, plus one."""
AUTOPILOT_LOST_LIMIT_S = 3.0 + 2 * PERIOD_S
"""No autopilot HEARTBEAT → autopilot_lost event: the session liveness timeout (3 s) plus slack of a tick."""
HANDOVER_LIMIT_S = 1.0 + 2 * PERIOD_S
"""Mode change or reboot seen → stop commanding: one autopilot HEARTBEAT period (1 Hz) plus a tick."""

FAULT_AFTER_S = 2.0
"""Faults strike this long after the policy took control (the vehicle is at speed by then)."""


@dataclass
class Flight:
    """A finished flight: its summary, its log, and the world's view of it."""

    summary: RunSummary
    records: list[dict[str, Any]]
    world: World
    fly_start_s: float
    fault_s: float
    runtime: Runtime

    def event_times(self, name: str) -> list[float]:
        """World times (s) of the log events called ``name``."""
        return [self.fly_start_s + e["t_s"] for e in events(self.records) if e["name"] == name]

    def first_after_fault(self, name: str) -> tuple[float, dict[str, Any]]:
        """Delay after the fault and record of the first ``name`` event after it."""
        for e in events(self.records):
            t = self.fly_start_s + e["t_s"]
            if e["name"] == name and t >= self.fault_s:
                return t - self.fault_s, e
        raise AssertionError(f"no {name!r} event after the fault; events: {_names(self.records)}")

    def texts_after_fault(self) -> list[str]:
        """STATUSTEXTs the vehicle received after the fault."""
        return [text for t, _, text in self.world.sent.statustext if t >= self.fault_s]


def _names(records: list[dict[str, Any]]) -> list[str]:
    return [f"{e['name']}@{e['t_s']:.2f}" for e in events(records)]


def fly(
    tmp_path: Path,
    bundle: Path,
    inject: Any,
    *,
    link: str = "pty",
    flavor: str = "px4",
    params: dict[str, float] | None = None,
    max_duration_s: float = 6.0,
) -> Flight:
    """Fly the fault mission; ``inject(world)`` runs FAULT_AFTER_S after the policy takes control."""
    world = World(tmp_path, flavor=flavor, link=link, params=params)
    mission = fault_mission(flavor)
    reconnecting = ReconnectingLink(
        world.agent_url, clock=world.clock, backoff_initial_s=0.05, backoff_max_s=0.2
    )
    runtime = Runtime(
        load_bundle(bundle),
        mission,
        reconnecting,
        config=LoopConfig(
            rate_hz=RATE_HZ, takeoff_alt_m=4.0, max_duration_s=max_duration_s, deadline_frac=1.0
        ),
        log_path=tmp_path / "flight.eal",
        clock=world.clock,
        sleep=world.sleep,
        session_config=SessionConfig(),
        timer=lambda: world.clock() * 1e-9,  # inference takes no simulated time: no DEADLINE holds
    )
    fault: list[float] = []
    flying_since: list[float] = []

    def flying() -> bool:
        if runtime.core is None:
            return False
        if not flying_since:
            flying_since.append(world.now_s)
        return world.now_s >= flying_since[0] + FAULT_AFTER_S

    def strike() -> None:
        fault.append(world.now_s)
        inject(world)

    world.when(flying, strike)
    try:
        summary = runtime.run()
        world.sleep(0.1)  # the vehicle reads the agent's last words (STATUSTEXT) before the cable goes
    finally:
        reconnecting.close()
        world.close()
    assert fault, "the fault never struck: the flight ended before it"
    records = list(read_log(tmp_path / "flight.eal"))
    fly_start = (runtime._t0_ns - world.t0_ns) * 1e-9
    return Flight(summary, records, world, fly_start, fault[0], runtime)


def _no_takeover_after(flight: Flight, t_s: float) -> None:
    """No mode or arm command went out after ``t_s``, and the vehicle never went back to OFFBOARD."""
    late = [
        c
        for c in flight.world.sent.commands
        if c[0] >= t_s and c[1] in (MAV_CMD_DO_SET_MODE, MAV_CMD_COMPONENT_ARM_DISARM)
    ]
    assert late == [], f"the agent tried to take control back: {late}"
    back = [m for m in flight.world.modes if m[0] > t_s and m[1] == "OFFBOARD"]
    assert back == [], f"the vehicle re-entered OFFBOARD after the handover: {back}"


@pytest.mark.parametrize("link", ["pty", "tcp"])
def test_cable_pulled_briefly_holds_then_resumes(goal_seeker: Path, tmp_path: Path, link: str) -> None:
    # 0.5 s out: shorter than PX4's COM_OF_LOSS_T (1 s), so the vehicle stays in OFFBOARD and the
    # agent, still in control when the link returns, resumes the mission.
    flight = fly(tmp_path, goal_seeker, lambda w: w.pull_cable(replug_after_s=0.5), link=link)

    hold_s, hold = flight.first_after_fault("hold")
    assert hold_s <= HOLD_LIMIT_S
    assert hold["reason"].startswith("STALE_")  # attitude (50 ms) goes stale first
    down_s, _ = flight.first_after_fault("link_down")
    assert down_s <= LINK_EVENT_LIMIT_S
    up_s, _ = flight.first_after_fault("link_up")
    assert 0.5 <= up_s <= 0.5 + 0.25  # reopened within the backoff cap (0.2 s) of the replug
    # Resuming needs a fresh autopilot HEARTBEAT too (the shield's 1.5 s limit): at most one 1 Hz
    # HEARTBEAT period after the link is back.
    resume_s, _resume = flight.first_after_fault("resume")
    assert up_s < resume_s <= up_s + 1.0 + 2 * PERIOD_S
    # While held, every setpoint the agent computed was the zero-velocity hold.
    held = [
        r["setpoint"]
        for r in flight.records
        if r["k"] == "tick"
        and flight.fault_s + hold_s <= flight.fly_start_s + r["t_s"] < flight.fault_s + resume_s
    ]
    assert held and all(sp[:3] == [0.0, 0.0, 0.0] for sp in held)
    s = flight.summary
    assert s.control_lost is None and s.end_reason.startswith("time limit")
    assert s.link_downs == 1 and s.holds >= 1
    assert any("resumed after" in t for t in flight.texts_after_fault()), flight.texts_after_fault()
    assert any("link reconnected" in t for t in flight.texts_after_fault())


def test_cable_pulled_past_offboard_loss_hands_over_for_good(
    goal_seeker: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # 2 s out: PX4's offboard-loss failsafe (COM_OF_LOSS_T = 1 s) switches to Position mode.
    # When the link returns the agent must see that, stop, and never switch back.
    flight = fly(tmp_path, goal_seeker, lambda w: w.pull_cable(replug_after_s=2.0), max_duration_s=10.0)

    hold_s, _ = flight.first_after_fault("hold")
    assert hold_s <= HOLD_LIMIT_S
    failsafe = [m for m in flight.world.modes if m[0] > flight.fault_s and m[1] != "OFFBOARD"]
    assert failsafe, f"the SITL did not run its offboard-loss failsafe: {flight.world.modes}"
    t_failsafe = failsafe[0][0]
    assert t_failsafe - flight.fault_s == pytest.approx(1.0, abs=0.1)
    up_s, _ = flight.first_after_fault("link_up")
    lost_s, lost = flight.first_after_fault("control_lost")
    assert up_s <= lost_s <= up_s + HANDOVER_LIMIT_S
    assert lost["mode"] == failsafe[0][1]
    s = flight.summary
    assert s.control_lost is not None and "mode changed" in s.control_lost
    _no_takeover_after(flight, flight.fault_s)
    texts = flight.texts_after_fault()
    assert any("control lost to" in t for t in texts), texts
    err = capfd.readouterr().err  # and the operator's console, at once
    assert "edge-agent run: link lost, holding; reconnecting" in err, err
    assert f"edge-agent run: control lost to {lost['mode']}; not taking it back" in err, err


def test_udp_peer_silent_holds_and_reports_autopilot_lost(goal_seeker: Path, tmp_path: Path) -> None:
    # The vehicle's transmissions stop for 3.5 s (radio fade): no read error, only silence. The
    # agent's setpoints still reach the vehicle, so PX4 stays in OFFBOARD and the agent's hold is
    # what the vehicle does; after the liveness timeout the autopilot is reported lost.
    flight = fly(tmp_path, goal_seeker, lambda w: w.silence(3.5), link="udp", max_duration_s=9.0)

    hold_s, hold = flight.first_after_fault("hold")
    assert hold_s <= HOLD_LIMIT_S and hold["reason"].startswith("STALE_")
    lost_s, _ = flight.first_after_fault("autopilot_lost")
    # The 3 s liveness counts from the last HEARTBEAT, which came up to 1 s before the silence.
    assert 3.0 - 1.0 - PERIOD_S <= lost_s <= AUTOPILOT_LOST_LIMIT_S
    back_s, back = flight.first_after_fault("autopilot_back")
    assert 3.5 <= back_s <= 3.5 + 1.0 + 2 * PERIOD_S  # the next 1 Hz HEARTBEAT after the silence
    assert back["mode"] == "OFFBOARD"
    # The vehicle itself was held still: the setpoints it received meanwhile were zero velocity.
    assert [m for m in flight.world.modes if flight.fault_s < m[0] < flight.fault_s + back_s] == []
    s = flight.summary
    assert s.control_lost is None and s.link_downs == 1
    texts = flight.texts_after_fault()
    assert any("autopilot heartbeat lost" in t for t in texts), texts
    assert any("autopilot back in OFFBOARD" in t for t in texts), texts


def test_corruption_burst_is_dropped_and_held_through(goal_seeker: Path, tmp_path: Path) -> None:
    # One byte in 5 corrupted for 1 s: practically every frame fails its CRC, none is believed.
    flight = fly(tmp_path, goal_seeker, lambda w: w.corrupt(1.0, byte_prob=0.2))

    hold_s, hold = flight.first_after_fault("hold")
    assert hold_s <= HOLD_LIMIT_S
    assert hold["reason"] in {r.name for r in Reason if r.name.startswith("STALE_")}
    resume_s, _ = flight.first_after_fault("resume")
    # Resuming also needs an autopilot HEARTBEAT within the shield's 1.5 s: up to one 1 Hz period.
    assert 1.0 <= resume_s <= 1.0 + 1.0 + 2 * PERIOD_S
    # No corrupted value reached the policy: between any two position samples the vehicle moved
    # no faster than it can fly (a flipped exponent bit would throw it kilometres away).
    ticks = [r for r in flight.records if r["k"] == "tick"]
    samples = {round(r["t_s"] - r["age_s"][0], 6): r["pos_ned_m"] for r in ticks if r["age_s"][0] < 1e3}
    stamps = sorted(samples)
    for a, b in itertools.pairwise(stamps):
        step_m = max(abs(x - y) for x, y in zip(samples[a], samples[b], strict=True))
        assert step_m <= 8.0 * (b - a) + 0.05, (a, b, samples[a], samples[b])
    assert flight.summary.control_lost is None
    session = flight.runtime.session
    assert session is not None and session.parser.crc_errors > 100


@pytest.mark.parametrize("flavor", ["px4", "ardupilot"])
def test_flight_controller_reboot_is_a_final_handover(goal_seeker: Path, tmp_path: Path, flavor: str) -> None:
    # The autopilot reboots mid-flight: heartbeat sequence from 0, disarmed, default mode. The
    # agent must stop at its next HEARTBEAT and never switch the rebooted autopilot back.
    flight = fly(tmp_path, goal_seeker, lambda w: w.vehicle.reboot(), flavor=flavor, max_duration_s=8.0)

    lost_s, lost = flight.first_after_fault("control_lost")
    assert lost_s <= HANDOVER_LIMIT_S
    assert lost["mode"] != ("OFFBOARD" if flavor == "px4" else "GUIDED")
    assert flight.summary.control_lost is not None
    _no_takeover_after(flight, flight.fault_s)
    # After the handover the agent sent no more setpoints.
    assert [t for t in flight.world.sent.setpoints if t > flight.fault_s + lost_s + PERIOD_S] == []
    assert any("control lost to" in t for t in flight.texts_after_fault()), (
        flight.world.sent.statustext,
        flight.fault_s,
    )


@pytest.mark.parametrize(
    ("max_duration_s", "code"),
    [(5.0, ExitCode.TIME_LIMIT), (90.0, ExitCode.LOG_INCOMPLETE)],
    ids=["cut_by_the_time_limit", "mission_complete"],
)
def test_a_full_disk_in_flight_warns_once_and_the_summary_says_the_log_is_incomplete(
    tmp_path: Path,
    goal_seeker: Path,
    capfd: pytest.CaptureFixture[str],
    max_duration_s: float,
    code: ExitCode,
) -> None:
    # The flight's own end wins (the vehicle's fate matters more); only a mission complete becomes 6.
    import resource
    import signal

    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def fill_the_disk(world: World) -> None:
        # RLIMIT_FSIZE stands in for a full disk: the log cannot grow past what it holds now.
        size = (tmp_path / "flight.eal").stat().st_size
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 1024, old[1]))

    try:
        flight = fly(tmp_path, goal_seeker, fill_the_disk, max_duration_s=max_duration_s)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_handler)
    s = flight.summary
    # the flight went on: the vehicle never noticed
    assert s.end_reason == ("mission complete" if code == ExitCode.LOG_INCOMPLETE else "time limit 5 s")
    assert s.exit_code == code
    assert s.log_records_dropped > 100 and s.log_records_dropped == flight.runtime.log.dropped  # type: ignore[union-attr]
    assert flight.runtime.log is not None and flight.runtime.log.incomplete
    err = capfd.readouterr().err
    assert err.count("edge-agent: WARNING: cannot write the flight log") == 1
    assert any("flight log write failing" in text for _, _, text in flight.world.sent.statustext)
    ticks = sum(1 for r in flight.records if r["k"] == "tick")
    assert ticks + s.log_records_dropped >= s.ticks  # every tick is on disk or counted as lost


def test_a_jump_outside_the_fence_ends_in_a_fallback_landing_said_on_the_console_and_exit_5(
    goal_seeker: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # The vehicle is put 2 m outside the fence at once (as an estimator reset can): nothing the
    # policy asks is safe any more, so the shield's fallback brakes, holds, and, the fence still
    # crossed after the mission's hold, lands there; every stage is said on the console as it comes.
    def jump(world: World) -> None:
        world.sim.pos_ned_m[0, 0] = 32.0  # fence north_max 30 m; the autopilot's 45 m

    flight = fly(tmp_path, goal_seeker, jump, max_duration_s=40.0)
    s = flight.summary
    assert s.end_reason == "landed by the shield's fallback"
    assert s.exit_code == ExitCode.FALLBACK_LANDED == 5
    stages = [e["stage"] for e in events(flight.records) if e["name"] == "fallback"]
    assert stages == [Stage.BRAKE, Stage.HOLD, Stage.LAND], _names(flight.records)
    err = capfd.readouterr().err
    said = [line for line in err.splitlines() if "fallback" in line]
    assert said == [f"edge-agent run: fallback {st} (NOT_RECOVERABLE)" for st in ("BRAKE", "HOLD", "LAND")], (
        err
    )
    assert any("fallback LAND" in t for t in flight.texts_after_fault())
