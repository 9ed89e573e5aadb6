"""A bundle's signature file: Ed25519 over the sealed manifest digest (which covers every file's SHA-256).

``signature.json`` holds the algorithm, the digest it signs, the signer's public key (a claim,
for display) and the signature. The primitives are :mod:`edge_agent.signing` (PyNaCl's libsodium
with strict checks); that module is imported inside the functions here, not at the top, because
it loads libsodium (~1 MiB of RSS), which a drone flying without ``--public-key`` never
needs (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge_agent.errors import BundleSignatureError
from edge_agent.keys import key_fingerprint

SIGNATURE_NAME = "signature.json"
"""The optional Ed25519 signature's file name inside a bundle folder (the one file not listed in ``files``)."""
SIGNATURE_CONTEXT = b"edge-agent bundle v1\x00"
"""Prefix of the signed message, so a bundle signature can never be replayed as another artifact's."""

SignatureState = Literal["unsigned", "signed, not verified", "valid", "invalid"]
"""What :func:`signature_status` found."""


@dataclass(frozen=True, slots=True)
class SignatureStatus:
    """The state of a bundle's signature, as ``edge-agent inspect`` shows it."""

    state: SignatureState
    signer: str | None
    """Fingerprint of the public key the signature file names (untrusted until ``state == 'valid'``)."""
    detail: str
    """One sentence: what was checked, or why it failed and the fix."""


def ed25519_public_key(secret: bytes) -> bytes:
    """The 32-byte public key of a 32-byte Ed25519 secret key (seed)."""
    from edge_agent import signing

    if len(secret) != signing.KEY_BYTES:
        raise BundleSignatureError(f"an ed25519 secret key is 32 bytes, got {len(secret)}")
    return signing.public_key_of(secret)


