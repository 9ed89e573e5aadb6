"""The policy bundle: format, sealing, and the onboard loader that verifies it before flight.

A bundle is a folder holding ``policy.onnx`` and ``manifest.json`` (nothing pickled). The
manifest declares the observation (features from :data:`firmware_bridge.features.VOCABULARY`
with clip ranges), the action (kind, names, physical bounds), the control rate, the ONNX
graph's inputs and outputs, golden input/output samples, the SHA-256 of every file and a
self-hash over its own content, so that an edit anywhere is caught at load.

:func:`load_bundle` runs every check in a fixed order and refuses with one narrow error class
per check (see ``docs/bundle.md``). It needs numpy and onnxruntime only: the ``onnx`` package and
torch stay on the workstation.
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
import onnxruntime as ort
from numpy.typing import NDArray

from edge_agent.bundle_signature import (
    SIGNATURE_CONTEXT,
    SIGNATURE_NAME,
    SignatureState,
    SignatureStatus,
    check_signature,
    ed25519_public_key,
    ed25519_sign,
    ed25519_verify,
    read_signature_status,
    write_signature,
)
from edge_agent.errors import (
    BundleContractError,
    BundleError,
    BundleFileMissingError,
    BundleNotFoundError,
    BundleSchemaError,
    FeatureSpecError,
    FileHashError,
    GoldenSampleError,
    ManifestHashError,
    ModelLoadError,
    UnlistedFileError,
    UnsupportedSchemaVersionError,
)
from edge_agent.keys import key_fingerprint, read_key_file
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

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64"}

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


@dataclass(frozen=True, slots=True, eq=False)
class Bundle:
    """A bundle that passed every load check. ``model_bytes`` are the very bytes that were hashed."""

    path: Path
    manifest: Manifest
    model_path: Path
    model_bytes: bytes


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
    raw = _read_sealed_manifest(bundle_dir)
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
# Loading and verification.


def _read_sealed_manifest(bundle_dir: Path) -> dict[str, Any]:
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


def _field(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
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
        name = _field(item, "name", str, where)
        if name not in VOCABULARY:
            raise FeatureSpecError(
                f"observation feature {name!r} is not in the feature vocabulary; use one of: "
                f"{', '.join(VOCABULARY)} (see docs/bundle.md)"
            )
        spec = VOCABULARY[name]
        expected_size = action_size if name == "prev_action" else spec.size
        size = _field(item, "size", int, where)
        if size != expected_size:
            raise FeatureSpecError(
                f"observation feature {name!r} declares size {size} but the vocabulary defines "
                f"{expected_size}; fix the export spec and re-export"
            )
        unit = _field(item, "unit", str, where)
        frame = _field(item, "frame", str, where)
        if (unit, frame) != (spec.unit, spec.frame):
            raise FeatureSpecError(
                f"observation feature {name!r} declares unit {unit!r} frame {frame!r} but the "
                f"vocabulary defines unit {spec.unit!r} frame {spec.frame!r}; re-export the bundle"
            )
        lo = _numbers(_field(item, "clip_lo", list, where), f"{where}.clip_lo")
        hi = _numbers(_field(item, "clip_hi", list, where), f"{where}.clip_hi")
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
    kind = _field(raw, "kind", str, "action")
    if kind not in ACTION_KINDS:
        raise BundleSchemaError(f"action kind {kind!r} is not known; use one of: {', '.join(ACTION_KINDS)}")
    names_raw = _field(raw, "names", list, "action")
    if not all(isinstance(n, str) for n in names_raw):
        raise BundleSchemaError("manifest field action.names must be a list of strings; re-export the bundle")
    names = tuple(names_raw)
    expected = len(ACTION_KINDS[kind])
    low = np.array(_numbers(_field(raw, "low", list, "action"), "action.low"), dtype=np.float32)
    high = np.array(_numbers(_field(raw, "high", list, "action"), "action.high"), dtype=np.float32)
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


def _parse_tensors(raw: Any, where: str) -> tuple[TensorSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise BundleSchemaError(f"manifest field {where} must be a non-empty list; re-export the bundle")
    out: list[TensorSpec] = []
    for i, item in enumerate(raw):
        w = f"{where}[{i}]"
        name = _field(item, "name", str, w)
        shape = _field(item, "shape", list, w)
        if not all(isinstance(d, int | str) and not isinstance(d, bool) for d in shape):
            raise BundleSchemaError(
                f"manifest field {w}.shape must list ints or 'batch'; re-export the bundle"
            )
        out.append(TensorSpec(name, tuple(shape), _field(item, "dtype", str, w)))
    return tuple(out)


def _parse_manifest(raw: dict[str, Any]) -> Manifest:
    action = _parse_action(_field(raw, "action", dict, "manifest"))
    observation = _parse_features(raw.get("observation"), action.size)
    rate = float(_field(raw, "control_rate_hz", (int, float), "manifest"))
    if not (math.isfinite(rate) and rate > 0):
        raise BundleSchemaError(f"control_rate_hz must be positive, found {rate}; fix the export spec")
    rec_raw = raw.get("recurrent")
    recurrent = None
    if rec_raw is not None:
        state_size = _field(rec_raw, "state_size", int, "recurrent")
        if state_size <= 0:
            raise BundleSchemaError(f"recurrent.state_size must be positive, found {state_size}")
        recurrent = RecurrentSpec(state_size, str(rec_raw.get("cell", "custom")))
    io = _field(raw, "io", dict, "manifest")
    inputs = _parse_tensors(io.get("inputs"), "io.inputs")
    outputs = _parse_tensors(io.get("outputs"), "io.outputs")
    golden = _field(raw, "golden", dict, "manifest")
    g_in = _field(golden, "inputs", dict, "golden")
    g_out = _field(golden, "outputs", dict, "golden")
    golden_inputs = {k: _matrix(v, f"golden.inputs.{k}") for k, v in g_in.items()}
    golden_outputs = {k: _matrix(v, f"golden.outputs.{k}") for k, v in g_out.items()}
    files = _field(raw, "files", dict, "manifest")
    if not files or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise BundleSchemaError("manifest field files must map relative paths to SHA-256 hex strings")
    if MODEL_NAME not in files:
        raise BundleSchemaError(f"manifest field files does not list {MODEL_NAME}; re-export the bundle")
    q_raw = raw.get("quantization")
    quant = None
    if q_raw is not None:
        quant = QuantizationInfo(
            str(_field(q_raw, "method", str, "quantization")),
            float(_field(q_raw, "max_abs_error_vs_fp32", (int, float), "quantization")),
            float(_field(q_raw, "mean_abs_error_vs_fp32", (int, float), "quantization")),
        )
    p_raw = _field(raw, "parity", dict, "manifest")
    parity = ParityInfo(
        int(_field(p_raw, "n_samples", int, "parity")),
        float(_field(p_raw, "max_abs_error", (int, float), "parity")),
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
        producer=dict(_field(raw, "producer", dict, "manifest")),
        quantization=quant,
        parity=parity,
        calibration=raw.get("calibration"),
        certificate=raw.get("certificate"),
        manifest_sha256=str(raw["manifest_sha256"]),
        raw=raw,
    )


def _check_files(bundle_dir: Path, files: Mapping[str, str]) -> dict[str, bytes]:
    """Checks 5-6: every listed file exists inside the folder and hashes as listed."""
    root = bundle_dir.resolve()
    contents: dict[str, bytes] = {}
    for rel, digest in files.items():
        path = (bundle_dir / rel).resolve()
        if root not in path.parents:
            raise BundleSchemaError(
                f"manifest lists file {rel!r}, which lies outside the bundle folder; re-export the bundle"
            )
        if not path.is_file():
            raise BundleFileMissingError(
                f"file {rel!r} listed in the manifest is missing from bundle {str(bundle_dir)!r}; "
                f"copy the whole bundle folder again"
            )
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise FileHashError(
                f"SHA-256 of {rel!r} is {actual} but the manifest lists {digest}: the file was modified "
                f"or corrupted; re-export the bundle or copy it again from a trusted source"
            )
        contents[rel] = data
    return contents


def _check_unlisted(bundle_dir: Path, files: Mapping[str, str]) -> None:
    """Check 6b: the folder holds nothing but the listed files, the manifest and the signature.

    A file no hash covers is refused rather than ignored: nothing in the runtime reads it today,
    but a bundle is what a drone trusts, and a file riding along unverified (a second model, a
    script, instructions) is exactly what signing is meant to rule out.
    """
    allowed = {MANIFEST_NAME, SIGNATURE_NAME, *(Path(rel).as_posix() for rel in files)}
    extra = sorted(
        p.relative_to(bundle_dir).as_posix()
        for p in bundle_dir.rglob("*")
        if (p.is_symlink() or not p.is_dir()) and p.relative_to(bundle_dir).as_posix() not in allowed
    )
    if extra:
        shown = ", ".join(repr(e) for e in extra[:5]) + (
            f" and {len(extra) - 5} more" if len(extra) > 5 else ""
        )
        raise UnlistedFileError(
            f"bundle {str(bundle_dir)!r} holds {len(extra)} file(s) its manifest does not list, so no hash "
            f"covers them: {shown}; delete them (a bundle carries only {MANIFEST_NAME}, {SIGNATURE_NAME} "
            f"and the files its manifest lists), or re-export the bundle"
        )


def session_options(intra_op_threads: int = 1) -> ort.SessionOptions:
    """Session options for onboard inference: few threads, sequential, no thread spinning."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


