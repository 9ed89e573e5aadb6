"""Onboard conformal calibrator: the margin q_t the shield adds to every barrier.

Score (``score_definition``): at tick t the realised NED position is compared with the
position the nominal model predicted for it H ticks earlier, from the command sent then::

    s_t = ‖pos_ned_m(t) − predicted_pos_ned_m(t−H → t)‖₂   (metres)

The shield used margin m_{t−H} together with that prediction, so the miss indicator is
``err_t = 1{s_t > m_{t−H}}``: coverage is measured against the set the shield actually used.
Ticks where the sample is invalid (flag false, or non-finite position or prediction) and the
first H ticks after a reset have no score (NaN) and do not update anything.

Strategies (``CalibratorConfig.method``), all warm-started from the bundle's split-conformal
quantile and all batched over a leading axis [B]:

* ``quantile_tracker`` — conformal PID (Angelopoulos, Candès, Tibshirani 2023): P-state
  p_{t+1} = p_t + η(err_t − α), plus the optional saturating integrator
  r_t(S_t) = K_I·tan(S_t·log t/(t·C_sat)), S_t = Σ(err_i − α); margin = p + r.
* ``aci`` — adaptive conformal inference (Gibbs & Candès 2021): α_{t+1} = α_t + γ(α − err_t);
  margin = the conformal (1−α_t) quantile of the last W scores; α_t ≤ 0 → ∞, α_t ≥ 1 → empty.
* ``dtaci`` — DtACI (Gibbs & Candès, JMLR 2024): ACI experts with γ ∈ {0.001, …, 0.128},
  exponential weights on the pinball loss with η = 2.8 and mixing σ = 1/500; the margin uses
  the weight-averaged level ᾱ_t (deterministic, so no random generator is needed onboard).

A CUSUM on err_t − α − slack raises the miss-burst / shift alarm. See docs/calibrator.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge_agent.errors import ConfigError

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

METHODS: tuple[str, ...] = ("quantile_tracker", "aci", "dtaci")
DTACI_GAMMAS: tuple[float, ...] = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128)


def score_definition(horizon_ticks: int) -> str:
    """The nonconformity score, as written into a bundle's calibration section."""
    return (
        f"euclidean_position_error_m over horizon H={horizon_ticks} ticks: "
        f"s_t = ||pos_ned_m(t) - predicted_pos_ned_m(t-H -> t)||_2, where the prediction is the "
        f"shield's nominal model at tick t-H for the commands sent from t-H on; "
        f"miss err_t = 1{{s_t > margin_m(t-H)}}; invalid samples are not scored"
    )


