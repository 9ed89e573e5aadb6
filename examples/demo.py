"""``make demo``: the whole product, end to end, on the built-in simulator, in a few minutes.

    python -m examples.demo [--out out/demo] [--episodes-calibrate 300] [--episodes-certify 400]

Steps, each one the real command a user would type (shown as it runs):

1. export the example policy to a bundle, parity-checked (the trained PPO checkpoint in
   examples/policy/ when it is there, else the scripted goal-seeker);
2. ``edge-agent calibrate``: conformal margin from simulated scenario episodes;
3. ``edge-agent certify``: N simulated episodes, failures k, the bound ε(k, N, β);
4. ``edge-agent sitl``: the simulator as a PX4 flight controller on a pty serial port, gusty wind;
5. ``edge-agent run``: the bundle flies the demo mission over MAVLink, shield on;
6. ``edge-agent report``: summary and HTML report of that flight;
7. the same flight with ``--no-shield``, and a report comparing the two.

A step whose tool fails stops only the steps that need its result; the demo says loudly which
steps failed and exits non-zero. Nothing is faked.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from firmware_bridge.exitcodes import FLIGHT_OUTCOMES

ROOT = Path(__file__).resolve().parent.parent
POLICY_DIR = ROOT / "examples" / "policy"
MISSION = ROOT / "examples" / "missions" / "demo.toml"
SCENARIOS = ROOT / "examples" / "scenarios" / "demo.toml"
READY = re.compile(r"ready: connect to (\S+)")


@dataclass(frozen=True, slots=True)
class Args:
    """Settings of one demo run (the defaults are what ``make demo`` uses)."""

    out: Path = ROOT / "out" / "demo"
    """Folder for the bundle, flight logs and reports (wiped at the start)."""
    episodes_calibrate: int = 240
    """Calibration episodes n (plus a third as many held out for the coverage check)."""
    episodes_certify: int = 300
    """Certification episodes N: modest, so the demo stays within minutes."""
    beta: float = 0.05
    """Certification confidence 1 − β."""
    wind_ned_m_s: str = "2,-3,0"
    """Steady wind for the two flights, N,E,D m/s."""
    gust_m_s: float = 1.5
    """Gust intensity (std, m/s) for the two flights."""
    seed: int = 7
    """Simulator seed: both flights see the same wind and gusts."""
    flight_timeout_s: float = 120.0
    """Wall-clock limit of one flight, start-up included."""


class StepFailed(RuntimeError):
    """A demo step's command failed; the message says which command and how."""


def edge_agent_cmd(*args: str) -> list[str]:
    """The ``edge-agent`` command line, through this interpreter (works without the script on PATH)."""
    return [sys.executable, "-m", "edge_agent.cli", *args]


def shown(cmd: Sequence[str]) -> str:
    """A command as the user would type it."""
    parts = list(cmd)
    if parts[:3] == [sys.executable, "-m", "edge_agent.cli"]:
        parts = ["edge-agent", *parts[3:]]
    elif parts[:2] == [sys.executable, "-m"]:
        parts = ["python", "-m", *parts[2:]]
    return " ".join(_rel(p) for p in parts)


def _rel(p: str) -> str:
    try:
        return str(Path(p).relative_to(ROOT)) if p.startswith(str(ROOT)) else p
    except ValueError:
        return p


