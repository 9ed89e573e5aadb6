"""``edge-agent calibrate BUNDLE --scenarios S [--alpha 0.1] [--episodes n]`` (or ``--from-log PATH...``)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from calib.calibrate import (
    calibrate_scores,
    calibration_episodes,
    calibration_section,
    horizon_ticks_for,
    report,
)
from calib.certify import run_campaign
from calib.logs import scores_from_logs
from calib.rollout import EpisodeResults
from calib.scenario import load_scenario, scenario_hash, scenario_mission
from edge_agent.bundle import Bundle, load_bundle, write_manifest_section
from edge_agent.errors import CalibrationError, ConfigError
from edge_agent.flightlog import read_log
from edge_agent.vehicle import identity
from firmware_bridge.exitcodes import ExitCode, epilog_table

EPILOG = (
    "A new calibration changes the margin the shield flies with, so a certificate computed with the\n"
    "old one no longer describes the bundle: calibrating a certified bundle is refused unless\n"
    "--drop-certificate (the certificate is then removed; run `edge-agent certify` again).\n\n"
    + epilog_table((ExitCode.OK, ExitCode.ERROR, ExitCode.USAGE, ExitCode.SIGINT))
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's arguments."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("bundle", type=Path, help="bundle folder")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--scenarios", type=Path, help="scenario TOML file: calibrate from SITL episodes")
    src.add_argument(
        "--from-log", type=Path, nargs="+", help="flight logs (.eal, .tlog, .ulg); .tlogs are merged"
    )
    parser.add_argument(
        "--alpha", type=float, default=0.1, help="target miscoverage α, in (0, 1): 0.1 = 90 %% coverage"
    )
    parser.add_argument("--episodes", type=int, default=1000, help="n calibration episodes")
    parser.add_argument(
        "--holdout", type=int, default=None, help="held-out episodes for the coverage check (n/2)"
    )
    parser.add_argument("--batch", type=int, default=2048, help="vehicles flown side by side")
    parser.add_argument("--backend", choices=("local", "ray"), default="local")
    parser.add_argument("--dry-run", action="store_true", help="report only; do not write the bundle")
    parser.add_argument(
        "--drop-certificate",
        action="store_true",
        help="calibrate a certified bundle: remove its certificate, which the new margin voids",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def check_options(args: argparse.Namespace, bundle: Bundle) -> None:
    """Every option checked before any episode flies; ConfigError names the option and the fix."""
    alpha = args.alpha
    if not (math.isfinite(alpha) and 0.0 < alpha < 1.0):
        raise ConfigError(
            f"--alpha is the target miscoverage, a probability strictly between 0 and 1 (0.1 asks for "
            f"90 % coverage), got {alpha:g}"
        )
    if args.scenarios is not None:
        if not args.scenarios.is_file():
            raise ConfigError(
                f"scenario file {str(args.scenarios)!r} does not exist; pass a scenario TOML "
                f"(docs/certification.md), e.g. examples/scenarios/demo.toml"
            )
        n_min = math.ceil(1.0 / alpha - 1.0 - 1e-9)
        if args.episodes < max(1, n_min):
            raise ConfigError(
                f"--episodes {args.episodes} cannot support --alpha {alpha:g}: split conformal needs at "
                f"least {max(1, n_min)} calibration scores (rank ⌈(n+1)(1−α)⌉ ≤ n); raise --episodes "
                f"(default 1000) or --alpha"
            )
        if args.holdout is not None and args.holdout < 0:
            raise ConfigError(f"--holdout must be >= 0 (0: no coverage check), got {args.holdout}")
        if args.batch < 1:
            raise ConfigError(f"--batch is the number of vehicles flown side by side, >= 1; got {args.batch}")
    else:
        missing = [str(p) for p in args.from_log if not p.is_file()]
        if missing:
            raise ConfigError(f"flight log(s) {', '.join(map(repr, missing))} do not exist; check the paths")
    cert = bundle.manifest.certificate
    if cert is not None and not args.drop_certificate and not args.dry_run:
        raise ConfigError(
            f"{str(args.bundle)!r} is certified (ε = {cert.get('epsilon')}, N = {cert.get('n')}) with its "
            f"current calibration; a new calibration changes the margin the shield flies with, so that "
            f"certificate would no longer describe the bundle: pass --drop-certificate to calibrate anyway "
            f"(the certificate is removed; run `edge-agent certify` again), or calibrate a copy"
        )


def run(args: argparse.Namespace) -> int:
    """Collect scores, compute the quantile, print the report, write the calibration section."""
    bundle = load_bundle(args.bundle)
    check_options(args, bundle)
    h_ticks = horizon_ticks_for(bundle.manifest.control_rate_hz)
    if args.from_log:
        logs = scores_from_logs(args.from_log, h_ticks / bundle.manifest.control_rate_hz)
        s = logs.scores_m
        # Logs are time series: hold out the last third (later flight), calibrate on the rest.
        cut = max(1, (2 * s.size) // 3)
        result = calibrate_scores(s[:cut], s[cut:], args.alpha)
        source = "logs: " + "; ".join(logs.sources)
        s_hash = "n/a (flight logs)"
        vehicle = _vehicle_of_logs(args.from_log)
    else:
        spec = load_scenario(args.scenarios)
        holdout = args.episodes // 2 if args.holdout is None else args.holdout
        cal_ids, hold_ids = calibration_episodes(args.episodes, holdout)
        bar = tqdm(total=cal_ids.size + hold_ids.size, unit="ep", desc="calibrate", disable=args.quiet)

        def tick(res: EpisodeResults) -> None:
            bar.update(res.n)

        res = run_campaign(
            args.bundle,
            spec,
            np.concatenate([cal_ids, hold_ids]),
            batch=args.batch,
            backend=args.backend,
            on_chunk=tick,
        )
        bar.close()
        is_cal = np.isin(res.episode, cal_ids)
        try:
            result = calibrate_scores(res.score_m[is_cal], res.score_m[~is_cal], args.alpha)
        except CalibrationError as exc:
            raise CalibrationError(
                f"{exc} (from {args.episodes} calibration episodes; raise --episodes)"
            ) from exc
        source = f"sitl scenario {spec.name!r} ({args.scenarios})"
        s_hash = scenario_hash(spec)
        vehicle = identity(scenario_mission(spec).autopilot.flavour, emulator=True)
    print(report(result))
    section = calibration_section(result, h_ticks, s_hash, source, vehicle)
    if args.dry_run:
        print("dry run: bundle not changed")
    else:
        if bundle.manifest.certificate is not None:
            # Removed first: a crash between the two writes leaves no certificate, never a stale one.
            write_manifest_section(args.bundle, "certificate", None)
            print(
                f"certificate removed from {Path(args.bundle) / 'manifest.json'} (--drop-certificate): "
                f"it described the old margin; run `edge-agent certify` again for a bound"
            )
        write_manifest_section(args.bundle, "calibration", section)
        print(
            f"calibration written into {Path(args.bundle) / 'manifest.json'} (quantile_m {result.quantile_m:.4f})"
        )
    return 0


def _vehicle_of_logs(paths: list[Path]) -> dict[str, Any] | None:
    """The vehicle our own flight logs (.eal) were flown on, from their header; None if unknown."""
    for path in paths:
        if Path(path).suffix == ".eal":
            header = next(iter(read_log(path)), {})
            if header.get("k") == "header" and header.get("autopilot"):
                return identity(str(header["autopilot"]), header.get("params") or {})
    return None
