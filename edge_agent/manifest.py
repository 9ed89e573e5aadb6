"""The bundle's manifest: its constants, typed frozen values, sealing, and the parser with its checks.

The format is ``docs/bundle.md``'s; :mod:`edge_agent.bundle` is the loader that runs every
check before flight (and re-exports the names here). This module needs numpy only: reading and
sealing a manifest never loads onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.errors import (
    BundleNotFoundError,
    BundleSchemaError,
    FeatureSpecError,
    ManifestHashError,
    UnsupportedSchemaVersionError,
)
from firmware_bridge.features import VOCABULARY

SCHEMA_VERSION = 1
"""The manifest schema this runtime reads and the exporter writes."""
MANIFEST_NAME = "manifest.json"
"""The manifest's file name inside a bundle folder."""
MODEL_NAME = "policy.onnx"
"""The ONNX model's file name inside a bundle folder."""
GOLDEN_TOLERANCE = 1e-5
"""Largest mean absolute difference allowed when the golden samples are replayed at load."""
SEALABLE_SECTIONS = ("calibration", "certificate")
"""Manifest sections that may be filled in after export (by ``calib``) and re-sealed."""

OBS_INPUT = "obs"
"""Name of the observation input of every bundle graph: float32 [batch, D]."""
ACTION_OUTPUT = "action"
"""Name of the action output of every bundle graph: float32 [batch, A], physical units."""
STATE_INPUT = "state_in"
"""Recurrent policies only: float32 [batch, H] state input (LSTM: h and c concatenated)."""
STATE_OUTPUT = "state_out"
"""Recurrent policies only: float32 [batch, H] state output, fed back as ``state_in``."""
BATCH_DIM = "batch"
"""Symbolic name of the dynamic leading axis in the manifest's io shapes."""

ACTION_KINDS: dict[str, tuple[str, ...]] = {
    "velocity_ned_yaw_rate": ("vel_n_m_s", "vel_e_m_s", "vel_d_m_s", "yaw_rate_rad_s"),
    "velocity_enu_yaw_rate": ("vel_e_m_s", "vel_n_m_s", "vel_u_m_s", "yaw_rate_enu_rad_s"),
    "acceleration_ned_yaw_rate": ("acc_n_m_s2", "acc_e_m_s2", "acc_d_m_s2", "yaw_rate_rad_s"),
    "attitude_thrust": ("q_w", "q_x", "q_y", "q_z", "thrust_frac"),
    "rates_thrust": ("roll_rate_frd_rad_s", "pitch_rate_frd_rad_s", "yaw_rate_frd_rad_s", "thrust_frac"),
}
"""Action kinds a manifest may declare, with their default element names in order.

``velocity_ned_yaw_rate`` is the one the runtime flies first; the others are declared so that a
bundle can state them exactly (ENU yaw rate is counter-clockwise positive, NED clockwise).
"""

F32 = NDArray[np.float32]


# ---------------------------------------------------------------------------------------------
# The manifest as typed, frozen values.


@dataclass(frozen=True, slots=True)
class ObservationFeature:
    """One observation feature as the manifest declares it, with per-element clip bounds."""

    name: str
    size: int
    unit: str
    frame: str
    clip_lo: tuple[float, ...]
    clip_hi: tuple[float, ...]


@dataclass(frozen=True, slots=True, eq=False)
class ActionSpec:
    """The action the graph outputs: kind, element names and physical bounds (read-only [A])."""

    kind: str
    names: tuple[str, ...]
    low: F32
    high: F32

    @property
    def size(self) -> int:
        """Number of action elements A."""
        return len(self.names)