def run_command(cmd: Sequence[str], *, timeout_s: float, echo: bool = True) -> str:
    """Run a command with its output streamed to the terminal (progress bars included); return stdout.

    Raises StepFailed with the exit status and the last lines of output when it fails.
    """
    print(f"  $ {shown(cmd)}", flush=True)
    proc = subprocess.Popen(
        list(cmd), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
    )
    out: list[str] = []
    err: list[str] = []

    def pump(stream: IO[str], sink: list[str], to: IO[str]) -> None:
        # Byte-wise so tqdm's carriage-return redraws reach the terminal as they happen.
        while chunk := stream.read(1):
            sink.append(chunk)
            if echo:
                to.write(chunk)
                to.flush()

    threads = [
        threading.Thread(target=pump, args=(proc.stdout, out, sys.stdout), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, err, sys.stderr), daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise StepFailed(f"`{shown(cmd)}` did not finish within {timeout_s:.0f} s") from None
    for t in threads:
        t.join(timeout=5)
    stdout, stderr = "".join(out), "".join(err)
    if rc != 0:
        tail = "\n".join((stdout + stderr).strip().splitlines()[-6:])
        raise StepFailed(f"`{shown(cmd)}` exited with status {rc}:\n{tail}")
    return stdout


# ---------------------------------------------------------------------------------------------
# The simulator as a flight controller


class SitlProcess:
    """``edge-agent sitl`` in its own process on a pty, as a flight controller on a serial port."""

    def __init__(self, *, wind: str, gust_m_s: float, seed: int, ready_timeout_s: float = 30.0) -> None:
        self.cmd = edge_agent_cmd(
            "sitl",
            "--flavor",
            "px4",
            "--link",
            "pty://",
            "--wind",
            wind,
            "--gust",
            f"{gust_m_s:g}",
            "--seed",
            str(seed),
        )
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,  # Ctrl-C in the terminal reaches the demo, which stops it cleanly
        )
        self.url = self._wait_ready(ready_timeout_s)

    def _wait_ready(self, timeout_s: float) -> str:
        assert self.proc.stdout is not None
        found: list[str] = []
        lines: list[str] = []

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                lines.append(line.rstrip())
                m = READY.search(line)
                if m:
                    found.append(m.group(1))
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout_s)
        if not found:
            self.stop()
            tail = "\n".join(lines[-6:]) or "(no output)"
            raise StepFailed(
                f"the simulator did not report ready within {timeout_s:.0f} s (`{shown(self.cmd)}`):\n{tail}"
            )
        # Keep draining its output so a chatty simulator never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.proc.stdout or ()], daemon=True).start()
        return found[0]

    def stop(self) -> None:
        """Stop the simulator (SIGINT, as Ctrl-C would; then SIGKILL if it lingers)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> SitlProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# Steps


@dataclass
class Demo:
    """The state the steps share: settings, paths and what each step found."""

    args: Args
    results: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    bundle: Path | None = None
    logs: dict[str, Path] = field(default_factory=dict)
    summaries: dict[str, Any] = field(default_factory=dict)
    """calib.report.FlightSummary of each reported flight."""

    @property
    def out(self) -> Path:
        """The output folder."""
        return self.args.out


def trained_checkpoint() -> Path | None:
    """The trained example checkpoint, if examples/train.py's output is in the repository."""
    model = POLICY_DIR / "model.zip"
    return model if model.is_file() else None


def step_export(demo: Demo) -> str:
    """Export the example policy to a parity-checked bundle."""
    bundle = demo.out / "bundle"
    model = trained_checkpoint()
    if model is not None:
        cmd = edge_agent_cmd(
            "export",
            "--spec",
            str(POLICY_DIR / "spec.toml"),
            "--sb3",
            str(model),
            "--algo",
            _algo(),
            "--out",
            str(bundle),
            "--force",
        )
        vecnorm = POLICY_DIR / "vecnormalize.pkl"
        if vecnorm.is_file():
            cmd += ["--vecnormalize", str(vecnorm)]
        out = run_command(cmd, timeout_s=300)
        what = f"trained policy {_rel(str(model))}"
    else:
        print("  (no trained checkpoint at examples/policy/model.zip yet: using the scripted goal-seeker)")
        scripted = demo.out / "scripted"
        out = run_command(
            [sys.executable, "-m", "examples.scripted_policies", "--out", str(scripted)], timeout_s=300
        )
        shutil.copytree(scripted / "goal_seeker", bundle)
        what = "scripted goal-seeker (a P-controller exported like any policy)"
    demo.bundle = bundle
    parity = re.findall(r"parity[^\n]*", out)
    return f"{what} → {_rel(str(bundle))}" + (f"; {parity[0]}" if parity else "")


def _algo() -> str:
    """SB3 algorithm of the example checkpoint, as examples/policy/README.md states it (PPO by default)."""
    readme = POLICY_DIR / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    m = re.search(r"--algo\s+(ppo|sac|td3)", text)
    return m.group(1) if m else "ppo"


