"""Fixtures of the re-planner's integration tests (`replan_support.py` has the helpers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cityops.ingest.config import Settings
from cityops.routing.network import RoadNetwork, load_network
from tests.routing.replan_support import Devices


@pytest.fixture(scope="module")
def network() -> RoadNetwork:
    """The bundled road network, loaded once per test module."""
    return load_network()


@pytest.fixture
def devices(settings: Settings) -> Iterator[Devices]:
    """A device-like publisher and a tablet-like subscriber on the test's topic prefix."""
    d = Devices(settings)
    d.start()
    try:
        yield d
    finally:
        d.stop()
