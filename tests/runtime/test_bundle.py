"""load_bundle: a good bundle loads; every kind of damage is refused with its own error and message."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from edge_agent.bundle import (
    SEALABLE_SECTIONS,
    Bundle,
    file_sha256,
    load_bundle,
    manifest_digest,
    write_manifest,
    write_manifest_section,
)
from edge_agent.errors import (
    BundleContractError,
    BundleError,
    BundleFileMissingError,
    BundleIntegrityError,
    BundleNotFoundError,
    BundleSchemaError,
    FeatureSpecError,
    FileHashError,
    GoldenSampleError,
    ManifestHashError,
    ModelLoadError,
    UnsupportedSchemaVersionError,
)
from export.module import export_module
from export.spec import ExportSpec, feature

ACTION = {"action_kind": "velocity_ned_yaw_rate", "action_low": (-2, -2, -1, -1), "action_high": (2, 2, 1, 1)}


def _spec(*names: str) -> ExportSpec:
    return ExportSpec(observation=tuple(feature(n) for n in names), control_rate_hz=30.0, **ACTION)  # type: ignore[arg-type]


def _mlp(d: int) -> nn.Module:
    torch.manual_seed(d)
    return nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, 4), nn.Tanh())


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two good bundles (D = 7 and D = 10), exported once for the whole module."""
    root = tmp_path_factory.mktemp("bundles")
    export_module(_mlp(7), _spec("goal_rel_ned_m", "vel_ned_m_s", "battery_frac"), root / "d7")
    export_module(_mlp(10), _spec("goal_rel_ned_m", "vel_ned_m_s", "prev_action"), root / "d10")
    return {"d7": root / "d7", "d10": root / "d10"}


