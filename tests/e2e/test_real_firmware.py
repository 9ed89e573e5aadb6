"""The real autopilots: PX4 (SIH) and ArduCopter SITL built from their own source (../shared/firmware).

Each test starts the firmware with ``sitl.firmware.FirmwareSitl`` (a private loopback-only network
namespace: the firmware binds every interface), starts ``edge-agent run`` inside that namespace as a
user would, right after the firmware's first HEARTBEAT (about a second after launch; a cold
ArduCopter needs ~40 s more before it can arm, which the agent waits for), and judges the flight
from the firmware's own telemetry on a second link, not from the agent's log.

Skipped, with one line saying why, where the binaries or network namespaces are missing.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from edge_agent.mission import load_mission
from firmware_bridge.exitcodes import FLIGHT_OUTCOMES, ExitCode
from sitl.firmware import FirmwareSitl, unavailable_reason
from sitl.firmware_observer import Observer, Track
from tests.e2e.conftest import REPO, edge_agent, env
from tests.e2e.firmware_judge import free_port_gone, judge

pytestmark = pytest.mark.slow

MISSIONS = {
    "px4": REPO / "examples/missions/demo.toml",
    "ardupilot": REPO / "examples/missions/demo_ardupilot.toml",
}
ARDUCOPTER_BRAKE, ARDUCOPTER_LAND, ARDUCOPTER_RTL = 17, 9, 6
PX4_AUTO_LOITER, PX4_AUTO_LAND, PX4_AUTO_RTL = (
    (4 << 16) | (3 << 24),
    (4 << 16) | (6 << 24),
    (4 << 16) | (5 << 24),
)
PX4_HOLD = {"COM_OBL_RC_ACT": 5.0}
"""PX4's offboard-loss action set to Hold: what the agent requires of a PX4 without RC (SIH)."""


