"""The Monte-Carlo certification campaign: N i.i.d. scenario episodes, k failures, ε(k, N, β).

Episodes are flown in chunks (``calib.rollout.ChunkRunner``), locally or as Ray tasks
(``calib.ray_backend``). Every finished chunk is appended to a progress file keyed by the
scenario hash and the bundle hash, so an interrupted campaign continues where it stopped and a
rerun never flies an episode twice. Results do not depend on the chunking (see calib.rollout).
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from calib.rollout import FAILURE_DEFINITIONS, ChunkRunner, EpisodeResults, failure_names
from calib.scenario import ScenarioSpec, scenario_hash, thrust_to_weight_floor
from calib.stats import clopper_pearson_upper, cvar
from edge_agent.bundle import MANIFEST_NAME
from edge_agent.errors import BundleError, ConfigError
from edge_agent.guarantees import calibration_sha256, flight_body_sha256

IID_STATEMENT = (
    "Episodes are independent and identically distributed draws from the declared scenario "
    "distribution: episode i's parameters and random streams derive from (scenario seed, i) alone "
    "(numpy SeedSequence), the episode indices 0..N-1 were fixed before any result was seen, and "
    "every episode flown is counted. The bound holds for that distribution only."
)
CVAR_LEVEL = 0.95
"""CVaR of the minimum distance: the mean of the worst 5 % of episodes."""


def _raw_manifest(bundle_dir: str | Path) -> dict[str, Any]:
    path = Path(bundle_dir) / MANIFEST_NAME
    try:
        raw: dict[str, Any] = json.loads(path.read_text(encoding="ascii"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read {path} to hash the bundle: {exc}; pass a bundle folder") from exc
    return raw


def bundle_hash(bundle_dir: str | Path) -> str:
    """SHA-256 of everything in the manifest that changes how the bundle flies (not the certificate)."""
    return flight_body_sha256(_raw_manifest(bundle_dir))


def bundle_calibration_sha256(bundle_dir: str | Path) -> str:
    """Digest of the bundle's calibration section ("none" without one), as the certificate records it."""
    return calibration_sha256(_raw_manifest(bundle_dir).get("calibration"))


def chunks_of(episodes: NDArray[np.int64], batch: int) -> list[NDArray[np.int64]]:
    """Split episode indices into consecutive chunks of at most ``batch``."""
    if batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {batch}")
    return [episodes[i : i + batch] for i in range(0, len(episodes), batch)]


@dataclass(frozen=True, slots=True)
class ProgressFile:
    """Chunk results of one campaign (JSON lines: a key line, then one line per finished chunk)."""

    path: Path
    key: dict[str, Any]

    def load(self) -> list[EpisodeResults]:
        """The chunks already finished (empty if the file does not exist)."""
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        if not lines:
            return []
        try:
            key = json.loads(lines[0])
        except ValueError as exc:
            raise ConfigError(
                f"progress file {self.path} is corrupt ({exc}); delete it and run without --resume"
            ) from exc
        if key != self.key:
            raise ConfigError(
                f"progress file {self.path} belongs to another campaign (its key {key} differs from {self.key}); "
                f"delete it, or run without --resume to start afresh"
            )
        out = []
        for line in lines[1:]:
            try:
                out.append(EpisodeResults.from_lists(json.loads(line)))
            except (ValueError, KeyError):
                break  # a line cut short by an interruption: that chunk is flown again
        return out

    def start(self) -> None:
        """Begin a fresh file holding only the key."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.key) + "\n", encoding="utf-8")

    def append(self, res: EpisodeResults) -> None:
        """Record one finished chunk (one write, so a kill loses at most this chunk)."""
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(res.to_lists(), separators=(",", ":")) + "\n")


def run_campaign(
    bundle_dir: str | Path,
    spec: ScenarioSpec,
    episodes: NDArray[np.int64],
    *,
    batch: int = 2048,
    shield_enabled: bool = True,
    backend: str = "local",
    progress: ProgressFile | None = None,
    resume: bool = False,
    on_chunk: Callable[[EpisodeResults], None] | None = None,
) -> EpisodeResults:
    """Fly every episode index in ``episodes`` (skipping those a resumed progress file holds)."""
    done: list[EpisodeResults] = []
    if progress is not None:
        if resume:
            done = progress.load()
            if not progress.path.exists() or not progress.path.read_text(encoding="utf-8").strip():
                progress.start()
        else:
            progress.start()
    # A resumed file may hold more episodes than asked for now (N lowered): keep only those asked.
    done = [d.select(np.isin(d.episode, episodes)) for d in done]
    done = [d for d in done if d.n]
    have = np.concatenate([d.episode for d in done]) if done else np.zeros(0, dtype=np.int64)
    for d in done:
        if on_chunk is not None:
            on_chunk(d)
    todo = np.setdiff1d(np.asarray(episodes, dtype=np.int64), have)
    chunks = chunks_of(todo, batch)

    def record(res: EpisodeResults) -> None:
        if progress is not None:
            progress.append(res)
        done.append(res)
        if on_chunk is not None:
            on_chunk(res)

    if backend == "local":
        if chunks:
            runner = ChunkRunner(bundle_dir, spec, shield_enabled=shield_enabled)
            for ids in chunks:
                record(runner(ids))
    elif backend == "ray":
        from calib.ray_backend import run_chunks_ray

        run_chunks_ray(bundle_dir, spec, chunks, shield_enabled=shield_enabled, on_result=record)
    else:
        raise ConfigError(f"--backend must be 'local' or 'ray', got {backend!r}")
    if not done:
        raise ConfigError("no episodes to fly: give --episodes N with N >= 1")
    return EpisodeResults.concat(done)


@dataclass(frozen=True, slots=True)
class CertificateSummary:
    """What a campaign shows."""

    n: int
    k: int
    beta: float
    epsilon: float
    fallback_rate: float
    completion_rate: float
    failures_by_kind: dict[str, int]
    min_distance_percentiles_m: dict[str, float]
    min_distance_cvar_m: float
    failing_episodes: list[int]


def summarize(res: EpisodeResults, beta: float) -> CertificateSummary:
    """k, N, ε = clopper_pearson_upper(k, N, β), fallback rate and the minimum-distance distribution."""
    n, k = res.n, int(res.failed.sum())
    by_kind: dict[str, int] = {}
    for kind in res.failure_kind[res.failed]:
        for name in failure_names(int(kind)):
            by_kind[name] = by_kind.get(name, 0) + 1
    dist = res.min_distance_m
    finite = dist[np.isfinite(dist)]
    pct = {f"p{p:g}": float(np.percentile(finite, p)) for p in (0, 0.1, 1, 5, 50)} if finite.size else {}
    return CertificateSummary(
        n=n,
        k=k,
        beta=beta,
        epsilon=clopper_pearson_upper(k, n, beta),
        fallback_rate=float(res.fallback_engaged.mean()),
        completion_rate=float(res.completed.mean()),
        failures_by_kind=by_kind,
        min_distance_percentiles_m=pct,
        min_distance_cvar_m=cvar(finite, CVAR_LEVEL) if finite.size else math.nan,
        failing_episodes=[int(e) for e in res.episode[res.failed]],
    )


def _git(*args: str) -> str:
    """What ``git ARGS`` prints in this package's checkout (empty outside one)."""
    return subprocess.run(
        ["git", *args],
        cwd=Path(__file__).resolve().parent,
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    ).stdout.strip()


