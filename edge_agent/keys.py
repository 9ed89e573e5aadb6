"""Typed Ed25519 key files: a header line that says which half the file holds, then 64 hex digits.

    edge-agent ed25519 secret key v1
    9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60

    edge-agent ed25519 public key v1
    d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a

The header is what lets ``edge-agent sign`` refuse a public key and ``edge-agent run
--public-key`` refuse a secret one (which has no business on a drone). Files written before the
header existed (64 hex digits alone) are refused with the command that converts them: from such a
file alone one cannot tell which half it holds. This module reads and writes files only; the
signing itself is :mod:`edge_agent.signing` (which loads libsodium; this module does not).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

from edge_agent.errors import KeyFileError

KeyKind = Literal["secret", "public"]
"""Which half of a key pair a key file holds."""

HEADERS: dict[KeyKind, str] = {
    "secret": "edge-agent ed25519 secret key v1",
    "public": "edge-agent ed25519 public key v1",
}
"""The first line of each kind of key file."""

_FIX_UNTYPED = (
    "convert the pair with `edge-agent sign --upgrade-key SECRET_KEY` (it checks that SECRET_KEY and "
    "SECRET_KEY.pub belong together and rewrites both with their type headers), or make a new pair "
    "with `edge-agent sign --generate-key PATH`"
)


def key_fingerprint(public: bytes) -> str:
    """Short printable identity of a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public).hexdigest()[:16]


def format_key(kind: KeyKind, key: bytes) -> str:
    """The text of a key file holding ``key`` (32 bytes) of the given kind."""
    if len(key) != 32:
        raise KeyFileError(f"an Ed25519 {kind} key is 32 bytes, got {len(key)}")
    return f"{HEADERS[kind]}\n{key.hex()}\n"


def _parse_hex(text: str, path: Path, kind: KeyKind) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError as exc:
        raise KeyFileError(
            f"the {kind} key in {str(path)!r} is not hex ({exc}); after the header line it must hold "
            f"64 hex digits, as written by `edge-agent sign --generate-key`"
        ) from exc
    if len(key) != 32:
        raise KeyFileError(
            f"the {kind} key in {str(path)!r} has {len(key)} bytes, not 32; it must hold 64 hex digits, "
            f"as written by `edge-agent sign --generate-key`"
        )
    return key


def read_key(path: Path | str, kind: KeyKind) -> bytes:
    """The 32-byte key in a typed key file of the given kind; :class:`KeyFileError` naming the fix if not."""
    p = Path(path)
    try:
        text = p.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(
            f"cannot read the {kind} key from {str(p)!r} ({exc}); pass a key file written by "
            f"`edge-agent sign --generate-key`"
        ) from exc
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise KeyFileError(
            f"the {kind} key file {str(p)!r} is empty; pass the file written by `edge-agent sign --generate-key`"
        )
    header = lines[0]
    other: KeyKind = "public" if kind == "secret" else "secret"
    if header == HEADERS[other]:
        if kind == "secret":
            raise KeyFileError(
                f"{str(p)!r} is a public key (its first line is {HEADERS['public']!r}); signing needs the "
                f"secret key: pass the file without .pub that `edge-agent sign --generate-key` wrote beside it"
            )
        raise KeyFileError(
            f"{str(p)!r} is a SECRET key (its first line is {HEADERS['secret']!r}); a drone must hold only "
            f"the public key: pass the .pub file written beside it by `edge-agent sign --generate-key`, "
            f"and remove the secret key from this machine if it is a drone"
        )
    if header != HEADERS[kind]:
        if len(lines) == 1 and len(header) == 64 and all(c in "0123456789abcdefABCDEF" for c in header):
            raise KeyFileError(
                f"{str(p)!r} holds an untyped key (64 hex digits without a header line, as edge-agent "
                f"0.1 wrote them), so it cannot be told whether it is the secret or the public key; "
                + _FIX_UNTYPED
            )
        raise KeyFileError(
            f"{str(p)!r} is not an edge-agent {kind} key file: its first line must be {HEADERS[kind]!r}, "
            f"found {header[:40]!r}; pass a key file written by `edge-agent sign --generate-key`"
        )
    if len(lines) != 2:
        raise KeyFileError(
            f"the {kind} key file {str(p)!r} must hold its header line and one line of 64 hex digits, "
            f"found {len(lines)} lines; pass a key file written by `edge-agent sign --generate-key`"
        )
    return _parse_hex(lines[1], p, kind)


def read_key_file(path: Path | str, *, what: str) -> bytes:
    """``read_key(path, 'public')`` for ``what='public key'``, ``'secret'`` for ``'secret key'``."""
    kinds: dict[str, KeyKind] = {"public key": "public", "secret key": "secret"}
    if what not in kinds:
        raise ValueError(f"what must be 'public key' or 'secret key', got {what!r}")
    return read_key(path, kinds[what])


def write_key_pair(path: Path, secret: bytes, public: bytes, *, overwrite: bool = False) -> Path:
    """Write ``path`` (secret, mode 0600) and ``path.pub``; refuses to overwrite unless told. Returns the .pub."""
    pub_path = path.with_name(path.name + ".pub")
    if not overwrite and (path.exists() or pub_path.exists()):
        raise KeyFileError(f"{path} or {pub_path} already exists; choose another path or delete the old key")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write beside and rename, so an interrupted write never leaves half a key.
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(format_key("secret", secret))
    os.replace(tmp, path)
    os.chmod(path, 0o600)
    pub_tmp = pub_path.with_name(pub_path.name + ".tmp")
    pub_tmp.write_text(format_key("public", public), encoding="ascii")
    os.replace(pub_tmp, pub_path)
    return pub_path


def read_untyped_pair(path: Path) -> tuple[bytes, bytes]:
    """(secret, public) from an untyped pair ``path`` and ``path.pub`` (64 hex digits each, no header)."""
    pub_path = path.with_name(path.name + ".pub")
    if path.suffix == ".pub":
        raise KeyFileError(
            f"{str(path)!r} ends in .pub, so it is the public half; pass the secret key file (without .pub)"
        )
    keys: list[bytes] = []
    for p in (path, pub_path):
        try:
            text = p.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(
                f"cannot read {str(p)!r} ({exc}); --upgrade-key needs the old pair SECRET_KEY and "
                f"SECRET_KEY.pub side by side, as `edge-agent sign --generate-key` wrote them"
            ) from exc
        if text.startswith("edge-agent ed25519"):
            raise KeyFileError(f"{str(p)!r} already has a type header; nothing to upgrade")
        keys.append(_parse_hex(text, p, "secret" if p == path else "public"))
    return keys[0], keys[1]


__all__ = [
    "HEADERS",
    "KeyKind",
    "format_key",
    "key_fingerprint",
    "read_key",
    "read_key_file",
    "read_untyped_pair",
    "write_key_pair",
]