def need(kind: str) -> None:
    why = unavailable_reason(kind)
    if why is not None:
        pytest.skip(f"real {kind} firmware not available here: {why}")


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained example policy, exported as `make demo` exports it."""
    out = tmp_path_factory.mktemp("firmware") / "bundle"
    pol = REPO / "examples" / "policy"
    subprocess.run(
        edge_agent(
            "export", "--spec", str(pol / "spec.toml"), "--sb3", str(pol / "model.zip"), "--algo", "ppo",
            "--vecnormalize", str(pol / "vecnormalize.pkl"), "--out", str(out),
        ),
        check=True, cwd=REPO, capture_output=True,
    )  # fmt: skip
    return out


def fly(
    kind: str,
    bundle: Path,
    tmp_path: Path,
    *extra: str,
    max_duration_s: float = 120.0,
    watch_after_s: float = 3.0,
    cold: bool = False,
    params: dict[str, float] | None = None,
    mission: Path | None = None,
) -> tuple[subprocess.CompletedProcess[str], Track, dict, float]:
    """Fly ``bundle`` on ``mission`` (else the demo mission) on real ``kind``; (agent's result,
    firmware's track, the agent's JSON summary, wall time the agent exited). PX4 boots with
    ``params`` or else with the offboard-loss action the agent requires without RC, Hold
    (:data:`PX4_HOLD`)."""
    # ArduCopter boots at 10x (its EKF's ~40 s in ~4 s) and flies at 1x, unless the test is the cold boot.
    fast = 10.0 if kind == "ardupilot" and not cold else None
    if params is None and kind == "px4":
        params = PX4_HOLD
    with FirmwareSitl(kind, workdir=tmp_path / "fw", boot_speedup=fast, params=params) as fw:
        vehicle = fw.vehicles[0]
        observer = Observer(fw, vehicle)
        log = tmp_path / "flight.eal"
        proc = fw.popen(
            edge_agent(
                "run", "--bundle", str(bundle), "--mission", str(mission or MISSIONS[kind]), "--link", vehicle.link_url,
                "--max-duration", str(max_duration_s), "--log", str(log), "--json", *extra,
            ),
            cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            out, err = proc.communicate(timeout=max_duration_s + 150)
        except subprocess.TimeoutExpired:
            fw.ns.stop(proc)  # type: ignore[union-attr]
            out, err = proc.communicate()
            raise AssertionError(f"the agent did not finish:\n{err[-3000:]}") from None
        ended = time.time()
        time.sleep(watch_after_s)  # what the vehicle does after the agent's end command
        track = observer.stop()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode())
    summary = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    return result, track, summary, ended


def airborne_from(track: Track, floor_down_m: float) -> float:
    for t, p in zip(track.t_s, track.pos_ned_m, strict=True):
        if p[2] < floor_down_m - 0.5:
            return t
    raise AssertionError("the vehicle never climbed above the altitude floor")


@pytest.mark.parametrize("kind", ["px4", "ardupilot"])
def test_demo_mission_on_real_firmware_completes_without_breach(
    kind: str, demo_bundle: Path, tmp_path: Path
) -> None:
    need(kind)
    mission = load_mission(MISSIONS[kind])
    result, track, summary, ended = fly(kind, demo_bundle, tmp_path, cold=True)
    assert result.returncode == 0, (summary, result.stderr[-3000:])
    assert summary.get("mission_complete") is True, (summary, result.stderr[-2000:])
    verdict = judge(
        mission,
        track,
        airborne_from_s=airborne_from(track, mission.geometry.floor_down_m),
        airborne_until_s=ended,
    )
    print(f"{kind}: judged from {verdict.samples} LOCAL_POSITION_NED of the firmware: {verdict}")
    assert verdict.breaches == [], verdict


@pytest.mark.parametrize("kind", ["px4", "ardupilot"])
def test_adversarial_policy_on_real_firmware_never_breaches(kind: str, bundles: Path, tmp_path: Path) -> None:
    """The adversary steers at the keep-outs and the fence at full speed; the shield must hold on the
    real vehicle (the flight may end in the fallback: what counts is that nothing is entered)."""
    need(kind)
    mission = load_mission(MISSIONS[kind])
    result, track, summary, _ = fly(kind, bundles / "adversary", tmp_path, max_duration_s=45.0)
    assert result.returncode in FLIGHT_OUTCOMES, result.stderr[-3000:]  # a flight, however it ended
    verdict = judge(mission, track, airborne_from_s=float("inf"), airborne_until_s=float("inf"))
    print(
        f"{kind} adversary: {summary.get('end_reason')}; interventions {summary.get('interventions')}; {verdict}"
    )
    assert verdict.fence_m >= 0 and verdict.keepout_m >= 0 and verdict.ceiling_m >= 0, verdict


@pytest.mark.parametrize(
    ("kind", "end", "modes"),
    [
        ("px4", "hold", {PX4_AUTO_LOITER}),
        ("px4", "land", {PX4_AUTO_LAND}),
        ("ardupilot", "hold", {ARDUCOPTER_BRAKE}),
        ("ardupilot", "land", {ARDUCOPTER_LAND}),
        ("px4", "rtl", {PX4_AUTO_RTL}),
        ("ardupilot", "rtl", {ARDUCOPTER_RTL}),
    ],
)
def test_each_end_choice_does_what_its_name_says_on_real_firmware(
    kind: str, end: str, modes: set[int], bundles: Path, tmp_path: Path
) -> None:
    """Flown with the goal seeker, stopped by the time limit mid-route: ``hold`` must leave the
    vehicle in a mode that holds position whatever the (absent) sticks say, at its altitude;
    ``land`` must bring it down; ``rtl`` must head home (or climb to the return altitude first)."""
    need(kind)
    result, track, summary, ended = fly(
        kind, bundles / "goal_seeker", tmp_path, "--end", end, max_duration_s=8.0, watch_after_s=6.0
    )
    if end == "rtl":
        # The demo missions' way home from their final waypoint is not clear (PX4's 60 m
        # RTL_RETURN_ALT is over the 30 m ceiling; the straight line home passes the building):
        # refused at start-up with the fix named, before anything is commanded (issue 18).
        assert result.returncode == ExitCode.ERROR, (result.returncode, result.stderr[-3000:])
        assert "--end rtl from the mission's final waypoint" in result.stderr, result.stderr[-3000:]
        assert not any(armed for _, _, armed in track.modes), "armed although refused"
        return
    assert result.returncode in (ExitCode.OK, ExitCode.TIME_LIMIT), result.stderr[-3000:]
    after = [(t, mode, armed) for t, mode, armed in track.modes if t > ended]
    assert after and after[-1][1] in modes, (after[-3:], summary)
    pos = track.positions(since_s=ended)
    alt = -pos[:, 2]
    if end == "hold":
        # Brakes from speed (a few metres), then stays put within a metre at its altitude, 3-6 s after the end.
        settled = track.positions(since_s=ended + 3.0)
        spread = settled.max(axis=0) - settled.min(axis=0)
        assert (spread < 1.0).all(), spread  # PX4 SIH holds on its estimate: seen 0.5 m of wander under load
        assert alt.max() - alt.min() < 1.0, (alt.min(), alt.max())
    elif end == "land":
        assert alt[-1] < alt[0] - 1.0, (alt[0], alt[-1])  # coming down
    else:  # rtl: heading home (the origin), climbing first where the return altitude is higher
        home = np.hypot(pos[:, 0], pos[:, 1])
        assert home[-1] < home[0] - 1.0 or alt[-1] > alt[0] + 1.0, (home[0], home[-1], alt[0], alt[-1])


RTL_ALT_12M = {"px4": {**PX4_HOLD, "RTL_RETURN_ALT": 12.0}, "ardupilot": {"RTL_ALT": 1200.0}}
"""A return altitude under the demo's 30 m ceiling (PX4 SIH boots with 30 m, ArduCopter 15 m)."""


