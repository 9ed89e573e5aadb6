"""``edge-agent inspect BUNDLE [--public-key KEY.pub]``: verify a bundle, then print its whole contract.

The last lines say which guarantee holds for the signature: ``unsigned``, ``signed, not
verified`` (no key given: who signed it is only a claim), ``valid`` or ``invalid`` (with the
reason). With ``--public-key`` the exit status is 1 unless the signature is valid, so a script
can check a bundle exactly as a drone started with that key would.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge_agent.bundle import GOLDEN_TOLERANCE, Bundle, SignatureStatus, load_bundle, signature_status
from edge_agent.guarantees import guarantees
from edge_agent.keys import read_key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``edge-agent inspect``."""
    parser.add_argument("bundle", type=Path, help="bundle folder (policy.onnx + manifest.json)")
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"manifest": the verified manifest, "signature": {state, signer, detail}} as JSON instead',
    )
    parser.add_argument(
        "--public-key",
        type=Path,
        metavar="KEY.pub",
        help="verify the bundle's signature with this public key (exit 1 unless it is valid)",
    )


def _fmt(values: Any) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in values) + "]"


def _section(title: str, data: Mapping[str, Any] | None, indent: str = "") -> list[str]:
    if data is None:
        return [f"{indent}{title}: none"]
    lines = [f"{indent}{title}:"]
    for key, value in data.items():
        if isinstance(value, Mapping):
            lines += _section(str(key), value, indent + "  ")
        else:
            text = json.dumps(value) if isinstance(value, list) else str(value)
            lines.append(f"{indent}  {key}: {text}")
    return lines


def render(bundle: Bundle, signature: SignatureStatus | None = None) -> str:
    """The contract of a verified bundle (and its signature's state, if given) as readable text."""
    m = bundle.manifest
    lines = [
        f"bundle {bundle.path}  (verified: hashes, io contract, golden replay ≤ {GOLDEN_TOLERANCE:g})",
        f"schema version {m.schema_version}, manifest sha256 {m.manifest_sha256}",
        f"control rate: {m.control_rate_hz:g} Hz",
        "",
        f"observation: {m.observation_size} values",
        f"  {'feature':<20} {'size':>4}  {'unit':<13} {'frame':<8} clip",
    ]
    for f in m.observation:
        lines.append(
            f"  {f.name:<20} {f.size:>4}  {f.unit:<13} {f.frame:<8} {_fmt(f.clip_lo)} .. {_fmt(f.clip_hi)}"
        )
    a = m.action
    lines += ["", f"action: {a.kind} ({a.size} values, physical units)"]
    for name, lo, hi in zip(a.names, a.low, a.high):
        lines.append(f"  {name:<22} [{float(lo):g}, {float(hi):g}]")
    lines.append("")
    if m.recurrent is None:
        lines.append("recurrent: no")
    else:
        lines.append(
            f"recurrent: {m.recurrent.cell}, state size {m.recurrent.state_size} (state_in → state_out)"
        )
    lines.append("io:")
    for role, specs in (("in ", m.inputs), ("out", m.outputs)):
        for s in specs:
            lines.append(f"  {role} {s.name:<10} {list(s.shape)} {s.dtype}")
    n_golden = next(iter(m.golden_inputs.values())).shape[0]
    lines += ["", f"golden samples: {n_golden}", "files:"]
    lines += [f"  {rel}  sha256 {digest}" for rel, digest in m.files.items()]
    lines += ["", *_section("producer", m.producer)]
    lines.append(
        f"parity: max |onnxruntime − framework| = {m.parity.max_abs_error:.3g} over {m.parity.n_samples} observations"
    )
    if m.quantization is None:
        lines.append("quantization: none (fp32)")
    else:
        q = m.quantization
        lines.append(
            f"quantization: {q.method}; max |q − fp32| = {q.max_abs_error_vs_fp32:.3g}, "
            f"mean {q.mean_abs_error_vs_fp32:.3g}"
        )
    lines += _section("calibration", m.calibration)
    lines += _section("certificate", m.certificate)
    if signature is not None:
        signer = "" if signature.signer is None else f", key {signature.signer}"
        lines += [f"signature: {signature.state}{signer}", f"  {signature.detail}"]
    lines += ["", *guarantees(m).lines()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``edge-agent inspect``."""
    public_key = None if args.public_key is None else read_key(args.public_key, "public")
    bundle = load_bundle(args.bundle)
    status = signature_status(bundle.path, public_key)
    if args.json:
        signature = {"state": status.state, "signer": status.signer, "detail": status.detail}
        print(json.dumps({"manifest": dict(bundle.manifest.raw), "signature": signature}, indent=2))
    else:
        print(render(bundle, status))
    return 0 if public_key is None or status.state == "valid" else 1
