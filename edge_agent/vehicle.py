"""Which vehicle a calibration (and so a certificate) is for, and whether it is the one flown.

The shield's margin and the certificate's bound hold for the vehicle they were measured on: our
emulator's X500, real PX4 SIH, an ArduCopter quad, ... are different vehicles with different
velocity responses (docs/safety.md, the PX4 breach). ``edge-agent calibrate`` records the
vehicle in the calibration; ``edge-agent run`` compares it with what the autopilot says about
itself (its HEARTBEAT and airframe parameters) and reports a mismatch before the policy flies.
The calibrator's live score stays the in-flight evidence either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from firmware_bridge.session import AIRFRAME_PARAMS as _BY_AUTOPILOT

AIRFRAME_PARAMS: dict[str, tuple[str, ...]] = {a.name: names for a, names in _BY_AUTOPILOT.items()}
"""Parameters that name the airframe, per autopilot (the session reads them at connect; our
emulator has none)."""


def identity(
    autopilot: str, params: Mapping[str, float] | None = None, *, emulator: bool = False
) -> dict[str, Any]:
    """The record a calibration keeps: autopilot family, airframe parameters, emulator or not."""
    family = autopilot.upper()
    params = params or {}
    airframe = {k: int(params[k]) for k in AIRFRAME_PARAMS.get(family, ()) if k in params}
    return {"autopilot": family, "airframe": airframe, "emulator": bool(emulator)}


def describe(ident: Mapping[str, Any]) -> str:
    """One line: 'PX4 (SYS_AUTOSTART 10040)', 'the PX4 emulator (sitl/)'."""
    if ident.get("emulator"):
        return f"the {ident.get('autopilot', '?')} emulator (sitl/)"
    frame = ", ".join(f"{k} {v}" for k, v in dict(ident.get("airframe") or {}).items())
    return f"{ident.get('autopilot', '?')}" + (f" ({frame})" if frame else "")


def mismatch(calibrated: Mapping[str, Any] | None, flown: Mapping[str, Any]) -> str | None:
    """Why the flown vehicle is not the calibrated one, or None when nothing says so.

    Different autopilot families differ; so do airframe parameters both sides know. A calibration
    made on the emulator does not cover a vehicle that reports an airframe (the emulator reports
    none, so that vehicle is real firmware)."""
    if not calibrated:
        return None
    if calibrated.get("autopilot") != flown.get("autopilot"):
        return f"calibrated on {describe(calibrated)}, flying {describe(flown)}"
    cal_frame, fly_frame = dict(calibrated.get("airframe") or {}), dict(flown.get("airframe") or {})
    if calibrated.get("emulator") and fly_frame:
        return f"calibrated on {describe(calibrated)}, flying real firmware: {describe(flown)}"
    differs = [k for k in cal_frame.keys() & fly_frame.keys() if cal_frame[k] != fly_frame[k]]
    if differs:
        return f"calibrated on {describe(calibrated)}, flying {describe(flown)}"
    return None
