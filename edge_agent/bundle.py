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

from edge_agent.errors import (
    BundleContractError,
    BundleError,
    BundleFileMissingError,
    BundleNotFoundError,
    BundleSchemaError,
    BundleSignatureError,
    FeatureSpecError,
    FileHashError,
    GoldenSampleError,
    ManifestHashError,
    ModelLoadError,
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
SIGNATURE_NAME = "signature.json"
"""The optional ed25519 signature's file name inside a bundle folder (not listed in ``files``)."""
SIGNATURE_CONTEXT = b"edge-agent bundle v1\x00"
"""Prefix of the signed message, so a bundle signature can never be replayed as another artifact's."""
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
    listed files exist; file SHA-256s; onnxruntime loads the model; graph inputs/outputs against
    the manifest; observation features against the vocabulary; golden-sample replay. With a
    ``public_key`` (32 bytes, ed25519), the bundle must also carry a ``signature.json`` by that key
    over its sealed manifest digest (checked right after the self-hash): unsigned, wrongly signed
    or re-sealed-after-signing bundles raise :class:`BundleSignatureError`.
    """
    bundle_dir = Path(path)
    raw = _read_sealed_manifest(bundle_dir)
    if public_key is not None:
        _check_signature(bundle_dir, raw, public_key)
    files_raw = raw.get("files")
    if not isinstance(files_raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files_raw.items()
    ):
        raise BundleSchemaError("manifest field files must map relative paths to SHA-256 hex strings")
    contents = _check_files(bundle_dir, files_raw)
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
# Signing: ed25519 over the sealed manifest digest (which covers every file's SHA-256).
#
# No ed25519 library is among the runtime's dependencies (numpy, onnxruntime, pymavlink, pyserial,
# msgpack), so this is RFC 8032's reference algorithm (section 6), checked against its test
# vectors in tests/faults/test_signing.py. It is not constant-time: signing happens on the
# workstation, and verification handles only public data. Swap in `cryptography`'s Ed25519 if
# that dependency is ever added.

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
_Point = tuple[int, int, int, int]


def _sha512_int(data: bytes) -> int:
    return int.from_bytes(hashlib.sha512(data).digest(), "little")


def _add(p: _Point, q: _Point) -> _Point:
    a = (p[1] - p[0]) * (q[1] - q[0]) % _P
    b = (p[1] + p[0]) * (q[1] + q[0]) % _P
    c = 2 * p[3] * q[3] * _D % _P
    d = 2 * p[2] * q[2] % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _mul(s: int, p: _Point) -> _Point:
    q: _Point = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            q = _add(q, p)
        p = _add(p, p)
        s >>= 1
    return q


def _equal(p: _Point, q: _Point) -> bool:
    return (p[0] * q[2] - q[0] * p[2]) % _P == 0 and (p[1] * q[2] - q[1] * p[2]) % _P == 0


def _recover_x(y: int, sign: int) -> int | None:
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P)
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P != 0:
        return None
    if (x & 1) != sign:
        x = _P - x
    return x


_GY = 4 * pow(5, _P - 2, _P) % _P
_GX = _recover_x(_GY, 0) or 0
_G: _Point = (_GX, _GY, 1, _GX * _GY % _P)


def _compress(p: _Point) -> bytes:
    zinv = pow(p[2], _P - 2, _P)
    x, y = p[0] * zinv % _P, p[1] * zinv % _P
    return int.to_bytes(y | ((x & 1) << 255), 32, "little")


def _decompress(data: bytes) -> _Point | None:
    if len(data) != 32:
        return None
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % _P)


def _expand_secret(secret: bytes) -> tuple[int, bytes]:
    h = hashlib.sha512(secret).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, h[32:]


def ed25519_public_key(secret: bytes) -> bytes:
    """The 32-byte public key of a 32-byte ed25519 secret key (seed)."""
    if len(secret) != 32:
        raise BundleSignatureError(f"an ed25519 secret key is 32 bytes, got {len(secret)}")
    a, _ = _expand_secret(secret)
    return _compress(_mul(a, _G))


def ed25519_sign(secret: bytes, message: bytes) -> bytes:
    """The 64-byte ed25519 signature of ``message`` (RFC 8032, pure Ed25519)."""
    a, prefix = _expand_secret(secret)
    public = ed25519_public_key(secret)
    r = _sha512_int(prefix + message) % _L
    big_r = _compress(_mul(r, _G))
    h = _sha512_int(big_r + public + message) % _L
    s = (r + h * a) % _L
    return big_r + int.to_bytes(s, 32, "little")


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid ed25519 signature of ``message`` under ``public``."""
    if len(public) != 32 or len(signature) != 64:
        return False
    a = _decompress(public)
    big_r = _decompress(signature[:32])
    if a is None or big_r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:
        return False
    h = _sha512_int(signature[:32] + public + message) % _L
    return _equal(_mul(s, _G), _add(big_r, _mul(h, a)))


def key_fingerprint(public: bytes) -> str:
    """Short printable identity of a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public).hexdigest()[:16]


def read_key_file(path: Path | str, *, what: str) -> bytes:
    """A 32-byte key from a file of 64 hex digits (whitespace ignored); BundleSignatureError if not."""
    p = Path(path)
    try:
        text = p.read_text(encoding="ascii").strip()
        key = bytes.fromhex(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BundleSignatureError(
            f"cannot read the {what} from {str(p)!r} ({exc}); it must hold 64 hex digits, as written "
            f"by `edge-agent sign --generate-key`"
        ) from exc
    if len(key) != 32:
        raise BundleSignatureError(
            f"the {what} in {str(p)!r} has {len(key)} bytes, not 32; it must hold 64 hex digits, as "
            f"written by `edge-agent sign --generate-key`"
        )
    return key


def _signed_message(manifest_sha256: str) -> bytes:
    return SIGNATURE_CONTEXT + manifest_sha256.encode("ascii")


def sign_bundle(path: Path | str, secret: bytes) -> Path:
    """Write ``signature.json`` into a bundle: ed25519 over its sealed manifest digest.

    The bundle is verified first (a broken bundle is never signed). Re-sealing the manifest
    later (``edge-agent calibrate``) invalidates the signature: sign again after it.
    """
    bundle = load_bundle(path)
    public = ed25519_public_key(secret)
    digest = bundle.manifest.manifest_sha256
    record = {
        "algorithm": "ed25519",
        "manifest_sha256": digest,
        "public_key": public.hex(),
        "signature": ed25519_sign(secret, _signed_message(digest)).hex(),
    }
    out = bundle.path / SIGNATURE_NAME
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, out)
    return out


def _check_signature(bundle_dir: Path, raw: Mapping[str, Any], public_key: bytes) -> None:
    """Check 5 (only with a public key): the signature file verifies over the manifest digest."""
    if len(public_key) != 32:
        raise BundleSignatureError(
            f"the configured public key has {len(public_key)} bytes, not 32; pass the 64-hex-digit "
            f".pub file written by `edge-agent sign --generate-key`"
        )
    fp = key_fingerprint(public_key)
    sig_path = bundle_dir / SIGNATURE_NAME
    if not sig_path.is_file():
        raise BundleSignatureError(
            f"bundle {str(bundle_dir)!r} is not signed, and this drone only flies bundles signed by key "
            f"{fp}: sign it on the workstation with `edge-agent sign {bundle_dir} --key SECRET_KEY`"
        )
    try:
        record = json.loads(sig_path.read_bytes())
        algorithm = record["algorithm"]
        signed_digest = record["manifest_sha256"]
        signature = bytes.fromhex(record["signature"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise BundleSignatureError(
            f"{sig_path} is not a bundle signature ({type(exc).__name__}: {exc}); sign the bundle again "
            f"with `edge-agent sign`"
        ) from exc
    if algorithm != "ed25519" or not isinstance(signed_digest, str):
        raise BundleSignatureError(
            f"{sig_path} uses algorithm {algorithm!r}; this runtime verifies 'ed25519' only: sign the "
            f"bundle again with `edge-agent sign`"
        )
    digest = str(raw["manifest_sha256"])
    if signed_digest != digest:
        raise BundleSignatureError(
            f"the manifest changed after the bundle was signed (signed {signed_digest[:16]}…, now "
            f"{digest[:16]}…): sign it again after `edge-agent calibrate` or any re-seal"
        )
    if not ed25519_verify(public_key, _signed_message(digest), signature):
        raise BundleSignatureError(
            f"the bundle signature does not verify with the configured public key {fp}: the bundle was "
            f"signed with another key or the signature was altered; sign it with the key whose public "
            f"half this drone holds"
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
    "write_manifest",
    "write_manifest_section",
]