def clear_way_home(kind: str, tmp_path: Path) -> Path:
    """The demo mission with a route whose way home is clear from anywhere along it: out to
    N -20 E -20 and across to N -20 E 20, south of the mast and the building."""
    text = MISSIONS[kind].read_text()
    route = "waypoints_nea_m = [[-20.0, -20.0, 10.0], [20.0, 20.0, 10.0], [20.0, -20.0, 10.0]]"
    assert route in text
    out = tmp_path / f"{kind}_clear_home.toml"
    out.write_text(text.replace(route, "waypoints_nea_m = [[-20.0, -20.0, 10.0], [-20.0, 20.0, 10.0]]"))
    return out


@pytest.mark.parametrize("kind", ["px4", "ardupilot"])
def test_rtl_with_a_clear_way_home_is_flown_home_on_real_firmware(
    kind: str, bundles: Path, tmp_path: Path
) -> None:
    """The checked return, flown: stopped by the time limit on the way out, the agent reads the
    return altitude, the return type and the rally count, finds the climb, the line home and the
    descent clear, and commands RTL; the firmware flies home without entering anything."""
    need(kind)
    mission_path = clear_way_home(kind, tmp_path)
    result, track, summary, ended = fly(
        kind, bundles / "goal_seeker", tmp_path, "--end", "rtl", max_duration_s=8.0, watch_after_s=20.0,
        params=RTL_ALT_12M[kind], mission=mission_path,
    )  # fmt: skip
    assert result.returncode in (ExitCode.OK, ExitCode.TIME_LIMIT), result.stderr[-3000:]
    assert summary.get("end_action") == "rtl" and summary.get("end_action_refused") is None, summary
    rtl = PX4_AUTO_RTL if kind == "px4" else ARDUCOPTER_RTL
    assert any(mode == rtl for t, mode, _ in track.modes if t > ended), track.modes[-5:]
    pos = track.positions(since_s=ended)
    home = np.hypot(pos[:, 0], pos[:, 1])
    print(
        f"{kind}: RTL from {home[0]:.1f} m out, {-pos[0, 2]:.1f} m up; {home[-1]:.1f} m from home 20 s later"
    )
    assert home[-1] < 2.0, (home[0], home[-1])
    # the whole flight against the fence, the zones and the ceiling (RTL lands through the floor)
    verdict = judge(load_mission(mission_path), track, airborne_from_s=np.inf, airborne_until_s=np.inf)
    assert verdict.fence_m >= 0 and verdict.keepout_m >= 0 and verdict.ceiling_m >= 0, verdict


@pytest.mark.parametrize(
    ("kind", "params", "expect"),
    [
        ("px4", {"RTL_TYPE": 1.0}, "RTL_TYPE is 1: the return flies a mission landing"),
        ("ardupilot", {"RALLY_TOTAL": 1.0}, "the autopilot has 1 rally point:"),
    ],
)
def test_rtl_that_may_not_go_straight_home_is_refused_on_real_firmware(
    kind: str, params: dict[str, float], expect: str, bundles: Path, tmp_path: Path
) -> None:
    """The same clear way home, but the firmware would not fly it: PX4 RTL_TYPE 1 heads for a
    mission landing; ArduCopter with a rally point (RALLY_TOTAL, which its rally list counts) flies
    to the nearest. Read from the firmware before arming, and refused with the fix named."""
    need(kind)
    result, track, _, _ = fly(
        kind, bundles / "goal_seeker", tmp_path, "--end", "rtl", max_duration_s=8.0, watch_after_s=1.0,
        params={**RTL_ALT_12M[kind], **params}, mission=clear_way_home(kind, tmp_path),
    )  # fmt: skip
    assert result.returncode == ExitCode.ERROR, (result.returncode, result.stderr[-3000:])
    assert "refusing the end action" in result.stderr and expect in result.stderr, result.stderr[-3000:]
    assert not any(armed for _, _, armed in track.modes), "armed although refused"


