"""The onboard conformal calibrator: score, published coverage bounds, alarm, batching."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
import pytest

from edge_agent.calibrator import Calibrator, CalibratorConfig, CalibratorTick, score_definition
from edge_agent.errors import ConfigError

INF = math.inf
ScoreRule = Callable[[int, float, np.random.Generator], float]


def _drive(cal: Calibrator, rule: ScoreRule, steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Feed one vehicle scores chosen by rule(t, margin used for this score, rng); return (miss, margin).

    The prediction is always the origin, so the score is the distance of the position fed H
    ticks later: pos = (s, 0, 0) gives score s exactly.
    """
    h = cal.config.horizon_ticks
    rng = np.random.default_rng(seed)
    margins: list[float] = []
    misses: list[bool] = []
    origin = np.zeros((1, 3))
    ok = np.ones(1, dtype=bool)
    for t in range(steps + h):
        used = margins[t - h] if t >= h else math.nan
        s = rule(t, used, rng) if t >= h else 0.0
        tick = cal.step(np.array([[s, 0.0, 0.0]]), origin, ok)
        margins.append(float(tick.margin_m[0]))
        if t >= h:
            misses.append(bool(tick.miss[0]))
            assert tick.score_m[0] == pytest.approx(s, abs=1e-12)
    return np.array(misses), np.array(margins)


B_MAX = 2.0


def adversarial(t: int, used: float, rng: np.random.Generator) -> float:
    """Miss whenever a miss is possible with scores in [0, B]."""
    return B_MAX if used < B_MAX else 0.0


def alternating(t: int, used: float, rng: np.random.Generator) -> float:
    return B_MAX if t % 2 else 0.0


def step_shift(t: int, used: float, rng: np.random.Generator) -> float:
    return float(rng.uniform(0.0, 0.3) if t < 3000 else rng.uniform(1.2, B_MAX))


def drifting(t: int, used: float, rng: np.random.Generator) -> float:
    centre = 0.9 + 0.8 * math.sin(2 * math.pi * t / 4000)
    return float(np.clip(centre + 0.1 * rng.standard_normal(), 0.0, B_MAX))


STREAMS = [adversarial, alternating, step_shift, drifting]
T_CHECKS = (100, 1000, 4000, 8000)


def _excess(misses: np.ndarray, alpha: float, t: int) -> float:
    return float(np.mean(misses[:t]) - alpha)


# ---------------------------------------------------------------- published bounds