@pytest.fixture
def bundle_dir(made: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the D = 7 bundle that a test may damage."""
    return Path(shutil.copytree(made["d7"], tmp_path / "bundle"))


def _read(bundle_dir: Path) -> dict[str, Any]:
    return json.loads((bundle_dir / "manifest.json").read_text())


def _edit_and_reseal(bundle_dir: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Change the manifest as a buggy or foreign exporter would, with a valid self-hash."""
    data = _read(bundle_dir)
    edit(data)
    write_manifest(bundle_dir, data)


def _refused(bundle_dir: Path, cls: type[BundleError], message: str) -> None:
    with pytest.raises(cls, match=re.escape(message)) as info:
        load_bundle(bundle_dir)
    assert type(info.value) is cls, f"expected exactly {cls.__name__}, got {type(info.value).__name__}"


def test_good_bundle_loads_with_typed_manifest(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    assert isinstance(bundle, Bundle)
    assert bundle.path == bundle_dir and bundle.model_path == bundle_dir / "policy.onnx"
    assert bundle.model_bytes == (bundle_dir / "policy.onnx").read_bytes()
    m = bundle.manifest
    assert m.observation_size == 7 and m.feature_names == ("goal_rel_ned_m", "vel_ned_m_s", "battery_frac")
    assert m.clip_lo.tolist() == [-20.0] * 3 + [-15.0] * 3 + [-1.0]
    assert m.action.low.dtype == np.float32 and not m.action.low.flags.writeable
    assert m.control_rate_hz == 30.0
    assert m.files == {"policy.onnx": file_sha256(bundle_dir / "policy.onnx")}
    assert m.manifest_sha256 == manifest_digest(_read(bundle_dir))


def test_missing_folder_and_missing_manifest(tmp_path: Path, bundle_dir: Path) -> None:
    _refused(
        tmp_path / "nope",
        BundleNotFoundError,
        "does not exist or is not a folder; pass the folder that holds",
    )
    (bundle_dir / "manifest.json").unlink()
    _refused(bundle_dir, BundleNotFoundError, "manifest.json is missing from bundle folder")


def test_malformed_json(bundle_dir: Path) -> None:
    path = bundle_dir / "manifest.json"
    path.write_text(path.read_text()[:-20])
    _refused(bundle_dir, BundleSchemaError, "is not valid JSON (")


def test_unsupported_schema_version(bundle_dir: Path) -> None:
    _edit_and_reseal(bundle_dir, lambda d: d.update(schema_version=2))
    _refused(
        bundle_dir,
        UnsupportedSchemaVersionError,
        "manifest schema_version is 2 but this runtime reads version 1; re-export the bundle",
    )


def test_edited_manifest(bundle_dir: Path) -> None:
    data = _read(bundle_dir)
    data["action"]["high"][0] = 20.0  # someone "just widens the bounds"
    (bundle_dir / "manifest.json").write_text(json.dumps(data))
    _refused(
        bundle_dir, ManifestHashError, "manifest.json was edited after export; re-export the bundle instead"
    )


def test_missing_model_file(bundle_dir: Path) -> None:
    (bundle_dir / "policy.onnx").unlink()
    _refused(
        bundle_dir, BundleFileMissingError, "file 'policy.onnx' listed in the manifest is missing from bundle"
    )


def test_tampered_model_file(bundle_dir: Path) -> None:
    model = bytearray((bundle_dir / "policy.onnx").read_bytes())
    model[-5] ^= 0x01  # one bit of one weight
    (bundle_dir / "policy.onnx").write_bytes(bytes(model))
    _refused(bundle_dir, FileHashError, "but the manifest lists")
    with pytest.raises(BundleIntegrityError, match=re.escape("the file was modified or corrupted")):
        load_bundle(bundle_dir)


def test_model_onnxruntime_cannot_load(bundle_dir: Path) -> None:
    (bundle_dir / "policy.onnx").write_bytes(b"this is not an onnx model")
    _edit_and_reseal(
        bundle_dir, lambda d: d["files"].update({"policy.onnx": file_sha256(bundle_dir / "policy.onnx")})
    )
    _refused(bundle_dir, ModelLoadError, "cannot load")


def test_wrong_input_shape(bundle_dir: Path, made: dict[str, Path]) -> None:
    # The D = 10 model under the D = 7 manifest, hashes made consistent: only the shape disagrees.
    shutil.copy(made["d10"] / "policy.onnx", bundle_dir / "policy.onnx")
    _edit_and_reseal(
        bundle_dir, lambda d: d["files"].update({"policy.onnx": file_sha256(bundle_dir / "policy.onnx")})
    )
    _refused(
        bundle_dir,
        BundleContractError,
        "ONNX graph inputs are [obs ['batch', 10] float32] but the manifest declares [obs ['batch', 7] float32]",
    )


def test_io_section_inconsistent_with_observation(bundle_dir: Path) -> None:
    def drop_feature(d: dict[str, Any]) -> None:
        d["observation"] = d["observation"][:2]

    _edit_and_reseal(bundle_dir, drop_feature)
    _refused(
        bundle_dir,
        BundleContractError,
        "but its observation/action/recurrent sections imply inputs [obs ['batch', 6]",
    )


def test_unknown_feature_and_wrong_size(bundle_dir: Path) -> None:
    def rename(d: dict[str, Any]) -> None:
        d["observation"][2]["name"] = "battery_percent"

    _edit_and_reseal(bundle_dir, rename)
    _refused(
        bundle_dir, FeatureSpecError, "observation feature 'battery_percent' is not in the feature vocabulary"
    )

    def resize(d: dict[str, Any]) -> None:
        d["observation"][2]["name"] = "vel_enu_m_s"

    _edit_and_reseal(bundle_dir, resize)
    _refused(
        bundle_dir,
        FeatureSpecError,
        "observation feature 'vel_enu_m_s' declares size 1 but the vocabulary defines 3",
    )


def test_golden_sample_mismatch(bundle_dir: Path) -> None:
    def skew(d: dict[str, Any]) -> None:
        d["golden"]["outputs"]["action"] = [
            [v + 1e-3 for v in row] for row in d["golden"]["outputs"]["action"]
        ]

    _edit_and_reseal(bundle_dir, skew)
    _refused(
        bundle_dir,
        GoldenSampleError,
        "golden sample replay of 'action': mean absolute difference 0.001 exceeds 1e-05",
    )


def test_golden_difference_below_tolerance_is_accepted(bundle_dir: Path) -> None:
    def nudge(d: dict[str, Any]) -> None:
        d["golden"]["outputs"]["action"] = [
            [v + 2e-6 for v in row] for row in d["golden"]["outputs"]["action"]
        ]

    _edit_and_reseal(bundle_dir, nudge)
    load_bundle(bundle_dir)


def test_write_manifest_section_reseals(bundle_dir: Path) -> None:
    before = load_bundle(bundle_dir).manifest.manifest_sha256
    calibration = {"score": "position deviation over 10 ticks", "n": 500, "alpha": 0.1, "quantile_m": 0.42}
    write_manifest_section(bundle_dir, "calibration", calibration)
    write_manifest_section(bundle_dir, "certificate", {"N": 13809, "k": 0, "beta": 1e-6, "epsilon": 1e-3})
    m = load_bundle(bundle_dir).manifest
    assert m.calibration == calibration and m.certificate is not None and m.certificate["N"] == 13809
    assert m.manifest_sha256 != before
    write_manifest_section(bundle_dir, "certificate", None)
    assert load_bundle(bundle_dir).manifest.certificate is None
    write_manifest_section(bundle_dir, "calibration", {"q": np.float64(0.5), "scores": np.arange(3)})
    assert load_bundle(bundle_dir).manifest.calibration == {"q": 0.5, "scores": [0, 1, 2]}
    with pytest.raises(BundleSchemaError, match=re.escape("must hold JSON values (numbers, strings")):
        write_manifest_section(bundle_dir, "calibration", {"q": float("nan")})
    assert SEALABLE_SECTIONS == ("calibration", "certificate")


def test_write_manifest_section_refuses_other_sections_and_edited_manifests(bundle_dir: Path) -> None:
    with pytest.raises(
        BundleSchemaError, match=re.escape("manifest section 'action' cannot be written after export")
    ):
        write_manifest_section(bundle_dir, "action", {"kind": "rates_thrust"})
    data = _read(bundle_dir)
    data["control_rate_hz"] = 100.0
    (bundle_dir / "manifest.json").write_text(json.dumps(data))
    # Re-sealing must not launder an edit made behind the exporter's back.
    with pytest.raises(ManifestHashError, match=re.escape("manifest self-hash mismatch")):
        write_manifest_section(bundle_dir, "calibration", {"n": 1})


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("io"), "manifest field manifest.io is missing"),
        (lambda d: d.pop("golden"), "manifest field manifest.golden is missing"),
        (
            lambda d: d.update(control_rate_hz="fast"),
            "manifest field manifest.control_rate_hz must be int or float",
        ),
        (lambda d: d.update(control_rate_hz=-5), "control_rate_hz must be positive, found -5.0"),
        (lambda d: d["action"].update(low="low"), "manifest field action.low must be list, found str"),
        (lambda d: d["action"].update(kind="thrust_only"), "action kind 'thrust_only' is not known"),
        (lambda d: d.update(observation={}), "manifest field observation must be a non-empty list"),
        (lambda d: d.update(calibration=[1, 2]), "manifest field calibration must be an object or null"),
    ],
)
def test_malformed_sections_are_schema_errors(
    bundle_dir: Path, edit: Callable[[dict[str, Any]], Any], message: str
) -> None:
    _edit_and_reseal(bundle_dir, edit)
    with pytest.raises(BundleSchemaError, match=re.escape(message)):
        load_bundle(bundle_dir)
