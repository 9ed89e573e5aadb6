"""Shielded vs unshielded campaigns: the same bundle, the same episodes (same seeds), shield on and off.

For each side: mission success rate, interventions per agent tick by shield layer (watchdog,
barrier, fallback), episodes in which the fallback engaged, failures k (fence or keep-out
breach, altitude, ground strike, loss of control; ``calib.rollout.FAILURE_DEFINITIONS``) with
the one-sided Clopper–Pearson bound ε(k, N, β), and the breach rate k/N. The episodes are
``calib.certify.run_campaign``'s (vectorised SITL, the onboard tick), indices 0..N−1.

    python -m experiments.campaigns --bundle /tmp/b/goal_seeker --scenarios examples/scenarios/calm.toml --episodes 300
    python -m experiments.campaigns --bundle /tmp/b/adversary --scenarios examples/scenarios/demo.toml --episodes 3000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from calib.certify import episode_range, run_campaign, summarize
from calib.scenario import load_scenario

#: Confidence of the printed bounds (the certification default, 1e-6, is for certificates).
DEFAULT_BETA = 0.05


@dataclass(frozen=True, slots=True)
class CampaignRow:
    """The figures of one campaign (one bundle, one scenario, shield on or off)."""

    bundle: str
    scenario: str
    shield: bool
    n: int
    k: int
    """Episodes with a failure (breach, ground strike or loss of control)."""
    beta: float
    epsilon: float
    """Clopper–Pearson upper bound on P(failure) at confidence 1 − β."""
    failure_rate: float
    failures_by_kind: dict[str, int]
    success_rate: float
    """Episodes that completed the mission (reached the last waypoint) within the time limit."""
    ticks: int
    watchdog_per_tick: float
    barrier_per_tick: float
    """Ticks where the barrier filter changed the command, per agent tick (NaN: shield off, bypassed)."""
    fallback_per_tick: float
    """NaN with the shield off: the layer is bypassed, so nothing it would have done reached the vehicle."""
    fallback_episode_rate: float
    failing_episodes: list[int]
    wall_s: float


def campaign(
    bundle: Path, scenarios: Path, n: int, *, shield: bool, beta: float, batch: int = 1024
) -> CampaignRow:
    """Fly episodes 0..n−1 of the scenario with the bundle; shield on or off."""
    spec = load_scenario(scenarios)
    t0 = time.perf_counter()
    res = run_campaign(bundle, spec, episode_range(n), batch=batch, shield_enabled=shield)
    wall = time.perf_counter() - t0
    s = summarize(res, beta)
    ticks = int(res.ticks.sum())
    per_tick = np.array(
        [res.interventions_watchdog.sum(), res.interventions_barrier.sum(), res.interventions_fallback.sum()],
        dtype=np.float64,
    ) / max(ticks, 1)
    if not shield:
        # Unshielded, only the watchdog's hold still acts; the rollout still books the ticks where
        # the (bypassed) fallback would have acted, which never reached the vehicle.
        per_tick[1:] = np.nan
    return CampaignRow(
        bundle=str(bundle),
        scenario=str(scenarios),
        shield=shield,
        n=s.n,
        k=s.k,
        beta=beta,
        epsilon=s.epsilon,
        failure_rate=s.k / s.n,
        failures_by_kind=dict(sorted(s.failures_by_kind.items())),
        success_rate=s.completion_rate,
        ticks=ticks,
        watchdog_per_tick=float(per_tick[0]),
        barrier_per_tick=float(per_tick[1]),
        fallback_per_tick=float(per_tick[2]),
        fallback_episode_rate=s.fallback_rate if shield else float("nan"),
        failing_episodes=s.failing_episodes,
        wall_s=wall,
    )


def compare(
    bundle: Path, scenarios: Path, n: int, *, beta: float = DEFAULT_BETA, batch: int = 1024
) -> list[CampaignRow]:
    """The shielded and the unshielded campaign over the same episodes."""
    return [campaign(bundle, scenarios, n, shield=s, beta=beta, batch=batch) for s in (True, False)]


def markdown_table(rows: list[CampaignRow]) -> str:
    """Rows side by side as a Markdown table."""
    head = (
        "| shield | N | success | watchdog / tick | barrier / tick | fallback / tick | fallback episodes "
        "| failures k (kinds) | k/N | ε(k, N, β) |"
    )
    lines = [head, "|" + "---|" * 10]

    def f(x: float, fmt: str) -> str:
        return "— (bypassed)" if x != x else format(x, fmt)

    for r in rows:
        kinds = ", ".join(f"{k} {v}" for k, v in r.failures_by_kind.items()) or "—"
        lines.append(
            f"| {'on' if r.shield else 'OFF'} | {r.n} | {r.success_rate:.1%} | {r.watchdog_per_tick:.4f} "
            f"| {f(r.barrier_per_tick, '.4f')} | {f(r.fallback_per_tick, '.4f')} | {f(r.fallback_episode_rate, '.1%')} "
            f"| {r.k} ({kinds}) | {r.failure_rate:.4f} | {r.epsilon:.3g} (β = {r.beta:g}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: both campaigns, a Markdown table, optionally a JSON file."""
    p = argparse.ArgumentParser(prog="python -m experiments.campaigns", description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=Path, required=True, help="bundle folder")
    p.add_argument(
        "--scenarios", type=Path, required=True, help="scenario TOML (e.g. examples/scenarios/calm.toml)"
    )
    p.add_argument("--episodes", type=int, default=300, help="N episodes per side")
    p.add_argument("--beta", type=float, default=DEFAULT_BETA, help="β of the Clopper–Pearson bound")
    p.add_argument("--batch", type=int, default=1024, help="vehicles flown side by side")
    p.add_argument("--json", type=Path, default=None, help="write the rows as JSON here")
    a = p.parse_args(argv)
    rows = compare(a.bundle, a.scenarios, a.episodes, beta=a.beta, batch=a.batch)
    print(f"bundle {a.bundle}, scenarios {a.scenarios}, episodes 0..{a.episodes - 1} on both sides")
    print(markdown_table(rows))
    for r in rows:
        print(
            f"shield {'on' if r.shield else 'OFF'}: wall {r.wall_s:.1f} s, {r.ticks} ticks; failing episodes {r.failing_episodes[:10]}"
        )
    if a.json is not None:
        a.json.write_text(json.dumps([asdict(r) for r in rows], indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
