"""DESIGN.md's import rules: the onboard runtime imports nothing heavy, packages import one way,
and no two of our modules import each other in a circle."""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

FORBIDDEN_ONBOARD = ("torch", "scipy", "matplotlib", "gymnasium", "ray", "export", "calib", "sitl", "onnx")

_PROBE = """
import importlib, pkgutil, sys, json
import edge_agent, firmware_bridge
names = []
for pkg in (edge_agent, firmware_bridge):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(m.name)
        names.append(m.name)
print(json.dumps({"modules": names, "loaded": sorted({n.split(".")[0] for n in sys.modules})}))
"""


def test_onboard_packages_import_nothing_heavy() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    import json

    result = json.loads(out.stdout)
    assert "edge_agent.cli" in result["modules"]
    heavy = sorted(set(result["loaded"]) & set(FORBIDDEN_ONBOARD))
    assert heavy == [], f"importing edge_agent / firmware_bridge pulled in {heavy}"


def test_edge_agent_run_imports_only_the_onboard_core() -> None:
    probe = "import sys, edge_agent.cli as c, importlib; importlib.import_module(c.SUBCOMMANDS['run'][0]); print(' '.join(sorted({n.split('.')[0] for n in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert not (loaded & set(FORBIDDEN_ONBOARD)), loaded & set(FORBIDDEN_ONBOARD)
    assert {"numpy", "onnxruntime", "pymavlink", "msgpack"} <= loaded


# --- the import graph between our own modules (DESIGN.md: imports point one way) -------------

REPO = Path(__file__).resolve().parents[1]
OUR_PACKAGES = (
    "edge_agent",
    "firmware_bridge",
    "sitl",
    "export",
    "calib",
    "bench",
    "experiments",
    "examples",
    "fuzz",
)

MAY_IMPORT: dict[str, set[str]] = {
    "firmware_bridge": set(),
    "edge_agent": {"firmware_bridge"},
    "sitl": {"firmware_bridge"},
    "export": {"edge_agent"},
    "calib": {"edge_agent", "sitl"},
}
"""DESIGN.md's package table: who may import whom (and, through them, what they may import).
The offline tools (bench, experiments, examples, fuzz) may import anything of ours."""


def _our_modules(root: Path) -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in OUR_PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = f
    return mods


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    """module -> the modules of ours it imports: every import statement, at module level, inside a
    function (lazy) or under ``TYPE_CHECKING``; ``from pkg import sub`` counts as importing ``pkg.sub``."""
    mods = _our_modules(root)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != mod:
                    graph[mod].add(target)
    return graph


def test_no_import_circles_between_our_modules() -> None:
    graph = import_graph()
    assert "firmware_bridge.adapters" in graph and graph["calib.certify"], "the graph found no modules"
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle = " -> ".join(reversed(exc.args[1]))
        raise AssertionError(
            f"import circle: {cycle}. Move what both need into a module that both import "
            f"(as firmware_bridge.control and calib.rollout.ChunkRunner do); a lazy import still counts"
        ) from None


def test_a_circle_is_found(tmp_path: Path) -> None:
    """The circle check is not vacuous: two modules importing each other (one lazily) are caught."""
    pkg = tmp_path / "calib"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from calib.b import x\n")
    (pkg / "b.py").write_text("x = 1\n\ndef f():\n    from . import a\n")
    graph = import_graph(tmp_path)
    assert graph["calib.a"] == {"calib.b"} and graph["calib.b"] == {"calib.a"}
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(graph).prepare()


def _allowed(package: str) -> set[str]:
    out, todo = set(), list(MAY_IMPORT[package])
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            todo.extend(MAY_IMPORT.get(p, ()))
    return out


def test_packages_import_only_downstream() -> None:
    wrong = []
    for mod, targets in import_graph().items():
        pkg = mod.split(".")[0]
        if pkg not in MAY_IMPORT:
            continue
        for target in sorted(targets):
            other = target.split(".")[0]
            if other != pkg and other not in _allowed(pkg):
                wrong.append(f"{mod} imports {target} ({pkg} may import only {sorted(_allowed(pkg))})")
    assert wrong == [], f"against DESIGN.md's package table: {wrong}"
