"""docs/api.md runs: its examples are a doctest, and the facade is what the page and pyproject say."""

from __future__ import annotations

import doctest
import importlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import edge_agent

ROOT = Path(__file__).resolve().parents[1]


def test_the_api_page_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the page's paths are relative to the repository root
    result = doctest.testfile(
        str(ROOT / "docs" / "api.md"),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        raise_on_error=False,
        verbose=False,
    )
    assert result.attempted >= 15
    assert result.failed == 0, (
        f"{result.failed} of {result.attempted} examples of docs/api.md failed (see above)"
    )


def test_the_facade_lists_every_name_and_each_resolves() -> None:
    assert set(edge_agent.__all__) == {"__version__", *edge_agent._API}
    for name, module in edge_agent._API.items():
        assert getattr(edge_agent, name) is getattr(importlib.import_module(module), name)
    with pytest.raises(AttributeError, match=re.escape("module 'edge_agent' has no attribute 'nope'")):
        edge_agent.nope  # noqa: B018


def test_version_and_typing_marker_match_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert edge_agent.__version__ == project["version"]
    assert (ROOT / "edge_agent" / "py.typed").is_file()


def test_importing_the_facade_is_cheap() -> None:
    probe = "import sys, edge_agent; print(sorted(m for m in ('numpy', 'onnxruntime', 'nacl', 'cryptography') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
