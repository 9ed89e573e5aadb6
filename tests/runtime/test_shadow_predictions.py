"""ShadowPredictions (the calibrator's score) against a plain reference ring flown with NominalModel.step.

The ring is advanced in place, with an unsaturated fast step when it applies and a scalar entry
for the onboard batch of one; none of that may change a score or a count beyond rounding. The
reference below is the straightforward implementation (one NominalModel.step per tick on all
H·n shadows), so these tests fail if either step, the ring indexing or the scalar entry drifts.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.nominal import NominalModel, ShadowPredictions


class ReferenceShadows:
    """The ring as first written: [H, n, 3] arrays, NominalModel.step on all of it every tick."""

    def __init__(self, model: NominalModel, h: int, n: int) -> None:
        self.model, self.h, self.n = model, h, n
        self.pos = np.zeros((h, n, 3))
        self.vel = np.zeros((h, n, 3))
        self.ok = np.zeros((h, n), dtype=bool)
        self.cmd = np.zeros((n, 3))
        self.last_s: float | None = None
        self.k = 0

    def reset(self, mask: np.ndarray | None = None) -> None:
        self.ok[:, slice(None) if mask is None else mask] = False

    def tick(self, now_s, pos, vel, valid, cmd):  # type: ignore[no-untyped-def]
        h, n = self.h, self.n
        if self.last_s is not None:
            dt = min(max(now_s - self.last_s, 0.0), 1.0)
            c = np.broadcast_to(self.cmd[None], (h, n, 3)).reshape(h * n, 3)
            p, v = self.model.step(self.pos.reshape(h * n, 3), self.vel.reshape(h * n, 3), c, dt)
            self.pos[...] = p.reshape(h, n, 3)
            self.vel[...] = v.reshape(h, n, 3)
        i = self.k % h
        d = pos - self.pos[i]
        score = np.sqrt(np.einsum("ij,ij->i", d, d))
        counts = valid & self.ok[i]
        self.pos[i], self.vel[i], self.ok[i] = pos, vel, valid
        self.cmd = np.array(cmd, dtype=np.float64)
        self.last_s = now_s
        self.k += 1
        return score, counts


def count_general_steps(ring: ShadowPredictions) -> dict[str, int]:
    """Count the ring's general (saturating) steps from now on: {"calls": n}."""
    counter = {"calls": 0}
    orig = ring._advance_general

    def counting(dt: float) -> None:
        counter["calls"] += 1
        orig(dt)

    ring._advance_general = counting  # type: ignore[method-assign]
    return counter


def random_inputs(rng: np.random.Generator, n: int, k: int, regime: str):
    """States and commands: gentle (mostly unsaturated), wild (saturated) or hostile (NaN, inf)."""
    scale = {"gentle": 0.1, "wild": 4.0, "hostile": 2.0}[regime]
    pos = rng.normal(0.0, 10.0, (n, 3))
    # gentle: every vehicle near its own steady velocity, so the shadows' errors stay small
    base = np.linspace(-1.0, 1.0, 3 * n).reshape(n, 3)
    vel = base + rng.normal(0.0, 0.1 if regime == "gentle" else 1.0, (n, 3))
    cmd = vel + rng.normal(0.0, scale, (n, 3))
    if regime == "gentle" and k % 40 == 39:
        cmd = cmd + rng.normal(0.0, 5.0, (n, 3))  # a command step now and then: saturated for a while
    valid = rng.random(n) > 0.05
    if regime == "hostile":
        for arr in (pos, vel, cmd):
            hit = rng.random(arr.shape) < 0.01
            arr[hit] = rng.choice([np.nan, np.inf, -np.inf, 1e300], size=int(hit.sum()))
    return pos, vel, valid, cmd


def dt_sequence(rng: np.random.Generator, k: int) -> float:
    """Mostly 20 ms with jitter; sometimes zero, negative (clock step back) or > 1 s."""
    u = rng.random()
    if u < 0.03:
        return 0.0
    if u < 0.05:
        return -0.01
    if u < 0.06:
        return 1.7
    return 0.02 + rng.normal(0.0, 0.002)


