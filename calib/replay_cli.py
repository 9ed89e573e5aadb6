"""``edge-agent replay BUNDLE --scenarios S --seed K``: re-fly episode K alone and plot it to a PNG.

Episode K depends on (scenario seed, K) only, so flying it in a batch of one reproduces what the
certification campaign saw for it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from calib.rollout import failure_names, run_episodes
from calib.scenario import load_scenario, scenario_mission
from edge_agent.bundle import load_bundle
from edge_agent.errors import ConfigError
from edge_agent.policy import PolicyRunner


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's arguments."""
    parser.add_argument("bundle", type=Path, help="bundle folder")
    parser.add_argument("--scenarios", type=Path, required=True, help="the scenario file the campaign used")
    parser.add_argument("--seed", type=int, required=True, help="episode index K (printed by certify)")
    parser.add_argument("--no-shield", action="store_true", help="fly it unshielded (as certify --no-shield)")
    parser.add_argument("--out", type=Path, default=None, help="PNG path (default replay-K.png)")


def run(args: argparse.Namespace) -> int:
    """Fly the episode, print its outcome, write the plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if args.seed < 0:
        raise ConfigError(f"--seed must be an episode index >= 0, got {args.seed}")
    spec = load_scenario(args.scenarios)
    mission = scenario_mission(spec)
    bundle = load_bundle(args.bundle)
    res, tr = run_episodes(
        PolicyRunner(bundle),
        bundle.manifest,
        mission,
        spec,
        [args.seed],
        shield_enabled=not args.no_shield,
        trace=True,
    )
    assert tr is not None
    kind = int(res.failure_kind[0])
    outcome = (
        "FAILED (" + ", ".join(failure_names(kind)) + f") at {res.failure_time_s[0]:.2f} s"
        if res.failed[0]
        else "no failure"
    )
    print(
        f"episode {args.seed}: {outcome}; completed {bool(res.completed[0])}; duration {res.duration_s[0]:.2f} s; "
        f"min distance {float(res.min_distance_m[0]):.3f} m; fallback {bool(res.fallback_engaged[0])}"
    )
    geo = mission.geometry
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 5.5), gridspec_kw={"width_ratios": [1.2, 1]})
    v = np.vstack([geo.edge_a_ne, geo.edge_a_ne[:1]])
    ax.plot(v[:, 1], v[:, 0], "k-", lw=1.5, label="geofence")
    for c, r in zip(geo.cyl_center_ne, geo.cyl_radius_m, strict=True):
        ax.add_patch(plt.Circle((c[1], c[0]), r, color="tab:red", alpha=0.3))
    for lo, hi in zip(geo.box_lo_ne, geo.box_hi_ne, strict=True):
        ax.add_patch(plt.Rectangle((lo[1], lo[0]), hi[1] - lo[1], hi[0] - lo[0], color="tab:red", alpha=0.3))
    wp = np.asarray(mission.waypoints_ned_m)
    ax.plot(wp[:, 1], wp[:, 0], "g*", ms=12, label="waypoints")
    n_ticks = int(res.ticks[0])
    p = tr.pos_ned_m[:n_ticks, 0]
    ax.plot(p[:, 1], p[:, 0], "b-", lw=1.2, label="true path")
    layer = tr.layer[:n_ticks, 0]
    for lay, col, name in ((2, "orange", "barrier"), (3, "red", "fallback"), (1, "purple", "watchdog")):
        sel = layer == lay
        if sel.any():
            ax.plot(p[sel, 1], p[sel, 0], ".", color=col, ms=3, label=name)
    if res.failed[0]:
        ax.plot(p[-1, 1], p[-1, 0], "rx", ms=14, mew=3, label="failure")
    ax.set_xlabel("east (m)")
    ax.set_ylabel("north (m)")
    ax.set_aspect("equal")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"episode {args.seed}: {outcome}")
    t = tr.t_s[:n_ticks]
    ax2.plot(t, -p[:, 2], label="altitude (m)")
    ax2.axhline(-geo.floor_down_m, color="k", ls="--", lw=1)
    ax2.axhline(-geo.ceiling_down_m, color="k", ls="--", lw=1)
    ax2.plot(t, tr.margin_m[:n_ticks, 0], label="margin q_t (m)")
    ax2.plot(
        t, np.hypot(tr.setpoint[:n_ticks, 0, 0], tr.setpoint[:n_ticks, 0, 1]), label="|v_sp| horiz (m/s)"
    )
    ax2.set_xlabel("time (s)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    out = args.out or Path(f"replay-{args.seed}.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"plot: {out}")
    return 0
