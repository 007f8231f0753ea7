"""The links between the SUMO junctions that the registry seeds (`signal_links`):
derived from the generated grid's connections, checked against the grid's geometry."""

from __future__ import annotations

from collections import defaultdict

import psycopg
import pytest

from cityops.simulators.sumo.network import GridSpec, Intersection, build_grid, intersections
from cityops.simulators.sumo.registry import junction_links, seed_grid
from cityops.traffic.control_store import load_links
from cityops.traffic.repository import load_config

SPEC = GridSpec()  # 3 x 3, 200 m blocks, two lanes


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Intersection, ...]:
    return intersections(SPEC, build_grid(SPEC, tmp_path_factory.mktemp("grid")))


def test_every_inner_connection_is_linked_and_nothing_else(
    grid: tuple[Intersection, ...],
) -> None:
    by_id = {j.controller_id: j for j in grid}
    lane_of = {(j.controller_id, lp.channel): lp for j in grid for lp in j.loops}
    links = junction_links(grid)
    pairs = {(lk.controller_id, lk.to_controller_id) for lk in links}
    # the neighbours one block apart, both ways: 12 streets between junctions, 24 pairs
    adjacent = {
        (a.controller_id, b.controller_id)
        for a in grid
        for b in grid
        if abs(abs(a.x - b.x) + abs(a.y - b.y) - SPEC.block_m) < 1.0
    }
    assert len(adjacent) == 24 and pairs == adjacent
    for lk in links:
        up, down = (
            lane_of[(lk.controller_id, lk.channel)],
            lane_of[(lk.to_controller_id, lk.to_channel)],
        )
        assert up.kind == down.kind == "stop_bar"
        # the downstream lane starts at the upstream junction (netgenerate names an
        # edge by its two nodes) and the upstream lane ends there
        assert down.sumo_lane.startswith(by_id[lk.controller_id].tls_id)
        assert up.sumo_lane.split("_")[0].endswith(by_id[lk.controller_id].tls_id)
        assert lk.share == 0.5  # a lane of two movements (through and a turn)
    # each of the 24 streets has 2 lanes, each fed by 2 upstream lanes (through, turn)
    assert len(links) == 96
    into: dict[tuple[str, int], int] = defaultdict(int)
    for lk in links:
        into[(lk.to_controller_id, lk.to_channel)] += 1
    assert set(into.values()) == {2} and len(into) == 48
    # a junction's lanes that come from the fringe receive no link
    fringe = [
        (j.controller_id, lp.channel)
        for j in grid
        for lp in j.loops
        if lp.kind == "stop_bar" and not any(lp.sumo_lane.startswith(k.tls_id) for k in grid)
    ]
    assert fringe and not set(fringe) & set(into)


def test_seeding_writes_the_links_the_control_service_loads(
    grid: tuple[Intersection, ...], db_url: str
) -> None:
    with psycopg.connect(db_url) as conn:
        seed_grid(conn, SPEC, grid)
        seed_grid(conn, SPEC, grid)  # idempotent: detectors rewritten, links with them
        stored = load_links(conn)
        assert stored == junction_links(grid)
        # each link names a lane of the phase it should: the downstream channel is a
        # stop bar registered at the downstream controller
        for lk in stored[:8]:
            det = load_config(conn, lk.to_controller_id).detectors[lk.to_channel]
            assert det.kind == "stop_bar"
        seed_grid(conn, SPEC, grid, links=False)
        assert load_links(conn) == []


def test_turns_come_from_the_network(grid: tuple[Intersection, ...]) -> None:
    centre = next(j for j in grid if j.tls_id == "B1")
    # four approaches of two lanes, each lane with two movements, no U-turns
    assert len(centre.turns) == 16
    assert all(a.split("_")[0].endswith("B1") and b.startswith("B1") for a, b in centre.turns)
    assert not any(a[:2] == b[2:4] for a, b in centre.turns)  # no turnarounds


def test_empty_or_isolated_junctions_give_no_links(grid: tuple[Intersection, ...]) -> None:
    assert junction_links([]) == []
    assert junction_links(grid[:1]) == []  # its neighbours are not seeded with it


def test_turning_counts_set_the_shares(grid: tuple[Intersection, ...]) -> None:
    lane_of = {(j.controller_id, lp.channel): lp.sumo_lane for j in grid for lp in j.loops}
    # at B1, from the south (edge B0B1): 30 straight on to B2, 10 right to C1, no left
    counts = {("B0B1", "B1B2"): 30.0, ("B0B1", "B1C1"): 10.0}
    links = junction_links(grid, counts)
    got = {
        (lane_of[(lk.controller_id, lk.channel)], lane_of[(lk.to_controller_id, lk.to_channel)]): (
            lk.share
        )
        for lk in links
        if lk.controller_id == "GRID-B1"
    }
    assert got[("B0B1_0", "B1B2_0")] == 0.75 and got[("B0B1_0", "B1C1_0")] == 0.25
    # lane 1 goes straight or left: with no left turns all of it goes straight on
    assert got[("B0B1_1", "B1B2_1")] == 1.0 and ("B0B1_1", "B1A1_1") not in got
    # a lane without any count keeps equal parts
    assert got[("A1B1_0", "B1C1_0")] == 0.5
    assert len(links) == 96 - 1
