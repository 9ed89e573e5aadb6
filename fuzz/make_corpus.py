"""Write the seed corpus of every fuzz target into fuzz/corpus/ (run once; the result is committed).

    .venv/bin/python -m fuzz.make_corpus --bundle /tmp/bundles/goal_seeker

Seeds are real traffic and real files: a second of the PX4 and ArduPilot SITL's MAVLink output
(signed and unsigned), the custom-firmware SITL's frames, the example missions, a short flight
log, and the scripted goal-seeker bundle (copied to corpus/bundle_base, which the bundle target
mutates; its seeds are mutation programs).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.flightlog import FlightLog, LogLimits
from fuzz.targets import BASE_BUNDLE, CORPUS

REPO = Path(__file__).resolve().parent.parent


def _sitl_bytes(flavor: str, seconds: float, **kw: object) -> bytes:
    from sitl.sim import Sim

    sim = Sim(1, rng=np.random.default_rng(0))
    vehicle: Any
    if flavor == "custom":
        from sitl.custom_vehicle import make_custom_vehicle

        vehicle = make_custom_vehicle(sim, params={}, ready_delay_s=None)
    else:
        from sitl.mavlink_vehicle import make_vehicle

        vehicle = make_vehicle(sim, flavor, fast_boot=True, **kw)  # type: ignore[arg-type]  # kw: signing options
    out = bytearray()
    for k in range(1, int(seconds / 0.004)):
        out += vehicle.step(k * 0.004)
    return bytes(out)


def _write(target: str, name: str, data: bytes) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def main() -> int:
    """Command-line entry."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, help="the scripted goal-seeker bundle folder")
    args = p.parse_args()

    for flavor in ("px4", "ardupilot"):
        traffic = _sitl_bytes(flavor, 1.0)
        _write("mavlink", f"{flavor}-1s", traffic[:4096])
        signed = _sitl_bytes(flavor, 0.5, signing_key=b"\x01" * 32, signing_epoch_s=1.7e9)
        _write("mavlink", f"{flavor}-signed", signed[:2048])
    _write("mavlink", "empty", b"")
    custom = _sitl_bytes("custom", 1.0)
    _write("custom", "custom-1s", custom[:4096])
    _write("custom", "empty", b"")

    for mission in ("examples/missions/demo.toml", "tests/faults/faults.toml"):
        _write("mission", Path(mission).stem, (REPO / mission).read_bytes())
    _write("mission", "empty", b"")

    tmp = CORPUS / "_log.eal"
    with FlightLog(tmp, {"bundle": "b", "rate_hz": 50.0}, LogLimits()) as log:
        log.event(0.0, "connected", mode="POSCTL")
        for k in range(5):
            log.write({"k": "tick", "t_s": k * 0.02, "pos_ned_m": [0.0, 1.0, -5.0], "layer": 0})
        log.event(0.1, "finish", reason="test")
    _write("flightlog", "short", tmp.read_bytes())
    tmp.unlink()
    _write("flightlog", "empty", b"")

    if BASE_BUNDLE.exists():
        shutil.rmtree(BASE_BUNDLE)
    shutil.copytree(args.bundle, BASE_BUNDLE)
    for mode in range(3):
        _write("bundle", f"mode{mode}-noop", bytes([mode]))
    _write("bundle", "mode0-manifest", b"\x00" + (BASE_BUNDLE / "manifest.json").read_bytes())
    _write("bundle", "mode1-edits", bytes([1, 5, 0, 3, 40, 0, 9, 100, 0, 12]))
    _write("bundle", "mode2-flips", bytes([2, 200, 0, 1, 100, 3, 255]))
    print(f"corpus written under {CORPUS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
