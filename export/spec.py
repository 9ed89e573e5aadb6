"""What an export declares about a policy: observation features and clips, action, rate.

One frozen :class:`ExportSpec`, built in Python or loaded from TOML for ``edge-agent export``::

    control_rate_hz = 50.0
    module_output = "normalized"       # or "physical" (actions already physical; docs/bundle.md)
    recurrent_state_size = 0           # > 0: forward(obs, state_in) -> (action, state_out)
    recurrent_cell = "gru"             # gru | lstm (h and c concatenated) | custom

    [[observation]]
    name = "goal_rel_ned_m"            # from firmware_bridge.features.VOCABULARY
    clip = [-20.0, 20.0]               # optional: one bound for all elements ...
    # clip_lo = [-20, -20, -5]         # ... or per element; default: the vocabulary's clip

    [action]
    kind = "velocity_ned_yaw_rate"
    low = [-3.0, -3.0, -1.0, -1.0]
    high = [3.0, 3.0, 1.0, 1.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.bundle import ACTION_KINDS
from edge_agent.errors import ExportSpecError
from edge_agent.tomlcheck import Table, read_toml
from firmware_bridge.features import VOCABULARY

MODULE_OUTPUTS = ("normalized", "physical")
"""What a plain ``nn.Module``'s forward returns: an action in [-1, 1] or in physical units."""
RECURRENT_CELLS = ("gru", "lstm", "custom")
"""Recurrent cell kinds a spec may declare (informational: the state contract is the same)."""


@dataclass(frozen=True, slots=True)
class FeatureClip:
    """One observation feature with its per-element clip range (the range the policy was trained on)."""

    name: str
    clip_lo: tuple[float, ...]
    clip_hi: tuple[float, ...]


def feature(
    name: str, lo: float | Sequence[float] | None = None, hi: float | Sequence[float] | None = None
) -> FeatureClip:
    """A :class:`FeatureClip` for a vocabulary feature; bounds default to the vocabulary's clip.

    ``lo``/``hi`` may be one number (all elements) or one per element. ``prev_action`` takes its
    size from the action, so give it per-element bounds or let :class:`ExportSpec` fill them.
    """
    if name not in VOCABULARY:
        raise ExportSpecError(
            f"observation feature {name!r} is not in the feature vocabulary; use one of: {', '.join(VOCABULARY)}"
        )
    spec = VOCABULARY[name]
    size = spec.size

    def expand(value: float | Sequence[float] | None, default: float) -> tuple[float, ...]:
        if value is None:
            return (float(default),) * size
        if isinstance(value, int | float):
            return (float(value),) * size
        return tuple(float(v) for v in value)

    return FeatureClip(name, expand(lo, spec.default_clip[0]), expand(hi, spec.default_clip[1]))


