"""Which of a bundle's stated guarantees still hold for the bundle as it is now.

A bundle states two guarantees after ``calib`` has run: the *calibration* (the conformal margin
the shield flies with: coverage 1 − α under the calibration's scenario or logs) and the
*certificate* (P(failure) ≤ ε with confidence 1 − β over the certified scenario). A guarantee
holds only for what it was computed on: a certificate records the SHA-256 of everything in the
manifest that changes how the bundle flies (``bundle_hash``: the graph's hashes, the contract and
the calibration, so a new margin voids it) and the digest of the calibration section it flew
with (``calibration_sha256``). Any change it does not cover makes it stale, and a stale
certificate is reported, never used: the runtime logs no ε for it and ``inspect`` says why.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge_agent.bundle import Manifest, canonical_json

_NOT_FLOWN = ("certificate", "manifest_sha256")
"""Manifest fields that do not change how the bundle flies (the certificate cannot cover itself)."""


def flight_body_sha256(raw: Mapping[str, Any]) -> str:
    """SHA-256 of everything in a manifest that changes how the bundle flies (all but the certificate)."""
    body = {k: v for k, v in raw.items() if k not in _NOT_FLOWN}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def calibration_sha256(calibration: Mapping[str, Any] | None) -> str:
    """Digest of a calibration section ("none" without one): what a certificate records it flew with."""
    if calibration is None:
        return "none"
    return hashlib.sha256(canonical_json(calibration)).hexdigest()


@dataclass(frozen=True, slots=True)
class Guarantees:
    """What a bundle's manifest states and whether it holds for this very bundle."""

    calibrated: bool
    """A calibration section is present: the shield's margin starts from a calibrated quantile."""
    certificate_present: bool
    certificate_holds: bool
    """The certificate covers this bundle exactly (its bundle_hash and calibration digest match)."""
    problems: tuple[str, ...]
    """Why a stated guarantee does not hold, each with the fix; empty when every one holds."""

    def lines(self) -> list[str]:
        """The guarantees as ``inspect`` prints them."""
        cal = (
            "present (the margin is calibrated)" if self.calibrated else "none (the margin is not calibrated)"
        )
        if not self.certificate_present:
            cert = "none (no failure bound is claimed)"
        elif self.certificate_holds:
            cert = "holds (it covers this bundle and this calibration)"
        else:
            cert = "STALE: does not hold for this bundle"
        return ["guarantees:", f"  calibration: {cal}", f"  certificate: {cert}"] + [
            f"    {p}" for p in self.problems
        ]


def certificate_problem(raw: Mapping[str, Any]) -> str | None:
    """Why the manifest's certificate does not hold for it (None if it holds or there is none)."""
    cert = raw.get("certificate")
    if not isinstance(cert, Mapping):
        return None
    fix = "re-run `edge-agent certify` on the bundle as it is now"
    recorded = cert.get("bundle_hash")
    if not isinstance(recorded, str):
        return f"the certificate does not record which bundle it was computed on (no bundle_hash); {fix}"
    cal_now = calibration_sha256(raw.get("calibration"))
    cal_then = cert.get("calibration_sha256")
    if isinstance(cal_then, str) and cal_then != cal_now:
        return (
            f"the calibration changed after certification (calibration digest {cal_now[:12]}, the "
            f"certificate's {cal_then[:12]}): its ε was computed with another margin; {fix}"
        )
    now = flight_body_sha256(raw)
    if recorded != now:
        return (
            f"the bundle changed after certification (bundle hash {now[:12]}, the certificate's "
            f"{recorded[:12]}): its ε describes another bundle; {fix}"
        )
    return None


def guarantees(manifest: Manifest) -> Guarantees:
    """The guarantees a verified bundle's manifest states, and which of them hold."""
    problem = certificate_problem(manifest.raw)
    present = manifest.certificate is not None
    return Guarantees(
        calibrated=manifest.calibration is not None,
        certificate_present=present,
        certificate_holds=present and problem is None,
        problems=() if problem is None else (f"certificate: {problem}",),
    )


def valid_certificate(manifest: Manifest) -> Mapping[str, Any] | None:
    """The certificate if it holds for this bundle, else None (what the runtime may report as ε)."""
    return manifest.certificate if guarantees(manifest).certificate_holds else None


__all__ = [
    "Guarantees",
    "calibration_sha256",
    "certificate_problem",
    "flight_body_sha256",
    "guarantees",
    "valid_certificate",
]
