"""Mission file: parsing, every validation message, and the batched geometry."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import MissionError
from edge_agent.mission import KeepoutBox, KeepoutCylinder, load_mission, parse_mission

DEMO = Path(__file__).resolve().parents[2] / "examples" / "missions" / "demo.toml"

BASE: dict[str, Any] = {
    "geofence": {"kind": "box", "north_min_m": -30, "north_max_m": 30, "east_min_m": -30, "east_max_m": 30,
                 "floor_alt_m": 2.0, "ceiling_alt_m": 30.0},
    "keepout": [{"kind": "cylinder", "center_ne_m": [0.0, 0.0], "radius_m": 5.0}],
    "route": {"waypoints_nea_m": [[-20.0, -20.0, 10.0], [20.0, 20.0, 10.0]]},
    "limits": {"horizontal_speed_m_s": 5.0, "up_speed_m_s": 2.0, "down_speed_m_s": 1.5},
    "autopilot": {"flavour": "px4"},
}  # fmt: skip


def with_(path: str, value: Any) -> dict[str, Any]:
    """BASE with one key set (value None deletes it); path like 'geofence.kind' or 'keepout.0.radius_m'."""
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node: Any = data
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    if value is None:
        del node[last]
    else:
        node[last] = value
    return data


def test_demo_mission_loads() -> None:
    m = load_mission(DEMO)
    assert m.geofence.kind == "box" and m.geofence.floor_alt_m == 2.0 and m.geofence.ceiling_alt_m == 30.0
    assert m.waypoints_ned_m[0] == (-20.0, -20.0, -10.0)  # altitude up → NED down
    assert isinstance(m.keepouts[0], KeepoutCylinder) and isinstance(m.keepouts[1], KeepoutBox)
    assert m.fallback.action == "land" and m.autopilot.flavour == "px4" and m.autopilot.fence is not None
    assert m.origin is not None and m.origin.lat_deg == pytest.approx(47.397742)
    assert m.geometry.floor_down_m == -2.0 and m.geometry.ceiling_down_m == -30.0


def test_defaults_and_a_single_goal() -> None:
    m = parse_mission(with_("route", {"goal_nea_m": [10.0, 10.0, 12.0]}))
    assert m.waypoints_ned_m == ((10.0, 10.0, -12.0),)
    assert m.fallback.action == "land" and m.margins.fence_m == 1.0 and m.acceptance_radius_m == 1.0
    assert m.autopilot.silence_hold_s == 1.0 and m.autopilot.brake_decel_m_s2 == 2.0
    ap = parse_mission(with_("autopilot", {"flavour": "ardupilot"})).autopilot
    assert (ap.silence_hold_s, ap.brake_decel_m_s2) == (3.0, 1.0)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("geofence.kindd", "box", "[geofence] has unknown key(s) 'kindd'"),
        ("limits.horizontal_speed", 5.0, "[limits] has unknown key(s) 'horizontal_speed'"),
        ("keepout.0.radius", 5.0, "[keepout.0] has unknown key(s) 'radius'"),
        ("geofences", {}, "unknown section(s) 'geofences'"),
        ("limits", None, "the mission has no [limits] section; add it"),
        ("limits.up_speed_m_s", None, "[limits] is missing 'up_speed_m_s'; add it"),
        ("limits.up_speed_m_s", "fast", "[limits] up_speed_m_s must be a number, got 'fast'"),
        ("limits.up_speed_m_s", True, "[limits] up_speed_m_s must be a number, got True"),
        ("limits.up_speed_m_s", -1.0, "[limits] up_speed_m_s must be > 0, got -1.0"),
        ("geofence.kind", "circle", "[geofence] kind must be one of box, polygon; got 'circle'"),
        ("geofence.floor_alt_m", 30.0, "[geofence] floor_alt_m=30.0 must be below ceiling_alt_m=30.0"),
        ("geofence.north_min_m", 40, "[geofence] box is empty: north_min_m=40.0 must be < north_max_m=30.0"),
        ("keepout.0.center_ne_m", [1.0], "[keepout.0] center_ne_m must be a list of 2 numbers, got [1.0]"),
        ("keepout", {"kind": "box"}, "keepout must be an array of tables: write each zone as [[keepout]]"),
        (
            "route.goal_nea_m",
            [1.0, 1.0, 5.0],
            "[route] needs exactly one of waypoints_nea_m (a list) or goal_nea_m",
        ),
        (
            "route.waypoints_nea_m",
            [[40.0, 0.0, 10.0]],
            "[route] waypoint 0 (north 40.0, east 0.0) is outside the geofence",
        ),
        ("route.waypoints_nea_m", [[29.5, 0.0, 10.0]], "is outside the geofence or within its margin (1.0 m"),
        (
            "route.waypoints_nea_m",
            [[20.0, 0.0, 1.0]],
            "[route] waypoint 0 altitude 1.0 m is outside the band [2.0, 30.0] m",
        ),
        (
            "route.waypoints_nea_m",
            [[0.0, 5.5, 10.0]],
            "[route] waypoint 0 is inside keep-out zone 0 or within its margin (1.0 m",
        ),
        ("fallback.action", "circle", "[fallback] action must be one of hold, land, return; got 'circle'"),
        (
            "autopilot.flavour",
            "betaflight",
            "[autopilot] flavour must be one of px4, ardupilot; got 'betaflight'",
        ),
    ],
)
def test_validation_names_the_problem_and_the_fix(path: str, value: Any, message: str) -> None:
    with pytest.raises(MissionError, match=re.escape(message)):
        parse_mission(with_(path, value))


@pytest.mark.parametrize(
    ("vertices", "message"),
    [
        ([[0, 0], [10, 0]], "polygon has 2 distinct vertices; a fence needs at least 3"),
        ([[0, 0], [10, 0], [0, 0]], "polygon has 2 distinct vertices"),
        (
            [[0, 0], [10, 0], [20, 0]],
            "polygon encloses no area (all vertices on a line), so the fence is not closed",
        ),
        (
            [[0, 0], [10, 10], [10, 0], [0, 10]],
            "polygon is self-intersecting: edge 0 ((0.0, 0.0)→(10.0, 10.0)) crosses edge 2",
        ),
        ([[0, 0], [10, 0], [10, 0], [0, 10]], "polygon repeats vertex 1 ((10.0, 0.0))"),
    ],
)
def test_polygon_fence_errors(vertices: list[list[float]], message: str) -> None:
    fence = {"kind": "polygon", "vertices_ne_m": vertices, "floor_alt_m": 2, "ceiling_alt_m": 30}
    with pytest.raises(MissionError, match=re.escape(message)):
        parse_mission(with_("geofence", fence))


def test_companion_fence_must_sit_inside_the_autopilots_by_the_stopping_distance() -> None:
    # 5 m/s kept 1 s (COM_OF_LOSS_T) + 1.1 s (PX4's failsafe delay, measured), then 2 m/s² →
    # 16.75 m needed; 15 m given.
    ap = {"kind": "box", "north_min_m": -45, "north_max_m": 45, "east_min_m": -50, "east_max_m": 50}
    with pytest.raises(MissionError, match=re.escape("closest approach 15.00 m, need >= 16.75 m")):
        parse_mission(with_("autopilot.fence", ap))
    ap["north_min_m"], ap["north_max_m"] = -50, 50
    assert parse_mission(with_("autopilot.fence", ap)).autopilot.fence is not None
    with pytest.raises(
        MissionError,
        match=re.escape("[geofence] ceiling_alt_m=30.0 is within the stopping distance (5.20 m)"),
    ):
        parse_mission(with_("autopilot.fence", {**ap, "ceiling_alt_m": 32.0}))


def test_files_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(MissionError, match=re.escape("cannot read mission file")):
        load_mission(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[geofence\n")
    with pytest.raises(MissionError, match=re.escape("is not valid TOML")):
        load_mission(bad)


L_SHAPE = [[-30, -30], [30, -30], [30, 0], [0, 0], [0, 30], [-30, 30]]


def test_polygon_geometry_non_convex() -> None:
    fence = {
        "kind": "polygon",
        "vertices_ne_m": list(reversed(L_SHAPE)),
        "floor_alt_m": 2,
        "ceiling_alt_m": 30,
    }
    m = parse_mission(
        with_("geofence", fence) | {"keepout": [], "route": {"goal_nea_m": [-20.0, -20.0, 10.0]}}
    )
    g = m.geometry
    pos = np.array([[-20.0, -20.0, -10], [10.0, 5.0, -10], [20.0, -5.0, -10], [-5.0, 20.0, -10]])
    dist, normal = g.fence_distance(pos)
    np.testing.assert_allclose(dist, [10.0, -5.0, 5.0, 5.0])
    np.testing.assert_allclose(normal[2], [0.0, -1.0])  # inward from the east edge at e = 0
    np.testing.assert_allclose(normal[1], [0.0, -1.0])  # outside (in the notch): back across the edge


@settings(max_examples=40, deadline=None)
@given(n=st.floats(-40, 40), e=st.floats(-40, 40))
def test_box_fence_distance_is_the_separable_closed_form(n: float, e: float) -> None:
    g = parse_mission(BASE).geometry
    dist, _ = g.fence_distance(np.array([[n, e, -10.0]]))
    inside = min(30 - n, n + 30, 30 - e, e + 30)
    if inside >= 0:
        assert dist[0] == pytest.approx(inside, abs=1e-9)
    else:
        out = np.hypot(max(abs(n) - 30, 0), max(abs(e) - 30, 0))
        assert dist[0] == pytest.approx(-out, abs=1e-9)


def test_keepout_distances_and_features() -> None:
    data = with_("keepout.0.alt_max_m", 20.0)
    data["keepout"].append(
        {"kind": "box", "north_min_m": 10, "north_max_m": 20, "east_min_m": -20, "east_max_m": -10}
    )
    m = parse_mission(data)
    g = m.geometry
    pos = np.array([[0.0, 10.0, -10.0], [0.0, 0.0, -25.0], [0.0, 2.0, -10.0], [15.0, -15.0, -10.0]])
    dist, closest = g.keepout_distance(pos)
    np.testing.assert_allclose(dist[:, 0], [5.0, 5.0, -3.0, np.hypot(15, 15) - 5])  # above the mast: 5 m
    np.testing.assert_allclose(closest[0, 0], [0.0, 5.0, -10.0])
    np.testing.assert_allclose(dist[3, 1], -5.0)  # in the middle of the box footprint
    feats = m.geometry_features(pos)
    assert set(feats) == {
        "fence_dist_m",
        "alt_floor_dist_m",
        "alt_ceiling_dist_m",
        "keepout_rel_ned_m",
        "keepout_dist_m",
    }
    np.testing.assert_allclose(feats["alt_floor_dist_m"], [8.0, 23.0, 8.0, 8.0])
    np.testing.assert_allclose(feats["alt_ceiling_dist_m"], [20.0, 5.0, 20.0, 20.0])
    np.testing.assert_allclose(feats["keepout_rel_ned_m"][0], [0.0, -5.0, 0.0])
    np.testing.assert_allclose(feats["fence_dist_m"], [20.0, 30.0, 28.0, 15.0])
    none = parse_mission(with_("keepout", [])).geometry_features(pos)
    assert (none["keepout_dist_m"] == 1e3).all() and (none["keepout_rel_ned_m"] == 0).all()


def test_vehicle_section_sets_the_shields_model_of_the_airframe() -> None:
    from edge_agent.agent import build_agent

    data = tomllib.loads(DEMO.read_text())
    data["vehicle"] = {"velocity_tau_xy_s": 0.8, "latency_s": 0.2}
    mission = parse_mission(data)
    assert mission.vehicle.velocity_tau_xy_s == 0.8 and mission.vehicle.accel_m_s2 is None

    class _Manifest:  # the few manifest fields build_agent reads
        control_rate_hz = 50.0
        calibration = None
        feature_names = ("goal_rel_ned_m",)
        clip_lo = clip_hi = np.zeros(3)

        class action:
            kind = "velocity_ned_yaw_rate"
            size = 4

    core = build_agent(policy=None, manifest=_Manifest, mission=mission)  # type: ignore[arg-type]
    assert core.nominal.tau_xy_s == 0.8 and core.nominal.tau_z_s == 0.4
    assert core.shield.config.latency_s == 0.2
    with pytest.raises(MissionError, match=re.escape("velocity_tau_xy_s")):
        parse_mission({**data, "vehicle": {"velocity_tau_xy_s": -1.0}})
    with pytest.raises(MissionError, match=re.escape("tau_typo")):
        parse_mission({**data, "vehicle": {"tau_typo": 1.0}})
