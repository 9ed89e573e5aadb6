"""Fixtures of the calib tests: bundles exported once per session, a small scenario."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from calib_fixtures import adversary, export, p_controller, write_scenario


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Pristine exported bundles: 'good' (P-controller) and 'bad' (steers at the fence)."""
    root = tmp_path_factory.mktemp("bundles")
    return {"good": export(p_controller(), root / "good"), "bad": export(adversary(), root / "bad")}


@pytest.fixture
def good_bundle(bundles: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the good bundle (tests write sections into it)."""
    return Path(shutil.copytree(bundles["good"], tmp_path / "good"))


@pytest.fixture
def scenario_path(tmp_path: Path) -> Path:
    """A 4 s scenario over a 30 m box with a keep-out in the middle."""
    return write_scenario(tmp_path / "scn", duration_s=4.0)
