"""The export pipeline shared by every source: trace → check → parity → quantise → seal → verify.

A bundle is assembled in a temporary folder beside the target and renamed into place only
after every check passed (ONNX checker, strict shape inference, parity with the framework on
at least 10,000 observations, the runtime's own :func:`edge_agent.bundle.load_bundle`). On any
failure the temporary folder is removed and no bundle exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import logging
import os
import platform
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from numpy.typing import NDArray

from edge_agent.bundle import (
    ACTION_OUTPUT,
    BATCH_DIM,
    MODEL_NAME,
    OBS_INPUT,
    SCHEMA_VERSION,
    STATE_INPUT,
    STATE_OUTPUT,
    QuantizationInfo,
    load_bundle,
    session_options,
    write_manifest,
)
from edge_agent.errors import BundleError, ConfigError, ExportError
from export.spec import ExportSpec

OPSET = 17
"""ONNX opset the exporter writes."""
PARITY_TOLERANCE = 1e-5
"""Largest absolute difference allowed between the framework and onnxruntime (fp32)."""
MIN_PARITY_SAMPLES = 10_000
"""Random observations compared at least, besides any recorded ones."""
N_GOLDEN = 16
"""Golden samples stored in the manifest and replayed by the runtime at load."""
N_BATCH1_CHECKS = 64
"""Parity samples also run one at a time: the drone runs batch 1, so the graph must not bake a batch size in."""

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
Reference = Callable[[F32, F32 | None], tuple[F64, F64 | None]]
"""The framework's own function: (obs [N, D], state_in [N, H] | None) → (action [N, A] physical, state_out)."""


@dataclass(frozen=True, slots=True)
class ExportReport:
    """What an export wrote and measured."""

    path: Path
    n_parity_samples: int
    parity_max_abs_error: float
    quantization: QuantizationInfo | None
    manifest_sha256: str


def _versions(source: dict[str, Any]) -> dict[str, Any]:
    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "edge_agent": version("edge-agent"),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "stable_baselines3": version("stable-baselines3"),
        "python": platform.python_version(),
        "opset": OPSET,
        "source": source,
    }


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' chatter (deprecation notes, quantiser advice) during one call."""
    with warnings.catch_warnings():
        # torch 2.13 warns that the TorchScript exporter is deprecated; its replacement needs
        # onnxscript, which is not a dependency, and the legacy path handles dynamic batch well.
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


def _trace_to_onnx(graph: torch.nn.Module, spec: ExportSpec, path: Path) -> None:
    recurrent = spec.recurrent_state_size > 0
    # Trace at batch 2: a batch of 1 lets size-1 broadcasting hide a baked-in batch dimension.
    example: tuple[torch.Tensor, ...] = (torch.zeros(2, spec.observation_size),)
    inputs, outputs = [OBS_INPUT], [ACTION_OUTPUT]
    if recurrent:
        example = (*example, torch.zeros(2, spec.recurrent_state_size))
        inputs.append(STATE_INPUT)
        outputs.append(STATE_OUTPUT)
    axes = {name: {0: BATCH_DIM} for name in (*inputs, *outputs)}
    graph.eval()
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(
                graph,
                example,
                str(path),
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=axes,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:  # the tracer raises many unrelated types for unsupported code
        raise ExportError(
            f"torch.onnx.export failed: {exc}; the policy uses an operation the ONNX exporter does not "
            f"support at opset {OPSET} (rewrite it with standard torch ops)"
        ) from exc


def _check_onnx(path: Path, spec: ExportSpec) -> None:
    model = onnx.load(str(path))
    try:
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the exported ONNX graph fails the ONNX checker: {exc}") from exc
    widths = {ACTION_OUTPUT: spec.action_size, STATE_OUTPUT: spec.recurrent_state_size}
    for out in inferred.graph.output:
        dims = out.type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]
        if len(shape) != 2 or not isinstance(shape[0], str) or shape[1] != widths[out.name]:
            raise ExportError(
                f"output {out.name!r} has inferred shape {shape}, expected [{BATCH_DIM}, {widths[out.name]}]; "
                f"the policy's output width does not match the spec's action (or state) size"
            )


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, obs: F32, state: F32 | None) -> list[F32]:
    feeds = {OBS_INPUT: obs}
    if state is not None:
        feeds[STATE_INPUT] = state
    return list(session.run(None, feeds))