@dataclass(frozen=True, slots=True)
class RecurrentSpec:
    """State carried between ticks: ``state_in``/``state_out`` of width ``state_size``."""

    state_size: int
    cell: str
    """'gru', 'lstm' (h and c concatenated) or 'custom'."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One graph input or output: name, shape (``'batch'`` for the dynamic axis), dtype."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str


@dataclass(frozen=True, slots=True)
class QuantizationInfo:
    """How the shipped model was quantised and its measured error against the fp32 graph."""

    method: str
    max_abs_error_vs_fp32: float
    mean_abs_error_vs_fp32: float


@dataclass(frozen=True, slots=True)
class ParityInfo:
    """Export-time comparison of the fp32 graph (onnxruntime) against the framework."""

    n_samples: int
    max_abs_error: float


@dataclass(frozen=True, slots=True, eq=False)
class Manifest:
    """A verified manifest. ``raw`` is the JSON object as read (sealed, self-hash included)."""

    schema_version: int
    observation: tuple[ObservationFeature, ...]
    action: ActionSpec
    control_rate_hz: float
    recurrent: RecurrentSpec | None
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    golden_inputs: Mapping[str, F32]
    golden_outputs: Mapping[str, F32]
    files: Mapping[str, str]
    """Relative path → SHA-256 hex digest."""
    producer: Mapping[str, Any]
    quantization: QuantizationInfo | None
    parity: ParityInfo
    calibration: Mapping[str, Any] | None
    certificate: Mapping[str, Any] | None
    manifest_sha256: str
    raw: Mapping[str, Any]

    @property
    def observation_size(self) -> int:
        """Length D of the observation vector."""
        return sum(f.size for f in self.observation)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Feature names in observation order."""
        return tuple(f.name for f in self.observation)

    @property
    def clip_lo(self) -> NDArray[np.float64]:
        """Per-element lower clip bounds, [D]."""
        return np.array([v for f in self.observation for v in f.clip_lo], dtype=np.float64)

    @property
    def clip_hi(self) -> NDArray[np.float64]:
        """Per-element upper clip bounds, [D]."""
        return np.array([v for f in self.observation for v in f.clip_hi], dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Sealing: the self-hash that makes an edited manifest detectable.


def canonical_json(data: Mapping[str, Any]) -> bytes:
    """The bytes the self-hash covers: sorted keys, no whitespace, ASCII, no NaN/inf."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode(
        "ascii"
    )


def manifest_digest(data: Mapping[str, Any]) -> str:
    """SHA-256 over the canonical JSON of ``data`` without its ``manifest_sha256`` field."""
    body = {k: v for k, v in data.items() if k != "manifest_sha256"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def seal_manifest(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with ``manifest_sha256`` set to its digest."""
    sealed = {k: v for k, v in data.items() if k != "manifest_sha256"}
    sealed["manifest_sha256"] = manifest_digest(sealed)
    return sealed


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(bundle_dir: Path | str, data: Mapping[str, Any]) -> Path:
    """Seal ``data`` and write it as the bundle's manifest atomically; returns the manifest path."""
    bundle_dir = Path(bundle_dir)
    sealed = seal_manifest(data)
    text = _pretty_json(sealed) + "\n"
    target = bundle_dir / MANIFEST_NAME
    # Write beside the target and rename, so a crash never leaves a half-written manifest.
    import tempfile  # the workstation writes manifests; the drone only reads them

    fd, tmp = tempfile.mkstemp(dir=bundle_dir, prefix=".manifest-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _pretty_json(value: Any, indent: int = 0) -> str:
    """Indented JSON that keeps lists of numbers on one line, so golden samples stay readable."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {_pretty_json(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and value and any(isinstance(v, dict | list) for v in value):
        items = [f"{inner}{_pretty_json(v, indent + 1)}" for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=True, allow_nan=False)


def write_manifest_section(bundle_dir: Path | str, section: str, data: Mapping[str, Any] | None) -> None:
    """Set the ``calibration`` or ``certificate`` section of a bundle's manifest and re-seal it.

    The manifest's current self-hash is checked first, so an edited manifest is never laundered
    by re-sealing it.
    """
    if section not in SEALABLE_SECTIONS:
        raise BundleSchemaError(
            f"manifest section {section!r} cannot be written after export; "
            f"only {', '.join(SEALABLE_SECTIONS)} can (re-export the bundle to change anything else)"
        )
    bundle_dir = Path(bundle_dir)
    raw = read_sealed_manifest(bundle_dir)
    updated = dict(raw)
    try:
        # Round-trip through JSON now, so numpy scalars become numbers and bad values fail here.
        updated[section] = (
            None if data is None else json.loads(json.dumps(dict(data), allow_nan=False, default=_plain))
        )
    except (TypeError, ValueError) as exc:
        raise BundleSchemaError(
            f"manifest section {section!r} must hold JSON values (numbers, strings, lists, objects; no NaN "
            f"or inf): {exc}"
        ) from exc
    write_manifest(bundle_dir, updated)


def _plain(value: Any) -> Any:
    """JSON fallback for numpy values in sections that calib writes."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# ---------------------------------------------------------------------------------------------
# Reading and parsing (checks 1-4 and the schema).


def read_sealed_manifest(bundle_dir: Path) -> dict[str, Any]:
    """Checks 1-4: folder and manifest exist, JSON parses, schema version, self-hash."""
    if not bundle_dir.is_dir():
        raise BundleNotFoundError(
            f"bundle folder {str(bundle_dir)!r} does not exist or is not a folder; "
            f"pass the folder that holds {MANIFEST_NAME} and {MODEL_NAME} (made by `edge-agent export`)"
        )
    manifest_path = bundle_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleNotFoundError(
            f"{MANIFEST_NAME} is missing from bundle folder {str(bundle_dir)!r}; "
            f"re-export the policy with `edge-agent export` or copy the whole bundle folder"
        )
    try:
        raw = json.loads(manifest_path.read_bytes(), parse_constant=_reject_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise BundleSchemaError(
            f"{manifest_path} is not valid JSON ({exc}); the file is corrupted: copy the bundle again "
            f"or re-export it"
        ) from exc
    if not isinstance(raw, dict):
        raise BundleSchemaError(
            f"{manifest_path} must hold a JSON object, found {type(raw).__name__}; re-export the bundle"
        )
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise UnsupportedSchemaVersionError(
            f"manifest schema_version is {version!r} but this runtime reads version {SCHEMA_VERSION}; "
            f"re-export the bundle with a matching edge-agent, or upgrade the runtime"
        )
    stored = raw.get("manifest_sha256")
    actual = manifest_digest(raw)
    if stored != actual:
        raise ManifestHashError(
            f"manifest self-hash mismatch (stored {stored!r}, content hashes to {actual!r}): "
            f"{MANIFEST_NAME} was edited after export; re-export the bundle instead of editing it"
        )
    return raw


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} is not allowed in a manifest")


def checked_field(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, Mapping) or key not in obj:
        raise BundleSchemaError(f"manifest field {where}.{key} is missing; re-export the bundle")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise BundleSchemaError(
            f"manifest field {where}.{key} must be {_kind_name(kind)}, found {type(value).__name__}; "
            f"re-export the bundle"
        )
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in _as_tuple(kind))


def _numbers(values: Any, where: str) -> tuple[float, ...]:
    if not isinstance(values, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    ):
        raise BundleSchemaError(f"manifest field {where} must be a list of numbers; re-export the bundle")
    return tuple(float(v) for v in values)


def _matrix(values: Any, where: str) -> F32:
    try:
        arr = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise BundleSchemaError(
            f"manifest field {where} must be a list of equal-length lists of numbers ({exc}); "
            f"re-export the bundle"
        ) from exc
    if arr.ndim != 2:
        raise BundleSchemaError(
            f"manifest field {where} must be a 2-D list [n, width], found {arr.ndim} dimensions; "
            f"re-export the bundle"
        )
    arr.setflags(write=False)
    return arr


def _parse_features(raw: Any, action_size: int) -> tuple[ObservationFeature, ...]:
    if not isinstance(raw, list) or not raw:
        raise BundleSchemaError("manifest field observation must be a non-empty list; re-export the bundle")
    features: list[ObservationFeature] = []
    for i, item in enumerate(raw):
        where = f"observation[{i}]"
        name = checked_field(item, "name", str, where)
        if name not in VOCABULARY:
            raise FeatureSpecError(
                f"observation feature {name!r} is not in the feature vocabulary; use one of: "
                f"{', '.join(VOCABULARY)} (see docs/bundle.md)"
            )
        spec = VOCABULARY[name]
        expected_size = action_size if name == "prev_action" else spec.size
        size = checked_field(item, "size", int, where)
        if size != expected_size:
            raise FeatureSpecError(
                f"observation feature {name!r} declares size {size} but the vocabulary defines "
                f"{expected_size}; fix the export spec and re-export"
            )
        unit = checked_field(item, "unit", str, where)
        frame = checked_field(item, "frame", str, where)
        if (unit, frame) != (spec.unit, spec.frame):
            raise FeatureSpecError(
                f"observation feature {name!r} declares unit {unit!r} frame {frame!r} but the "
                f"vocabulary defines unit {spec.unit!r} frame {spec.frame!r}; re-export the bundle"
            )
        lo = _numbers(checked_field(item, "clip_lo", list, where), f"{where}.clip_lo")
        hi = _numbers(checked_field(item, "clip_hi", list, where), f"{where}.clip_hi")
        if len(lo) != size or len(hi) != size:
            raise FeatureSpecError(
                f"observation feature {name!r} has size {size} but clip_lo has {len(lo)} and clip_hi "
                f"{len(hi)} values; give one bound per element and re-export"
            )
        if not all(math.isfinite(a) and math.isfinite(b) and a < b for a, b in zip(lo, hi)):
            raise FeatureSpecError(
                f"observation feature {name!r} needs finite clip bounds with clip_lo < clip_hi, "
                f"found {list(lo)} .. {list(hi)}; fix the export spec and re-export"
            )
        features.append(ObservationFeature(name, size, unit, frame, lo, hi))
    names = [f.name for f in features]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise FeatureSpecError(
            f"observation features {duplicates} appear more than once; list each feature once"
        )
    return tuple(features)


def _parse_action(raw: Any) -> ActionSpec:
    kind = checked_field(raw, "kind", str, "action")
    if kind not in ACTION_KINDS:
        raise BundleSchemaError(f"action kind {kind!r} is not known; use one of: {', '.join(ACTION_KINDS)}")
    names_raw = checked_field(raw, "names", list, "action")
    if not all(isinstance(n, str) for n in names_raw):
        raise BundleSchemaError("manifest field action.names must be a list of strings; re-export the bundle")
    names = tuple(names_raw)
    expected = len(ACTION_KINDS[kind])
    low = np.array(_numbers(checked_field(raw, "low", list, "action"), "action.low"), dtype=np.float32)
    high = np.array(_numbers(checked_field(raw, "high", list, "action"), "action.high"), dtype=np.float32)
    if not (len(names) == len(low) == len(high) == expected):
        raise BundleSchemaError(
            f"action kind {kind!r} has {expected} elements but the manifest gives {len(names)} names, "
            f"{len(low)} low and {len(high)} high bounds; re-export with one value per element"
        )
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)):
        raise BundleSchemaError(
            f"action bounds must be finite with low < high, found low={low.tolist()} high={high.tolist()}; "
            f"fix the export spec"
        )
    low.setflags(write=False)
    high.setflags(write=False)
    return ActionSpec(kind, names, low, high)


