"""``edge-agent bench``: latency, throughput and memory, side by side with the alternatives.

Sections (``--sections``, all by default; docs/benchmarks.md has the figures and how to read them):

* ``tick`` — the onboard tick (VehicleState → observation → onnxruntime → shield → nominal model
  → calibrator → encoded MAVLink setpoint) on a 2×64 MLP, interleaved call by call with a bare
  ``InferenceSession.run`` of the same model, its torch eager forward and a 2×64 SB3 PPO ``predict``.
* ``variants`` — the tick and bare onnxruntime for 2×64 / 2×256 MLPs and a 64-unit GRU, fp32 and int8.
* ``loop`` — ``edge-agent run`` against ``edge-agent sitl --flavor px4`` over a pty at each ``--rates``.
* ``startup`` — cold start to the first certified setpoint, its RSS and imported modules; ``import torch`` beside it.
* ``bridge`` — MAVLink encode / parse µs per message, ours and pymavlink's, and pty read-back rates.
* ``certify`` — certification vehicle-steps/s by batch size (``calib.rollout``), optionally on Ray.

JSON (``--json``), one object; every figure's unit is in its key:

* ``schema`` (1), ``command`` (argv), ``machine`` {cpu_model, cpus, load_avg_start, load_avg_end,
  python, numpy, onnxruntime, platform}, ``wall_s``.
* ``tick``: {tick, onnxruntime_run, torch_eager, sb3_predict: {p50_us, p99_us, p99_9_us, mean_us, n}
  (or {skipped: reason}), speed_clip_fraction, barrier_projection_fraction, shield_full_path_fraction (ticks the shield's
  batched path decided: the watchdog, an infeasible tick, the fallback), ratios: {tick_over_<alt>_p50}, model_bytes,
  stages: {state_arrays, observation, policy, shield, shadows, calibrator, encode, other, tick: percentiles}
  (a second, instrumented run of ticks/4 ticks with a clock around each stage; other = the tick less its stages)}.
* ``variants``: {variants: {<mlp_2x64|mlp_2x256|gru_64>_<fp32|int8>: {tick, onnxruntime_run, model_bytes}}}.
* ``loop``: {"<rate>": {rate_hz, duration_s, ticks, achieved_rate_hz, jitter_p99_us, tick_p50_us,
  tick_p99_us, deadline_misses, dropped_ticks, missed_fraction, inference_deadline_misses, overruns,
  telemetry_to_setpoint_p50_us, telemetry_to_setpoint_p99_us, rss_steady_mib, end_reason,
  realtime_priority (null, or the SCHED_FIFO priority of --loop-realtime-priority), spin_us (--loop-spin-us)}}.
* ``startup``: {cold_start_s (spawn → first setpoint, median of 3), cold_start_runs_s,
  cold_start_to_exit_s, import_s, load_to_first_setpoint_s, rss_at_first_setpoint_mib, modules,
  bytecode_written, [cold_start_bytecode_cached_s, import_bytecode_cached_s when the interpreter
  writes no bytecode], import_torch: {process_wall_s, import_s, rss_mib}, signed: {cold_start_s,
  cold_start_runs_s, load_to_first_setpoint_s, rss_at_first_setpoint_mib} (a signed copy of the
  bundle loaded with its public key, as `edge-agent run --public-key` starts)}.
* ``bridge``: {messages, encode_us_per_msg: {ours, pymavlink_send}, parse_us_per_msg: {ours,
  ours_4k_chunks, pymavlink_parse_buffer}, pty: {<reader>: {msg_per_s, us_per_msg, received, sent}}}.
* ``certify``: {scenario, episode_s, full_episode_s, control_rate_hz, physics_substeps,
  local: [{batch, wall_s, vehicle_steps_per_s, physics_steps_per_s, full_episodes_per_s, failures}],
  ray: {...} or {skipped}}.
* ``targets``: [{name, target, measured, met}] — issue 8's targets against this run's figures.

A section that cannot run here records ``{"skipped": reason}`` instead of failing the command.
``--plot PNG`` draws the run (``bench.plot``); ``--from-json FILE`` shows and draws a saved
run without measuring.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.errors import ConfigError

SECTIONS = ("tick", "variants", "loop", "startup", "bridge", "certify")
_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MISSION = _ROOT / "examples" / "missions" / "demo.toml"
DEFAULT_SCENARIO = _ROOT / "examples" / "scenarios" / "demo.toml"


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 1,64,4096, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,64,4096, got {text!r}")
    return values


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated rates like 250,1000, got {text!r}"
        ) from None
    if not values or not all(1.0 <= v <= 1000.0 for v in values):
        raise argparse.ArgumentTypeError(f"rates must lie in 1–1000 Hz, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``edge-agent bench``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n  edge-agent bench                      # everything, ~2-4 min\n"
        "  edge-agent bench --sections tick,bridge --json\n"
        "  edge-agent bench --loop-duration 2 --ticks 500 --batches 1,8   # a quick look\n"
        "  edge-agent bench --json > run.json && edge-agent bench --from-json run.json --plot run.png"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (keys: see the module doc)"
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)",
    )
    parser.add_argument(
        "--ticks", type=int, default=20_000, help="timed ticks for the headline tick (default %(default)s)"
    )
    parser.add_argument(
        "--bundle", type=Path, default=None, help="time this bundle instead of the built 2×64 MLP"
    )
    parser.add_argument(
        "--mission", type=Path, default=DEFAULT_MISSION, help="mission TOML (default: the demo)"
    )
    parser.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO, help="scenario TOML for certify")
    parser.add_argument(
        "--loop-duration", type=float, default=60.0, help="seconds flown per loop rate (default 60)"
    )
    parser.add_argument(
        "--loop-rates", type=_floats, default=[250.0, 1000.0], help="loop rates, Hz (default 250,1000)"
    )
    parser.add_argument(
        "--loop-realtime-priority",
        type=int,
        default=None,
        metavar="N",
        help="fly the loop section at SCHED_FIFO: the agent with `edge-agent run --realtime-priority N`, the SITL at N-1",
    )
    parser.add_argument(
        "--loop-spin-us",
        type=float,
        default=0.0,
        metavar="US",
        help="fly the loop section with `edge-agent run --spin-us US` (default 0: sleep only)",
    )
    parser.add_argument("--batches", type=_ints, default=[1, 16, 256, 1024, 4096], help="certify batch sizes")
    parser.add_argument(
        "--episode-s", type=float, default=2.0, help="episode length timed by certify (default 2 s)"
    )
    parser.add_argument(
        "--bridge-messages", type=int, default=20_000, help="messages per bridge run (default 20000)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="bridge runs, best kept (default 5)")
    parser.add_argument("--ray", action="store_true", help="also time certification on a local Ray instance")
    parser.add_argument("--no-sb3", action="store_true", help="skip the Stable-Baselines3 column")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="where built bundles go (default: a temp dir)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed of the simulated flights (default 0)"
    )
    parser.add_argument(
        "--plot", type=Path, default=None, metavar="PNG", help="also draw the run's figures to this PNG"
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        metavar="FILE",
        help="measure nothing: show (and --plot) a run saved with --json",
    )


def _check(args: argparse.Namespace) -> list[str]:
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        raise ConfigError(
            f"--sections {args.sections!r}: unknown {unknown}; choose from {','.join(SECTIONS)}"
        )
    if args.ticks < 10:
        raise ConfigError(f"--ticks {args.ticks} is too few for percentiles; give at least 10")
    if not args.loop_duration > 0 or not args.episode_s > 0:
        raise ConfigError("--loop-duration and --episode-s must be positive seconds")
    if args.bridge_messages < 4 or args.repeat < 1:
        raise ConfigError("--bridge-messages must be >= 4 and --repeat >= 1")
    for name in ("mission", "scenario"):
        path: Path = getattr(args, name)
        if not path.is_file():
            raise ConfigError(f"--{name} {path} does not exist; give the path of a {name} TOML")
    if args.bundle is not None and not (args.bundle / "manifest.json").is_file():
        raise ConfigError(
            f"--bundle {args.bundle} has no manifest.json; give a folder written by `edge-agent export`"
        )
    return sections


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import onnxruntime

    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "load_avg_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "platform": platform.platform(),
    }


def run_benchmarks(args: argparse.Namespace, sections: list[str]) -> dict[str, Any]:
    """Every requested section, in order; returns the JSON document."""
    from bench import skipped
    from edge_agent.mission import load_mission

    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="ea-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    mission = load_mission(args.mission)
    out: dict[str, Any] = {
        "schema": 1,
        "command": ["edge-agent", "bench", *sys.argv[2:]],
        "machine": machine(),
    }
    bundle: Path | None = args.bundle
    torch_module: Any = None
    needs_bundle = {"tick", "loop", "startup", "certify"} & set(sections)
    if bundle is None and needs_bundle:
        try:
            from bench.tick import export_variant

            bundle, torch_module = export_variant("mlp", 64, work / "mlp_2x64_fp32", False)
        except ImportError as exc:
            reason = f"no --bundle given and the exporter cannot build one here ({exc.name} not installed)"
            for s in needs_bundle:
                out[s] = skipped(reason)
            sections = [s for s in sections if s not in needs_bundle]

    if "tick" in sections:
        from bench.tick import measure_tick
        from edge_agent.bundle import load_bundle

        assert bundle is not None
        b = load_bundle(bundle)
        out["tick"] = measure_tick(
            b, mission, args.ticks, rng, torch_module=torch_module, sb3=not args.no_sb3
        )
        out["tick"]["model_bytes"] = len(b.model_bytes)
        from bench.tick import measure_stages

        out["tick"]["stages"] = measure_stages(b, mission, max(args.ticks // 4, 100), rng)
    if "variants" in sections:
        from bench.tick import measure_variants

        out["variants"] = measure_variants(mission, work, max(args.ticks // 4, 100), rng)
    if "loop" in sections:
        from bench.loop import measure_loop

        assert bundle is not None
        out["loop"] = {
            f"{r:g}": measure_loop(
                bundle,
                args.mission,
                r,
                args.loop_duration,
                realtime_priority=args.loop_realtime_priority,
                spin_us=args.loop_spin_us,
            )
            for r in args.loop_rates
        }
    if "startup" in sections:
        from bench.loop import measure_startup

        assert bundle is not None
        out["startup"] = measure_startup(bundle, args.mission)
    if "bridge" in sections:
        from bench.bridge import measure_bridge

        out["bridge"] = measure_bridge(args.bridge_messages, args.repeat, rng)
    if "certify" in sections:
        from bench.certify import measure_certification

        assert bundle is not None
        out["certify"] = measure_certification(
            bundle, args.scenario, args.batches, args.episode_s, ray=args.ray
        )
    out["machine"]["load_avg_end"] = list(os.getloadavg())
    out["targets"] = targets(out)
    out["wall_s"] = time.perf_counter() - started
    return out


def _get(doc: dict[str, Any], *path: str) -> float:
    node: Any = doc
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return math.nan
        node = node[key]
    return float(node) if isinstance(node, int | float) else math.nan


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 8's targets against the measured figures (NaN where the section did not run)."""
    tick50 = _get(doc, "tick", "tick", "p50_us")
    loop = doc.get("loop", {})
    k1: dict[str, Any] = (
        next((v for k, v in loop.items() if float(k) == 1000.0), {}) if isinstance(loop, dict) else {}
    )
    rss = [v.get("rss_steady_mib", math.nan) for v in loop.values()] if isinstance(loop, dict) else []
    cert = doc.get("certify", {}).get("local", []) if isinstance(doc.get("certify"), dict) else []
    rows = [
        ("tick p50 / SB3 predict p50", 0.3, tick50 / _get(doc, "tick", "sb3_predict", "p50_us"), "<="),
        (
            "tick p50 / onnxruntime run p50",
            5.0,
            tick50 / _get(doc, "tick", "onnxruntime_run", "p50_us"),
            "<=",
        ),
        ("tick p99 (µs)", 150.0, _get(doc, "tick", "tick", "p99_us"), "<="),
        ("1 kHz loop missed fraction", 0.001, float(k1.get("missed_fraction", math.nan)), "<="),
        ("runtime RSS (MiB)", 80.0, max(rss) if rss else math.nan, "<="),
        ("cold start (s)", 0.5, _get(doc, "startup", "cold_start_s"), "<="),
        # A "vehicle-step" read two ways (docs/benchmarks.md): one control tick of one vehicle (the
        # whole onboard tick and its physics substeps), or one physics step of one vehicle.
        (
            "certification vehicle-steps/s, one control tick each",
            200_000.0,
            max((r["vehicle_steps_per_s"] for r in cert), default=math.nan),
            ">=",
        ),
        (
            "certification vehicle-steps/s, one physics step each",
            200_000.0,
            max((r["physics_steps_per_s"] for r in cert), default=math.nan),
            ">=",
        ),
    ]
    out = []
    for name, target, measured, op in rows:
        met = (measured <= target) if op == "<=" else (measured >= target)
        out.append(
            {
                "name": name,
                "target": f"{op} {target:g}",
                "measured": measured,
                "met": bool(met) if not math.isnan(measured) else None,
            }
        )
    return out


