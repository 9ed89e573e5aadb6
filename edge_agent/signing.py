"""Ed25519 signing and strict verification, on ``cryptography`` (OpenSSL).

The curve arithmetic is OpenSSL's, through ``cryptography``; what this module adds is the policy
RFC 8032 leaves to the caller and that OpenSSL does not apply by itself (libsodium's strict mode
does the same):

* lengths: a public key is 32 bytes, a signature 64; anything else is refused by name;
* small-order public keys are refused. OpenSSL verifies cofactorless, so with the identity as the
  public key the signature ``R = identity, S = 0`` verifies for *every* message (shown in
  ``tests/faults/test_signing.py``); a key of order 2, 4 or 8 is no key;
* a public key whose y coordinate is not reduced mod p (a non-canonical encoding) is refused;
* a signature whose R is a small-order point is refused;
* a signature whose S is not reduced mod L (S >= L, the malleability of RFC 8032 section 5.1.7)
  is refused before OpenSSL sees it (OpenSSL refuses it too; the check here names the reason).

Nothing here is curve arithmetic written by hand: the checks compare encodings and integers.
Importing this module loads OpenSSL (~12 ms, ~9 MiB RSS on the development machine); the
runtime imports it only when a drone is configured with a public key (see ``edge_agent.bundle``).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_BYTES = 32
"""Length of an Ed25519 secret key (the RFC 8032 seed) and of a public key."""
SIGNATURE_BYTES = 64
"""Length of an Ed25519 signature: R (32 bytes) then S (32 bytes, little-endian)."""

_P = 2**255 - 19
"""The field prime: a y coordinate must be below it."""
L = 2**252 + 27742317777372353535851937790883648493
"""The prime order of the base point: a signature's S must be below it."""

# The y coordinates of the eight points of order 1, 2, 4 and 8, as 32-byte little-endian
# encodings without the sign bit, including the non-canonical y = p and y = p + 1 (libsodium's
# ge25519_has_small_order list). Derived once by multiplying a curve point by L and enumerating
# its multiples; tests/faults/test_signing.py checks that every one is refused.
_SMALL_ORDER_Y = frozenset(
    bytes.fromhex(h)
    for h in (
        "0000000000000000000000000000000000000000000000000000000000000000",  # y = 0: order 4
        "0100000000000000000000000000000000000000000000000000000000000000",  # y = 1: identity
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p - 1: order 2
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p (≡ 0)
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p + 1 (≡ 1)
    )
)


def _without_sign_bit(encoding: bytes) -> bytes:
    return encoding[:31] + bytes([encoding[31] & 0x7F])


def is_small_order(encoding: bytes) -> bool:
    """Whether a 32-byte point encoding is one of the small-order points (either sign of x)."""
    return len(encoding) == KEY_BYTES and _without_sign_bit(encoding) in _SMALL_ORDER_Y


def public_key_of(secret: bytes) -> bytes:
    """The 32-byte public key of a 32-byte secret key (seed)."""
    return Ed25519PrivateKey.from_private_bytes(_secret_bytes(secret)).public_key().public_bytes_raw()


def sign(secret: bytes, message: bytes) -> bytes:
    """The 64-byte signature of ``message`` (pure Ed25519, RFC 8032; deterministic)."""
    return Ed25519PrivateKey.from_private_bytes(_secret_bytes(secret)).sign(message)


def _secret_bytes(secret: bytes) -> bytes:
    if len(secret) != KEY_BYTES:
        raise ValueError(f"an Ed25519 secret key is {KEY_BYTES} bytes, got {len(secret)}")
    return secret


def rejection(public: bytes, message: bytes, signature: bytes) -> str | None:
    """Why ``signature`` is not a valid strict signature of ``message`` under ``public``; None if it is.

    The reason is a phrase naming the defect (for an error message), checked in this order:
    public key length, encoding, small order; signature length, small-order R, S >= L; then the
    signature equation (OpenSSL).
    """
    if len(public) != KEY_BYTES:
        return f"the public key has {len(public)} bytes, not {KEY_BYTES}"
    if int.from_bytes(_without_sign_bit(public), "little") >= _P:
        return "the public key is not a canonical point encoding (its y coordinate is not below 2^255 - 19)"
    if is_small_order(public):
        return (
            "the public key is a small-order point (order 1, 2, 4 or 8), under which forged signatures "
            "verify; it is not a real key"
        )
    if len(signature) != SIGNATURE_BYTES:
        return f"the signature has {len(signature)} bytes, not {SIGNATURE_BYTES}"
    if is_small_order(signature[:32]):
        return "the signature's R is a small-order point; no honest signer produces one"
    if int.from_bytes(signature[32:], "little") >= L:
        return (
            "the signature's S is not reduced modulo the group order L (S >= L, a non-canonical, "
            "malleated signature)"
        )
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except InvalidSignature:
        return "the signature does not verify"
    except ValueError as exc:  # OpenSSL refuses to decode the point
        return f"the public key is not a point on the curve ({exc})"
    return None


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid strict Ed25519 signature (see :func:`rejection`)."""
    return rejection(public, message, signature) is None


__all__ = [
    "KEY_BYTES",
    "SIGNATURE_BYTES",
    "L",
    "is_small_order",
    "public_key_of",
    "rejection",
    "sign",
    "verify",
]
