"""``edge-agent sign``: sign a bundle with an Ed25519 key, or make (or upgrade) a key pair.

    edge-agent sign --generate-key keys/fleet          # writes keys/fleet (secret) and keys/fleet.pub
    edge-agent sign out/bundle --key keys/fleet        # writes out/bundle/signature.json
    edge-agent sign --upgrade-key keys/fleet           # adds type headers to a pair made by edge-agent 0.1

A drone started with ``edge-agent run --public-key keys/fleet.pub`` flies only bundles signed by
that key. The signature covers the sealed manifest digest, which covers every file's SHA-256;
re-sealing the manifest (``edge-agent calibrate``) needs a new signature. Key files are typed
(their first line says ``secret`` or ``public``), so a public key given to ``--key`` or a secret
key given to ``run --public-key`` is refused.
"""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path

from edge_agent.bundle import ed25519_public_key, sign_bundle
from edge_agent.errors import ConfigError, KeyFileError
from edge_agent.keys import key_fingerprint, read_key, read_untyped_pair, write_key_pair


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``edge-agent sign``."""
    parser.add_argument("bundle", nargs="?", type=Path, help="bundle folder to sign")
    parser.add_argument(
        "--key",
        type=Path,
        help="secret key file (first line 'edge-agent ed25519 secret key v1'); never the .pub",
    )
    parser.add_argument(
        "--generate-key",
        type=Path,
        metavar="PATH",
        help="write a new secret key to PATH (mode 0600) and its public key to PATH.pub, then exit",
    )
    parser.add_argument(
        "--upgrade-key",
        type=Path,
        metavar="PATH",
        help="rewrite an untyped pair PATH and PATH.pub (edge-agent 0.1) with type headers, after "
        "checking that PATH.pub is PATH's public key, then exit",
    )


def generate_key(path: Path) -> Path:
    """Write a fresh secret key (0600) and ``PATH.pub``; refuses to overwrite. Returns the .pub path."""
    secret = secrets.token_bytes(32)
    return write_key_pair(path, secret, ed25519_public_key(secret))


def upgrade_key(path: Path) -> Path:
    """Add type headers to an untyped pair ``path`` / ``path.pub`` that belong together. Returns the .pub."""
    secret, public = read_untyped_pair(path)
    derived = ed25519_public_key(secret)
    if derived != public:
        raise KeyFileError(
            f"{str(path)!r} and {str(path) + '.pub'!r} do not belong together (the public key of the first "
            f"is {key_fingerprint(derived)}, the second holds {key_fingerprint(public)}); pass the secret "
            f"key whose .pub lies beside it, or make a new pair with `edge-agent sign --generate-key`"
        )
    return write_key_pair(path, secret, public, overwrite=True)


def run(args: argparse.Namespace) -> int:
    """Sign a bundle, or generate or upgrade a key pair."""
    if args.generate_key is not None or args.upgrade_key is not None:
        if args.generate_key is not None and args.upgrade_key is not None:
            raise ConfigError("give --generate-key or --upgrade-key, not both")
        made = args.generate_key is not None
        path = args.generate_key if made else args.upgrade_key
        pub = generate_key(path) if made else upgrade_key(path)
        fp = key_fingerprint(read_key(pub, "public"))
        verb = "secret key" if made else "upgraded secret key"
        print(f"{verb} {path} (keep it off the drone); public key {pub} (fingerprint {fp})")
        return 0
    if args.bundle is None or args.key is None:
        raise ConfigError(
            "edge-agent sign needs a bundle folder and --key SECRET_KEY (or --generate-key PATH to make a key)"
        )
    secret = read_key(args.key, "secret")
    out = sign_bundle(args.bundle, secret)
    print(f"signed {args.bundle} with key {key_fingerprint(ed25519_public_key(secret))}: {out}")
    return 0
