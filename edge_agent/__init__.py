"""edge-agent's onboard runtime: verified policy bundles, flown with a conformal calibrator and a safety shield.

The library API (docs/api.md)::

    from edge_agent import load_bundle, load_mission, build_agent, PolicyRunner, state_arrays, open_link

    bundle = load_bundle("bundle/")                 # every check of docs/bundle.md, or a BundleError
    mission = load_mission("mission.toml")          # or a MissionError naming the fix
    agent = build_agent(policy=PolicyRunner(bundle), manifest=bundle.manifest, mission=mission)
    decision = agent.step(state_arrays(vehicle_state, now_ns), now_s, link_ok)

Names are imported when first used (PEP 562), so ``import edge_agent`` stays cheap and a
subpackage import (``edge_agent.errors``) does not pull in onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
"""This package's version (the same as pyproject.toml's; a test checks it)."""

_API: dict[str, str] = {
    # bundles
    "load_bundle": "edge_agent.bundle",
    "sign_bundle": "edge_agent.bundle",
    "signature_status": "edge_agent.bundle",
    "Bundle": "edge_agent.bundle",
    "Manifest": "edge_agent.bundle",
    "read_key": "edge_agent.keys",
    # the mission
    "load_mission": "edge_agent.mission",
    "Mission": "edge_agent.mission",
    # the tick
    "build_agent": "edge_agent.agent",
    "AgentCore": "edge_agent.agent",
    "Decision": "edge_agent.agent",
    "PolicyRunner": "edge_agent.policy",
    "state_arrays": "edge_agent.observation",
    "Reason": "edge_agent.shield",
    # the vehicle side
    "open_link": "firmware_bridge.links",
    "VehicleState": "firmware_bridge.types",
    "Signal": "firmware_bridge.types",
    # errors
    "EdgeAgentError": "edge_agent.errors",
    "BundleError": "edge_agent.errors",
    "MissionError": "edge_agent.errors",
    "ConfigError": "edge_agent.errors",
}
"""Every public name of the facade → the module that defines it."""

__all__ = [
    "AgentCore",
    "Bundle",
    "BundleError",
    "ConfigError",
    "Decision",
    "EdgeAgentError",
    "Manifest",
    "Mission",
    "MissionError",
    "PolicyRunner",
    "Reason",
    "Signal",
    "VehicleState",
    "__version__",
    "build_agent",
    "load_bundle",
    "load_mission",
    "open_link",
    "read_key",
    "sign_bundle",
    "signature_status",
    "state_arrays",
]
"""The facade: ``__version__`` and every name of ``_API`` (a test checks they agree)."""

if TYPE_CHECKING:
    from edge_agent.agent import AgentCore, Decision, build_agent
    from edge_agent.bundle import Bundle, Manifest, load_bundle, sign_bundle, signature_status
    from edge_agent.errors import BundleError, ConfigError, EdgeAgentError, MissionError
    from edge_agent.keys import read_key
    from edge_agent.mission import Mission, load_mission
    from edge_agent.observation import state_arrays
    from edge_agent.policy import PolicyRunner
    from edge_agent.shield import Reason
    from firmware_bridge.links import open_link
    from firmware_bridge.types import Signal, VehicleState


def __getattr__(name: str) -> Any:
    """Import a facade name on first use."""
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_agent' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
