"""Fuzz targets: one function per parser, taking raw bytes; only documented errors may escape.

Each target returns normally or raises one of its ``allowed`` exceptions (the documented
``EdgeAgentError`` / ``BridgeError`` subclasses); anything else is a crash. The codecs are
documented never to raise on garbage, so they allow nothing, and their buffered bytes must stay
under their documented bounds.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.bundle import MANIFEST_NAME, MODEL_NAME, BundleError, load_bundle, seal_manifest
from edge_agent.errors import MissionError
from edge_agent.flightlog import FlightLogError, read_log
from edge_agent.mission import load_mission
from firmware_bridge.custom_protocol import MAX_FRAME_BYTES, CustomDecoder
from firmware_bridge.mavlink_codec import MavlinkParser, SigningConfig

CORPUS = Path(__file__).resolve().parent / "corpus"
BASE_BUNDLE = CORPUS / "bundle_base"
"""A pristine small bundle (the scripted goal seeker) that the bundle target mutates."""
MAVLINK_MAX_BUFFER = 280 + 13
"""Longest MAVLink 2 frame (header 10 + payload 255 + CRC 2 + signature 13) rounded up: a bound."""


class Broken(AssertionError):
    """A target's own invariant failed (not an exception the code under test raised)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A fuzz target: the function and the exceptions it is documented to raise."""

    name: str
    run: Callable[[bytes], None]
    allowed: tuple[type[BaseException], ...]


def _chunks(data: bytes) -> list[bytes]:
    """Split by a size taken from the first byte, so chunk boundaries are fuzzed too."""
    if not data:
        return [b""]
    size = 1 + data[0] % 97
    return [data[i : i + size] for i in range(1, len(data), size)] or [b""]


def fuzz_mavlink(data: bytes) -> None:
    """MavlinkParser.feed, unsigned and signing-enforcing, any chunking: never raises, bounded buffer."""
    for parser in (MavlinkParser(), MavlinkParser(signing=SigningConfig(b"\x01" * 32))):
        for chunk in _chunks(data):
            for msg in parser.feed(chunk):
                msg.get_type()
            if len(parser._buf) > MAVLINK_MAX_BUFFER:
                raise Broken(f"MAVLink parser buffers {len(parser._buf)} bytes > {MAVLINK_MAX_BUFFER}")


def fuzz_custom(data: bytes) -> None:
    """CustomDecoder.feed in any chunking: never raises, buffer within MAX_FRAME_BYTES."""
    dec = CustomDecoder()
    for chunk in _chunks(data):
        for msg in dec.feed(chunk):
            repr(msg)
        if dec.buffered_bytes > MAX_FRAME_BYTES:
            raise Broken(f"custom decoder buffers {dec.buffered_bytes} bytes > {MAX_FRAME_BYTES}")


def fuzz_mission(data: bytes) -> None:
    """load_mission on arbitrary file bytes (TOML or not, UTF-8 or not): a Mission or MissionError."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.toml"
        path.write_bytes(data)
        load_mission(path)


def fuzz_flightlog(data: bytes) -> None:
    """read_log on arbitrary file bytes: records or FlightLogError."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.eal"
        path.write_bytes(data)
        for rec in read_log(path):
            if not isinstance(rec, dict):
                raise Broken(f"read_log yielded a {type(rec).__name__}")


_POOL: list[Any] = [
    None,
    True,
    0,
    -1,
    1.5,
    1e308,
    -1e308,
    2**63,
    "",
    "x",
    "../../etc/passwd",
    MODEL_NAME,
    [],
    {},
    [0.0, 0.0, 0.0],
    [[1.0]],
    {"a": 1},
    "delete",
]


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _nodes(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:8]):
            out += _nodes(v, (*path, i))
    return out


def _mutate_json(doc: dict[str, Any], data: bytes) -> dict[str, Any]:
    """Up to len(data)//3 structural edits: replace or delete the node that the bytes pick."""
    for k in range(0, len(data) - 2, 3):
        nodes = _nodes(doc)[1:]
        if not nodes:
            break
        path = nodes[int.from_bytes(data[k : k + 2], "little") % len(nodes)]
        new = _POOL[data[k + 2] % len(_POOL)]
        parent: Any = doc
        for p in path[:-1]:
            parent = parent[p]
        if new == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = json.loads(json.dumps(new))
    return doc


def fuzz_bundle(data: bytes) -> None:
    """load_bundle on a mutated copy of a real bundle: a Bundle or a BundleError.

    First byte picks the mutation: raw manifest bytes (caught by the self-hash), a structural
    edit of the manifest then re-sealed (reaches every later check), or model bytes flipped
    with the file hash updated and re-sealed (reaches onnxruntime and the golden replay).
    """
    mode = data[0] % 3 if data else 0
    body = data[1:]
    with tempfile.TemporaryDirectory() as tmp:
        b = Path(shutil.copytree(BASE_BUNDLE, Path(tmp) / "b"))
        manifest = json.loads((b / MANIFEST_NAME).read_text())
        if mode == 0:
            (b / MANIFEST_NAME).write_bytes(body)
        elif mode == 1:
            (b / MANIFEST_NAME).write_text(json.dumps(seal_manifest(_mutate_json(manifest, body))))
        else:
            import hashlib

            model = bytearray((b / MODEL_NAME).read_bytes())
            for k in range(0, len(body) - 2, 3):
                model[int.from_bytes(body[k : k + 2], "little") % len(model)] ^= body[k + 2] or 1
            (b / MODEL_NAME).write_bytes(bytes(model))
            manifest["files"][MODEL_NAME] = hashlib.sha256(bytes(model)).hexdigest()
            (b / MANIFEST_NAME).write_text(json.dumps(seal_manifest(manifest)))
        load_bundle(b)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("mavlink", fuzz_mavlink, ()),
        Target("custom", fuzz_custom, ()),
        Target("mission", fuzz_mission, (MissionError,)),
        Target("flightlog", fuzz_flightlog, (FlightLogError,)),
        Target("bundle", fuzz_bundle, (BundleError,)),
    )
}
"""Every fuzz target by name."""

os.environ.setdefault("ORT_LOGGING_LEVEL", "3")
