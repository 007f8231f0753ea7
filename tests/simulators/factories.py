"""Small hand-made devices and a shared road network for simulator tests."""

from __future__ import annotations

from functools import cache
from typing import Any

from cityops.routing.network import RoadNetwork, load_network
from cityops.simulators.city import Bin, Controller, Detector, Phase
from cityops.simulators.emission import Emission
from cityops.simulators.scenario import Scenario, load_scenario

START = 1_763_622_000.0  # Thursday 2025-11-20 08:00 Europe/Berlin (07:00 UTC)


@cache
def network() -> RoadNetwork:
    """The bundled extract, loaded once per test run."""
    return load_network()


def small_scenario(**updates: Any) -> Scenario:
    return load_scenario("test").model_copy(update=updates)


def make_bin(bin_id: str = "B0001", capacity_l: int = 240, fraction: str = "residual") -> Bin:
    return Bin(
        bin_id=bin_id, sensor_id=f"S-{bin_id}", lat=60.17, lon=24.94, node=0,
        street="Annankatu", district="A1", capacity_l=capacity_l,
        fraction=fraction,  # type: ignore[arg-type]
    )


def make_phase(phase: int, seq: int, green: float, yellow: float, red: float, vph: float) -> Phase:
    return Phase(
        phase=phase, seq=seq, movement=f"street {phase} through", green_s=green,
        min_green_s=min(5.0, green), max_green_s=green * 1.5, yellow_s=yellow,
        red_clearance_s=red, arrival_vph=vph, lanes=1, speed_kmh=50.0,
    )


def make_controller(offset_s: float = 7.0) -> Controller:
    """Two phases: 2 (green 30, yellow 4, red clearance 2) and 4 (20, 3, 1.5)."""
    phases = (make_phase(2, 1, 30.0, 4.0, 2.0, 1200.0), make_phase(4, 2, 20.0, 3.0, 1.5, 600.0))
    detectors = (
        Detector(channel=1, phase=2, kind="stop_bar", lane=1, distance_m=0.0, length_m=2.0),
        Detector(channel=2, phase=2, kind="advance", lane=1, distance_m=60.0, length_m=2.0),
        Detector(channel=3, phase=4, kind="stop_bar", lane=1, distance_m=0.0, length_m=2.0),
    )
    return Controller(
        controller_id="LSA-001", name="Main / Side", lat=60.17, lon=24.94, node=0,
        offset_s=offset_s, phases=phases, detectors=detectors,
    )


def payload_dicts(emissions: list[Emission]) -> list[tuple[str, str, str, str]]:
    return [(e.kind.value, e.device_id, e.channel.value, e.to_json()) for e in emissions]
