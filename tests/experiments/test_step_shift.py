"""Issue 5: after a wind step in the SITL the onboard tracker's rolling coverage returns to 1−α ± 0.03
and stays there, while a fixed split-conformal margin from the calm-air scores does not."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from edge_agent.errors import ConfigError
from experiments.step_shift import (
    StepShiftConfig,
    analyse,
    fly,
    main,
    recovery_ticks,
    rolling_coverage,
)


def test_rolling_coverage_pools_the_batch_over_a_trailing_window() -> None:
    miss = np.zeros((6, 2), dtype=bool)
    miss[2, 0] = True
    scored = np.ones((6, 2), dtype=bool)
    scored[0] = False
    cov = rolling_coverage(miss, scored, window=2)
    assert np.isnan(cov[0])
    np.testing.assert_allclose(cov[1:], [1.0, 0.75, 0.75, 1.0, 1.0])


def test_recovery_counts_from_the_last_exit_and_never_when_outside_at_the_end() -> None:
    cov = np.array([0.9, 0.9, 0.5, 0.91, 0.8, 0.89, 0.9, 0.92])
    assert recovery_ticks(cov, 2, 0.9, 0.03) == 3  # leaves for the last time at index 4
    assert recovery_ticks(cov, 5, 0.9, 0.03) == 0
    assert recovery_ticks(np.array([0.9, 0.5]), 0, 0.9, 0.03) is None


def test_bad_wind_direction_names_the_choices(bundles: dict[str, Path]) -> None:
    cfg = StepShiftConfig(n_vehicles=2, wind_direction="sideways")
    with pytest.raises(
        ConfigError, match=re.escape("wind_direction must be 'along' or 'across', got 'sideways'")
    ):
        fly(bundles["good"], cfg, 0.2)


def test_shift_outside_the_run_is_refused(bundles: dict[str, Path]) -> None:
    cfg = StepShiftConfig(n_vehicles=2, duration_s=10.0, shift_s=12.0)
    with pytest.raises(ConfigError, match=re.escape("shift_s = 12.0 must lie inside (0, duration_s = 10.0)")):
        fly(bundles["good"], cfg, 0.2)


@pytest.mark.slow
def test_tracker_recovers_after_the_wind_step_and_the_fixed_margin_does_not(bundles: dict[str, Path]) -> None:
    cfg = StepShiftConfig(
        n_vehicles=24, duration_s=48.0, shift_s=16.0, burn_in_s=7.0, warm_quantile_m=0.15, seed=3
    )
    trace = fly(bundles["good"], cfg, 0.15)  # the P-controller goal seeker
    r = analyse(trace, cfg, 0.15)
    # Calm air: both cover about 1 − α (the fixed q̂ is fitted on exactly these scores).
    assert abs(r.coverage_pre_fixed - 0.9) < 0.01
    assert abs(r.coverage_pre_tracker - 0.9) < 0.05
    # After the step: the tracker is back within 0.9 ± 0.03 for good (to the end of the run) ...
    assert r.recovery_ticks_tracker is not None
    assert r.recovery_ticks_tracker <= 28 * 50
    assert abs(r.coverage_end_tracker - 0.9) <= 0.03
    # ... and widened its margin, while the fixed margin never returns.
    assert r.margin_end_m > r.margin_pre_m
    assert r.recovery_ticks_fixed is None
    assert r.coverage_end_fixed < 0.75


def test_help_runs() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
