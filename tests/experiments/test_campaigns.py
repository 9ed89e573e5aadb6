"""Issue 5 campaigns: the adversary under the shield never breaches while unshielded it does; the
nominal policy in calm air, shielded vs unshielded; the calm scenario is the demo one without wind."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from calib.scenario import load_scenario
from experiments.campaigns import CampaignRow, compare, main, markdown_table

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "examples" / "scenarios"


def _short(src: Path, folder: Path, duration_s: float) -> Path:
    """A copy of a scenario with a shorter time limit (mission path made absolute)."""
    text = src.read_text(encoding="utf-8")
    text = text.replace(
        '"../missions/demo.toml"', f'"{(REPO / "examples" / "missions" / "demo.toml").as_posix()}"'
    )
    text = text.replace("duration_s = 45.0", f"duration_s = {duration_s}")
    out = folder / src.name
    out.write_text(text, encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The scripted goal seeker and adversary bundles (examples/scripted_policies.py)."""
    from examples.scripted_policies import export_adversary, export_goal_seeker

    root = tmp_path_factory.mktemp("scripted")
    return {
        "goal_seeker": export_goal_seeker(root / "goal_seeker").path,
        "adversary": export_adversary(root / "adversary").path,
    }


def test_calm_scenario_is_the_demo_scenario_without_wind() -> None:
    calm, demo = load_scenario(SCENARIOS / "calm.toml"), load_scenario(SCENARIOS / "demo.toml")
    assert (calm.wind.speed_m_s.hi, calm.wind.gust_std_m_s.hi) == (0.0, 0.0)
    assert demo.wind.speed_m_s.hi > 0.0
    assert dataclasses.replace(calm, name=demo.name, wind=demo.wind) == demo


def _row(shield: bool, k: int) -> CampaignRow:
    nan = float("nan")
    return CampaignRow(
        "b", "s", shield, 10, k, 0.05, 0.3, k / 10, {"fence": k} if k else {}, 0.5, 100, 0.0,
        0.25 if shield else nan, 0.01 if shield else nan, 0.1 if shield else nan, [], 1.0,
    )  # fmt: skip


def test_table_shows_bypassed_layers_of_the_unshielded_side() -> None:
    table = markdown_table([_row(True, 0), _row(False, 7)])
    on, off = table.splitlines()[2:]
    assert "| on | 10 | 50.0% | 0.0000 | 0.2500 | 0.0100 | 10.0% | 0 (—) |" in on
    assert (
        "| OFF | 10 | 50.0% | 0.0000 | — (bypassed) | — (bypassed) | — (bypassed) | 7 (fence 7) | 0.7000 |"
        in off
    )


@pytest.mark.slow
def test_adversary_breaches_without_the_shield_and_never_with_it(
    scripted: dict[str, Path], tmp_path: Path
) -> None:
    scn = _short(SCENARIOS / "demo.toml", tmp_path, 12.0)  # gusty demo scenario, 12 s episodes
    on, off = compare(scripted["adversary"], scn, 40, beta=0.05, batch=40)
    assert on.k == 0, on.failures_by_kind
    assert on.epsilon == pytest.approx(1.0 - 0.05 ** (1.0 / 40))
    assert off.k >= 30, off.failures_by_kind
    assert on.barrier_per_tick > 0.0


@pytest.mark.slow
def test_goal_seeker_in_calm_air_is_safe_only_with_the_shield(
    scripted: dict[str, Path], tmp_path: Path
) -> None:
    scn = _short(SCENARIOS / "calm.toml", tmp_path, 20.0)  # the first two legs pass the mast
    on, off = compare(scripted["goal_seeker"], scn, 16, beta=0.05, batch=16)
    assert on.k == 0, on.failures_by_kind
    # The demo route clips the mast: flown straight, some episodes hit it (keep-out breach).
    assert off.k > 0
    assert set(off.failures_by_kind) == {"keepout"}


def test_help_runs() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
