"""The one exception hierarchy of the onboard runtime.

Start-up errors are raised and refuse to start, with a message that names the problem and
the fix. In flight nothing is raised out of the loop: errors become fallback decisions with a
named reason (see ``edge_agent.shield``).
"""

from __future__ import annotations

from firmware_bridge.errors import BridgeError


class EdgeAgentError(Exception):
    """Base of every error edge-agent raises on purpose."""


class BundleError(EdgeAgentError):
    """A policy bundle is missing, malformed, tampered with or fails its own golden samples."""


class BundleIntegrityError(BundleError):
    """A file's SHA-256 does not match the manifest, or a signature does not verify."""


class BundleSignatureError(BundleIntegrityError):
    """A drone configured with a public key got an unsigned, wrongly signed or re-sealed bundle."""


class KeyFileError(BundleSignatureError):
    """A key file is unreadable, untyped (no header line), or the wrong half (secret where public is needed)."""


class UnlistedFileError(BundleIntegrityError):
    """The bundle folder holds a file its manifest does not list (so no hash covers it)."""


class BundleSchemaError(BundleError):
    """The manifest is malformed or declares a schema version this runtime does not read."""


class BundleContractError(BundleError):
    """The ONNX graph's inputs/outputs disagree with the manifest (names, shapes, dtypes)."""


class GoldenSampleError(BundleError):
    """Replaying the bundle's golden samples gave different outputs: refuse to fly."""


# Narrow bundle errors: one class per start-up check of ``edge_agent.bundle.load_bundle``, so a
# caller (or a test) can tell the refusals apart without parsing messages.


class BundleNotFoundError(BundleError):
    """The bundle folder, or its manifest.json, does not exist."""


class UnsupportedSchemaVersionError(BundleSchemaError):
    """The manifest declares a schema version this runtime does not read."""


class ManifestHashError(BundleIntegrityError):
    """The manifest's self-hash does not match its content: it was edited after sealing."""


class BundleFileMissingError(BundleIntegrityError):
    """A file the manifest lists is not in the bundle folder."""


class FileHashError(BundleIntegrityError):
    """A bundle file's SHA-256 differs from the one the manifest lists (tampered or corrupted)."""


class ModelLoadError(BundleError):
    """onnxruntime cannot load the bundle's ONNX model."""


class FeatureSpecError(BundleSchemaError):
    """An observation feature is not in the vocabulary, or its size, unit, frame or clip is wrong."""


class ExportError(EdgeAgentError):
    """An export failed a check (ONNX checker, parity with the framework); no bundle written."""


class ConfigError(EdgeAgentError):
    """A configuration value is out of range or inconsistent."""


class InputFileError(EdgeAgentError):
    """A TOML input (mission, scenario, export spec) is unreadable, not TOML, or fails its checks.

    Raised through :mod:`edge_agent.tomlcheck`, one subclass per kind of input; catch this one
    for all of them.
    """


class MissionError(InputFileError):
    """A mission file is malformed or unsafe (fence not closed, waypoint in a keep-out, ...)."""


class ScenarioError(InputFileError, ConfigError):
    """A scenario file (``calib``) is malformed; also a ConfigError, as it was before the family."""


class ExportSpecError(InputFileError, ConfigError):
    """An export spec (``export``) is malformed; also a ConfigError, as it was before the family."""


class CalibrationError(EdgeAgentError):
    """Calibration cannot be computed as asked (too few scores for α, unusable log, ...)."""


class ActivationError(EdgeAgentError):
    """The vehicle could not be brought under the agent's control (no telemetry, arm refused, ...)."""


__all__ = [
    "ActivationError",
    "BridgeError",
    "BundleContractError",
    "BundleError",
    "BundleFileMissingError",
    "BundleIntegrityError",
    "BundleNotFoundError",
    "BundleSchemaError",
    "BundleSignatureError",
    "CalibrationError",
    "ConfigError",
    "EdgeAgentError",
    "ExportError",
    "ExportSpecError",
    "FeatureSpecError",
    "FileHashError",
    "GoldenSampleError",
    "InputFileError",
    "KeyFileError",
    "ManifestHashError",
    "MissionError",
    "ModelLoadError",
    "ScenarioError",
    "UnlistedFileError",
    "UnsupportedSchemaVersionError",
]
