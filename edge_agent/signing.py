"""Ed25519 signing and strict verification, on PyNaCl (libsodium).

The curve arithmetic is libsodium's, through PyNaCl's bindings; libsodium's
``crypto_sign_verify_detached`` is strict by itself (it refuses small-order and non-canonical
public keys, a small-order R and S >= L). This module checks the same conditions first, with
integers and encodings only, so that a refusal names its reason, and so that the policy does not
rest on one library's defaults (OpenSSL, for one, verifies cofactorless: under the identity point
as the public key ``R = identity, S = 0`` verifies for *every* message, shown in
``tests/faults/test_signing_strict.py``):

* lengths: a public key is 32 bytes, a signature 64; anything else is refused by name;
* small-order public keys are refused: a key of order 1, 2, 4 or 8 is no key;
* a public key whose y coordinate is not reduced mod p (a non-canonical encoding) is refused;
* a signature whose R is a small-order point is refused;
* a signature whose S is not reduced mod L (S >= L, the malleability of RFC 8032 section 5.1.7)
  is refused.

Signatures are RFC 8032's (deterministic), byte-equal to OpenSSL's for the same key and message
(a test checks both ways). Nothing here is curve arithmetic written by hand. Importing this
module loads libsodium (about 1 MiB of RSS; ``cryptography``'s OpenSSL was 9 MiB, which took a
signed start over the 80 MB target, docs/benchmarks.md); the runtime imports it only when a drone
is configured with a public key (see ``edge_agent.bundle``).
"""

from __future__ import annotations

from nacl import bindings as sodium
from nacl.exceptions import BadSignatureError
from nacl.exceptions import ValueError as SodiumValueError

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
    public, _ = sodium.crypto_sign_seed_keypair(_secret_bytes(secret))
    return public


def sign(secret: bytes, message: bytes) -> bytes:
    """The 64-byte signature of ``message`` (pure Ed25519, RFC 8032; deterministic)."""
    _, expanded = sodium.crypto_sign_seed_keypair(_secret_bytes(secret))
    return sodium.crypto_sign(message, expanded)[:SIGNATURE_BYTES]  # signed message = signature || message


def _secret_bytes(secret: bytes) -> bytes:
    if len(secret) != KEY_BYTES:
        raise ValueError(f"an Ed25519 secret key is {KEY_BYTES} bytes, got {len(secret)}")
    return secret


def rejection(public: bytes, message: bytes, signature: bytes) -> str | None:
    """Why ``signature`` is not a valid strict signature of ``message`` under ``public``; None if it is.

    The reason is a phrase naming the defect (for an error message), checked in this order:
    public key length, encoding, small order; signature length, small-order R, S >= L; then the
    signature equation (libsodium).
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
        sodium.crypto_sign_open(signature + message, public)
    except BadSignatureError:
        # libsodium does not say why; what is left after the checks above is a wrong signature or
        # a public key that is no point on the curve (y has no x): tell the two apart for the message
        if not _decodes(public):
            return "the public key is not a point of the curve's prime-order group (no x for its y, or a torsion part)"
        return "the signature does not verify"
    except SodiumValueError as exc:
        return f"the signature could not be checked ({exc})"
    return None


def _decodes(public: bytes) -> bool:
    """Whether libsodium decodes ``public`` as a point of the prime-order group (its conversion to
    X25519 decodes the point and checks the subgroup)."""
    try:
        sodium.crypto_sign_ed25519_pk_to_curve25519(public)
    except (SodiumValueError, RuntimeError):
        return False
    return True


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
