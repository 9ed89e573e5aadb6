"""docs/api.md runs: its examples are a doctest, and the facade is what the page and pyproject say."""

from __future__ import annotations

import doctest
import importlib
import os
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


@pytest.mark.slow
def test_the_api_page_runs_on_the_core_install_alone(tmp_path: Path) -> None:
    """`pip install .` (no extras) into a fresh venv, then the page's examples with that venv's
    edge_agent (``-P``: not this checkout's), and none of the offline libraries loaded."""
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    py = venv / "bin" / "python"
    pip = subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    if pip.returncode != 0 and re.search(r"(?i)connection|network|resolve|Temporary failure", pip.stderr):
        pytest.skip(
            f"no package registry reachable for a clean install: {pip.stderr.strip().splitlines()[-1]}"
        )
    assert pip.returncode == 0, pip.stderr[-3000:]
    probe = (
        "import doctest, sys\n"
        "r = doctest.testfile('docs/api.md', module_relative=False, "
        "optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)\n"
        "import edge_agent\n"
        "heavy = sorted(m for m in ('torch', 'scipy', 'jinja2', 'matplotlib', 'gymnasium', 'ray') if m in sys.modules)\n"
        "print(r.failed, r.attempted, edge_agent.__file__, heavy)\n"
    )
    out = subprocess.run(
        [str(py), "-P", "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=300, env=env
    )
    assert out.returncode == 0, out.stdout + out.stderr
    failed, attempted, where, heavy = out.stdout.strip().splitlines()[-1].split(" ", 3)
    assert (failed, heavy) == ("0", "[]"), out.stdout
    assert int(attempted) >= 15 and where.startswith(str(venv)), out.stdout
