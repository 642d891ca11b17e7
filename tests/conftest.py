"""Shared pytest fixtures.

`rotel`: a real rotel-agent collector on free loopback ports for one test
(see tests/harness/collector.py for reading back what it received).
"""

from __future__ import annotations

import pytest

from tests.harness.collector import Rotel


@pytest.fixture
def rotel(tmp_path):
    collector = Rotel(tmp_path / "rotel")
    collector.start()
    try:
        yield collector
    finally:
        collector.stop()
