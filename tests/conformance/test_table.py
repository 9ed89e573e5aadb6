"""Compare each emulator flavour with its own firmware and write the table (runs after test_rules)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance.table import RESULTS_JSON, compare, show, update_doc, write_results

pytestmark = pytest.mark.slow


def test_every_difference_is_explained(results: dict[str, Any]) -> None:
    if not results:
        pytest.skip("no target was measured in this run")
    data = write_results(results, RESULTS_JSON)
    update_doc(data)
    bad = [
        f"{r.rule.key} ({r.flavour}): emulator {show(r.emulator)} | real {show(r.real)}"
        for r in compare(data)
        if r.unexplained
    ]
    assert not bad, "unexplained differences (fix the emulator or add to EXPLAINED):\n" + "\n".join(bad)
