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


class BundleSchemaError(BundleError):
    """The manifest is malformed or declares a schema version this runtime does not read."""


class BundleContractError(BundleError):
    """The ONNX graph's inputs/outputs disagree with the manifest (names, shapes, dtypes)."""


class GoldenSampleError(BundleError):
    """Replaying the bundle's golden samples gave different outputs: refuse to fly."""


class ExportError(EdgeAgentError):
    """An export failed a check (ONNX checker, parity with the framework); no bundle written."""


class MissionError(EdgeAgentError):
    """A mission file is malformed or unsafe (fence not closed, waypoint in a keep-out, ...)."""


class ConfigError(EdgeAgentError):
    """A configuration value is out of range or inconsistent."""


class CalibrationError(EdgeAgentError):
    """Calibration cannot be computed as asked (too few scores for α, unusable log, ...)."""


class ActivationError(EdgeAgentError):
    """The vehicle could not be brought under the agent's control (no telemetry, arm refused, ...)."""


__all__ = [
    "ActivationError",
    "BridgeError",
    "BundleContractError",
    "BundleError",
    "BundleIntegrityError",
    "BundleSchemaError",
    "CalibrationError",
    "ConfigError",
    "EdgeAgentError",
    "ExportError",
    "GoldenSampleError",
    "MissionError",
]