def test_no_firmware_process_namespace_or_port_is_left_behind(tmp_path: Path) -> None:
    kinds = [k for k in ("px4", "ardupilot") if unavailable_reason(k) is None]
    if not kinds:
        pytest.skip(f"no real firmware available here: {unavailable_reason('px4')}")
    for kind in kinds:
        with FirmwareSitl(kind, n=2, workdir=tmp_path / kind) as fw:
            pids = [v.proc.pid for v in fw.vehicles]
            ns_path = fw.ns.path  # type: ignore[union-attr]
            assert Path(ns_path).exists()
            assert all(Path(f"/proc/{pid}").exists() for pid in pids)
        assert not Path(ns_path).exists(), "the namespace outlived the launcher"
        assert not any(Path(f"/proc/{pid}").exists() for pid in pids), (
            "a firmware process outlived the launcher"
        )
    # Nothing anywhere still runs from this test's folders (other runs on the machine may fly their own).
    mine = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(tmp_path).encode() in cmdline.read_bytes():
                mine.append(cmdline.parent.name)
        except OSError:
            continue
    assert mine == [], f"processes left running from {tmp_path}: {mine}"
    # The firmware bound its ports inside the namespace only: on the host they were never taken.
    for port in (14540, 14550, 18570):
        assert free_port_gone(port), port


@pytest.mark.parametrize("kind", ["px4", "ardupilot"])
def test_agent_killed_in_flight_the_firmware_stops_outside(kind: str, bundles: Path, tmp_path: Path) -> None:
    """The short version of ``python -m experiments.firmware_kill`` (docs/safety.md has the 40-50-kill runs):
    SIGKILL the agent mid-flight, twice (the adversary, then the goal seeker taking the vehicle over
    where it stopped), and judge the stop from the firmware's telemetry. PX4 is configured as the
    silence model requires without RC: COM_OBL_RC_ACT = 5, Hold (its default, Position mode, cannot
    run without sticks and drifts: 1 breach in 47 kills; the agent refuses it)."""
    need(kind)
    from experiments.firmware_kill import campaign

    s = campaign(
        kind, 2, bundles, tmp_path / "kills.json", seed=3, watch_s=8.0,
        boot_speedup=10.0 if kind == "ardupilot" else None,
        params=PX4_HOLD if kind == "px4" else None,
    )  # fmt: skip
    print(f"{kind}: {s['breaches']} breaches in {s['kills']} kills; closest {s['closest_m']}")
    assert s["kills"] >= 1, s["trials"]  # a trial whose agent never flew is reported, not counted
    assert s["breaches"] == 0, s["trials"]


def test_px4_with_its_default_offboard_loss_action_is_refused_before_arming(
    demo_bundle: Path, tmp_path: Path
) -> None:
    """PX4 SIH as it boots: COM_OBL_RC_ACT 0 (Position) with COM_RC_IN_MODE 1 (no RC). Killed, the
    agent would leave it in a descent that drifts with its velocity estimate (0.26 m into a keep-out
    in 1 of 47 kills): the agent refuses before it commands anything, naming the fix."""
    need("px4")
    result, track, _, _ = fly("px4", demo_bundle, tmp_path, max_duration_s=30.0, watch_after_s=1.0, params={})
    assert result.returncode == 1, result.stderr[-2000:]
    assert "refusing to take control" in result.stderr and "COM_OBL_RC_ACT 0" in result.stderr, result.stderr
    assert "COM_RC_IN_MODE 1" in result.stderr and "set COM_OBL_RC_ACT to 5 (Hold)" in result.stderr
    assert "Traceback" not in result.stderr
    assert track.modes, "the observer heard no HEARTBEAT"
    assert not any(armed for _, _, armed in track.modes), "the vehicle was armed"
    assert not (tmp_path / "flight.eal").exists()