def ed25519_sign(secret: bytes, message: bytes) -> bytes:
    """The 64-byte Ed25519 signature of ``message`` (RFC 8032, pure Ed25519)."""
    from edge_agent import signing

    if len(secret) != signing.KEY_BYTES:
        raise BundleSignatureError(f"an ed25519 secret key is 32 bytes, got {len(secret)}")
    return signing.sign(secret, message)


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid strict Ed25519 signature (see :func:`edge_agent.signing.rejection`)."""
    from edge_agent import signing

    return signing.verify(public, message, signature)


def _signed_message(manifest_sha256: str) -> bytes:
    return SIGNATURE_CONTEXT + manifest_sha256.encode("ascii")


def write_signature(bundle_dir: Path, manifest_sha256: str, secret: bytes) -> Path:
    """Write ``signature.json`` (atomically) signing ``manifest_sha256``; returns its path.

    Call it through :func:`edge_agent.bundle.sign_bundle`, which verifies the bundle first.
    """
    public = ed25519_public_key(secret)
    record = {
        "algorithm": "ed25519",
        "manifest_sha256": manifest_sha256,
        "public_key": public.hex(),
        "signature": ed25519_sign(secret, _signed_message(manifest_sha256)).hex(),
    }
    out = bundle_dir / SIGNATURE_NAME
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, out)
    return out


def _read_signature(bundle_dir: Path) -> tuple[str, str, bytes] | None:
    """(algorithm, signed digest, signature bytes) from ``signature.json``; None when there is none."""
    sig_path = bundle_dir / SIGNATURE_NAME
    if not sig_path.is_file():
        return None
    try:
        record = json.loads(sig_path.read_bytes())
        algorithm = record["algorithm"]
        signed_digest = record["manifest_sha256"]
        signature = bytes.fromhex(record["signature"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise BundleSignatureError(
            f"{sig_path} is not a bundle signature ({type(exc).__name__}: {exc}); sign the bundle again "
            f"with `edge-agent sign`"
        ) from exc
    if algorithm != "ed25519" or not isinstance(signed_digest, str):
        raise BundleSignatureError(
            f"{sig_path} uses algorithm {algorithm!r}; this runtime verifies 'ed25519' only: sign the "
            f"bundle again with `edge-agent sign`"
        )
    return algorithm, signed_digest, signature


def _signer(bundle_dir: Path) -> str | None:
    """Fingerprint of the public key ``signature.json`` names, if it names a readable one."""
    try:
        named = json.loads((bundle_dir / SIGNATURE_NAME).read_bytes()).get("public_key")
        return key_fingerprint(bytes.fromhex(named)) if isinstance(named, str) else None
    except (OSError, ValueError, AttributeError, UnicodeDecodeError):
        return None


def check_signature(bundle_dir: Path, digest: str, public_key: bytes) -> None:
    """Check 5 of ``load_bundle`` (only with a public key): the signature verifies over ``digest``.

    ``digest`` is the manifest's verified self-hash; raises :class:`BundleSignatureError` naming the
    defect and the fix.
    """
    from edge_agent import signing

    if len(public_key) != signing.KEY_BYTES:
        raise BundleSignatureError(
            f"the configured public key has {len(public_key)} bytes, not 32; pass the .pub file "
            f"written by `edge-agent sign --generate-key`"
        )
    fp = key_fingerprint(public_key)
    found = _read_signature(bundle_dir)
    if found is None:
        raise BundleSignatureError(
            f"bundle {str(bundle_dir)!r} is not signed, and this drone only flies bundles signed by key "
            f"{fp}: sign it on the workstation with `edge-agent sign {bundle_dir} --key SECRET_KEY`"
        )
    _algorithm, signed_digest, signature = found
    if signed_digest != digest:
        raise BundleSignatureError(
            f"the manifest changed after the bundle was signed (signed {signed_digest[:16]}…, now "
            f"{digest[:16]}…): sign it again after `edge-agent calibrate` or any re-seal"
        )
    reason = signing.rejection(public_key, _signed_message(digest), signature)
    if reason is None:
        return
    if reason.startswith("the public key"):
        raise BundleSignatureError(
            f"the configured public key {fp} is refused: {reason}; make a new pair with "
            f"`edge-agent sign --generate-key PATH` and give the drone PATH.pub"
        )
    if reason == "the signature does not verify":
        raise BundleSignatureError(
            f"the bundle signature does not verify with the configured public key {fp}: the bundle was "
            f"signed with another key or the signature was altered; sign it with the key whose public "
            f"half this drone holds"
        )
    raise BundleSignatureError(
        f"the bundle signature is refused: {reason}; the signature file was altered: sign the bundle "
        f"again with `edge-agent sign`"
    )


def read_signature_status(bundle_dir: Path, digest: str, public_key: bytes | None) -> SignatureStatus:
    """The state of the signature over ``digest`` in ``bundle_dir``, without raising for a bad one."""
    signer = _signer(bundle_dir)
    if public_key is None:
        try:
            found = _read_signature(bundle_dir)
        except BundleSignatureError as exc:
            return SignatureStatus("invalid", signer, str(exc))
        if found is None:
            return SignatureStatus("unsigned", None, f"no {SIGNATURE_NAME}; sign it with `edge-agent sign`")
        if found[1] != digest:
            return SignatureStatus(
                "invalid", signer, "the manifest changed after the bundle was signed: sign it again"
            )
        return SignatureStatus(
            "signed, not verified",
            signer,
            f"signature.json names key {signer}; pass --public-key KEY.pub to verify it",
        )
    try:
        check_signature(bundle_dir, digest, public_key)
    except BundleSignatureError as exc:
        unsigned = not (bundle_dir / SIGNATURE_NAME).is_file()
        return SignatureStatus("unsigned" if unsigned else "invalid", signer, str(exc))
    fp = key_fingerprint(public_key)
    return SignatureStatus("valid", fp, f"verified with public key {fp}")


__all__ = [
    "SIGNATURE_CONTEXT",
    "SIGNATURE_NAME",
    "SignatureState",
    "SignatureStatus",
    "check_signature",
    "ed25519_public_key",
    "ed25519_sign",
    "ed25519_verify",
    "read_signature_status",
    "write_signature",
]