def _check_range(name: str, value: float, lo: float, hi: float, *, lo_open: bool, hi_open: bool) -> None:
    lo_ok = value > lo if lo_open else value >= lo
    hi_ok = value < hi if hi_open else value <= hi
    if not (isinstance(value, int | float) and not isinstance(value, bool)) or math.isnan(value):
        raise ConfigError(f"CalibratorConfig.{name} must be a number, got {value!r}")
    if not (lo_ok and hi_ok):
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        raise ConfigError(
            f"CalibratorConfig.{name} = {value!r} is outside the allowed range {left}{lo}, {hi}{right}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CalibratorConfig:
    """Settings of the onboard calibrator; validated on construction."""

    horizon_ticks: int
    """H: ticks between a prediction and the position it is scored against (the shield's horizon)."""
    lr: float
    """Step size of the chosen method: η in metres for quantile_tracker, γ (unitless) for aci; unused by dtaci."""
    alpha: float = 0.1
    """Target miscoverage α: the margin should contain the score with probability 1 − α."""
    method: str = "quantile_tracker"
    """One of METHODS."""
    ki_m: float = 0.1
    """Integrator gain K_I in metres (quantile_tracker); 0 turns the integrator off (plain tracker)."""
    c_sat: float = 5.0
    """Integrator saturation constant C_sat (the paper's experiments use 5)."""
    dtaci_gammas: tuple[float, ...] = DTACI_GAMMAS
    """Step sizes of the DtACI experts."""
    dtaci_sigma: float = 1.0 / 500.0
    """DtACI weight mixing σ (lets a dormant expert come back after a shift)."""
    dtaci_eta: float = 2.8
    """DtACI exponential-weights learning rate on the pinball loss."""
    score_window: int = 500
    """W: number of past valid scores whose conformal quantile aci/dtaci use."""
    rolling_window_ticks: int = 250
    """Ticks over which ``rolling_miscoverage`` is computed (1 s at 250 Hz)."""
    alarm_slack: float = 0.1
    """CUSUM allowance k: the statistic grows by err_t − α − k per scored tick."""
    alarm_threshold: float = 60.0
    """CUSUM threshold h: the alarm is raised while the statistic is ≥ h."""
    q_min_m: float = 0.0
    """Smallest margin handed to the shield (metres); −inf reproduces the unclipped published updates."""
    q_max_m: float = 20.0
    """Largest margin handed to the shield (metres); a wanted margin above it raises the alarm."""

    def __post_init__(self) -> None:
        if (
            not isinstance(self.horizon_ticks, int)
            or isinstance(self.horizon_ticks, bool)
            or self.horizon_ticks < 1
        ):
            raise ConfigError(
                f"CalibratorConfig.horizon_ticks = {self.horizon_ticks!r} must be an integer ≥ 1 "
                f"(the shield's prediction horizon in ticks)"
            )
        if self.method not in METHODS:
            raise ConfigError(f"CalibratorConfig.method = {self.method!r} is not one of {METHODS}")
        _check_range("alpha", self.alpha, 0.0, 1.0, lo_open=True, hi_open=True)
        if self.method == "aci":
            _check_range("lr", self.lr, 0.0, 1.0, lo_open=True, hi_open=False)
        else:
            _check_range("lr", self.lr, 0.0, math.inf, lo_open=True, hi_open=True)
        _check_range("ki_m", self.ki_m, 0.0, math.inf, lo_open=False, hi_open=True)
        _check_range("c_sat", self.c_sat, 0.0, math.inf, lo_open=True, hi_open=True)
        if len(self.dtaci_gammas) == 0:
            raise ConfigError("CalibratorConfig.dtaci_gammas is empty: give at least one expert step size")
        for g in self.dtaci_gammas:
            _check_range("dtaci_gammas[i]", g, 0.0, 1.0, lo_open=True, hi_open=False)
        _check_range("dtaci_sigma", self.dtaci_sigma, 0.0, 1.0, lo_open=False, hi_open=True)
        _check_range("dtaci_eta", self.dtaci_eta, 0.0, math.inf, lo_open=True, hi_open=True)
        for name in ("score_window", "rolling_window_ticks"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"CalibratorConfig.{name} = {v!r} must be an integer ≥ 1")
        _check_range("alarm_slack", self.alarm_slack, 0.0, 1.0, lo_open=False, hi_open=True)
        _check_range("alarm_threshold", self.alarm_threshold, 0.0, math.inf, lo_open=True, hi_open=True)
        _check_range("q_min_m", self.q_min_m, -math.inf, math.inf, lo_open=False, hi_open=True)
        _check_range("q_max_m", self.q_max_m, -math.inf, math.inf, lo_open=True, hi_open=False)
        if not self.q_min_m < self.q_max_m:
            raise ConfigError(
                f"CalibratorConfig.q_min_m = {self.q_min_m!r} must be smaller than q_max_m = {self.q_max_m!r}"
            )


@dataclass(frozen=True, slots=True)
class CalibratorTick:
    """What the calibrator says on one tick; every array has shape [B]."""

    margin_m: FloatArray
    """q_t: the margin (metres) the shield adds to every barrier on this tick."""
    score_m: FloatArray
    """s_t (metres); NaN when this tick was not scored."""
    miss: BoolArray
    """err_t: the score exceeded the margin used H ticks ago (False when not scored)."""
    miscoverage: FloatArray
    """Fraction of scored ticks that were misses since start or reset; NaN before the first score."""
    rolling_miscoverage: FloatArray
    """Fraction of misses among scored ticks of the last ``rolling_window_ticks`` ticks; NaN if none."""
    alarm: BoolArray
    """Miss-burst / shift alarm: CUSUM over threshold, or the wanted margin above q_max_m."""
    saturated: BoolArray
    """The wanted margin exceeded q_max_m, so the shield got less than the calibrator asked for."""


class _OneVehicle:
    """The scalar path's state (one vehicle, quantile tracker) in Python floats and lists."""

    __slots__ = (
        "cusum",
        "margin",
        "n_miss",
        "n_scored",
        "p",
        "ring_margin",
        "roll_miss",
        "roll_scored",
        "roll_sum_miss",
        "roll_sum_scored",
        "s_int",
        "saturated",
    )

    def __init__(self, horizon_ticks: int, rolling_window_ticks: int) -> None:
        self.ring_margin = [0.0] * horizon_ticks  # like the batched ring, kept across resets
        self.roll_miss = [0.0] * rolling_window_ticks
        self.roll_scored = [0.0] * rolling_window_ticks
        self.restart(0.0, 0.0, False)

    def restart(self, p: float, margin: float, saturated: bool) -> None:
        """What Calibrator.reset does to the batched arrays, for this vehicle."""
        self.n_scored = self.n_miss = 0.0
        self.roll_sum_miss = self.roll_sum_scored = 0.0
        self.roll_miss[:] = [0.0] * len(self.roll_miss)
        self.roll_scored[:] = [0.0] * len(self.roll_scored)
        self.cusum = self.s_int = 0.0
        self.p = float(p)
        self.margin = float(margin)
        self.saturated = bool(saturated)


class Calibrator:
    """Online conformal calibrator over a batch of B vehicles; O(1) memory and time per tick."""

    def __init__(self, config: CalibratorConfig, *, n: int = 1, warm_quantile_m: float) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"Calibrator n = {n!r} must be an integer ≥ 1 (the batch size)")
        if (
            not isinstance(warm_quantile_m, int | float)
            or not math.isfinite(warm_quantile_m)
            or warm_quantile_m < 0
        ):
            raise ConfigError(
                f"Calibrator warm_quantile_m = {warm_quantile_m!r} must be a finite distance ≥ 0 "
                f"(the bundle's split-conformal quantile; run `edge-agent calibrate` first)"
            )
        self.config = config
        self.n = n
        self.warm_quantile_m = float(warm_quantile_m)
        c = config
        h = c.horizon_ticks
        self._alpha = c.alpha
        self._ring_pred = np.zeros((h, n, 3))
        self._ring_margin = np.zeros((h, n))
        self._ring_valid = np.zeros((h, n), dtype=bool)
        self._tick = 0
        self._n_scored = np.zeros(n)
        self._n_miss = np.zeros(n)
        self._roll_miss = np.zeros((c.rolling_window_ticks, n))
        self._roll_scored = np.zeros((c.rolling_window_ticks, n))
        self._roll_sum_miss = np.zeros(n)
        self._roll_sum_scored = np.zeros(n)
        self._cusum = np.zeros(n)
        self._margin = np.zeros(n)
        self._saturated = np.zeros(n, dtype=bool)
        # quantile tracker
        self._p = np.zeros(n)
        self._s_int = np.zeros(n)
        # aci / dtaci
        self._use_window = c.method in ("aci", "dtaci")
        w = c.score_window if self._use_window else 1
        self._win = np.full((n, w), np.inf)  # [B, W]: rows contiguous for the per-vehicle sort
        self._win_pos = np.zeros(n, dtype=np.intp)
        self._win_count = np.zeros(n, dtype=np.intp)
        self._alpha_t = np.zeros(n)
        k = len(c.dtaci_gammas) if c.method == "dtaci" else 1
        self._gammas = np.asarray(c.dtaci_gammas, dtype=np.float64)
        self._expert_alpha = np.zeros((n, k))
        self._expert_w = np.zeros((n, k))
        self._ring_expert_margin = np.zeros((h, n, k))
        self._cols = np.arange(n)
        self._shape3 = (n, 3)
        # One vehicle onboard at 250 Hz: numpy's per-call overhead on [1]-arrays would dominate,
        # so the default strategy has a scalar path (cross-checked against the batched one in tests).
        self._fast = n == 1 and c.method == "quantile_tracker"
        self._pi_half = math.pi / 2
        self._one = _OneVehicle(h, c.rolling_window_ticks)
        self.reset()

    # ------------------------------------------------------------------ public
    @property
    def margin_m(self) -> FloatArray:
        """The current margin q_t [B] (a copy), as given by the last step or reset."""
        if self._fast:
            return np.array([self._one.margin])
        return self._margin.copy()

    def reset(self, mask: npt.ArrayLike | None = None) -> None:
        """Restart the masked vehicles (all when mask is None) from the warm-start quantile."""
        m: slice | BoolArray
        if mask is None:
            m = slice(None)
        else:
            m = np.asarray(mask, dtype=bool)
            if m.shape != (self.n,):
                raise ConfigError(f"Calibrator.reset mask has shape {m.shape}, expected ({self.n},)")
        c = self.config
        self._ring_valid[:, m] = False
        self._n_scored[m] = 0.0
        self._n_miss[m] = 0.0
        self._roll_miss[:, m] = 0.0
        self._roll_scored[:, m] = 0.0
        self._roll_sum_miss[m] = 0.0
        self._roll_sum_scored[m] = 0.0
        self._cusum[m] = 0.0
        self._p[m] = self.warm_quantile_m
        self._s_int[m] = 0.0
        self._win[m] = np.inf
        self._win_pos[m] = 0
        self._win_count[m] = 0
        self._alpha_t[m] = c.alpha
        self._expert_alpha[m] = c.alpha
        self._expert_w[m] = 1.0 / self._expert_w.shape[1]
        warm = min(max(self.warm_quantile_m, c.q_min_m), c.q_max_m)
        self._margin[m] = warm
        self._saturated[m] = self.warm_quantile_m > c.q_max_m
        if c.method == "dtaci":
            self._ring_expert_margin[:, m] = warm
        if self._fast and (mask is None or bool(np.asarray(m)[0])):
            self._one.restart(self.warm_quantile_m, warm, self.warm_quantile_m > c.q_max_m)

    def step(
        self, pos_ned_m: npt.ArrayLike, predicted_pos_ned_m: npt.ArrayLike, valid: npt.ArrayLike
    ) -> CalibratorTick:
        """Score the prediction made H ticks ago, update, and return this tick's margin.

        pos_ned_m [B,3]: realised position now; predicted_pos_ned_m [B,3]: the nominal model's
        prediction, made now with the command sent now, of the position H ticks ahead;
        valid [B] bool: whether this tick's sample can be trusted.
        """
        pos = np.asarray(pos_ned_m, dtype=np.float64)
        pred = np.asarray(predicted_pos_ned_m, dtype=np.float64)
        ok_in = np.asarray(valid, dtype=bool)
        if pos.shape != self._shape3 or pred.shape != self._shape3 or ok_in.shape != (self.n,):
            raise ConfigError(
                f"Calibrator.step expects pos_ned_m and predicted_pos_ned_m of shape {self._shape3} and "
                f"valid of shape ({self.n},); got {pos.shape}, {pred.shape}, {ok_in.shape}"
            )
        i = self._tick % self.config.horizon_ticks
        if self._fast:
            slot = self._ring_pred[i, 0]
            (x, y, z), (a, b, e) = pos.tolist()[0], slot.tolist()
            score1 = math.sqrt((x - a) * (x - a) + (y - b) * (y - b) + (z - e) * (z - e))
            was_valid = bool(self._ring_valid[i, 0])
            slot[:] = pred[0]
            self._ring_valid[i, 0] = ok_in[0]
            return self._update_one(score1, bool(ok_in[0]) and was_valid)
        d = pos - self._ring_pred[i]
        score = np.sqrt(np.einsum("ij,ij->i", d, d))
        scored = ok_in & self._ring_valid[i]
        # the prediction made now is scored H ticks from now
        self._ring_pred[i] = pred
        self._ring_valid[i] = ok_in
        return self.update(score, scored)

    def update(self, score_m: npt.ArrayLike, valid: npt.ArrayLike) -> CalibratorTick:
        """Take this tick's scores s_t [B] (computed by the caller) and return the new margin.

        For callers that predict by other means than :meth:`step`'s held prediction, e.g. a
        shadow of the nominal model flown through the commands actually sent (AgentCore).
        ``valid`` [B]: the score can be trusted; non-finite scores are never scored. With one
        vehicle (n = 1) they may be a Python float and a bool (the onboard tick's scalar path).
        """
        if isinstance(score_m, float):
            if self._fast:
                return self._update_one(score_m, bool(valid))
            score_m, valid = [score_m], [bool(valid)]
        score = np.array(score_m, dtype=np.float64)
        ok = np.asarray(valid, dtype=bool)
        if score.shape != (self.n,) or ok.shape != (self.n,):
            raise ConfigError(
                f"Calibrator.update expects score_m and valid of shape ({self.n},); got {score.shape}, {ok.shape}"
            )
        if self._fast:
            return self._update_one(float(score[0]), bool(ok[0]))
        c = self.config
        i = self._tick % c.horizon_ticks
        scored = ok & np.isfinite(score)
        score[~scored] = np.nan
        # NaN compares False, so unscored ticks are never misses.
        miss = score > self._ring_margin[i]
        miss_f = miss.astype(np.float64)
        scored_f = scored.astype(np.float64)
        expert_margin_old = self._ring_expert_margin[i].copy() if c.method == "dtaci" else None

        g = (miss_f - self._alpha) * scored_f  # err_t − α on scored ticks, 0 elsewhere
        self._n_scored += scored_f
        self._n_miss += miss_f

        if c.method == "quantile_tracker":
            wanted = self._step_tracker(g)
        elif c.method == "aci":
            wanted = self._step_aci(score, scored, g)
        else:
            assert expert_margin_old is not None
            wanted = self._step_dtaci(score, scored, expert_margin_old)

        self._saturated = wanted > c.q_max_m
        np.clip(wanted, c.q_min_m, c.q_max_m, out=self._margin)
        self._ring_margin[i] = self._margin

        j = self._tick % c.rolling_window_ticks
        self._roll_sum_miss += miss_f - self._roll_miss[j]
        self._roll_sum_scored += scored_f - self._roll_scored[j]
        self._roll_miss[j] = miss_f
        self._roll_scored[j] = scored_f
        # CUSUM (Page 1954) on err_t − α − k, only on scored ticks
        cus = self._cusum + (g - c.alarm_slack * scored_f)
        np.maximum(cus, 0.0, out=self._cusum)
        alarm = (self._cusum >= c.alarm_threshold) | self._saturated
        self._tick += 1

        with np.errstate(invalid="ignore", divide="ignore"):
            miscov = self._n_miss / self._n_scored
            rolling = self._roll_sum_miss / self._roll_sum_scored
        return CalibratorTick(
            margin_m=self._margin.copy(),
            score_m=score,
            miss=miss,
            miscoverage=miscov,
            rolling_miscoverage=rolling,
            alarm=alarm,
            saturated=self._saturated.copy(),
        )

    def _update_one(self, score: float, valid: bool) -> CalibratorTick:
        """The quantile tracker for one vehicle, in Python floats; same arithmetic as ``update``.

        Its state lives in :class:`_OneVehicle` (Python floats and lists: numpy's scalar reads and
        writes cost more than the arithmetic); the batched arrays are not used by this path."""
        c = self.config
        o = self._one
        i = self._tick % c.horizon_ticks
        scored = valid and math.isfinite(score)
        if scored:
            miss = score > o.ring_margin[i]
            miss_f = 1.0 if miss else 0.0
            g = miss_f - self._alpha
            n_scored = o.n_scored = o.n_scored + 1.0
            n_miss = o.n_miss = o.n_miss + miss_f
            p = o.p + c.lr * g
            p = o.p = min(max(p, c.q_min_m), c.q_max_m)
            if c.ki_m != 0.0:
                s_int = o.s_int = o.s_int + g
                xx = s_int * math.log(n_scored) / (n_scored * c.c_sat)
                if abs(xx) >= self._pi_half:
                    wanted = math.copysign(math.inf, xx)
                else:
                    wanted = p + c.ki_m * math.tan(xx)
            else:
                wanted = p
            saturated = o.saturated = wanted > c.q_max_m
            margin = o.margin = min(max(wanted, c.q_min_m), c.q_max_m)
        else:
            score = math.nan
            miss = False
            miss_f = g = 0.0
            n_scored, n_miss, margin, saturated = o.n_scored, o.n_miss, o.margin, o.saturated
        o.ring_margin[i] = margin
        scored_f = 1.0 if scored else 0.0
        j = self._tick % c.rolling_window_ticks
        roll_miss = o.roll_sum_miss = o.roll_sum_miss + (miss_f - o.roll_miss[j])
        roll_scored = o.roll_sum_scored = o.roll_sum_scored + (scored_f - o.roll_scored[j])
        o.roll_miss[j] = miss_f
        o.roll_scored[j] = scored_f
        cus = o.cusum = max(o.cusum + (g - c.alarm_slack * scored_f), 0.0)
        self._tick += 1
        # Two allocations, handed out as [1]-views (one np.array per field costs twice as much).
        f = np.array(
            [
                margin,
                score,
                n_miss / n_scored if n_scored else math.nan,
                roll_miss / roll_scored if roll_scored else math.nan,
            ],
            dtype=np.float64,
        )
        b = np.array([miss, cus >= c.alarm_threshold or saturated, saturated], dtype=np.bool_)
        return CalibratorTick(
            margin_m=f[0:1],
            score_m=f[1:2],
            miss=b[0:1],
            miscoverage=f[2:3],
            rolling_miscoverage=f[3:4],
            alarm=b[1:2],
            saturated=b[2:3],
        )

    # ------------------------------------------------------------ strategies
    def _step_tracker(self, g: FloatArray) -> FloatArray:
        c = self.config
        p = self._p + c.lr * g
        # Anti-windup: the P-state never leaves the band the margin can take; clipping from
        # above never happens while scores stay ≤ q_max_m − H·η (see docs/calibrator.md).
        np.clip(p, c.q_min_m, c.q_max_m, out=self._p)
        if c.ki_m == 0.0:
            return self._p.copy()
        self._s_int += g
        t = np.maximum(self._n_scored, 1.0)
        x = self._s_int * np.log(t) / (t * c.c_sat)
        # tan saturates: past ±π/2 the integrator asks for an infinite (or no) margin
        wanted = self._p + c.ki_m * np.tan(x)
        return np.where(np.abs(x) >= math.pi / 2, np.copysign(np.inf, x), wanted)

    def _push_scores(self, score: FloatArray, scored: BoolArray) -> None:
        cols = self._cols[scored]
        if cols.size:
            self._win[cols, self._win_pos[cols]] = score[cols]
            self._win_pos[cols] = (self._win_pos[cols] + 1) % self._win.shape[1]
            self._win_count[cols] = np.minimum(self._win_count[cols] + 1, self._win.shape[1])

    def _window_margins(self, levels: FloatArray) -> FloatArray:
        """Conformal (1−a) quantile of each vehicle's window for levels [B, L] → margins [B, L]."""
        n_win = self._win_count[:, None].astype(np.float64)
        srt = np.sort(self._win, axis=1)  # +inf fills empty slots, so they sort last
        k = np.ceil((1.0 - levels) * (n_win + 1.0))
        idx = np.clip(k - 1.0, 0, self._win.shape[1] - 1).astype(np.intp)
        out = np.take_along_axis(srt, idx, axis=1)
        too_few = k > n_win
        full = n_win >= self._win.shape[1]
        # Not enough history yet: the bundle's split-conformal quantile stands in (warm start);
        # with a full window, k > n is the genuine infinite set.
        out = np.where(too_few, np.where(full, np.inf, self.warm_quantile_m), out)
        out = np.where(levels <= 0.0, np.inf, out)
        out = np.where(levels >= 1.0, -np.inf, out)
        return out

    def _step_aci(self, score: FloatArray, scored: BoolArray, g: FloatArray) -> FloatArray:
        c = self.config
        h = c.horizon_ticks
        a = self._alpha_t - c.lr * g  # α_{t+1} = α_t + γ(α − err_t)
        # Anti-windup: unclipped, α_t stays in [−Hγ, 1 + Hγ] anyway (docs/calibrator.md); this only
        # binds when q_min_m/q_max_m clip the set, and keeps recovery fast afterwards.
        np.clip(a, -h * c.lr, 1.0 + h * c.lr, out=self._alpha_t)
        self._push_scores(score, scored)
        return self._window_margins(self._alpha_t[:, None])[:, 0]

    def _step_dtaci(self, score: FloatArray, scored: BoolArray, expert_margin_old: FloatArray) -> FloatArray:
        c = self.config
        h = c.horizon_ticks
        a = self._expert_alpha
        sc = scored[:, None]
        expert_miss = (score[:, None] > expert_margin_old) & sc
        # β_t: the largest level whose set (on the window before this score) still covers s_t
        n_win = self._win_count.astype(np.float64)
        with np.errstate(invalid="ignore"):
            m_ge = np.sum(self._win >= score[:, None], axis=1)
        beta = (m_ge + 1.0) / (n_win + 1.0)
        u = beta[:, None] - a
        loss = self._alpha * u - np.minimum(0.0, u)
        upd = sc & (n_win[:, None] > 0)
        wbar = self._expert_w * np.exp(-c.dtaci_eta * np.where(upd, loss, 0.0))
        k = a.shape[1]
        w_next = (1.0 - c.dtaci_sigma) * wbar / np.sum(wbar, axis=1, keepdims=True) + c.dtaci_sigma / k
        self._expert_w = np.where(upd, w_next, self._expert_w)
        step = self._gammas[None, :] * (self._alpha - expert_miss.astype(np.float64)) * sc
        lo = -h * self._gammas[None, :]
        self._expert_alpha = np.clip(a + step, lo, 1.0 - lo)
        self._push_scores(score, scored)
        abar = np.sum(self._expert_w * self._expert_alpha, axis=1)
        self._alpha_t = abar
        levels = np.concatenate([abar[:, None], self._expert_alpha], axis=1)
        margins = self._window_margins(levels)
        i = self._tick % h
        self._ring_expert_margin[i] = np.clip(margins[:, 1:], c.q_min_m, c.q_max_m)
        return margins[:, 0]

    @property
    def alpha_t(self) -> FloatArray:
        """ACI's current level α_t [B], or DtACI's weighted level ᾱ_t (zeros for the tracker)."""
        return self._alpha_t.copy()
