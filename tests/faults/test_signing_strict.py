"""Strict Ed25519 verification (Wycheproof-style vectors), typed key files, `inspect --public-key`
and unlisted bundle files (issue 18 case 5, issue 19 item 1)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl import bindings as sodium
from nacl.exceptions import BadSignatureError

from edge_agent import signing
from edge_agent.bundle import SIGNATURE_NAME, load_bundle, sign_bundle, signature_status
from edge_agent.cli import main
from edge_agent.errors import BundleSignatureError, KeyFileError, UnlistedFileError
from edge_agent.keys import HEADERS, key_fingerprint, read_key, read_key_file
from edge_agent.sign_cli import upgrade_key

HERE = Path(__file__).resolve().parent
P = 2**255 - 19
L = signing.L
SECRET = bytes(range(32))
PUBLIC = signing.public_key_of(SECRET)
MSG = b"edge-agent bundle v1\x00" + b"0" * 64


def _enc(n: int) -> bytes:
    return n.to_bytes(32, "little")


# Every encoding of a point of order 1, 2, 4 or 8, both signs of x, canonical or not (y = p, p + 1).
SMALL_ORDER = [
    bytes.fromhex(h[:62] + f"{int(h[62:], 16) | sign:02x}")
    for h in (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    )
    for sign in (0x00, 0x80)
]


def test_openssl_alone_accepts_a_forgery_under_the_identity_key() -> None:
    # Why the small-order check exists: OpenSSL verifies cofactorless, so with the identity point
    # as public key, R = identity and S = 0 verify for any message. Our strict layer refuses it.
    identity = _enc(1)
    forged = identity + _enc(0)
    Ed25519PublicKey.from_public_bytes(identity).verify(forged, b"any message at all")  # no raise
    assert signing.rejection(identity, b"any message at all", forged) == (
        "the public key is a small-order point (order 1, 2, 4 or 8), under which forged signatures "
        "verify; it is not a real key"
    )
    assert not signing.verify(identity, b"any message at all", forged)


def test_libsodium_alone_refuses_the_forgery_that_openssl_accepts() -> None:
    # The library under signing.py is strict by itself: the layer above only names the reason.
    identity = _enc(1)
    with pytest.raises(BadSignatureError):
        sodium.crypto_sign_open(identity + _enc(0) + b"any message at all", identity)


@pytest.mark.parametrize("message", [b"", MSG, bytes(range(256)) * 9])
def test_signatures_agree_with_openssl_both_ways(message: bytes) -> None:
    # RFC 8032 signatures are deterministic: libsodium's and OpenSSL's are the same bytes, so a
    # bundle signed with either verifies with the other (a workstation may sign with OpenSSL).
    ours = signing.sign(SECRET, message)
    theirs = Ed25519PrivateKey.from_private_bytes(SECRET).sign(message)
    assert ours == theirs
    assert Ed25519PrivateKey.from_private_bytes(SECRET).public_key().public_bytes_raw() == PUBLIC
    Ed25519PublicKey.from_public_bytes(PUBLIC).verify(ours, message)  # no raise
    assert signing.rejection(PUBLIC, message, theirs) is None
    assert signing.rejection(PUBLIC, message + b"x", theirs) == "the signature does not verify"


def test_a_public_key_off_the_curve_is_named() -> None:
    # y = 2 has no x on edwards25519 (2^255 - 19 is prime, (y^2 - 1)/(d y^2 + 1) is no square)
    assert signing.rejection(_enc(2), MSG, signing.sign(SECRET, MSG)) == (
        "the public key is not a point of the curve's prime-order group (no x for its y, or a torsion part)"
    )


@pytest.mark.parametrize("key", SMALL_ORDER, ids=lambda k: k.hex()[:8] + "…" + k.hex()[-2:])
def test_every_small_order_public_key_is_refused(key: bytes) -> None:
    assert signing.is_small_order(key)
    reason = signing.rejection(key, MSG, signing.sign(SECRET, MSG))
    assert reason is not None and ("small-order" in reason or "not a canonical" in reason), reason


def test_each_listed_key_admits_forgeries_under_openssl_alone() -> None:
    # Cross-check of the list with OpenSSL's own arithmetic, no curve code here: under a key A of
    # order n | 8, the forgery (R = identity, S = 0) verifies whenever n divides the message's hash
    # h, so for 1 message in n. Each listed encoding gets a hit among 64 fixed messages; a real key
    # never does; and the strict layer refuses every one.
    forged = _enc(1) + _enc(0)
    for key in SMALL_ORDER:
        hits = 0
        for i in range(64):
            try:
                Ed25519PublicKey.from_public_bytes(key).verify(forged, b"m%d" % i)
                hits += 1
            except InvalidSignature:
                pass
            assert not signing.verify(key, b"m%d" % i, forged)
        assert hits > 0, key.hex()
    for i in range(64):
        assert not signing.verify(PUBLIC, b"m%d" % i, forged)
    assert not any(signing.is_small_order(signing.public_key_of(bytes([s]) * 32)) for s in range(100))


def test_non_canonical_s_is_refused() -> None:
    # RFC 8032 5.1.7 / Wycheproof "SignatureMalleability": S + L is the same signature mod L.
    sig = signing.sign(SECRET, MSG)
    assert signing.verify(PUBLIC, MSG, sig)
    s = int.from_bytes(sig[32:], "little")
    for bad_s in (s + L, L, 2**256 - 1):
        malleated = sig[:32] + bad_s.to_bytes(32, "little")
        assert signing.rejection(PUBLIC, MSG, malleated) == (
            "the signature's S is not reduced modulo the group order L (S >= L, a non-canonical, "
            "malleated signature)"
        )
    with pytest.raises(InvalidSignature):  # OpenSSL agrees; our check only names the reason first
        Ed25519PublicKey.from_public_bytes(PUBLIC).verify(sig[:32] + (s + L).to_bytes(32, "little"), MSG)


@pytest.mark.parametrize(
    ("r", "s"),
    [(r, s) for r in (0, 1, P) for s in (0, 1, L - 1, L, P)] + [(L, s) for s in (0, 1, L - 1, L, P)],
)
def test_special_values_of_r_and_s_are_refused(r: int, s: int) -> None:
    # Wycheproof eddsa_test "special values for r and s": R in {0, 1, p, L}, S in {0, 1, L-1, L, p}.
    sig = _enc(r) + s.to_bytes(32, "little")
    reason = signing.rejection(PUBLIC, b"\x3f", sig)
    assert reason is not None
    if r != L:  # 0, 1 and p encode small-order points
        assert reason == "the signature's R is a small-order point; no honest signer produces one"
    elif s >= L:
        assert reason.startswith("the signature's S is not reduced")
    else:
        assert reason == "the signature does not verify"


@pytest.mark.parametrize("length", [0, 32, 63, 65, 96, 128])
def test_wrong_length_signatures_are_refused(length: int) -> None:
    sig = (signing.sign(SECRET, MSG) * 2)[:length]
    assert signing.rejection(PUBLIC, MSG, sig) == f"the signature has {length} bytes, not 64"


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_wrong_length_public_keys_are_refused(length: int) -> None:
    assert signing.rejection((PUBLIC * 2)[:length], MSG, signing.sign(SECRET, MSG)) == (
        f"the public key has {length} bytes, not 32"
    )


@pytest.mark.parametrize("y", [P + 2, P + 7, 2**255 - 1])
def test_non_canonical_public_key_encodings_are_refused(y: int) -> None:
    assert signing.rejection(_enc(y), MSG, signing.sign(SECRET, MSG)) == (
        "the public key is not a canonical point encoding (its y coordinate is not below 2^255 - 19)"
    )


# --- through the bundle -------------------------------------------------------------------------


@pytest.fixture
def bundle(goal_seeker: Path, tmp_path: Path) -> Path:
    """A private copy of the goal-seeker bundle."""
    return Path(shutil.copytree(goal_seeker, tmp_path / "b"))


def _rewrite_signature(bundle: Path, signature: bytes) -> None:
    record = json.loads((bundle / SIGNATURE_NAME).read_text())
    record["signature"] = signature.hex()
    (bundle / SIGNATURE_NAME).write_text(json.dumps(record))


def test_bundle_with_malleated_signature_is_refused(bundle: Path) -> None:
    sign_bundle(bundle, SECRET)
    sig = bytes.fromhex(json.loads((bundle / SIGNATURE_NAME).read_text())["signature"])
    s = int.from_bytes(sig[32:], "little")
    _rewrite_signature(bundle, sig[:32] + (s + L).to_bytes(32, "little"))
    with pytest.raises(
        BundleSignatureError,
        match=re.escape(
            "the bundle signature is refused: the signature's S is not reduced modulo the group order L"
        ),
    ):
        load_bundle(bundle, public_key=PUBLIC)
    _rewrite_signature(bundle, sig[:63])
    with pytest.raises(
        BundleSignatureError,
        match=re.escape("the bundle signature is refused: the signature has 63 bytes, not 64"),
    ):
        load_bundle(bundle, public_key=PUBLIC)


def test_drone_configured_with_a_small_order_key_refuses_the_universal_forgery(bundle: Path) -> None:
    identity = _enc(1)
    sign_bundle(bundle, SECRET)  # a real signature file, then the forgery that OpenSSL would accept
    _rewrite_signature(bundle, identity + _enc(0))
    with pytest.raises(
        BundleSignatureError,
        match=re.escape(
            f"the configured public key {key_fingerprint(identity)} is refused: the public key is a "
            f"small-order point"
        ),
    ):
        load_bundle(bundle, public_key=identity)


# --- typed key files (issue 18 case 5) ----------------------------------------------------------


@pytest.fixture
def keypair(tmp_path: Path) -> Path:
    key = tmp_path / "keys" / "fleet"
    assert main(["sign", "--generate-key", str(key)]) == 0
    return key


def test_generated_key_files_are_typed(keypair: Path) -> None:
    assert keypair.read_text().splitlines()[0] == HEADERS["secret"] == "edge-agent ed25519 secret key v1"
    pub = Path(f"{keypair}.pub")
    assert pub.read_text().splitlines()[0] == HEADERS["public"] == "edge-agent ed25519 public key v1"
    assert signing.public_key_of(read_key(keypair, "secret")) == read_key(pub, "public")


def test_sign_with_the_public_key_is_refused(
    keypair: Path, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pub = f"{keypair}.pub"
    assert main(["sign", str(bundle), "--key", pub]) == 1
    assert (
        f"{pub!r} is a public key (its first line is 'edge-agent ed25519 public key v1'); signing needs the "
        f"secret key: pass the file without .pub" in capsys.readouterr().err
    )
    assert not (bundle / SIGNATURE_NAME).exists()


def test_run_with_a_secret_key_as_public_key_is_refused(
    keypair: Path, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(KeyFileError, match=re.escape(f"{str(keypair)!r} is a SECRET key")):
        read_key_file(keypair, what="public key")
    argv = ["run", "--bundle", str(bundle), "--mission", str(HERE / "faults.toml")]
    assert main([*argv, "--link", "udpin://127.0.0.1:0", "--public-key", str(keypair)]) == 1
    err = capsys.readouterr().err
    assert (
        f"{str(keypair)!r} is a SECRET key (its first line is 'edge-agent ed25519 secret key v1'); a drone "
        f"must hold only the public key: pass the .pub file" in err
    )


def test_untyped_key_files_are_refused_with_the_upgrade_command(
    tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old"
    old.write_text(SECRET.hex() + "\n")  # as edge-agent 0.1 wrote them
    Path(f"{old}.pub").write_text(PUBLIC.hex() + "\n")
    for path, kind in ((old, "secret"), (Path(f"{old}.pub"), "public")):
        with pytest.raises(
            KeyFileError,
            match=re.escape(
                f"{str(path)!r} holds an untyped key (64 hex digits without a header line, as edge-agent "
                f"0.1 wrote them), so it cannot be told whether it is the secret or the public key; convert "
                f"the pair with `edge-agent sign --upgrade-key SECRET_KEY`"
            ),
        ):
            read_key(path, kind)  # type: ignore[arg-type]
    assert main(["sign", "--upgrade-key", f"{old}.pub"]) == 1
    assert "ends in .pub, so it is the public half" in capsys.readouterr().err
    assert main(["sign", "--upgrade-key", str(old)]) == 0
    assert read_key(old, "secret") == SECRET and read_key(f"{old}.pub", "public") == PUBLIC
    assert (old.stat().st_mode & 0o777) == 0o600
    assert main(["sign", str(bundle), "--key", str(old)]) == 0
    load_bundle(bundle, public_key=read_key(f"{old}.pub", "public"))


def test_upgrade_refuses_a_pair_that_does_not_belong_together(tmp_path: Path) -> None:
    old = tmp_path / "mixed"
    old.write_text(SECRET.hex() + "\n")
    Path(f"{old}.pub").write_text(signing.public_key_of(bytes(32)).hex() + "\n")
    with pytest.raises(
        KeyFileError, match=re.escape(f"{str(old)!r} and {str(old) + '.pub'!r} do not belong together")
    ):
        upgrade_key(old)
    assert old.read_text() == SECRET.hex() + "\n"  # nothing rewritten


# --- inspect --public-key --------------------------------------------------------------------------


def test_inspect_shows_and_verifies_the_signature(
    keypair: Path, bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pub = f"{keypair}.pub"
    fp = key_fingerprint(read_key(pub, "public"))
    assert main(["inspect", str(bundle)]) == 0
    assert "signature: unsigned\n" in capsys.readouterr().out
    assert main(["inspect", str(bundle), "--public-key", pub]) == 1
    assert "signature: unsigned\n  bundle " in capsys.readouterr().out
    assert main(["sign", str(bundle), "--key", str(keypair)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(bundle)]) == 0
    assert f"signature: signed, not verified, key {fp}\n" in capsys.readouterr().out
    assert main(["inspect", str(bundle), "--public-key", pub]) == 0
    assert f"signature: valid, key {fp}\n  verified with public key {fp}" in capsys.readouterr().out
    other = tmp_path / "other"
    assert main(["sign", "--generate-key", str(other)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(bundle), "--public-key", f"{other}.pub", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["signature"]["state"] == "invalid" and doc["signature"]["signer"] == fp
    assert "does not verify with the configured public key" in doc["signature"]["detail"]
    assert doc["manifest"]["manifest_sha256"] == load_bundle(bundle).manifest.manifest_sha256
    assert main(["inspect", str(bundle), "--public-key", str(keypair)]) == 1  # a secret key: refused
    assert "is a SECRET key" in capsys.readouterr().err
    assert signature_status(bundle, read_key(pub, "public")).state == "valid"


# --- files the manifest does not list ---------------------------------------------------------


def test_unlisted_files_are_refused_by_load_inspect_and_run(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (bundle / "policy_v2.onnx").write_bytes(b"not covered by any hash")
    (bundle / "extra").mkdir()
    (bundle / "extra" / "notes.txt").write_text("fly me")
    expected = (
        f"bundle {str(bundle)!r} holds 2 file(s) its manifest does not list, so no hash covers them: "
        f"'extra/notes.txt', 'policy_v2.onnx'; delete them"
    )
    with pytest.raises(UnlistedFileError, match=re.escape(expected)):
        load_bundle(bundle)
    assert main(["inspect", str(bundle)]) == 1
    assert expected in capsys.readouterr().err
    argv = ["run", "--bundle", str(bundle), "--mission", str(HERE / "faults.toml")]
    assert main([*argv, "--link", "udpin://127.0.0.1:0"]) == 1
    assert expected in capsys.readouterr().err
    shutil.rmtree(bundle / "extra")
    (bundle / "policy_v2.onnx").unlink()
    sign_bundle(bundle, SECRET)  # signature.json is the one unlisted file a bundle may carry
    load_bundle(bundle, public_key=PUBLIC)


def test_libsodium_is_loaded_only_when_a_drone_checks_signatures() -> None:
    # Cold start and RSS of an unsigned flight do not pay for libsodium (docs/benchmarks.md), and a
    # signed one never loads OpenSSL (9 MiB of RSS; `cryptography` is only the tests' cross-check).
    import subprocess
    import sys

    probe = (
        "import sys, edge_agent.run_cli, edge_agent.bundle as b; print('nacl' in sys.modules); "
        "b.ed25519_verify(bytes(32), b'', bytes(64)); print('nacl' in sys.modules, 'cryptography' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "False"]
