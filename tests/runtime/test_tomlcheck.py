"""The shared TOML checker (edge_agent.tomlcheck): one error family for mission, scenario and export spec."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from calib.scenario import load_scenario
from edge_agent.errors import (
    ConfigError,
    EdgeAgentError,
    ExportSpecError,
    InputFileError,
    MissionError,
    ScenarioError,
)
from edge_agent.mission import load_mission
from edge_agent.tomlcheck import Table, read_toml
from export.spec import load_spec

LOADERS = [(load_mission, MissionError, "mission file"), (load_scenario, ScenarioError, "scenario file")]
LOADERS += [(load_spec, ExportSpecError, "export spec")]


def test_one_family() -> None:
    for cls in (MissionError, ScenarioError, ExportSpecError):
        assert issubclass(cls, InputFileError) and issubclass(cls, EdgeAgentError)
    # scenario and spec errors were ConfigErrors before the family existed, and still are
    assert issubclass(ScenarioError, ConfigError) and issubclass(ExportSpecError, ConfigError)
    assert not issubclass(MissionError, ConfigError)


@pytest.mark.parametrize(("load", "error", "what"), LOADERS)
def test_every_input_names_its_file_when_it_is_not_toml(load, error, what, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "none.toml"
    with pytest.raises(
        error, match=re.escape(f"cannot read {what} {str(missing)!r}: No such file or directory")
    ):
        load(missing)
    bad = tmp_path / "bad.toml"
    bad.write_text("[section\n")
    with pytest.raises(error, match=re.escape(f"{what} {str(bad)!r} is not valid TOML: ")):
        load(bad)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'name = "\xe9"\n')
    with pytest.raises(
        error, match=re.escape(f"{what} {str(latin)!r} is not UTF-8 text (byte 8); save it as UTF-8 TOML")
    ):
        load(latin)
    with pytest.raises(InputFileError):  # one except clause for all three
        load(bad)


def test_getters_name_table_key_expected_and_found() -> None:
    t = Table(
        {"a": "x", "b": -1, "c": [1, True], "d": 3, "e": [2.0, 1.0], "typo": 0},
        "demo",
        error=ScenarioError,
        prefix="f.toml: ",
        docs="docs/x.md",
    )
    cases = [
        (lambda: t.number("a"), "f.toml: [demo] a must be a number, got 'x'"),
        (lambda: t.number("b", gt=0.0), "f.toml: [demo] b must be > 0, got -1.0"),
        (lambda: t.number("b", ge=0.5), "f.toml: [demo] b must be >= 0.5, got -1.0"),
        (lambda: t.number("zz"), "f.toml: [demo] is missing 'zz'; add it (see docs/x.md)"),
        (lambda: t.vector("c", 2), "f.toml: [demo] c must be a list of 2 numbers, got [1, True]"),
        (lambda: t.string("a", ("p", "q")), "f.toml: [demo] a must be one of p, q; got 'x'"),
        (lambda: t.integer("e"), "f.toml: [demo] e must be an integer, got [2.0, 1.0]"),
        (lambda: t.band("e"), "f.toml: [demo] e = [2.0, 1.0] has lo > hi; write [1.0, 2.0]"),
        (lambda: t.table("d"), "f.toml: [demo.d] must be a table, got int; write it as [demo.d]"),
        (
            lambda: t.allow(("a", "b")),
            "f.toml: [demo] has unknown key(s) 'c', 'd', 'e', 'typo'; allowed here: a, b",
        ),
    ]
    for call, message in cases:
        with pytest.raises(ScenarioError, match=re.escape(message)):
            call()
    assert t.number("d", ge=3.0) == 3.0 and t.integer("d") == 3
    with pytest.raises(
        ScenarioError, match=re.escape("[demo] has unknown key(s) 'typo'; allowed here: a, b, c, d, e, zz")
    ):
        t.done()


def test_read_toml_returns_the_document(tmp_path: Path) -> None:
    p = tmp_path / "ok.toml"
    p.write_text('x = 1\n[t]\ny = "z"\n')
    assert read_toml(p, what="thing", error=MissionError) == {"x": 1, "t": {"y": "z"}}