def _samples(
    spec: ExportSpec, n_random: int, recorded: F32 | None, rng: np.random.Generator
) -> tuple[F32, F32 | None]:
    lo, hi = (np.asarray(b, dtype=np.float64) for b in spec.clip_bounds())
    obs = rng.uniform(lo, hi, size=(n_random, spec.observation_size)).astype(np.float32)
    if recorded is not None:
        obs = np.concatenate([recorded, obs], axis=0)
    state = None
    if spec.recurrent_state_size:
        state = rng.uniform(-1.0, 1.0, size=(obs.shape[0], spec.recurrent_state_size)).astype(np.float32)
    return obs, state


def _max_abs(a: list[F32], b: list[F64 | F32]) -> float:
    worst = 0.0
    for x, y in zip(a, b):
        diff = np.abs(x.astype(np.float64) - np.asarray(y, dtype=np.float64))
        if diff.size and not np.all(np.isfinite(diff)):
            return float("inf")
        worst = max(worst, float(diff.max(initial=0.0)))
    return worst


def _parity(session: ort.InferenceSession, reference: Reference, obs: F32, state: F32 | None) -> float:
    want_action, want_state = reference(obs, state)
    expected: list[F64 | F32] = [want_action] if want_state is None else [want_action, want_state]
    got = _run(session, obs, state)
    worst = _max_abs(got, expected)
    for i in range(min(N_BATCH1_CHECKS, obs.shape[0])):
        one = _run(session, obs[i : i + 1], None if state is None else state[i : i + 1])
        worst = max(worst, _max_abs(one, [e[i : i + 1] for e in expected]))
    return worst