def code_version() -> dict[str, str | bool]:
    """The package version and, when run from a git checkout, the commit and whether tracked files
    differed from it. Taken when a campaign starts: the code that flew, not the code at the end."""
    out: dict[str, str | bool] = {}
    try:
        out["edge_agent"] = metadata.version("edge-agent")
    except metadata.PackageNotFoundError:
        out["edge_agent"] = "unknown"
    try:
        commit = _git("rev-parse", "HEAD")
        if commit:
            out["git_commit"] = commit
            out["git_dirty"] = bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def certificate_section(
    spec: ScenarioSpec,
    summary: CertificateSummary,
    *,
    shield_enabled: bool,
    bundle_sha: str,
    code: dict[str, str | bool] | None = None,
    calibration_sha: str | None = None,
) -> dict[str, Any]:
    """The manifest's ``certificate`` section; ``bundle_sha`` and ``calibration_sha`` say what it covers
    (edge_agent.guarantees checks them against the bundle)."""
    return {
        "scenario": spec.to_dict(),
        "scenario_hash": scenario_hash(spec),
        "thrust_to_weight_floor": thrust_to_weight_floor(spec),
        "bundle_hash": bundle_sha,
        "calibration_sha256": calibration_sha,
        "n": summary.n,
        "k": summary.k,
        "beta": summary.beta,
        "epsilon": summary.epsilon,
        "bound": "one-sided Clopper-Pearson upper bound: P(failure) <= epsilon with confidence 1 - beta",
        "iid_statement": IID_STATEMENT,
        "failure_definitions": FAILURE_DEFINITIONS,
        "shield_enabled": shield_enabled,
        "fallback_rate": summary.fallback_rate,
        "completion_rate": summary.completion_rate,
        "min_distance_percentiles_m": summary.min_distance_percentiles_m,
        "min_distance_cvar95_m": summary.min_distance_cvar_m,
        "failing_episodes": summary.failing_episodes[:100],
        "code_version": code if code is not None else code_version(),
    }


def episode_range(n: int) -> NDArray[np.int64]:
    """Episode indices 0..n-1 of a certification campaign."""
    if n < 1:
        raise ConfigError(f"--episodes must be at least 1, got {n}")
    return np.arange(n, dtype=np.int64)


def describe(values: Iterable[float]) -> str:
    """'a, b, c' with 3 decimals."""
    return ", ".join(f"{v:.3f}" for v in values)


__all__ = [
    "CVAR_LEVEL",
    "IID_STATEMENT",
    "CertificateSummary",
    "ChunkRunner",
    "ProgressFile",
    "bundle_hash",
    "certificate_section",
    "chunks_of",
    "code_version",
    "episode_range",
    "run_campaign",
    "summarize",
]
