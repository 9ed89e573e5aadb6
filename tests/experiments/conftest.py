"""Fixtures of the experiments' tests: the calib tests' bundles, exported once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.calib.calib_fixtures import adversary, export, p_controller


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Pristine exported bundles: 'good' (P-controller) and 'bad' (steers at the fence)."""
    root = tmp_path_factory.mktemp("bundles")
    return {"good": export(p_controller(), root / "good"), "bad": export(adversary(), root / "bad")}
