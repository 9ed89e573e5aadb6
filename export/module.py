"""Export a plain PyTorch ``nn.Module`` with a declared :class:`~export.spec.ExportSpec`.

Feed-forward modules: ``forward(obs [B, D]) -> action [B, A]``. Recurrent modules
(``spec.recurrent_state_size > 0``): ``forward(obs [B, D], state [B, H]) -> (action, state')``;
an LSTM concatenates h and c into the one state vector. The action is in [-1, 1]
(``module_output = "normalized"``, the graph clips and unscales to the spec's bounds) or already
physical (``"physical"``, the graph clips to the bounds). The parity reference is the module
itself in eager mode, with the post-processing written independently in numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from edge_agent.errors import ExportError
from export.graph import ActionClip, ActionUnscale, FeedForwardGraph, RecurrentGraph
from export.pipeline import F32, F64, ExportReport, Reference, build_bundle
from export.spec import ExportSpec

_CHUNK = 4096


def physical_from_normalized(action: NDArray[np.floating], spec: ExportSpec) -> F64:
    """``low + (clip(a, -1, 1) + 1) / 2 · (high − low)`` in float64: the contract the graph must meet."""
    low = np.asarray(spec.action_low, dtype=np.float64)
    high = np.asarray(spec.action_high, dtype=np.float64)
    a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    return low + (a + 1.0) / 2.0 * (high - low)


def _module_reference(module: torch.nn.Module, spec: ExportSpec) -> Reference:
    low = np.asarray(spec.action_low, dtype=np.float64)
    high = np.asarray(spec.action_high, dtype=np.float64)

    def reference(obs: F32, state: F32 | None) -> tuple[F64, F64 | None]:
        actions, states = [], []
        with torch.no_grad():
            for start in range(0, obs.shape[0], _CHUNK):
                x = torch.from_numpy(obs[start : start + _CHUNK])
                if state is None:
                    actions.append(module(x).numpy())
                else:
                    a, s = module(x, torch.from_numpy(state[start : start + _CHUNK]))
                    actions.append(a.numpy())
                    states.append(s.numpy().astype(np.float64))
        action = np.concatenate(actions).astype(np.float64)
        if spec.module_output == "normalized":
            physical = physical_from_normalized(action, spec)
        else:
            physical = np.clip(action, low, high)
        return physical, (np.concatenate(states) if states else None)

    return reference


def _probe(module: torch.nn.Module, spec: ExportSpec) -> None:
    """Run the module once on a [2, D] batch, so a wrong signature or width is named before tracing."""
    obs = torch.zeros(2, spec.observation_size)
    h = spec.recurrent_state_size
    call = f"forward(obs [2, {spec.observation_size}]" + (f", state [2, {h}])" if h else ")")
    try:
        with torch.no_grad():
            out = module(obs, torch.zeros(2, h)) if h else module(obs)
    except Exception as exc:  # whatever the user's forward raises
        raise ExportError(f"calling the module as {call} failed: {exc}; make forward match the spec") from exc
    outputs = tuple(out) if isinstance(out, tuple | list) else (out,)
    want = [(2, spec.action_size)] + ([(2, h)] if h else [])
    got = [tuple(o.shape) if isinstance(o, torch.Tensor) else type(o).__name__ for o in outputs]
    if got != want:
        raise ExportError(
            f"the module's {call} returned {got}, expected {want} "
            f"(action width {spec.action_size} for {spec.action_kind!r}"
            + (f", then the new state of width {h})" if h else ")")
            + "; fix the module or the spec"
        )


def export_module(
    module: torch.nn.Module,
    spec: ExportSpec,
    out_dir: Path | str,
    *,
    recorded_obs: NDArray[np.floating] | None = None,
    n_random: int = 10_000,
    quantize: bool = False,
    rng: np.random.Generator | None = None,
    overwrite: bool = False,
) -> ExportReport:
    """Export ``module`` as a verified bundle at ``out_dir`` (see :func:`export.pipeline.build_bundle`)."""
    module = module.eval()
    _probe(module, spec)
    post: torch.nn.Module
    if spec.module_output == "normalized":
        post = ActionUnscale(spec.action_low, spec.action_high)
    else:
        post = ActionClip(spec.action_low, spec.action_high)
    graph: torch.nn.Module
    graph = RecurrentGraph(module, post) if spec.recurrent_state_size else FeedForwardGraph(module, post)
    cls = type(module)
    source = {
        "kind": "torch.nn.Module",
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "module_output": spec.module_output,
    }
    return build_bundle(
        graph,
        _module_reference(module, spec),
        spec,
        out_dir,
        source=source,
        recorded_obs=recorded_obs,
        n_random=n_random,
        quantize=quantize,
        rng=rng,
        overwrite=overwrite,
    )


__all__ = ["export_module", "physical_from_normalized"]
