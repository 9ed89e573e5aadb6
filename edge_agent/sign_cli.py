"""``edge-agent sign``: sign a bundle with an ed25519 key, or make a key pair.

    edge-agent sign --generate-key keys/fleet          # writes keys/fleet (secret) and keys/fleet.pub
    edge-agent sign out/bundle --key keys/fleet        # writes out/bundle/signature.json

A drone started with ``edge-agent run --public-key keys/fleet.pub`` flies only bundles signed by
that key. The signature covers the sealed manifest digest, which covers every file's SHA-256;
re-sealing the manifest (``edge-agent calibrate``) needs a new signature.
"""

from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path

from edge_agent.bundle import ed25519_public_key, key_fingerprint, read_key_file, sign_bundle
from edge_agent.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``edge-agent sign``."""
    parser.add_argument("bundle", nargs="?", type=Path, help="bundle folder to sign")
    parser.add_argument("--key", type=Path, help="secret key file (64 hex digits)")
    parser.add_argument(
        "--generate-key",
        type=Path,
        metavar="PATH",
        help="write a new secret key to PATH (mode 0600) and its public key to PATH.pub, then exit",
    )


def generate_key(path: Path) -> Path:
    """Write a fresh secret key (0600) and ``PATH.pub``; refuses to overwrite. Returns the .pub path."""
    pub_path = path.with_name(path.name + ".pub")
    if path.exists() or pub_path.exists():
        raise ConfigError(f"{path} or {pub_path} already exists; choose another path or delete the old key")
    secret = secrets.token_bytes(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")
    pub_path.write_text(ed25519_public_key(secret).hex() + "\n")
    return pub_path


def run(args: argparse.Namespace) -> int:
    """Sign a bundle or generate a key pair."""
    if args.generate_key is not None:
        pub = generate_key(args.generate_key)
        fp = key_fingerprint(bytes.fromhex(pub.read_text().strip()))
        print(f"secret key {args.generate_key} (keep it off the drone); public key {pub} (fingerprint {fp})")
        return 0
    if args.bundle is None or args.key is None:
        raise ConfigError(
            "edge-agent sign needs a bundle folder and --key SECRET_KEY (or --generate-key PATH to make a key)"
        )
    secret = read_key_file(args.key, what="secret key")
    out = sign_bundle(args.bundle, secret)
    print(f"signed {args.bundle} with key {key_fingerprint(ed25519_public_key(secret))}: {out}")
    return 0
