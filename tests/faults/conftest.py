"""Fixtures of the fault campaign: the scripted goal-seeker bundle, exported once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def goal_seeker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A verified bundle of the scripted goal-seeking policy (examples/scripted_policies.py)."""
    from examples.scripted_policies import export_goal_seeker

    out = tmp_path_factory.mktemp("bundles") / "goal_seeker"
    export_goal_seeker(out)
    return out
