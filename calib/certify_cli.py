"""``edge-agent certify BUNDLE --scenarios S --episodes N --beta B``: the Monte-Carlo certificate."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from tqdm import tqdm

from calib.certify import (
    CVAR_LEVEL,
    ProgressFile,
    bundle_calibration_sha256,
    bundle_hash,
    certificate_section,
    code_version,
    episode_range,
    run_campaign,
    summarize,
)
from calib.rollout import EpisodeResults
from calib.scenario import load_scenario, scenario_hash, thrust_to_weight_floor
from calib.stats import episodes_needed
from edge_agent.bundle import load_bundle, write_manifest_section
from edge_agent.errors import ConfigError
from firmware_bridge.exitcodes import ExitCode, epilog_table

EPILOG = epilog_table((ExitCode.OK, ExitCode.ERROR, ExitCode.USAGE, ExitCode.SIGINT))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's arguments."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("bundle", type=Path, help="bundle folder (made by `edge-agent export`)")
    parser.add_argument(
        "--scenarios", type=Path, required=True, help="scenario TOML file (docs/certification.md)"
    )
    parser.add_argument("--episodes", type=int, required=True, help="N, the number of episodes")
    parser.add_argument("--beta", type=float, default=1e-6, help="β: the bound holds with confidence 1 − β")
    parser.add_argument("--backend", choices=("local", "ray"), default="local")
    parser.add_argument("--batch", type=int, default=2048, help="vehicles flown side by side per chunk")
    parser.add_argument("--resume", action="store_true", help="continue from the progress file")
    parser.add_argument("--no-shield", action="store_true", help="certify the unshielded policy (comparison)")
    parser.add_argument(
        "--results", type=Path, default=None, help="JSON results file (default BUNDLE.certify.json)"
    )
    parser.add_argument(
        "--progress-file", type=Path, default=None, help="progress file (default next to BUNDLE)"
    )
    parser.add_argument(
        "--no-write", action="store_true", help="do not write the certificate into the bundle"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def check_options(args: argparse.Namespace) -> None:
    """Every option checked before any episode flies; ConfigError names the option and the fix."""
    if not (math.isfinite(args.beta) and 0.0 < args.beta < 1.0):
        raise ConfigError(
            f"--beta must lie strictly between 0 and 1 (the bound holds with confidence 1 − β; 1e-6 is "
            f"the default), got {args.beta:g}"
        )
    if args.episodes < 1:
        raise ConfigError(
            f"--episodes must be at least 1, got {args.episodes}; ε ≤ 1e-3 at β = {args.beta:g} needs "
            f"N ≥ {episodes_needed(1e-3, args.beta)} failure-free episodes"
        )
    if args.batch < 1:
        raise ConfigError(f"--batch is the number of vehicles flown side by side, >= 1; got {args.batch}")
    if not args.scenarios.is_file():
        raise ConfigError(
            f"scenario file {str(args.scenarios)!r} does not exist; pass a scenario TOML "
            f"(docs/certification.md), e.g. examples/scenarios/demo.toml"
        )


def run(args: argparse.Namespace) -> int:
    """Run the campaign, print the figures, write the certificate and the results file."""
    check_options(args)
    load_bundle(args.bundle)  # a bad bundle is named now, not after the first chunk
    spec = load_scenario(args.scenarios)
    s_hash, b_hash = scenario_hash(spec), bundle_hash(args.bundle)
    cal_hash = bundle_calibration_sha256(args.bundle)
    shield = not args.no_shield
    bundle = Path(args.bundle)
    key = {"scenario_hash": s_hash, "bundle_hash": b_hash, "shield_enabled": shield}
    progress_path = args.progress_file or bundle.parent / (
        f"{bundle.name}.certify-{s_hash[:12]}-{b_hash[:12]}{'' if shield else '-noshield'}.progress.jsonl"
    )
    episodes = episode_range(args.episodes)
    bar = tqdm(total=args.episodes, unit="ep", disable=args.quiet, desc="certify", smoothing=0.1)
    failures = 0

    def on_chunk(res: EpisodeResults) -> None:
        nonlocal failures
        failures += int(res.failed.sum())
        bar.update(res.n)
        bar.set_postfix(failures=failures)

    code = code_version()  # before flying: what the certificate describes is the code that flew
    t0 = time.perf_counter()
    res = run_campaign(
        bundle,
        spec,
        episodes,
        batch=args.batch,
        shield_enabled=shield,
        backend=args.backend,
        progress=ProgressFile(progress_path, key),
        resume=args.resume,
        on_chunk=on_chunk,
    )
    bar.close()
    wall = time.perf_counter() - t0
    summary = summarize(res, args.beta)
    ticks = int(res.ticks.sum())
    print(
        f"scenario {spec.name!r} (hash {s_hash[:12]}), bundle {b_hash[:12]}, shield {'on' if shield else 'OFF'}"
    )
    tw = thrust_to_weight_floor(spec)
    print(
        "envelope: thrust-to-weight >= "
        + ", ".join(f"{v:.2f} {k.replace('_', ' ')}" for k, v in tw.items())
        + " (the weakest draw: heaviest payload, weakest motors)"
    )
    print(f"episodes N = {summary.n}, failures k = {summary.k}, β = {summary.beta:g}")
    print(f"ε(k, N, β) = {summary.epsilon:.4g}  (P(failure) ≤ ε with confidence 1 − β)")
    if summary.k == 0:
        print(f"  (ε ≤ 1e-3 at this β needs N ≥ {episodes_needed(1e-3, args.beta)} failure-free episodes)")
    if summary.failures_by_kind:
        print(
            "failures by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.failures_by_kind.items()))
        )
    print(
        f"fallback engaged in {summary.fallback_rate:.2%} of episodes; mission completed in {summary.completion_rate:.2%}"
    )
    pct = ", ".join(f"{k} {v:.3f}" for k, v in summary.min_distance_percentiles_m.items())
    print(
        f"minimum distance to any constraint (m): {pct}; CVaR{CVAR_LEVEL:.0%} {summary.min_distance_cvar_m:.3f}"
    )
    if summary.failing_episodes:
        seeds = " ".join(map(str, summary.failing_episodes[:20]))
        more = f" (+{len(summary.failing_episodes) - 20} more)" if len(summary.failing_episodes) > 20 else ""
        print(
            f"failing episodes (replay with `edge-agent replay {bundle} --scenarios {args.scenarios} --seed K`): {seeds}{more}"
        )
    print(f"wall {wall:.1f} s for the episodes flown now; {ticks} agent ticks in all")

    section = certificate_section(
        spec, summary, shield_enabled=shield, bundle_sha=b_hash, code=code, calibration_sha=cal_hash
    )
    results_path = args.results or bundle.parent / f"{bundle.name}.certify.json"
    results_path.write_text(
        json.dumps({"certificate": section, "wall_s": wall, "episodes": res.to_lists()}, indent=None) + "\n",
        encoding="utf-8",
    )
    print(f"results: {results_path}")
    if not args.no_write:
        if shield:
            write_manifest_section(bundle, "certificate", section)
            print(f"certificate written into {bundle / 'manifest.json'}")
        else:
            print(
                "unshielded campaign: no certificate written into the bundle (it would not describe how it flies)"
            )
    return 0