@dataclass(frozen=True, slots=True)
class ExportSpec:
    """The contract an exported policy declares: observation, action, rate, state."""

    observation: tuple[FeatureClip, ...]
    action_kind: str
    action_low: tuple[float, ...]
    """Physical lower bound per action element, in the kind's units."""
    action_high: tuple[float, ...]
    control_rate_hz: float
    """The rate the policy was trained at; the runtime flies it at this rate."""
    action_names: tuple[str, ...] = ()
    """Element names; empty means the kind's defaults (``edge_agent.bundle.ACTION_KINDS``)."""
    module_output: str = "normalized"
    """``normalized`` (forward / SB3 predict returns [-1, 1], the graph unscales) or ``physical``
    (already in the spec's bounds; for SB3, the env's Box equals them)."""
    recurrent_state_size: int = 0
    """> 0 for recurrent policies: width H of ``state_in``/``state_out``."""
    recurrent_cell: str = "custom"

    def __post_init__(self) -> None:
        if self.action_kind not in ACTION_KINDS:
            raise ExportSpecError(
                f"action kind {self.action_kind!r} is not known; use one of: {', '.join(ACTION_KINDS)}"
            )
        size = len(ACTION_KINDS[self.action_kind])
        if not self.action_names:
            object.__setattr__(self, "action_names", ACTION_KINDS[self.action_kind])
        # Normalise number types once, so the manifest always carries floats.
        object.__setattr__(self, "action_low", tuple(float(v) for v in self.action_low))
        object.__setattr__(self, "action_high", tuple(float(v) for v in self.action_high))
        object.__setattr__(self, "control_rate_hz", float(self.control_rate_hz))
        if not (len(self.action_low) == len(self.action_high) == len(self.action_names) == size):
            raise ExportSpecError(
                f"action kind {self.action_kind!r} has {size} elements but the spec gives "
                f"{len(self.action_low)} low, {len(self.action_high)} high bounds and "
                f"{len(self.action_names)} names; give exactly {size} of each"
            )
        if not all(
            math.isfinite(a) and math.isfinite(b) and a < b for a, b in zip(self.action_low, self.action_high)
        ):
            raise ExportSpecError(
                f"action bounds must be finite with low < high, got low={list(self.action_low)} "
                f"high={list(self.action_high)}"
            )
        if not (math.isfinite(self.control_rate_hz) and self.control_rate_hz > 0):
            raise ExportSpecError(f"control_rate_hz must be a positive number, got {self.control_rate_hz}")
        if self.module_output not in MODULE_OUTPUTS:
            raise ExportSpecError(
                f"module_output must be one of {MODULE_OUTPUTS}, got {self.module_output!r}"
            )
        if self.recurrent_state_size < 0:
            raise ExportSpecError(f"recurrent_state_size must be >= 0, got {self.recurrent_state_size}")
        if self.recurrent_cell not in RECURRENT_CELLS:
            raise ExportSpecError(
                f"recurrent_cell must be one of {RECURRENT_CELLS}, got {self.recurrent_cell!r}"
            )
        if not self.observation:
            raise ExportSpecError("the spec declares no observation features; list at least one")
        fixed: list[FeatureClip] = []
        for f in self.observation:
            if f.name not in VOCABULARY:
                raise ExportSpecError(
                    f"observation feature {f.name!r} is not in the feature vocabulary; use one of: "
                    f"{', '.join(VOCABULARY)}"
                )
            want = size if f.name == "prev_action" else VOCABULARY[f.name].size
            lo, hi = f.clip_lo, f.clip_hi
            if f.name == "prev_action" and len(lo) != want and len(set(lo)) == 1 and len(set(hi)) == 1:
                # prev_action's width follows the action; a uniform bound stretches to it.
                lo, hi = (lo[0],) * want, (hi[0],) * want
            if len(lo) != want or len(hi) != want:
                raise ExportSpecError(
                    f"observation feature {f.name!r} has {want} elements but its clip has {len(lo)} low "
                    f"and {len(hi)} high bounds; give one bound, or one per element"
                )
            if not all(math.isfinite(a) and math.isfinite(b) and a < b for a, b in zip(lo, hi)):
                raise ExportSpecError(
                    f"observation feature {f.name!r} needs finite clip bounds with low < high, "
                    f"got {list(lo)} .. {list(hi)}"
                )
            fixed.append(FeatureClip(f.name, tuple(lo), tuple(hi)))
        names = [f.name for f in fixed]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ExportSpecError(f"observation features {duplicates} appear more than once; list each once")
        object.__setattr__(self, "observation", tuple(fixed))

    @property
    def observation_size(self) -> int:
        """D, the observation width."""
        return sum(len(f.clip_lo) for f in self.observation)

    @property
    def action_size(self) -> int:
        """A, the action width."""
        return len(self.action_names)

    def clip_bounds(self) -> tuple[list[float], list[float]]:
        """Per-element observation clip bounds, ([D], [D])."""
        lo = [v for f in self.observation for v in f.clip_lo]
        hi = [v for f in self.observation for v in f.clip_hi]
        return lo, hi

    def manifest_observation(self) -> list[dict[str, Any]]:
        """The manifest's ``observation`` section."""
        return [
            {
                "name": f.name,
                "size": len(f.clip_lo),
                "unit": VOCABULARY[f.name].unit,
                "frame": VOCABULARY[f.name].frame,
                "clip_lo": list(f.clip_lo),
                "clip_hi": list(f.clip_hi),
            }
            for f in self.observation
        ]

    def manifest_action(self) -> dict[str, Any]:
        """The manifest's ``action`` section."""
        return {
            "kind": self.action_kind,
            "names": list(self.action_names),
            "low": list(self.action_low),
            "high": list(self.action_high),
        }


_TOP_KEYS = (
    "control_rate_hz",
    "module_output",
    "recurrent_state_size",
    "recurrent_cell",
    "observation",
    "action",
)


def spec_from_dict(data: dict[str, Any], where: str = "spec") -> ExportSpec:
    """An :class:`ExportSpec` from the TOML document's table (unknown keys are refused)."""
    top = Table(data, "spec", error=ExportSpecError, prefix=f"{where}: ", docs="docs/bundle.md")
    top.allow(_TOP_KEYS)
    rate = top.number("control_rate_hz", gt=0.0)
    module_output = top.string("module_output", MODULE_OUTPUTS, "normalized")
    state_size = top.integer("recurrent_state_size", 0, ge=0)
    cell = top.string("recurrent_cell", RECURRENT_CELLS, "custom")
    features: list[FeatureClip] = []
    for t in top.tables("observation"):
        t.allow(("name", "clip", "clip_lo", "clip_hi"))
        name = t.get("name")
        if not isinstance(name, str):
            raise t.err(f"name must be a feature name (a string), got {name!r}")
        if t.has("clip") and (t.has("clip_lo") or t.has("clip_hi")):
            raise t.err("gives both clip and clip_lo/clip_hi; give one")
        if t.has("clip"):
            lo, hi = t.vector("clip", 2)
            features.append(feature(name, lo, hi))
        else:
            features.append(feature(name, t.get("clip_lo", None), t.get("clip_hi", None)))
        t.done()
    action = top.table("action")
    action.allow(("kind", "low", "high", "names"))
    kind = action.get("kind")
    if not isinstance(kind, str):
        raise action.err(f"kind must be an action kind (a string), got {kind!r}")
    names = action.get("names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise action.err(f"names must be a list of strings, got {names!r}")
    spec = ExportSpec(
        observation=tuple(features),
        action_kind=kind,
        action_low=action.numbers("low"),
        action_high=action.numbers("high"),
        action_names=tuple(names),
        control_rate_hz=rate,
        module_output=module_output,
        recurrent_state_size=state_size,
        recurrent_cell=cell,
    )
    action.done()
    top.done()
    return spec


def load_spec(path: Path | str) -> ExportSpec:
    """Read an :class:`ExportSpec` from a TOML file."""
    data = read_toml(
        path, what="export spec", error=ExportSpecError, fix="pass the TOML file describing the policy"
    )
    return spec_from_dict(data, where=str(path))


__all__ = [
    "MODULE_OUTPUTS",
    "RECURRENT_CELLS",
    "ExportSpec",
    "FeatureClip",
    "feature",
    "load_spec",
    "spec_from_dict",
]
