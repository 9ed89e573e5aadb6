"""Scenario files: clear errors, a stable and sensitive hash, per-episode seeding."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

from calib.scenario import load_scenario, parse_scenario, sample_episodes, scenario_hash, scenario_mission
from edge_agent.errors import ConfigError


def _doc(path: Path) -> dict:
    return tomllib.loads(path.read_text())


def _parse(doc: dict, base: Path) -> object:
    return parse_scenario(doc, path="s.toml", base_dir=base)


def test_demo_scenario_parses_and_samples_inside_the_fence() -> None:
    spec = load_scenario(Path(__file__).parents[2] / "examples" / "scenarios" / "demo.toml")
    mission = scenario_mission(spec)
    p = sample_episodes(spec, mission, np.arange(200))
    assert spec.vehicle.mass_scale.lo == 0.85 and spec.vehicle.mass_scale.hi == 1.15
    assert np.all((p.mass_scale >= 0.85) & (p.mass_scale <= 1.15))
    assert np.all(np.hypot(p.wind_ned_m_s[:, 0], p.wind_ned_m_s[:, 1]) <= 6.0 + 1e-12)
    fence, _ = mission.geometry.fence_distance(p.start_pos_ned_m)
    assert fence.min() >= spec.start.clearance_m
    assert mission.geometry.keepout_distance(p.start_pos_ned_m)[0].min() >= spec.start.clearance_m
    assert (p.motor_fault_onset_s > 0).mean() == pytest.approx(0.05, abs=0.05)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d.update(wnd={}),
            "s.toml: unknown section(s) 'wnd'; the sections are scenario, wind, vehicle, "
            "sensors, start (a typo?)",
        ),
        (
            lambda d: d["wind"].update(speed_m_s=[5.0, 1.0]),
            "[wind] speed_m_s = [5.0, 1.0] has lo > hi; write [1.0, 5.0]",
        ),
        (
            lambda d: d["wind"].update(speed_m_s="fast"),
            "[wind] speed_m_s must be [lo, hi] (two finite numbers) or one number, got 'fast'",
        ),
        (lambda d: d["vehicle"].update(mas_scale=1.0), "[vehicle] has unknown key(s) 'mas_scale'"),
        (lambda d: d["scenario"].update(seed=-1), "[scenario] seed must be a non-negative integer, got -1"),
        (lambda d: d["scenario"].pop("mission"), '[scenario] needs mission = "path/to/mission.toml"'),
        (lambda d: d["start"].pop("altitude_m"), "[start] needs altitude_m ([lo, hi] or one number)"),
        (lambda d: d["scenario"].update(physics_dt_s=0.05), "physics_dt_s = 0.05 must be at most 0.02 s"),
    ],
)
def test_bad_scenarios_are_refused_with_the_fix(scenario_path: Path, edit: object, message: str) -> None:
    doc = _doc(scenario_path)
    edit(doc)  # type: ignore[operator]
    with pytest.raises(ConfigError, match=re.escape(message)):
        _parse(doc, scenario_path.parent)


def test_unreachable_start_clearance_is_named(scenario_path: Path) -> None:
    doc = _doc(scenario_path)
    doc["start"]["clearance_m"] = 40.0
    spec = _parse(doc, scenario_path.parent)
    with pytest.raises(ConfigError, match=re.escape("lower [start] clearance_m or fix the altitude band")):
        sample_episodes(spec, scenario_mission(spec), [0])  # type: ignore[arg-type]


def test_hash_is_stable_under_formatting_and_sensitive_to_values(scenario_path: Path, tmp_path: Path) -> None:
    spec = load_scenario(scenario_path)
    h = scenario_hash(spec)
    assert h == scenario_hash(load_scenario(scenario_path))
    # Comments and key order do not matter...
    text = scenario_path.read_text()
    (scenario_path.parent / "b.toml").write_text("# a comment\n" + text.replace("duration_s", "  duration_s"))
    assert scenario_hash(load_scenario(scenario_path.parent / "b.toml")) == h
    # ...any value does, in the scenario or in its mission.
    (scenario_path.parent / "c.toml").write_text(text.replace("[0.85, 1.15]", "[0.85, 1.16]"))
    assert scenario_hash(load_scenario(scenario_path.parent / "c.toml")) != h
    (scenario_path.parent / "d.toml").write_text(text.replace("seed = 7", "seed = 8"))
    assert scenario_hash(load_scenario(scenario_path.parent / "d.toml")) != h
    mission = scenario_path.parent / "mission.toml"
    mission.write_text(mission.read_text().replace("radius_m = 2.5", "radius_m = 2.6"))
    assert scenario_hash(load_scenario(scenario_path)) != h
    assert len(h) == 64


def test_episode_draws_depend_on_seed_and_index_only(scenario_path: Path) -> None:
    spec = load_scenario(scenario_path)
    mission = scenario_mission(spec)
    a = sample_episodes(spec, mission, np.arange(10))
    b = sample_episodes(spec, mission, [7, 3])
    np.testing.assert_array_equal(b.start_pos_ned_m, a.start_pos_ned_m[[7, 3]])
    np.testing.assert_array_equal(b.motor_efficiency, a.motor_efficiency[[7, 3]])
    assert len({tuple(r) for r in a.start_pos_ned_m}) == 10


def test_start_point_is_each_episodes_first_clear_candidate() -> None:
    """The batched search (a few candidates for everyone, then the rest for who still has none)
    picks what checking each episode's candidates on its own would, including episodes whose
    first clear candidate comes late; a clearance no point meets is refused by name."""
    import dataclasses

    from calib.scenario import _clear, _first_clear, _start_draws

    spec = load_scenario(Path(__file__).parents[2] / "examples" / "scenarios" / "demo.toml")
    mission = scenario_mission(spec)
    tight = dataclasses.replace(spec.start, clearance_m=spec.start.clearance_m + 10.0)
    lo, hi = mission.geometry.box_min_ne, mission.geometry.box_max_ne
    cands = np.stack([_start_draws(tight, np.random.default_rng(i), lo, hi) for i in range(200)])
    first = _first_clear(mission, tight, cands)
    one_by_one = []  # what the episode-by-episode search did: all of one episode's candidates
    for c in cands:
        hits = np.flatnonzero(_clear(mission, tight, c))
        one_by_one.append(int(hits[0]) if hits.size else -1)
    np.testing.assert_array_equal(first, one_by_one)
    assert (first >= 8).sum() >= 20  # the second pass was exercised
    impossible = dataclasses.replace(spec, start=dataclasses.replace(spec.start, clearance_m=1e4))
    with pytest.raises(ConfigError, match=r"no start point clear .* \(episode 0\)"):
        sample_episodes(impossible, mission, np.arange(3))