def _p(d: Any) -> str:
    if not isinstance(d, dict) or "p50_us" not in d:
        return f"skipped: {d.get('skipped', '?')}" if isinstance(d, dict) else "-"
    return f"p50 {d['p50_us']:8.1f}  p99 {d['p99_us']:9.1f}  p99.9 {d['p99_9_us']:9.1f} µs"


def render_table(doc: dict[str, Any]) -> str:
    """The human-readable report."""
    m = doc["machine"]
    lines = [
        f"machine: {m['cpu_model']}, {m['cpus']} CPUs, load avg {m['load_avg_start'][0]:.2f} → "
        f"{m.get('load_avg_end', [math.nan])[0]:.2f}; python {m['python']}, onnxruntime {m['onnxruntime']}",
    ]
    if "tick" in doc:
        t = doc["tick"]
        lines.append("\n[1] tick latency (2×64 MLP, batch 1)")
        for key in ("tick", "onnxruntime_run", "torch_eager", "sb3_predict"):
            if key in t:
                lines.append(f"  {key:18s} {_p(t[key])}")
        for key, v in t.get("ratios", {}).items():
            lines.append(f"  {key:36s} {v:6.2f}")
        if "shield_full_path_fraction" in t:
            lines.append(
                f"  shield: speed clip on {100 * t['speed_clip_fraction']:.1f} % of ticks, barrier projection on "
                f"{100 * t.get('barrier_projection_fraction', 0.0):.1f} %, the batched path (watchdog, infeasible, "
                f"fallback) on {100 * t['shield_full_path_fraction']:.1f} %"
            )
        if "stages" in t:
            st = t["stages"]
            parts = ", ".join(f"{k} {v['p50_us']:.1f}" for k, v in st.items() if k != "tick")
            lines.append(
                f"  where it goes (p50 µs, instrumented run, whole tick {st['tick']['p50_us']:.1f}): {parts}"
            )
    if "variants" in doc:
        lines.append("\n[6] policy sizes (tick / bare onnxruntime)")
        for key, v in doc["variants"].get("variants", {}).items():
            lines.append(
                f"  {key:16s} tick {_p(v['tick'])}   ort p50 {v['onnxruntime_run']['p50_us']:.1f} µs  {v['model_bytes']} B"
            )
    if "loop" in doc:
        lines.append("\n[2] loop against the PX4 SITL over a pty")
        for key, v in doc["loop"].items():
            if "skipped" in v:
                lines.append(f"  {key} Hz: skipped: {v['skipped']}")
                continue
            lines.append(
                f"  {key:>5s} Hz: achieved {v['achieved_rate_hz']:7.1f} Hz, jitter p99 {v['jitter_p99_us']:8.0f} µs, "
                f"missed {v['deadline_misses']} + dropped {v['dropped_ticks']} ({100 * v['missed_fraction']:.2f} %), "
                f"telemetry→setpoint p50/p99 {v['telemetry_to_setpoint_p50_us']:.0f}/{v['telemetry_to_setpoint_p99_us']:.0f} µs, "
                f"RSS {v['rss_steady_mib']:.1f} MiB"
            )
    if "startup" in doc:
        s = doc["startup"]
        if "skipped" in s:
            lines.append(f"\n[3] start-up: skipped: {s['skipped']}")
        else:
            lines.append(
                f"\n[3] start-up: cold start {s['cold_start_s']:.3f} s (imports {s['import_s']:.3f} s; "
                f"to process exit {s['cold_start_to_exit_s']:.3f} s), "
                f"RSS {s['rss_at_first_setpoint_mib']:.1f} MiB, {len(s['modules'])} top-level modules"
            )
            if "cold_start_bytecode_cached_s" in s:
                lines.append(
                    f"  with bytecode cached (as pip installs it): cold start {s['cold_start_bytecode_cached_s']:.3f} s "
                    f"(imports {s['import_bytecode_cached_s']:.3f} s); this interpreter writes no bytecode"
                )
            sg = s.get("signed", {})
            if "cold_start_s" in sg:
                lines.append(
                    f"  signed bundle with --public-key: cold start {sg['cold_start_s']:.3f} s "
                    f"(bundle load to first setpoint {sg['load_to_first_setpoint_s']:.3f} s), "
                    f"RSS {sg['rss_at_first_setpoint_mib']:.1f} MiB"
                )
            tt = s.get("import_torch", {})
            if "rss_mib" in tt:
                lines.append(
                    f"  beside it, import torch alone: {tt['process_wall_s']:.2f} s, {tt['rss_mib']:.0f} MiB"
                )
    if "bridge" in doc:
        b = doc["bridge"]
        e, p = b["encode_us_per_msg"], b["parse_us_per_msg"]
        lines.append("\n[4] bridge (µs per message, best of runs)")
        lines.append(f"  encode  ours {e['ours']:.2f}   pymavlink MAVLink.send {e['pymavlink_send']:.2f}")
        lines.append(
            f"  parse   ours {p['ours']:.2f} (4 KiB chunks {p['ours_4k_chunks']:.2f})   pymavlink parse_buffer {p['pymavlink_parse_buffer']:.2f}"
        )
        for key, v in b.get("pty", {}).items():
            lines.append(f"  pty {key:30s} {v['msg_per_s']:9.0f} msg/s ({v['received']} of {v['sent']})")
    if "certify" in doc:
        c = doc["certify"]
        lines.append("\n[5] certification throughput")
        if "skipped" in c:
            lines.append(f"  skipped: {c['skipped']}")
        else:
            for r in c["local"]:
                lines.append(
                    f"  batch {r['batch']:5d}: {r['vehicle_steps_per_s']:10.0f} vehicle-steps/s, "
                    f"{r['full_episodes_per_s']:7.2f} full episodes/s ({c['full_episode_s']:g} s each)"
                )
            ray = c.get("ray", {})
            lines.append(
                f"  ray: {ray['vehicle_steps_per_s']:.0f} vehicle-steps/s"
                if "vehicle_steps_per_s" in ray
                else f"  ray: skipped: {ray.get('skipped')}"
            )
    lines.append("\ntargets (issue 8)")
    for t in doc["targets"]:
        mark = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        lines.append(f"  {t['name']:54s} {t['target']:>10s}   measured {t['measured']:12.4g}   {mark}")
    return "\n".join(lines)


def _load_run(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--from-json {path}: cannot read a bench run from it ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("schema") != 1 or "machine" not in doc:
        raise ConfigError(f"--from-json {path}: not the output of `edge-agent bench --json` (schema 1)")
    return doc


def run(args: argparse.Namespace) -> int:
    """Run the requested sections (or read a saved run); print the table or the JSON; plot."""
    doc = _load_run(args.from_json) if args.from_json is not None else run_benchmarks(args, _check(args))
    if args.json:
        print(json.dumps(doc, default=float))
    else:
        print(render_table(doc))
    if args.plot is not None:
        from bench.plot import plot

        print(f"figure written: {plot(doc, args.plot)}", file=sys.stderr)
    return 0