@pytest.mark.parametrize("stream", STREAMS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("horizon", [1, 5])
def test_quantile_tracker_stays_within_published_bound(stream: ScoreRule, horizon: int) -> None:
    # Plain tracker, unclipped: |mean(err) − α| ≤ (B + H·η)/(η·T); H = 1 is the paper's (B + η)/(ηT).
    alpha, eta = 0.1, 0.05
    cfg = CalibratorConfig(horizon_ticks=horizon, lr=eta, alpha=alpha, ki_m=0.0, q_min_m=-INF, q_max_m=INF)
    misses, _ = _drive(Calibrator(cfg, warm_quantile_m=0.5), stream, max(T_CHECKS))
    for t in T_CHECKS:
        bound = (B_MAX + horizon * eta) / (eta * t)
        assert abs(_excess(misses, alpha, t)) <= bound, (t, _excess(misses, alpha, t), bound)
    # not vacuous: the long run is close to α
    assert abs(_excess(misses, alpha, max(T_CHECKS))) < 0.01


@pytest.mark.parametrize("stream", STREAMS, ids=lambda f: f.__name__)
def test_quantile_tracker_default_clip_keeps_the_safe_side_of_the_bound(stream: ScoreRule) -> None:
    # With q_min_m = 0 only over-coverage can exceed the bound; miscoverage never does.
    alpha, eta = 0.1, 0.05
    cfg = CalibratorConfig(horizon_ticks=3, lr=eta, alpha=alpha, ki_m=0.0)
    misses, margins = _drive(Calibrator(cfg, warm_quantile_m=0.5), stream, max(T_CHECKS))
    assert margins.min() >= 0.0
    for t in T_CHECKS:
        assert _excess(misses, alpha, t) <= (B_MAX + 3 * eta) / (eta * t)


def test_adversary_hits_the_quantile_tracker_bound_tightly() -> None:
    # The bound is not loose for the adversary: after T ticks the excess is within 2x of it.
    alpha, eta, t = 0.1, 0.05, 1000
    cfg = CalibratorConfig(horizon_ticks=1, lr=eta, alpha=alpha, ki_m=0.0, q_min_m=-INF, q_max_m=INF)
    misses, _ = _drive(Calibrator(cfg, warm_quantile_m=0.0), adversarial, t)
    bound = (B_MAX + eta) / (eta * t)
    assert bound / 2 < _excess(misses, alpha, t) <= bound


@pytest.mark.parametrize("stream", STREAMS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("horizon", [1, 4])
def test_aci_stays_within_published_bound(stream: ScoreRule, horizon: int) -> None:
    # |mean(err) − α| ≤ (max(α₁, 1−α₁) + H·γ)/(γ·T); H = 1 is Gibbs & Candès (2021).
    alpha, gamma = 0.1, 0.01
    cfg = CalibratorConfig(
        horizon_ticks=horizon,
        lr=gamma,
        alpha=alpha,
        method="aci",
        score_window=200,
        q_min_m=-INF,
        q_max_m=INF,
    )
    misses, _ = _drive(Calibrator(cfg, warm_quantile_m=0.5), stream, max(T_CHECKS))
    for t in T_CHECKS:
        bound = (max(alpha, 1 - alpha) + horizon * gamma) / (gamma * t)
        assert abs(_excess(misses, alpha, t)) <= bound, (t, _excess(misses, alpha, t), bound)


@pytest.mark.parametrize("method", ["quantile_tracker", "aci", "dtaci"])
def test_a_miss_widens_the_margin(method: str) -> None:
    cfg = CalibratorConfig(horizon_ticks=1, lr=0.02, method=method, ki_m=0.0, score_window=50)
    cal = Calibrator(cfg, n=1, warm_quantile_m=0.5)
    rng = np.random.default_rng(1)
    origin, ok = np.zeros((1, 3)), np.ones(1, dtype=bool)
    for _ in range(200):  # fill the window with scores near 0.5 so every method has history
        cal.step(np.array([[rng.uniform(0.3, 0.7), 0.0, 0.0]]), origin, ok)
    before = cal.margin_m[0]
    tick = cal.step(np.array([[before + 5.0, 0.0, 0.0]]), origin, ok)
    assert tick.miss[0]
    assert tick.margin_m[0] > before
    if method == "quantile_tracker":
        assert tick.margin_m[0] == pytest.approx(before + 0.02 * (1 - 0.1), abs=1e-12)
    # and a covered score narrows it (tracker and ACI move the other way)
    covered = cal.step(np.array([[0.0, 0.0, 0.0]]), origin, ok)
    assert not covered.miss[0]
    if method == "quantile_tracker":
        assert covered.margin_m[0] < tick.margin_m[0]
    elif method == "aci":  # an order statistic: α_t moves, the chosen score may stay the same
        assert covered.margin_m[0] <= tick.margin_m[0]


def test_aci_miss_lowers_alpha_t() -> None:
    cfg = CalibratorConfig(horizon_ticks=1, lr=0.05, method="aci", alpha=0.2)
    cal = Calibrator(cfg, warm_quantile_m=1.0)
    origin, ok = np.zeros((1, 3)), np.ones(1, dtype=bool)
    cal.step(np.zeros((1, 3)), origin, ok)
    assert cal.step(np.array([[9.0, 0.0, 0.0]]), origin, ok).miss[0]
    assert cal.alpha_t[0] == pytest.approx(0.2 + 0.05 * (0.2 - 1.0))


def test_dtaci_long_run_coverage_on_a_shift_stream() -> None:
    b, steps, alpha = 4, 8000, 0.1
    cfg = CalibratorConfig(horizon_ticks=1, lr=0.01, method="dtaci", alpha=alpha, score_window=200)
    cal = Calibrator(cfg, n=b, warm_quantile_m=0.2)
    rng = np.random.default_rng(7)
    origin, ok = np.zeros((b, 3)), np.ones(b, dtype=bool)
    scale = np.array([0.2, 0.5, 1.0, 2.0])
    misses = np.zeros(b)
    for t in range(steps):
        level = np.where((t // 2000) % 2 == 1, 3.0, 1.0)  # level shifts every 2000 ticks
        s = rng.exponential(scale) * level
        tick = cal.step(np.stack([s, np.zeros(b), np.zeros(b)], axis=1), origin, ok)
        misses += tick.miss
    rate = misses / (steps - 1)
    assert np.all(np.abs(rate - alpha) < 0.015), rate


def test_integrator_corrects_a_persistent_bias_faster() -> None:
    # A tiny η alone lags behind a step; the integrator's S_t term pulls the margin up sooner.
    def run(ki: float) -> np.ndarray:
        cfg = CalibratorConfig(horizon_ticks=1, lr=0.002, ki_m=ki, c_sat=5.0)
        misses, _ = _drive(Calibrator(cfg, warm_quantile_m=0.1), step_shift, 6000, seed=3)
        return misses

    plain, pid = run(0.0), run(0.5)
    assert pid[3000:4000].mean() < plain[3000:4000].mean()


def test_integrator_saturates_to_the_margin_cap_and_alarms() -> None:
    cfg = CalibratorConfig(horizon_ticks=1, lr=0.01, ki_m=1.0, c_sat=0.05, q_max_m=3.0)
    cal = Calibrator(cfg, warm_quantile_m=0.1)
    origin, ok = np.zeros((1, 3)), np.ones(1, dtype=bool)
    tick: CalibratorTick | None = None
    for _ in range(30):
        tick = cal.step(np.array([[2.9, 0.0, 0.0]]), origin, ok)
    assert tick is not None
    assert tick.margin_m[0] == 3.0 and tick.saturated[0] and tick.alarm[0]


# ---------------------------------------------------------------- score definition


def test_score_compares_with_the_prediction_made_h_ticks_earlier() -> None:
    h = 3
    cal = Calibrator(CalibratorConfig(horizon_ticks=h, lr=0.01), warm_quantile_m=0.4)
    rng = np.random.default_rng(2)
    pos = rng.normal(size=(12, 1, 3))
    pred = rng.normal(size=(12, 1, 3))
    ok = np.ones(1, dtype=bool)
    for t in range(12):
        tick = cal.step(pos[t], pred[t], ok)
        if t < h:
            assert math.isnan(tick.score_m[0]) and not tick.miss[0]
            assert math.isnan(tick.miscoverage[0])
        else:
            assert tick.score_m[0] == pytest.approx(np.linalg.norm(pos[t, 0] - pred[t - h, 0]), abs=1e-12)
    assert "H=3" in score_definition(h)


def test_invalid_ticks_are_not_scored_and_do_not_update() -> None:
    cfg = CalibratorConfig(horizon_ticks=1, lr=0.05, ki_m=0.3)
    cal = Calibrator(cfg, warm_quantile_m=0.4)
    origin = np.zeros((1, 3))
    cal.step(origin, origin, np.ones(1, dtype=bool))
    far = np.array([[5.0, 0.0, 0.0]])
    invalid = cal.step(far, origin, np.zeros(1, dtype=bool))
    assert math.isnan(invalid.score_m[0]) and not invalid.miss[0]
    assert invalid.margin_m[0] == 0.4 and math.isnan(invalid.miscoverage[0])
    # the prediction stored on the invalid tick is not scored either
    after = cal.step(far, origin, np.ones(1, dtype=bool))
    assert math.isnan(after.score_m[0]) and after.margin_m[0] == 0.4
    # non-finite input is treated as invalid, never as a covered score
    nan_pos = cal.step(np.array([[math.nan, 0.0, 0.0]]), origin, np.ones(1, dtype=bool))
    assert math.isnan(nan_pos.score_m[0]) and not nan_pos.miss[0]
    assert nan_pos.margin_m[0] == 0.4
    # the NaN tick's own prediction was finite and flagged valid, so the next tick is scored
    scored = cal.step(far, origin, np.ones(1, dtype=bool))
    assert scored.score_m[0] == 5.0 and scored.miss[0] and scored.miscoverage[0] == 1.0


def test_warm_start_and_cap() -> None:
    cal = Calibrator(CalibratorConfig(horizon_ticks=2, lr=0.01, q_max_m=1.0), n=3, warm_quantile_m=0.7)
    np.testing.assert_array_equal(cal.margin_m, [0.7, 0.7, 0.7])
    capped = Calibrator(CalibratorConfig(horizon_ticks=2, lr=0.01, q_max_m=1.0), warm_quantile_m=2.5)
    tick = capped.step(np.zeros((1, 3)), np.zeros((1, 3)), np.ones(1, dtype=bool))
    assert tick.margin_m[0] == 1.0 and tick.saturated[0] and tick.alarm[0]


# ---------------------------------------------------------------- alarm


def test_alarm_fires_within_documented_ticks_after_a_step_shift_and_not_before() -> None:
    # Documented: an abrupt shift that makes every score a miss is flagged after
    # ⌈h / (1 − α − k)⌉ + 1 = ⌈60 / 0.8⌉ + 1 = 76 scored ticks with the defaults (+1: float rounding).
    cfg = CalibratorConfig(horizon_ticks=1, lr=0.002, ki_m=0.0)
    cal = Calibrator(cfg, warm_quantile_m=0.5)
    rng = np.random.default_rng(4)
    origin, ok = np.zeros((1, 3)), np.ones(1, dtype=bool)
    for _ in range(5000):
        s = 0.5 * rng.chisquare(3) ** 0.5 / 2.5
        assert not cal.step(np.array([[s, 0.0, 0.0]]), origin, ok).alarm[0]
    fired_at = None
    for k in range(200):
        if cal.step(np.array([[4.0, 0.0, 0.0]]), origin, ok).alarm[0]:
            fired_at = k + 1
            break
    assert fired_at is not None and fired_at <= math.ceil(60 / 0.8) + 1


def test_alarm_is_rare_on_stationary_correlated_scores() -> None:
    # Scores correlated over ~10 ticks (like H-step prediction errors): no alarm in 64 x 6000 ticks.
    b, steps, rho = 64, 6000, math.exp(-1 / 10)
    cal = Calibrator(CalibratorConfig(horizon_ticks=10, lr=0.01), n=b, warm_quantile_m=0.5)
    rng = np.random.default_rng(5)
    v = rng.normal(size=(b, 3)) * 0.2
    origin, ok = np.zeros((b, 3)), np.ones(b, dtype=bool)
    alarms = 0
    misses = np.zeros(b)
    for _ in range(steps):
        v = rho * v + math.sqrt(1 - rho**2) * rng.normal(size=(b, 3)) * 0.2
        tick = cal.step(v, origin, ok)
        alarms += int(tick.alarm.sum())
        misses += tick.miss
    assert alarms == 0
    assert abs(misses.mean() / (steps - 10) - 0.1) < 0.01


# ---------------------------------------------------------------- batching


def _streams(b: int, steps: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.1, 1.0, size=b)
    pos = rng.normal(size=(steps, b, 3)) * scale[None, :, None]
    pos[steps // 2 :] *= 3.0  # a shift half way
    pred = rng.normal(size=(steps, b, 3)) * 0.05
    valid = rng.random((steps, b)) > 0.05
    pos[rng.random((steps, b)) < 0.01] = np.nan
    return pos, pred, valid


@pytest.mark.parametrize("method", ["quantile_tracker", "aci", "dtaci"])
def test_batch_equals_per_element(method: str) -> None:
    b, steps = 4, 700
    cfg = CalibratorConfig(horizon_ticks=3, lr=0.02, method=method, score_window=100, rolling_window_ticks=50)
    pos, pred, valid = _streams(b, steps, seed=11)
    batch = Calibrator(cfg, n=b, warm_quantile_m=0.3)
    singles = [Calibrator(cfg, n=1, warm_quantile_m=0.3) for _ in range(b)]
    for t in range(steps):
        tb = batch.step(pos[t], pred[t], valid[t])
        for e, cal in enumerate(singles):
            ts = cal.step(pos[t, e : e + 1], pred[t, e : e + 1], valid[t, e : e + 1])
            for name in ("margin_m", "score_m", "miscoverage", "rolling_miscoverage"):
                np.testing.assert_allclose(getattr(tb, name)[e], getattr(ts, name)[0], rtol=1e-12, atol=1e-12)
            for name in ("miss", "alarm", "saturated"):
                assert getattr(tb, name)[e] == getattr(ts, name)[0], (t, e, name)


def test_reset_mask_restarts_only_the_masked_vehicles() -> None:
    cfg = CalibratorConfig(horizon_ticks=2, lr=0.05)
    cal = Calibrator(cfg, n=3, warm_quantile_m=0.5)
    ok = np.ones(3, dtype=bool)
    for _ in range(20):
        cal.step(np.full((3, 3), 2.0), np.zeros((3, 3)), ok)
    before = cal.margin_m
    cal.reset(np.array([False, True, False]))
    after = cal.margin_m
    assert after[1] == 0.5 and after[0] == before[0] and after[2] == before[2]
    tick = cal.step(np.full((3, 3), 2.0), np.zeros((3, 3)), ok)
    assert math.isnan(tick.score_m[1]) and not math.isnan(tick.score_m[0])


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"horizon_ticks": 0, "lr": 0.1}, "CalibratorConfig.horizon_ticks = 0 must be an integer ≥ 1"),
        (
            {"horizon_ticks": 5, "lr": 0.1, "alpha": 1.5},
            "CalibratorConfig.alpha = 1.5 is outside the allowed range (0.0, 1.0)",
        ),
        (
            {"horizon_ticks": 5, "lr": -0.1},
            "CalibratorConfig.lr = -0.1 is outside the allowed range (0.0, inf)",
        ),
        (
            {"horizon_ticks": 5, "lr": 2.0, "method": "aci"},
            "CalibratorConfig.lr = 2.0 is outside the allowed range (0.0, 1.0]",
        ),
        (
            {"horizon_ticks": 5, "lr": 0.1, "method": "pid"},
            "CalibratorConfig.method = 'pid' is not one of ('quantile_tracker', 'aci', 'dtaci')",
        ),
        (
            {"horizon_ticks": 5, "lr": 0.1, "q_min_m": 2.0, "q_max_m": 1.0},
            "CalibratorConfig.q_min_m = 2.0 must be smaller than q_max_m = 1.0",
        ),
        (
            {"horizon_ticks": 5, "lr": 0.1, "ki_m": math.nan},
            "CalibratorConfig.ki_m must be a number, got nan",
        ),
        ({"horizon_ticks": 5, "lr": 0.1, "dtaci_gammas": ()}, "CalibratorConfig.dtaci_gammas is empty"),
        (
            {"horizon_ticks": 5, "lr": 0.1, "score_window": 0},
            "CalibratorConfig.score_window = 0 must be an integer ≥ 1",
        ),
    ],
)
def test_config_validation_messages(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        CalibratorConfig(**kwargs)  # type: ignore[arg-type]


def test_calibrator_argument_and_shape_errors() -> None:
    cfg = CalibratorConfig(horizon_ticks=2, lr=0.1)
    with pytest.raises(ConfigError, match=re.escape("warm_quantile_m = nan must be a finite distance ≥ 0")):
        Calibrator(cfg, warm_quantile_m=math.nan)
    with pytest.raises(ConfigError, match=re.escape("Calibrator n = 0 must be an integer ≥ 1")):
        Calibrator(cfg, n=0, warm_quantile_m=0.1)
    cal = Calibrator(cfg, n=2, warm_quantile_m=0.1)
    with pytest.raises(
        ConfigError, match=re.escape("expects pos_ned_m and predicted_pos_ned_m of shape (2, 3)")
    ):
        cal.step(np.zeros((3, 3)), np.zeros((2, 3)), np.ones(2, dtype=bool))
    with pytest.raises(ConfigError, match=re.escape("reset mask has shape (3,), expected (2,)")):
        cal.reset(np.ones(3, dtype=bool))