@pytest.mark.parametrize("regime", ["gentle", "wild", "hostile"])
@pytest.mark.parametrize(("n", "h"), [(1, 50), (1, 3), (7, 5)])
@pytest.mark.parametrize("linear", [True, False])
def test_ring_scores_like_the_reference(regime: str, n: int, h: int, linear: bool) -> None:
    model = NominalModel(tau_xy_s=0.5, tau_z_s=0.3, accel_xy_m_s2=3.0, accel_z_m_s2=2.5)
    ring, ref = ShadowPredictions(model, h, n), ReferenceShadows(model, h, n)
    ring._linear = linear
    general = count_general_steps(ring)
    rng = np.random.default_rng(hash((regime, n, h)) % 2**32)
    now = 0.0
    with np.errstate(all="ignore"):
        for k in range(400):
            now += dt_sequence(rng, k)
            pos, vel, valid, cmd = random_inputs(rng, n, k, regime)
            s1, c1 = ring.tick(now, pos, vel, valid, cmd)
            s2, c2 = ref.tick(now, pos, vel, valid, cmd)
            np.testing.assert_array_equal(c1, c2, err_msg=f"counts at tick {k}")
            np.testing.assert_allclose(s1, s2, rtol=1e-9, atol=1e-9, err_msg=f"score at tick {k}")
            # the whole ring, not only the slot scored now
            np.testing.assert_allclose(
                ring._pos.reshape(3, h, n).transpose(1, 2, 0), ref.pos, rtol=1e-9, atol=1e-9
            )
            np.testing.assert_allclose(
                ring._vel.reshape(3, h, n).transpose(1, 2, 0), ref.vel, rtol=1e-9, atol=1e-9
            )
            if rng.random() < 0.02:
                mask = rng.random(n) < 0.5
                ring.reset(mask)
                ref.reset(mask)
            if rng.random() < 0.01:
                ring.reset()
                ref.reset()
    # Which step ran: the general one always when told so; the fast one on most gentle ticks.
    if not linear:
        assert general["calls"] == 399
    elif regime == "gentle":
        assert general["calls"] < 300, general
    else:
        assert general["calls"] > 300, general


def test_both_steps_are_taken_and_agree_on_a_flight() -> None:
    """A ring flown gently takes the unsaturated step on most ticks, the general one after steps."""
    model = NominalModel()
    rng = np.random.default_rng(5)
    fast, general = ShadowPredictions(model, 50, 1), ShadowPredictions(model, 50, 1)
    general._linear = False
    calls = count_general_steps(fast)
    pos, vel = np.zeros((1, 3)), np.zeros((1, 3))
    cmd = np.array([[1.0, 0.5, -0.2]])
    now = 0.0
    for k in range(1000):
        if k % 200 == 100:
            cmd = rng.uniform(-5, 5, (1, 3))  # a step: saturated shadows for a while
        now += 0.02 + rng.normal(0, 1e-3)
        a = fast.tick(now, pos, vel, np.array([True]), cmd)
        b = general.tick(now, pos, vel, np.array([True]), cmd)
        np.testing.assert_allclose(a[0], b[0], rtol=1e-10, atol=1e-10)
        np.testing.assert_array_equal(a[1], b[1])
        pos, vel = model.step(pos, vel, cmd + rng.normal(0, 0.2, (1, 3)), 0.02)
    assert 100 < calls["calls"] < 500, calls


def test_tick_one_equals_tick() -> None:
    model = NominalModel()
    rng = np.random.default_rng(9)
    one, batched = ShadowPredictions(model, 10, 1), ShadowPredictions(model, 10, 1)
    now = 0.0
    with np.errstate(all="ignore"):
        for k in range(600):
            now += dt_sequence(rng, k)
            pos, vel, valid, cmd = random_inputs(rng, 1, k, ("gentle", "wild", "hostile")[k // 200])
            s1, c1 = one.tick_one(now, pos[0].tolist(), vel[0].tolist(), bool(valid[0]), cmd[0].tolist())
            s2, c2 = batched.tick(now, pos, vel, valid, cmd)
            assert isinstance(s1, float) and isinstance(c1, bool)
            assert c1 == bool(c2[0]), k
            np.testing.assert_allclose(s1, s2[0], rtol=1e-12, atol=1e-12, err_msg=f"tick {k}")
            if k % 97 == 0:
                one.reset()
                batched.reset(np.array([True]))


def test_tick_one_refuses_a_batch() -> None:
    from edge_agent.errors import ConfigError

    with pytest.raises(ConfigError):
        ShadowPredictions(NominalModel(), 5, 2).tick_one(0.0, (0, 0, 0), (0, 0, 0), True, (0, 0, 0))
