"""The policy bundle: format, sealing, and the onboard loader that verifies it before flight.

A bundle is a folder holding ``policy.onnx`` and ``manifest.json`` (nothing pickled). The
manifest declares the observation (features from :data:`firmware_bridge.features.VOCABULARY`
with clip ranges), the action (kind, names, physical bounds), the control rate, the ONNX
graph's inputs and outputs, golden input/output samples, the SHA-256 of every file and a
self-hash over its own content, so that an edit anywhere is caught at load.

:func:`load_bundle` runs every check in a fixed order and refuses with one narrow error class
per check (see ``docs/bundle.md``). It needs numpy and onnxruntime only: the ``onnx`` package and
torch stay on the workstation. The manifest's format, sealing and parser are
:mod:`edge_agent.manifest`; their names are re-exported here.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

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
    BundleSchemaError,
    FileHashError,
    GoldenSampleError,
    ModelLoadError,
    UnlistedFileError,
)
from edge_agent.keys import key_fingerprint, read_key_file
from edge_agent.manifest import (
    ACTION_KINDS,
    ACTION_OUTPUT,
    BATCH_DIM,
    GOLDEN_TOLERANCE,
    MANIFEST_NAME,
    MODEL_NAME,
    OBS_INPUT,
    SCHEMA_VERSION,
    SEALABLE_SECTIONS,
    STATE_INPUT,
    STATE_OUTPUT,
    ActionSpec,
    Manifest,
    ObservationFeature,
    ParityInfo,
    QuantizationInfo,
    RecurrentSpec,
    TensorSpec,
    canonical_json,
    checked_field,
    file_sha256,
    manifest_digest,
    parse_manifest,
    parse_tensors,
    read_sealed_manifest,
    seal_manifest,
    write_manifest,
    write_manifest_section,
)

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64"}


@dataclass(frozen=True, slots=True, eq=False)
class Bundle:
    """A bundle that passed every load check. ``model_bytes`` are the very bytes that were hashed."""

    path: Path
    manifest: Manifest
    model_path: Path
    model_bytes: bytes


# ---------------------------------------------------------------------------------------------
# Loading and verification.


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
    io = checked_field(raw, "io", dict, "manifest")
    for role, declared, actual in (
        ("input", parse_tensors(io.get("inputs"), "io.inputs"), session.get_inputs()),
        ("output", parse_tensors(io.get("outputs"), "io.outputs"), session.get_outputs()),
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
    raw = read_sealed_manifest(bundle_dir)
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
    manifest = parse_manifest(raw)
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
    raw = read_sealed_manifest(bundle_dir)
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