def parse_tensors(raw: Any, where: str) -> tuple[TensorSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise BundleSchemaError(f"manifest field {where} must be a non-empty list; re-export the bundle")
    out: list[TensorSpec] = []
    for i, item in enumerate(raw):
        w = f"{where}[{i}]"
        name = checked_field(item, "name", str, w)
        shape = checked_field(item, "shape", list, w)
        if not all(isinstance(d, int | str) and not isinstance(d, bool) for d in shape):
            raise BundleSchemaError(
                f"manifest field {w}.shape must list ints or 'batch'; re-export the bundle"
            )
        out.append(TensorSpec(name, tuple(shape), checked_field(item, "dtype", str, w)))
    return tuple(out)


def parse_manifest(raw: dict[str, Any]) -> Manifest:
    action = _parse_action(checked_field(raw, "action", dict, "manifest"))
    observation = _parse_features(raw.get("observation"), action.size)
    rate = float(checked_field(raw, "control_rate_hz", (int, float), "manifest"))
    if not (math.isfinite(rate) and rate > 0):
        raise BundleSchemaError(f"control_rate_hz must be positive, found {rate}; fix the export spec")
    rec_raw = raw.get("recurrent")
    recurrent = None
    if rec_raw is not None:
        state_size = checked_field(rec_raw, "state_size", int, "recurrent")
        if state_size <= 0:
            raise BundleSchemaError(f"recurrent.state_size must be positive, found {state_size}")
        recurrent = RecurrentSpec(state_size, str(rec_raw.get("cell", "custom")))
    io = checked_field(raw, "io", dict, "manifest")
    inputs = parse_tensors(io.get("inputs"), "io.inputs")
    outputs = parse_tensors(io.get("outputs"), "io.outputs")
    golden = checked_field(raw, "golden", dict, "manifest")
    g_in = checked_field(golden, "inputs", dict, "golden")
    g_out = checked_field(golden, "outputs", dict, "golden")
    golden_inputs = {k: _matrix(v, f"golden.inputs.{k}") for k, v in g_in.items()}
    golden_outputs = {k: _matrix(v, f"golden.outputs.{k}") for k, v in g_out.items()}
    files = checked_field(raw, "files", dict, "manifest")
    if not files or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise BundleSchemaError("manifest field files must map relative paths to SHA-256 hex strings")
    if MODEL_NAME not in files:
        raise BundleSchemaError(f"manifest field files does not list {MODEL_NAME}; re-export the bundle")
    q_raw = raw.get("quantization")
    quant = None
    if q_raw is not None:
        quant = QuantizationInfo(
            str(checked_field(q_raw, "method", str, "quantization")),
            float(checked_field(q_raw, "max_abs_error_vs_fp32", (int, float), "quantization")),
            float(checked_field(q_raw, "mean_abs_error_vs_fp32", (int, float), "quantization")),
        )
    p_raw = checked_field(raw, "parity", dict, "manifest")
    parity = ParityInfo(
        int(checked_field(p_raw, "n_samples", int, "parity")),
        float(checked_field(p_raw, "max_abs_error", (int, float), "parity")),
    )
    for section in SEALABLE_SECTIONS:
        if raw.get(section) is not None and not isinstance(raw[section], dict):
            raise BundleSchemaError(f"manifest field {section} must be an object or null; re-run calib")
    return Manifest(
        schema_version=SCHEMA_VERSION,
        observation=observation,
        action=action,
        control_rate_hz=rate,
        recurrent=recurrent,
        inputs=inputs,
        outputs=outputs,
        golden_inputs=golden_inputs,
        golden_outputs=golden_outputs,
        files=dict(files),
        producer=dict(checked_field(raw, "producer", dict, "manifest")),
        quantization=quant,
        parity=parity,
        calibration=raw.get("calibration"),
        certificate=raw.get("certificate"),
        manifest_sha256=str(raw["manifest_sha256"]),
        raw=raw,
    )


__all__ = [
    "ACTION_KINDS",
    "ACTION_OUTPUT",
    "BATCH_DIM",
    "GOLDEN_TOLERANCE",
    "MANIFEST_NAME",
    "MODEL_NAME",
    "OBS_INPUT",
    "SCHEMA_VERSION",
    "SEALABLE_SECTIONS",
    "STATE_INPUT",
    "STATE_OUTPUT",
    "ActionSpec",
    "Manifest",
    "ObservationFeature",
    "ParityInfo",
    "QuantizationInfo",
    "RecurrentSpec",
    "TensorSpec",
    "canonical_json",
    "checked_field",
    "file_sha256",
    "manifest_digest",
    "parse_manifest",
    "parse_tensors",
    "read_sealed_manifest",
    "seal_manifest",
    "write_manifest",
    "write_manifest_section",
]
