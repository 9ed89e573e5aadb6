"""Bundle signing (Ed25519 on PyNaCl, libsodium), typed key files, and MAVLink signing end to end with the SITL."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from fault_world import World

from edge_agent.bundle import (
    SIGNATURE_NAME,
    ed25519_public_key,
    ed25519_sign,
    ed25519_verify,
    key_fingerprint,
    load_bundle,
    read_key_file,
    sign_bundle,
    write_manifest_section,
)
from edge_agent.cli import main
from edge_agent.errors import ActivationError, BundleSignatureError, ConfigError
from edge_agent.loop import Runtime
from edge_agent.loop_config import LoopConfig
from edge_agent.mission import load_mission
from edge_agent.run_cli import open_flight_link, parse_signing_key
from firmware_bridge.links import ReconnectingLink
from firmware_bridge.mavlink_codec import SigningConfig
from firmware_bridge.session import SessionConfig

HERE = Path(__file__).resolve().parent

# RFC 8032 section 7.1, tests 1-3: (secret, public, message, signature).
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032)
def test_ed25519_matches_rfc8032_vectors(secret: str, public: str, message: str, signature: str) -> None:
    sk, pk, msg, sig = (bytes.fromhex(x) for x in (secret, public, message, signature))
    assert ed25519_public_key(sk) == pk
    assert ed25519_sign(sk, msg) == sig
    assert ed25519_verify(pk, msg, sig)
    assert not ed25519_verify(pk, msg + b"x", sig)
    for i in (0, 31, 32, 63):  # a flipped bit in R or in S
        bad = bytearray(sig)
        bad[i] ^= 0x01
        assert not ed25519_verify(pk, msg, bytes(bad))
    assert not ed25519_verify(pk, msg, sig[:63])


SECRET = bytes(range(32))
OTHER = bytes(range(1, 33))


@pytest.fixture
def bundle(goal_seeker: Path, tmp_path: Path) -> Path:
    """A private copy of the goal-seeker bundle."""
    return Path(shutil.copytree(goal_seeker, tmp_path / "b"))


def test_signed_bundle_loads_with_its_public_key(bundle: Path) -> None:
    sig = sign_bundle(bundle, SECRET)
    assert sig == bundle / SIGNATURE_NAME
    loaded = load_bundle(bundle, public_key=ed25519_public_key(SECRET))
    assert json.loads(sig.read_text())["manifest_sha256"] == loaded.manifest.manifest_sha256
    load_bundle(bundle)  # a drone without a key still loads it (hashes verified as always)


def test_unsigned_bundle_is_refused_by_a_keyed_drone(bundle: Path) -> None:
    fp = key_fingerprint(ed25519_public_key(SECRET))
    with pytest.raises(
        BundleSignatureError,
        match=re.escape(
            f"bundle {str(bundle)!r} is not signed, and this drone only flies bundles signed by key {fp}: "
            f"sign it on the workstation with `edge-agent sign {bundle} --key SECRET_KEY`"
        ),
    ):
        load_bundle(bundle, public_key=ed25519_public_key(SECRET))


def test_bundle_signed_with_another_key_is_refused(bundle: Path) -> None:
    sign_bundle(bundle, OTHER)
    fp = key_fingerprint(ed25519_public_key(SECRET))
    with pytest.raises(
        BundleSignatureError,
        match=re.escape(f"the bundle signature does not verify with the configured public key {fp}"),
    ):
        load_bundle(bundle, public_key=ed25519_public_key(SECRET))


def test_copied_signature_with_forged_digest_is_refused(bundle: Path) -> None:
    # An attacker edits the signature file to claim the current digest without the secret key.
    sign_bundle(bundle, SECRET)
    write_manifest_section(bundle, "certificate", {"epsilon": 1e-9})  # re-seal: new digest
    record = json.loads((bundle / SIGNATURE_NAME).read_text())
    with pytest.raises(
        BundleSignatureError, match=re.escape("the manifest changed after the bundle was signed")
    ):
        load_bundle(bundle, public_key=ed25519_public_key(SECRET))
    record["manifest_sha256"] = load_bundle(bundle).manifest.manifest_sha256
    (bundle / SIGNATURE_NAME).write_text(json.dumps(record))
    with pytest.raises(
        BundleSignatureError, match=re.escape("does not verify with the configured public key")
    ):
        load_bundle(bundle, public_key=ed25519_public_key(SECRET))


def test_garbled_signature_file_and_key_files_are_named(bundle: Path, tmp_path: Path) -> None:
    (bundle / SIGNATURE_NAME).write_text("{not json")
    with pytest.raises(
        BundleSignatureError, match=re.escape("signature.json is not a bundle signature (JSONDecodeError")
    ):
        load_bundle(bundle, public_key=ed25519_public_key(SECRET))
    (bundle / SIGNATURE_NAME).write_text(
        json.dumps({"algorithm": "rsa", "manifest_sha256": "x", "signature": ""})
    )
    with pytest.raises(
        BundleSignatureError, match=re.escape("uses algorithm 'rsa'; this runtime verifies 'ed25519' only")
    ):
        load_bundle(bundle, public_key=ed25519_public_key(SECRET))
    short = tmp_path / "short.pub"
    short.write_text("edge-agent ed25519 public key v1\nabcd\n")
    with pytest.raises(
        BundleSignatureError, match=re.escape(f"the public key in {str(short)!r} has 2 bytes, not 32")
    ):
        read_key_file(short, what="public key")
    with pytest.raises(BundleSignatureError, match=re.escape("cannot read the public key from")):
        read_key_file(tmp_path / "missing.pub", what="public key")


def test_sign_and_run_commands(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "keys" / "fleet"
    assert main(["sign", "--generate-key", str(key)]) == 0
    assert (key.stat().st_mode & 0o777) == 0o600
    assert main(["sign", "--generate-key", str(key)]) == 1
    assert "already exists" in capsys.readouterr().err
    # `run` refuses an unsigned bundle before it opens any link.
    argv = [
        "run",
        "--bundle",
        str(bundle),
        "--mission",
        str(HERE / "faults.toml"),
        "--link",
        "udpin://127.0.0.1:0",
    ]
    assert main([*argv, "--public-key", f"{key}.pub"]) == 1
    assert "is not signed, and this drone only flies bundles signed by key" in capsys.readouterr().err
    assert main(["sign", str(bundle), "--key", str(key)]) == 0
    load_bundle(bundle, public_key=read_key_file(f"{key}.pub", what="public key"))
    assert main(["sign", str(bundle)]) == 1
    assert "needs a bundle folder and --key SECRET_KEY" in capsys.readouterr().err


def test_run_option_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("--signing-key must be 64 hex digits (a 32-byte key)")):
        parse_signing_key("abc", "mavlink")
    with pytest.raises(ConfigError, match=re.escape("--signing-key applies to MAVLink")):
        parse_signing_key("00" * 32, "custom")
    assert parse_signing_key("11" * 32, "mavlink") == SigningConfig(b"\x11" * 32)
    with pytest.raises(ConfigError, match=re.escape(f"cannot open --link 'serial://{tmp_path}/nope':")):
        open_flight_link(f"serial://{tmp_path}/nope")


def _signed_flight(tmp_path: Path, bundle: Path, agent_key: bytes) -> tuple[World, Runtime]:
    world = World(tmp_path, signing_key=b"\x5a" * 32)
    link = ReconnectingLink(world.agent_url, clock=world.clock)
    runtime = Runtime(
        load_bundle(bundle),
        load_mission(HERE / "faults.toml"),
        link,
        config=LoopConfig(rate_hz=50.0, takeoff_alt_m=4.0, max_duration_s=1.0, connect_timeout_s=3.0),
        log_path=tmp_path / "f.eal",
        clock=world.clock,
        sleep=world.sleep,
        session_config=SessionConfig(signing=SigningConfig(agent_key)),
        timer=lambda: world.clock() * 1e-9,
    )
    try:
        runtime.run()
    finally:
        link.close()
        world.close()
    return world, runtime


def test_mavlink_signing_end_to_end_with_the_sitl(goal_seeker: Path, tmp_path: Path) -> None:
    # Both ends hold the key: the agent connects, activates and flies; every frame it received
    # carried a valid signature, and the vehicle accepted the agent's signed commands.
    world, runtime = _signed_flight(tmp_path, goal_seeker, b"\x5a" * 32)
    assert runtime.summary.end_reason.startswith("time limit") and runtime.summary.ticks > 0
    assert runtime.session is not None
    assert runtime.session.parser.signature_errors == 0 and runtime.session.parser.frames > 100
    assert world.sent.setpoints  # decoded by a sniffer that checks signatures


def test_mavlink_signing_with_the_wrong_key_never_connects(goal_seeker: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ActivationError,
        match=r"no HEARTBEAT from the autopilot on .* within 3 s: \d+ frames failed their MAVLink signature: "
        + re.escape("check that --signing-key matches the autopilot's key"),
    ):
        _signed_flight(tmp_path, goal_seeker, b"\x11" * 32)
