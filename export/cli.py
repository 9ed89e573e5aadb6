"""``edge-agent export``: a PyTorch module or a Stable-Baselines3 model → a verified bundle.

Examples::

    edge-agent export --spec policy.toml --sb3 sac.zip --algo sac --vecnormalize vecnorm.pkl --out bundle/
    edge-agent export --spec policy.toml --module mypkg.policies:make_policy --weights w.pt --out bundle/
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import numpy as np
import torch

from edge_agent.errors import ConfigError
from export.module import export_module
from export.pipeline import MIN_PARITY_SAMPLES, ExportReport
from export.sb3 import SB3_ALGOS, export_sb3
from export.spec import load_spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``edge-agent export``."""
    parser.add_argument("--spec", required=True, type=Path, help="TOML export spec (features, action, rate)")
    parser.add_argument("--out", required=True, type=Path, help="bundle folder to write")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--sb3", type=Path, metavar="MODEL.zip", help="a Stable-Baselines3 model saved by model.save()"
    )
    source.add_argument(
        "--module",
        metavar="PKG.MOD:FACTORY",
        help="an importable callable returning the torch.nn.Module (or the module object itself)",
    )
    parser.add_argument("--algo", choices=SB3_ALGOS, help="SB3 algorithm of --sb3 (required with --sb3)")
    parser.add_argument("--vecnormalize", type=Path, help="SB3 VecNormalize file saved with the model")
    parser.add_argument(
        "--no-vecnormalize",
        action="store_true",
        help="export without VecNormalize statistics although a VecNormalize .pkl lies beside the model",
    )
    parser.add_argument(
        "--weights", type=Path, help="state_dict for --module (torch.save; loaded weights-only)"
    )
    parser.add_argument(
        "--recorded", type=Path, help=".npy of recorded observations [N, D] added to the parity set"
    )
    parser.add_argument(
        "--n-random", type=int, default=MIN_PARITY_SAMPLES, help="random parity observations (≥ 10,000)"
    )
    parser.add_argument("--quantize", action="store_true", help="ship an int8 dynamically quantised model")
    parser.add_argument("--seed", type=int, default=0, help="seed of the parity sample generator")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")


def _load_module(target: str, weights: Path | None) -> torch.nn.Module:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"--module {target!r} must look like package.module:factory")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import {target!r}: {exc}; check PYTHONPATH and the name") from exc
    module = obj if isinstance(obj, torch.nn.Module) else obj()
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"{target!r} returned {type(module).__name__}, not a torch.nn.Module")
    if weights is not None:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            module.load_state_dict(state)
        except (OSError, RuntimeError, KeyError, TypeError) as exc:
            raise ConfigError(f"cannot load weights {str(weights)!r} into {target!r}: {exc}") from exc
    return module


def _load_recorded(path: Path | None) -> np.ndarray | None:
    if path is None:
        return None
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read recorded observations {str(path)!r} as a .npy array: {exc}") from exc


def _print_report(report: ExportReport) -> None:
    print(f"bundle written: {report.path}")
    print(
        f"  parity: max |onnxruntime − framework| = {report.parity_max_abs_error:.3g} over {report.n_parity_samples} observations"
    )
    if report.quantization is not None:
        q = report.quantization
        print(
            f"  quantised ({q.method}): max |int8 − fp32| = {q.max_abs_error_vs_fp32:.3g}, "
            f"mean {q.mean_abs_error_vs_fp32:.3g}"
        )
    print(f"  manifest sha256: {report.manifest_sha256}")
    print(f"  check it with: edge-agent inspect {report.path}")


def run(args: argparse.Namespace) -> int:
    """Run ``edge-agent export``."""
    spec = load_spec(args.spec)
    recorded = _load_recorded(args.recorded)
    rng = np.random.default_rng(args.seed)
    if args.sb3 is not None:
        if args.algo is None:
            raise ConfigError(f"--algo is required with --sb3; one of: {', '.join(SB3_ALGOS)}")
        if args.weights is not None:
            raise ConfigError("--weights applies to --module only; an SB3 .zip carries its own weights")
        report = export_sb3(
            args.sb3,
            args.algo,
            spec,
            args.out,
            vecnormalize_path=args.vecnormalize,
            no_vecnormalize=args.no_vecnormalize,
            recorded_obs=recorded,
            n_random=args.n_random,
            quantize=args.quantize,
            rng=rng,
            overwrite=args.force,
        )
    else:
        if args.vecnormalize is not None or args.no_vecnormalize or args.algo is not None:
            raise ConfigError("--vecnormalize, --no-vecnormalize and --algo apply to --sb3 only")
        report = export_module(
            _load_module(args.module, args.weights),
            spec,
            args.out,
            recorded_obs=recorded,
            n_random=args.n_random,
            quantize=args.quantize,
            rng=rng,
            overwrite=args.force,
        )
    _print_report(report)
    return 0