def _quantize(fp32_path: Path, out_path: Path, obs: F32, state: F32 | None) -> QuantizationInfo:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(fp32_path, out_path, weight_type=QuantType.QInt8)
    ref = _run(_session(fp32_path), obs, state)
    got = _run(_session(out_path), obs, state)
    diffs = np.concatenate([np.abs(g.astype(np.float64) - r).ravel() for g, r in zip(got, ref)])
    return QuantizationInfo(
        method="onnxruntime.quantize_dynamic int8 weights (QInt8), per-tensor, dynamic activations",
        max_abs_error_vs_fp32=float(diffs.max()),
        mean_abs_error_vs_fp32=float(diffs.mean()),
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tensor(name: str, width: int) -> dict[str, Any]:
    return {"name": name, "shape": [BATCH_DIM, width], "dtype": "float32"}


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not overwrite:
        raise ExportError(
            f"{str(out_dir)!r} already exists; choose another output folder or pass overwrite=True (--force)"
        )
    if not out_dir.parent.is_dir():
        raise ExportError(f"the parent folder of {str(out_dir)!r} does not exist; create it first")


def build_bundle(
    graph: torch.nn.Module,
    reference: Reference,
    spec: ExportSpec,
    out_dir: Path | str,
    *,
    source: dict[str, Any],
    recorded_obs: NDArray[np.floating] | None = None,
    n_random: int = MIN_PARITY_SAMPLES,
    quantize: bool = False,
    rng: np.random.Generator | None = None,
    overwrite: bool = False,
) -> ExportReport:
    """Export ``graph`` (raw obs → physical action) as a verified bundle at ``out_dir``.

    ``reference`` is the framework's own function the graph must reproduce within
    :data:`PARITY_TOLERANCE` on ``n_random`` (≥ 10,000) uniform observations within the spec's
    clip ranges plus ``recorded_obs`` [N, D]. ``rng`` defaults to ``numpy.random.default_rng(0)``.
    """
    out_dir = Path(out_dir)
    if n_random < MIN_PARITY_SAMPLES:
        raise ConfigError(f"n_random must be at least {MIN_PARITY_SAMPLES}, got {n_random}")
    recorded = None
    if recorded_obs is not None:
        recorded = np.asarray(recorded_obs, dtype=np.float32)
        if recorded.ndim != 2 or recorded.shape[1] != spec.observation_size:
            raise ConfigError(
                f"recorded observations have shape {list(recorded.shape)}, expected [N, {spec.observation_size}] "
                f"in the spec's feature order"
            )
        if not np.all(np.isfinite(recorded)):
            raise ConfigError("recorded observations contain NaN or inf; drop those rows first")
    _check_target(out_dir, overwrite)
    rng = np.random.default_rng(0) if rng is None else rng
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        fp32_path = tmp / "policy.fp32.onnx"
        _trace_to_onnx(graph, spec, fp32_path)
        _check_onnx(fp32_path, spec)
        obs, state = _samples(spec, n_random, recorded, rng)
        parity = _parity(_session(fp32_path), reference, obs, state)
        if not parity <= PARITY_TOLERANCE:
            raise ExportError(
                f"parity check failed: onnxruntime differs from the framework by up to {parity:.3g} "
                f"(allowed {PARITY_TOLERANCE:g}) over {obs.shape[0]} observations; the graph does not compute "
                f"what the policy computes (usual causes: data-dependent Python control flow, randomness, an "
                f"op exported differently; or float32 rounding in a network whose inputs are far from unit "
                f"scale: normalise them); no bundle written"
            )
        model_path = tmp / MODEL_NAME
        quant = None
        if quantize:
            quant = _quantize(fp32_path, model_path, obs, state)
            fp32_path.unlink()
        else:
            fp32_path.rename(model_path)
        golden_obs = obs[:N_GOLDEN]
        golden_state = None if state is None else state[:N_GOLDEN]
        golden_out = _run(_session(model_path), golden_obs, golden_state)
        inputs = [_tensor(OBS_INPUT, spec.observation_size)]
        outputs = [_tensor(ACTION_OUTPUT, spec.action_size)]
        g_in = {OBS_INPUT: golden_obs.tolist()}
        g_out = {ACTION_OUTPUT: golden_out[0].tolist()}
        recurrent = None
        if golden_state is not None:
            h = spec.recurrent_state_size
            inputs.append(_tensor(STATE_INPUT, h))
            outputs.append(_tensor(STATE_OUTPUT, h))
            g_in[STATE_INPUT] = golden_state.tolist()
            g_out[STATE_OUTPUT] = golden_out[1].tolist()
            recurrent = {"state_size": h, "cell": spec.recurrent_cell}
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "observation": spec.manifest_observation(),
            "action": spec.manifest_action(),
            "control_rate_hz": spec.control_rate_hz,
            "recurrent": recurrent,
            "io": {"inputs": inputs, "outputs": outputs},
            "golden": {"n": int(golden_obs.shape[0]), "inputs": g_in, "outputs": g_out},
            "files": {MODEL_NAME: _sha256(model_path)},
            "producer": _versions(source),
            "quantization": None
            if quant is None
            else {
                "method": quant.method,
                "max_abs_error_vs_fp32": quant.max_abs_error_vs_fp32,
                "mean_abs_error_vs_fp32": quant.mean_abs_error_vs_fp32,
            },
            "parity": {
                "n_samples": int(obs.shape[0]),
                "n_recorded": 0 if recorded is None else int(recorded.shape[0]),
                "max_abs_error": parity,
                "tolerance": PARITY_TOLERANCE,
                "graph": "fp32",
            },
            "calibration": None,
            "certificate": None,
        }
        write_manifest(tmp, manifest)
        try:
            bundle = load_bundle(tmp)
        except BundleError as exc:
            raise ExportError(f"the written bundle fails the runtime's own load checks: {exc}") from exc
        _check_target(out_dir, overwrite)
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportReport(
        path=out_dir,
        n_parity_samples=int(obs.shape[0]),
        parity_max_abs_error=parity,
        quantization=quant,
        manifest_sha256=bundle.manifest.manifest_sha256,
    )


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        os.rename(tmp, out_dir)
        return
    # Replace: move the old bundle aside first so the target is never half old, half new.
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
    old.rmdir()
    os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)


__all__ = [
    "MIN_PARITY_SAMPLES",
    "N_GOLDEN",
    "OPSET",
    "PARITY_TOLERANCE",
    "ExportReport",
    "Reference",
    "build_bundle",
]