def step_calibrate(demo: Demo) -> str:
    """Conformal calibration of the bundle's margin from simulated episodes."""
    bundle = _need_bundle(demo)
    n = demo.args.episodes_calibrate
    out = run_command(
        edge_agent_cmd(
            "calibrate",
            str(bundle),
            "--scenarios",
            str(SCENARIOS),
            "--episodes",
            str(n),
            "--holdout",
            str(max(1, n // 3)),
        ),
        timeout_s=900,
    )
    q = re.search(r"quantile q̂ = ([0-9.]+) m", out)
    cov = re.search(r"held-out empirical coverage ([0-9.]+) on \d+ scores: (\w+) (\[[0-9., ]+\])", out)
    return f"margin q̂ = {q.group(1) if q else '?'} m from {n} episodes" + (
        f"; held-out coverage {cov.group(1)}, {cov.group(2)} {cov.group(3)} (the 5–95 % band of a correct"
        " calibration at target 0.90)"
        if cov
        else ""
    )


def step_certify(demo: Demo) -> str:
    """Monte-Carlo certification: N episodes, k failures, the bound ε(k, N, β)."""
    bundle = _need_bundle(demo)
    out = run_command(
        edge_agent_cmd(
            "certify",
            str(bundle),
            "--scenarios",
            str(SCENARIOS),
            "--episodes",
            str(demo.args.episodes_certify),
            "--beta",
            f"{demo.args.beta:g}",
            "--results",
            str(demo.out / "certify.json"),
            "--progress-file",
            str(demo.out / "certify.progress.jsonl"),
        ),
        timeout_s=1200,
    )
    line = re.search(r"ε\(k, N, β\) = ([0-9.eE+-]+)", out)
    k = re.search(r"failures k = (\d+)", out)
    return (
        f"N = {demo.args.episodes_certify} episodes, k = {k.group(1) if k else '?'} failures: "
        f"P(failure) ≤ ε = {line.group(1) if line else '?'} with confidence {1 - demo.args.beta:g}"
    )


def _need_bundle(demo: Demo) -> Path:
    if demo.bundle is None:
        raise StepFailed("needs the bundle from step 1, which failed")
    return demo.bundle


def fly(demo: Demo, name: str, *, shield: bool) -> dict[str, Any]:
    """Start a fresh simulator, fly the demo mission against it, return `edge-agent run`'s summary."""
    bundle = _need_bundle(demo)
    log = demo.out / f"flight_{name}.eal"
    a = demo.args
    print(f"  starting the simulator (PX4 flavour, wind {a.wind_ned_m_s} m/s, gusts {a.gust_m_s:g} m/s) ...")
    with SitlProcess(wind=a.wind_ned_m_s, gust_m_s=a.gust_m_s, seed=a.seed) as sitl:
        print(f"  simulator ready: a flight controller on {sitl.url}")
        cmd = edge_agent_cmd(
            "run",
            "--bundle",
            str(bundle),
            "--mission",
            str(MISSION),
            "--link",
            sitl.url,
            "--log",
            str(log),
            "--max-duration",
            "90",
            "--json",
        )
        if not shield:
            cmd.append("--no-shield")
        out = _run_with_flight_progress(cmd, log, timeout_s=a.flight_timeout_s)
    demo.logs[name] = log
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        raise StepFailed(f"`{shown(cmd)}` printed no JSON summary:\n{out[-500:]}")
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


def _run_with_flight_progress(cmd: list[str], log: Path, *, timeout_s: float) -> str:
    """Run `edge-agent run`, showing a progress bar of the flight read live from its log."""
    print(f"  $ {shown(cmd)}", flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    bar = tqdm(total=None, unit="tick", bar_format="  flight [{elapsed}] {desc}")
    bar.set_description_str("connecting, arming, taking off ...")
    start = time.monotonic()
    try:
        while proc.poll() is None:
            if time.monotonic() - start > timeout_s:
                proc.send_signal(signal.SIGINT)  # the agent lands the vehicle on SIGINT
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                raise StepFailed(f"the flight did not end within {timeout_s:.0f} s")
            status = flight_status(log)
            if status:
                bar.set_description_str(status)
            bar.refresh()
            time.sleep(0.5)
    finally:
        bar.close()
    stdout, stderr = proc.communicate()
    for line in stderr.splitlines():
        print(f"  {line}")
    if proc.returncode not in FLIGHT_OUTCOMES:  # the unshielded flight may end by the fallback
        tail = "\n".join((stdout + stderr).strip().splitlines()[-6:])
        raise StepFailed(f"`{shown(cmd)}` exited with status {proc.returncode}:\n{tail}")
    return stdout


def flight_status(log: Path) -> str:
    """One line about a flight in progress, read from its (growing) log; '' before it starts."""
    from edge_agent.flightlog import FlightLogError, read_log

    if not log.exists():
        return ""
    last: dict[str, Any] | None = None
    n_wp, acted, ticks, shield = 0, 0, 0, True
    try:
        for rec in read_log(log):
            if rec["k"] == "header":
                n_wp = len(rec.get("mission", {}).get("waypoints_ned_m", ()))
                shield = bool(rec.get("shield_enabled", True))
            elif rec["k"] == "tick":
                last = rec
                ticks += 1
                # Unshielded, the log still says what the bypassed layers would have done.
                layer = int(rec.get("layer", 0))
                acted += int(layer > 0 if shield else layer == 1)
    except FlightLogError:
        return ""
    if last is None:
        return "in control, climbing ..."
    n, e, d = last["pos_ned_m"]
    return (
        f"t {last['t_s']:5.1f} s · waypoint {int(last['goal']) + 1}/{n_wp} · "
        f"N {n:6.1f} E {e:6.1f} alt {-d:5.1f} m · margin {last['margin_m']:.2f} m · shield acted on {acted}/{ticks} ticks"
    )


def step_flight(demo: Demo, name: str, *, shield: bool) -> str:
    """Fly and describe the flight in one line."""
    s = fly(demo, name, shield=shield)
    acted = sum(s.get("interventions", {}).values())
    why = ", ".join(
        f"{k.lower()} {v}" for k, v in sorted(s.get("reasons", {}).items(), key=lambda kv: -kv[1])
    )
    return (
        f"{s.get('end_reason')}; {s.get('ticks')} ticks in {s.get('duration_s', 0):.1f} s; "
        f"shield acted on {acted} ticks{f' ({why})' if why else ''}; "
        f"tick p50/p99 {s.get('tick_latency_us_p50', 0):.0f}/{s.get('tick_latency_us_p99', 0):.0f} µs"
    )


def step_report(demo: Demo, name: str, compare: str | None = None) -> str:
    """Write a report with `edge-agent report` and print its table of figures."""
    from calib.report import load_flight, summarize

    if name not in demo.logs or (compare is not None and compare not in demo.logs):
        raise StepFailed("needs the flight log(s) of the flight step(s), which failed")
    out_dir = demo.out / (f"report_{name}" if compare is None else "report_compare")
    cmd = edge_agent_cmd("report", str(demo.logs[name]), "--out", str(out_dir))
    if compare is not None:
        cmd += ["--compare", str(demo.logs[compare])]
    run_command(cmd, timeout_s=300, echo=False)
    if compare is None:
        demo.summaries[name] = summarize(load_flight(demo.logs[name]))
        print_summary(demo.summaries[name])
    return f"report written: {_rel(str(out_dir / 'report.html'))}"


def print_summary(s: Any) -> None:
    """The table of figures of one flight, for the terminal."""
    rows = [
        ("mission", "complete" if s.mission_complete else f"NOT complete ({s.end_reason})"),
        (
            "breaches",
            f"{s.breaches}" + ("" if s.breaches == 0 else "  <-- the vehicle entered a forbidden region"),
        ),
        (
            "shield interventions",
            ", ".join(f"{k} {v}" for k, v in s.interventions_by_layer.items()) + f" (of {s.ticks} ticks)",
        ),
    ]
    for c in s.constraints:
        flag = "" if c.breach_ticks == 0 else f"  BREACHED {c.breaches}x"
        rows.append((f"closest to {c.name}", f"{c.min_distance_m:6.2f} m{flag}"))
    cov = "n/a" if s.coverage != s.coverage else f"{s.coverage:.3f}"
    rows.append(("margin coverage", f"{cov} (target {s.target_coverage:.2f})"))
    if s.certificate:
        rows.append(
            ("certified bound", f"ε = {float(s.certificate['epsilon']):.3g} at β = {s.certificate['beta']}")
        )
    rows.append(
        (
            "latency p50/p99",
            f"{s.tick_us_p50:.0f}/{s.tick_us_p99:.0f} µs, {s.deadline_misses} deadline misses",
        )
    )
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"    {k:<{width}}  {v}")


# ---------------------------------------------------------------------------------------------
# Orchestration


@dataclass(frozen=True, slots=True)
class Step:
    """One numbered step of the demo."""

    title: str
    explain: str
    action: Callable[[Demo], str]


def steps() -> tuple[Step, ...]:
    """The demo's steps, in order."""
    return (
        Step(
            "Export the example policy to a bundle",
            "ONNX + manifest; the exporter replays 10,000 observations through torch and ONNX (parity check).",
            step_export,
        ),
        Step(
            "Calibrate the safety margin",
            "Fly simulated episodes under random wind, gusts, payload and motor faults; the margin is the "
            "conformal quantile of how far the vehicle strays from what the shield's model predicts.",
            step_calibrate,
        ),
        Step(
            "Certify the shielded policy",
            "Fly N more random episodes with the shield on and count failures (breach, crash, timeout); "
            "Clopper–Pearson turns k of N into a failure-probability bound.",
            step_certify,
        ),
        Step(
            "Fly the mission with the shield ON",
            "The simulator runs as a PX4 flight controller on a serial port (pty); `edge-agent run` speaks "
            "MAVLink to it, takes off, switches to OFFBOARD and flies the waypoints past a mast and a building.",
            lambda d: step_flight(d, "shielded", shield=True),
        ),
        Step(
            "Report on the shielded flight",
            "Distances to every constraint recomputed from the logged positions; figures in an HTML page.",
            lambda d: step_report(d, "shielded"),
        ),
        Step(
            "Fly the same mission with the shield OFF (--no-shield)",
            "Same simulator seed, same wind: only the barrier and fallback layers are bypassed.",
            lambda d: step_flight(d, "unshielded", shield=False),
        ),
        Step(
            "Report: unshielded flight, and both side by side",
            "",
            lambda d: step_report(d, "unshielded") + "; " + step_report(d, "shielded", compare="unshielded"),
        ),
    )


def conclusions(demo: Demo) -> list[str]:
    """What the demo showed, in plain words, from the steps that ran."""
    out: list[str] = []
    for title, result in demo.results.items():
        if title.startswith(("Calibrate", "Certify")):
            out.append(f"{title.split()[0].lower()}: {result}")
    on, off = demo.summaries.get("shielded"), demo.summaries.get("unshielded")
    if on is not None:
        done = "completed the mission" if on.mission_complete else f"did not complete ({on.end_reason})"
        out.append(
            f"shield ON: {done} with {on.breaches} breaches; closest approach "
            f"{min(c.min_distance_m for c in on.constraints):.2f} m"
        )
    if off is not None:
        worst = min(off.constraints, key=lambda c: c.min_distance_m)
        out.append(
            f"shield OFF: {off.breaches} breach{'es' if off.breaches > 1 else ''}; worst "
            f"{-worst.min_distance_m:.2f} m inside {worst.name}"
            if off.breaches
            else "shield OFF: no breach this time (gusts are random); the report still shows how close it came"
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run every step, say what each showed, and exit non-zero if any failed."""
    defaults = Args()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=defaults.out, help="output folder (default out/demo)")
    p.add_argument("--episodes-calibrate", type=int, default=defaults.episodes_calibrate)
    p.add_argument("--episodes-certify", type=int, default=defaults.episodes_certify)
    ns = p.parse_args(argv)
    if ns.episodes_calibrate < 10 or ns.episodes_certify < 1:
        p.error("--episodes-calibrate must be ≥ 10 and --episodes-certify ≥ 1")
    args = Args(
        out=ns.out.resolve(), episodes_calibrate=ns.episodes_calibrate, episodes_certify=ns.episodes_certify
    )
    return run_demo(args)


def run_demo(args: Args, only: Sequence[int] | None = None) -> int:
    """Run the steps (all, or the 1-based indices in ``only``); returns the exit status."""
    marker = args.out / ".edge-agent-demo"
    if args.out.exists() and any(args.out.iterdir()):
        if not marker.is_file():
            # Never wipe a folder this demo did not make.
            print(
                f"demo: {args.out} exists and was not made by the demo; choose another --out or remove it",
                file=sys.stderr,
            )
            return 2
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    marker.write_text("written by python -m examples.demo; wiped on its next run\n", encoding="utf-8")
    demo = Demo(args)
    all_steps = steps()
    chosen = [i for i in range(1, len(all_steps) + 1) if only is None or i in only]
    t_all = time.monotonic()
    print("edge-agent demo: a policy exported, calibrated, certified and flown on a simulated PX4 drone.")
    print(f"Everything it writes goes to {_rel(str(args.out))}/\n")
    for i in chosen:
        step = all_steps[i - 1]
        print(f"[{i}/{len(all_steps)}] {step.title}")
        if step.explain:
            print(f"  {step.explain}")
        t0 = time.monotonic()
        try:
            result = step.action(demo)
        except StepFailed as exc:
            demo.failed[step.title] = str(exc)
            print(f"  !! FAILED after {time.monotonic() - t0:.1f} s: {exc}\n", flush=True)
            continue
        demo.results[step.title] = result
        print(f"  -> {result}  ({time.monotonic() - t0:.1f} s)\n", flush=True)
    print(f"Done in {time.monotonic() - t_all:.0f} s.")
    for line in conclusions(demo):
        print(f"  * {line}")
    if (args.out / "report_compare" / "report.html").is_file():
        print(
            f"Open {_rel(str(args.out / 'report_compare' / 'report.html'))} in a browser to see both flights."
        )
    if demo.failed:
        print(f"\n{len(demo.failed)} step(s) FAILED:")
        for title, why in demo.failed.items():
            print(f"  - {title}: {why.splitlines()[0]}")
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
