"""Rollouts and certification: batch independence, resume, shield vs adversary, Ray."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calib import certify_cli
from calib.certify import ChunkRunner, ProgressFile, bundle_hash, run_campaign, summarize
from calib.rollout import EpisodeResults
from calib.scenario import load_scenario, scenario_hash
from calib.stats import clopper_pearson_upper
from edge_agent.bundle import load_bundle
from edge_agent.cli import main


def _same(a: EpisodeResults, b: EpisodeResults) -> None:
    np.testing.assert_array_equal(a.episode, b.episode)
    np.testing.assert_array_equal(a.failed, b.failed)
    np.testing.assert_array_equal(a.ticks, b.ticks)
    np.testing.assert_allclose(a.min_distance_m, b.min_distance_m, rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.score_m, b.score_m, rtol=0, atol=1e-9)


def test_results_do_not_depend_on_batch_size_or_chunking(
    bundles: dict[str, Path], scenario_path: Path
) -> None:
    spec = load_scenario(scenario_path)
    ids = np.arange(24)
    whole = run_campaign(bundles["bad"], spec, ids, batch=24, shield_enabled=False)
    chunked = run_campaign(bundles["bad"], spec, ids, batch=7, shield_enabled=False)
    _same(whole, chunked)
    assert 0 < whole.failed.sum() < 24, (
        "the adversary must fail in some episodes, not all, for this to test much"
    )
    alone = ChunkRunner(bundles["bad"], spec, shield_enabled=False)(np.array([13]))
    _same(alone, whole.select(whole.episode == 13))


def test_shield_holds_k_zero_where_the_unshielded_adversary_fails(
    bundles: dict[str, Path], scenario_path: Path
) -> None:
    spec = load_scenario(scenario_path)
    ids = np.arange(300)
    shielded = summarize(run_campaign(bundles["bad"], spec, ids, batch=300, shield_enabled=True), 0.05)
    unshielded = summarize(run_campaign(bundles["bad"], spec, ids, batch=300, shield_enabled=False), 0.05)
    assert shielded.k == 0
    assert shielded.epsilon == pytest.approx(clopper_pearson_upper(0, 300, 0.05))
    assert shielded.min_distance_percentiles_m["p0"] > 0.0
    assert unshielded.k > 100, unshielded
    assert set(unshielded.failures_by_kind) <= {"fence", "keepout", "altitude"}
    good = summarize(run_campaign(bundles["good"], spec, ids, batch=300), 0.05)
    assert good.k == 0 and good.completion_rate > 0.3


def test_resume_continues_without_flying_again(
    bundles: dict[str, Path], scenario_path: Path, tmp_path: Path
) -> None:
    spec = load_scenario(scenario_path)
    key = {
        "scenario_hash": scenario_hash(spec),
        "bundle_hash": bundle_hash(bundles["bad"]),
        "shield_enabled": False,
    }
    prog = ProgressFile(tmp_path / "p.jsonl", key)
    first = run_campaign(bundles["bad"], spec, np.arange(10), batch=5, shield_enabled=False, progress=prog)
    flown: list[int] = []
    res = run_campaign(
        bundles["bad"],
        spec,
        np.arange(16),
        batch=5,
        shield_enabled=False,
        progress=prog,
        resume=True,
        on_chunk=lambda r: flown.extend(r.episode.tolist()),
    )
    assert res.n == 16
    _same(res.select(res.episode < 10), first)
    assert len(prog.path.read_text().splitlines()) == 1 + 2 + 2  # key, 2 old chunks, 2 new (5 + 1)
    # on_chunk saw the 10 resumed episodes once and only the 6 new ones were flown
    assert sorted(flown) == list(range(16))
    other = ProgressFile(prog.path, {**key, "bundle_hash": "0" * 64})
    with pytest.raises(Exception, match="belongs to another campaign"):
        other.load()


def test_certify_cli_prints_the_bound_and_writes_the_certificate(
    good_bundle: Path, scenario_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    rc = main(
        [
            "certify",
            str(good_bundle),
            "--scenarios",
            str(scenario_path),
            "--episodes",
            "40",
            "--beta",
            "0.01",
            "--batch",
            "16",
            "--quiet",
            "--results",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "episodes N = 40, failures k = 0, β = 0.01" in text
    assert f"ε(k, N, β) = {clopper_pearson_upper(0, 40, 0.01):.4g}" in text
    cert = load_bundle(good_bundle).manifest.certificate
    assert cert is not None and cert["n"] == 40 and cert["k"] == 0 and cert["beta"] == 0.01
    assert cert["scenario_hash"] == scenario_hash(load_scenario(scenario_path))
    assert "independent and identically distributed" in cert["iid_statement"]
    assert json.loads(out.read_text())["certificate"]["epsilon"] == cert["epsilon"]
    assert "thrust-to-weight >=" in text and set(cert["thrust_to_weight_floor"]) >= {"healthy"}
    version = cert["code_version"]
    if "git_commit" in version:  # run from a checkout: the commit that flew, and whether it was edited
        assert len(version["git_commit"]) == 40 and isinstance(version["git_dirty"], bool)
    # A rerun with --resume flies nothing new (the certificate does not change the bundle hash).
    rc = main(
        [
            "certify",
            str(good_bundle),
            "--scenarios",
            str(scenario_path),
            "--episodes",
            "40",
            "--beta",
            "0.01",
            "--quiet",
            "--resume",
            "--results",
            str(out),
        ]
    )
    assert rc == 0 and "wall" in capsys.readouterr().out
    assert certify_cli is not None


@pytest.mark.slow
def test_ray_backend_gives_the_same_counts(bundles: dict[str, Path], scenario_path: Path) -> None:
    spec = load_scenario(scenario_path)
    ids = np.arange(24)
    local = run_campaign(bundles["bad"], spec, ids, batch=24, shield_enabled=False)
    remote = run_campaign(bundles["bad"], spec, ids, batch=8, shield_enabled=False, backend="ray")
    _same(local, remote)
    assert int(remote.failed.sum()) == int(local.failed.sum()) > 0
