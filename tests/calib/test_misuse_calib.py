"""Misuse of ``calibrate`` / ``certify`` (issue 18, cases 4 and 8): a new calibration never leaves
a certificate that no longer belongs to the bundle, ``inspect`` says which guarantee holds, and
every option is refused before an episode flies, with the right hint."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calib import calibrate_cli, certify_cli
from calib.calibrate import calibrate_scores, calibration_section
from calib.certify import bundle_calibration_sha256, bundle_hash, certificate_section, summarize
from calib.rollout import EpisodeResults
from calib.scenario import load_scenario
from edge_agent.bundle import load_bundle, write_manifest_section
from edge_agent.cli import main
from edge_agent.guarantees import guarantees, valid_certificate
from firmware_bridge.exitcodes import ExitCode
from tests.conftest import SHARED_DATA

TLOGS = [SHARED_DATA / "ardupilot" / "flight.tlog", SHARED_DATA / "ardupilot" / "flight_sent.tlog"]


def _certify(bundle: Path, scenario_path: Path) -> None:
    """Write a certificate as `edge-agent certify` does (8 failure-free episodes, made up: none flown)."""
    n = 8
    zeros = {f.name: np.zeros(n, dtype=np.float64) for f in dataclasses.fields(EpisodeResults)}
    zeros.update(
        episode=np.arange(n), failed=np.zeros(n, dtype=bool), failure_kind=np.zeros(n, dtype=np.int64)
    )
    res = EpisodeResults(**zeros)
    section = certificate_section(
        load_scenario(scenario_path),
        summarize(res, 0.01),
        shield_enabled=True,
        bundle_sha=bundle_hash(bundle),
        code={"package": "test"},
        calibration_sha=bundle_calibration_sha256(bundle),
    )
    write_manifest_section(bundle, "certificate", section)


@pytest.fixture
def certified(good_bundle: Path, scenario_path: Path) -> Path:
    """The good bundle, calibrated (made-up scores) and then certified."""
    scores = np.linspace(0.1, 1.0, 50)
    section = calibration_section(calibrate_scores(scores, scores, 0.1), 50, "abc", "test")
    write_manifest_section(good_bundle, "calibration", section)
    _certify(good_bundle, scenario_path)
    g = guarantees(load_bundle(good_bundle).manifest)
    assert g.calibrated and g.certificate_holds and g.problems == ()
    return good_bundle


def test_case4_calibrating_a_certified_bundle_is_refused_or_drops_the_certificate(
    certified: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = [str(p) for p in TLOGS]
    if not TLOGS[0].is_file():
        pytest.skip("real recordings not found")
    rc = main(["calibrate", str(certified), "--from-log", *logs, "--alpha", "0.2"])
    assert rc == ExitCode.ERROR
    err = capsys.readouterr().err
    assert "is certified (ε = " in err and "pass --drop-certificate to calibrate anyway" in err, err
    assert load_bundle(certified).manifest.certificate is not None  # untouched

    rc = main(["calibrate", str(certified), "--from-log", *logs, "--alpha", "0.2", "--drop-certificate"])
    assert rc == ExitCode.OK
    out = capsys.readouterr().out
    assert "certificate removed from" in out and "run `edge-agent certify` again" in out
    m = load_bundle(certified).manifest
    assert m.certificate is None and m.calibration is not None and m.calibration["alpha"] == 0.2


def test_case4_inspect_says_a_certificate_no_longer_covers_a_changed_calibration(
    certified: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", str(certified)]) == 0
    out = capsys.readouterr().out
    assert "  calibration: present (the margin is calibrated)" in out
    assert "  certificate: holds (it covers this bundle and this calibration)" in out

    # What `calibrate` did before the fix: a new margin written under the old certificate.
    scores = np.linspace(0.5, 3.0, 50)
    write_manifest_section(
        certified, "calibration", calibration_section(calibrate_scores(scores, scores, 0.1), 50, "x", "t")
    )
    assert main(["inspect", str(certified)]) == 0
    out = capsys.readouterr().out
    assert "  certificate: STALE: does not hold for this bundle" in out
    assert "the calibration changed after certification" in out
    m = load_bundle(certified).manifest
    assert m.certificate is not None and valid_certificate(m) is None  # the runtime logs no ε for it


def _fail_if_flown(*_: Any, **__: Any) -> Any:
    raise AssertionError("an episode was flown before the options were checked")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--alpha", "2"],
            "--alpha is the target miscoverage, a probability strictly between 0 and 1 (0.1 asks for "
            "90 % coverage), got 2",
        ),
        (["--alpha", "0"], "--alpha is the target miscoverage"),
        (["--alpha", "nan"], "--alpha is the target miscoverage"),
        (
            ["--episodes", "5"],
            "--episodes 5 cannot support --alpha 0.1: split conformal needs at least 9 calibration scores",
        ),
        (["--episodes", "0"], "--episodes 0 cannot support --alpha 0.1"),
        (["--holdout", "-1"], "--holdout must be >= 0"),
        (["--batch", "0"], "--batch is the number of vehicles flown side by side, >= 1; got 0"),
    ],
)
def test_case8_calibrate_options_are_refused_before_any_episode_flies(
    good_bundle: Path,
    scenario_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    monkeypatch.setattr(calibrate_cli, "run_campaign", _fail_if_flown)
    rc = main(["calibrate", str(good_bundle), "--scenarios", str(scenario_path), "--quiet", *extra])
    assert rc == ExitCode.ERROR
    err = capsys.readouterr().err
    assert message in err, err


def test_case8_family_missing_files_and_certify_options_are_refused_before_flying(
    good_bundle: Path,
    scenario_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(calibrate_cli, "run_campaign", _fail_if_flown)
    monkeypatch.setattr(certify_cli, "run_campaign", _fail_if_flown)
    nope = tmp_path / "nope.toml"
    assert main(["calibrate", str(good_bundle), "--scenarios", str(nope)]) == ExitCode.ERROR
    assert re.search(re.escape(f"scenario file '{nope}' does not exist"), capsys.readouterr().err)
    cases = [
        (["--beta", "1.5"], "--beta must lie strictly between 0 and 1"),
        (["--beta", "nan"], "--beta must lie strictly between 0 and 1"),
        (["--episodes", "0"], "--episodes must be at least 1, got 0"),
        (["--batch", "-3"], "--batch is the number of vehicles flown side by side, >= 1; got -3"),
    ]
    for extra, message in cases:
        args = ["certify", str(good_bundle), "--scenarios", str(scenario_path), "--episodes", "10", *extra]
        assert main(args) == ExitCode.ERROR
        assert message in capsys.readouterr().err, extra
    args = ["certify", str(good_bundle), "--scenarios", str(nope), "--episodes", "10"]
    assert main(args) == ExitCode.ERROR
    assert f"scenario file '{nope}' does not exist" in capsys.readouterr().err