def _open_session(model_bytes: bytes, where: Path) -> ort.InferenceSession:
    """Check 7: onnxruntime loads the model."""
    try:
        return ort.InferenceSession(model_bytes, session_options(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad model
        raise ModelLoadError(
            f"onnxruntime {ort.__version__} cannot load {str(where)!r}: {exc}; the model may need a "
            f"newer onnxruntime (upgrade it) or was exported for another opset (re-export the bundle)"
        ) from exc


def _expected_io(manifest: Manifest) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The io section the rest of the manifest implies."""
    inputs = [TensorSpec(OBS_INPUT, (BATCH_DIM, manifest.observation_size), "float32")]
    outputs = [TensorSpec(ACTION_OUTPUT, (BATCH_DIM, manifest.action.size), "float32")]
    if manifest.recurrent is not None:
        h = manifest.recurrent.state_size
        inputs.append(TensorSpec(STATE_INPUT, (BATCH_DIM, h), "float32"))
        outputs.append(TensorSpec(STATE_OUTPUT, (BATCH_DIM, h), "float32"))
    return tuple(inputs), tuple(outputs)


def _describe(specs: tuple[TensorSpec, ...] | list[TensorSpec]) -> str:
    return ", ".join(f"{s.name} {list(s.shape)} {s.dtype}" for s in specs)


def _check_graph_io(raw: Mapping[str, Any], session: ort.InferenceSession) -> None:
    """Check 8: the graph's inputs/outputs (names, shapes, dtypes) equal the manifest's io section."""
    io = _field(raw, "io", dict, "manifest")
    for role, declared, actual in (
        ("input", _parse_tensors(io.get("inputs"), "io.inputs"), session.get_inputs()),
        ("output", _parse_tensors(io.get("outputs"), "io.outputs"), session.get_outputs()),
    ):
        got = tuple(
            TensorSpec(
                a.name,
                tuple(d if isinstance(d, int) else BATCH_DIM for d in a.shape),
                _ORT_DTYPES.get(a.type, a.type),
            )
            for a in actual
        )
        if got != declared:
            raise BundleContractError(
                f"ONNX graph {role}s are [{_describe(got)}] but the manifest declares "
                f"[{_describe(declared)}]; the model and manifest do not belong together: re-export the bundle"
            )


def _check_consistency(manifest: Manifest) -> None:
    """Check 9 (after the features): the io section agrees with the observation/action/recurrent sections."""
    exp_in, exp_out = _expected_io(manifest)
    if manifest.inputs != exp_in or manifest.outputs != exp_out:
        raise BundleContractError(
            f"manifest io declares inputs [{_describe(manifest.inputs)}] outputs "
            f"[{_describe(manifest.outputs)}] but its observation/action/recurrent sections imply "
            f"inputs [{_describe(exp_in)}] outputs [{_describe(exp_out)}]; re-export the bundle"
        )


def _replay_golden(manifest: Manifest, session: ort.InferenceSession) -> float:
    """Check 10: the golden samples replay within :data:`GOLDEN_TOLERANCE` (mean abs difference)."""
    in_names = [s.name for s in manifest.inputs]
    out_names = [s.name for s in manifest.outputs]
    if sorted(manifest.golden_inputs) != sorted(in_names) or sorted(manifest.golden_outputs) != sorted(
        out_names
    ):
        raise BundleSchemaError(
            f"golden samples must give inputs {in_names} and outputs {out_names}, found "
            f"{sorted(manifest.golden_inputs)} and {sorted(manifest.golden_outputs)}; re-export the bundle"
        )
    n = {a.shape[0] for a in (*manifest.golden_inputs.values(), *manifest.golden_outputs.values())}
    if len(n) != 1 or 0 in n:
        raise BundleSchemaError("golden samples must all have the same, non-zero number of rows")
    feeds = {k: np.ascontiguousarray(v) for k, v in manifest.golden_inputs.items()}
    try:
        results = session.run(out_names, feeds)
    except Exception as exc:  # shape errors surface here as onnxruntime exceptions
        raise BundleContractError(
            f"replaying the golden samples failed in onnxruntime: {exc}; re-export the bundle"
        ) from exc
    worst = 0.0
    for name, got in zip(out_names, results):
        want = manifest.golden_outputs[name]
        if got.shape != want.shape:
            raise GoldenSampleError(
                f"golden output {name!r} has shape {list(want.shape)} but the model gives "
                f"{list(got.shape)}; re-export the bundle"
            )
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        mean = float(np.mean(diff)) if np.all(np.isfinite(diff)) else math.inf
        if not mean <= GOLDEN_TOLERANCE:
            raise GoldenSampleError(
                f"golden sample replay of {name!r}: mean absolute difference {mean:.3g} exceeds "
                f"{GOLDEN_TOLERANCE:g} (onnxruntime {ort.__version__} on this machine computes "
                f"differently from the exporter's); refuse to fly: re-export the bundle with this "
                f"onnxruntime version, or install the version listed in the manifest's producer section"
            )
        worst = max(worst, mean)
    return worst


def load_bundle(path: Path | str, *, public_key: bytes | None = None) -> Bundle:
    """Load and verify a bundle folder; raise a narrow ``BundleError`` naming the problem and fix.

    Checks, in order: folder and manifest exist; JSON parses; schema version; manifest self-hash;
    listed files exist; file SHA-256s; no unlisted files; onnxruntime loads the model; graph inputs/outputs against
    the manifest; observation features against the vocabulary; golden-sample replay. With a
    ``public_key`` (32 bytes, ed25519), the bundle must also carry a ``signature.json`` by that key
    over its sealed manifest digest (checked right after the self-hash): unsigned, wrongly signed
    or re-sealed-after-signing bundles raise :class:`BundleSignatureError`.
    """
    bundle_dir = Path(path)
    raw = _read_sealed_manifest(bundle_dir)
    if public_key is not None:
        check_signature(bundle_dir, str(raw["manifest_sha256"]), public_key)
    files_raw = raw.get("files")
    if not isinstance(files_raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files_raw.items()
    ):
        raise BundleSchemaError("manifest field files must map relative paths to SHA-256 hex strings")
    contents = _check_files(bundle_dir, files_raw)
    _check_unlisted(bundle_dir, files_raw)
    if MODEL_NAME not in contents:
        raise BundleSchemaError(f"manifest field files does not list {MODEL_NAME}; re-export the bundle")
    model_path = bundle_dir / MODEL_NAME
    session = _open_session(contents[MODEL_NAME], model_path)
    _check_graph_io(raw, session)
    manifest = _parse_manifest(raw)
    _check_consistency(manifest)
    _replay_golden(manifest, session)
    return Bundle(path=bundle_dir, manifest=manifest, model_path=model_path, model_bytes=contents[MODEL_NAME])


# ---------------------------------------------------------------------------------------------
# Signing (the signature file and its checks live in edge_agent.bundle_signature).


def sign_bundle(path: Path | str, secret: bytes) -> Path:
    """Write ``signature.json`` into a bundle: Ed25519 over its sealed manifest digest.

    The bundle is verified first (a broken bundle is never signed). Re-sealing the manifest
    later (``edge-agent calibrate``) invalidates the signature: sign again after it.
    """
    bundle = load_bundle(path)
    return write_signature(bundle.path, bundle.manifest.manifest_sha256, secret)


def signature_status(path: Path | str, public_key: bytes | None = None) -> SignatureStatus:
    """The state of a bundle's signature, without raising for a bad one (the manifest must be sound).

    Without ``public_key`` a present signature is reported as not verified (who signed it is only a
    claim until a trusted key checks it); with one, it is ``valid`` or ``invalid`` with the reason.
    """
    bundle_dir = Path(path)
    raw = _read_sealed_manifest(bundle_dir)
    return read_signature_status(bundle_dir, str(raw["manifest_sha256"]), public_key)


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
    "SIGNATURE_CONTEXT",
    "SIGNATURE_NAME",
    "STATE_INPUT",
    "STATE_OUTPUT",
    "ActionSpec",
    "Bundle",
    "BundleError",
    "Manifest",
    "ObservationFeature",
    "ParityInfo",
    "QuantizationInfo",
    "RecurrentSpec",
    "SignatureState",
    "SignatureStatus",
    "TensorSpec",
    "canonical_json",
    "ed25519_public_key",
    "ed25519_sign",
    "ed25519_verify",
    "file_sha256",
    "key_fingerprint",
    "load_bundle",
    "manifest_digest",
    "read_key_file",
    "seal_manifest",
    "session_options",
    "sign_bundle",
    "signature_status",
    "write_manifest",
    "write_manifest_section",
]
