"""The onboard runtime imports nothing heavy (DESIGN.md import rules)."""

from __future__ import annotations

import subprocess
import sys

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
