"""Fixtures for export tests."""

from __future__ import annotations

import pytest
from export_fixtures import TinyEnv, make_spec

from export.spec import ExportSpec


@pytest.fixture
def spec() -> ExportSpec:
    """The default test spec."""
    return make_spec()


@pytest.fixture
def env() -> TinyEnv:
    """A fresh tiny env."""
    return TinyEnv()
