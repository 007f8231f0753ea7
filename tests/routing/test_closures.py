"""Closures remove or slow the edges along them, and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache

import numpy as np
import pytest
from shapely.geometry import LineString

from cityops.routing.closures import Closure, apply_closures, closure_key
from cityops.routing.network import RoadNetwork, load_network

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


@cache
def net() -> RoadNetwork:
    return load_network()


def _long_named_edge(network: RoadNetwork) -> int:
    named = [i for i in range(network.n_edges) if network.name[i] and not network.tunnel[i]]
    return max(named, key=lambda i: float(network.length_m[i]))


def _closure(edge: int, **kw: object) -> Closure:
    n = net()
    u, v = int(n.src[edge]), int(n.dst[edge])
    geom = LineString([(n.lon[u], n.lat[u]), (n.lon[v], n.lat[v])])
    args: dict[str, object] = {
        "closure_id": "c1",
        "geometry": geom,
        "valid_from": NOW - timedelta(hours=1),
        "valid_to": NOW + timedelta(hours=8),
        "reason": "water main",
        "buffer_m": 3.0,
    }
    args.update(kw)
    return Closure(**args)  # type: ignore[arg-type]


def _pairs(network: RoadNetwork) -> set[tuple[int, int]]:
    return set(zip(network.src.tolist(), network.dst.tolist(), strict=True))


def test_closing_a_street_removes_its_edges_and_not_the_crossing_streets() -> None:
    n = net()
    edge = _long_named_edge(n)
    u, v = int(n.src[edge]), int(n.dst[edge])
    derived, effects = apply_closures(n, [_closure(edge)], NOW)
    removed = _pairs(n) - _pairs(derived)
    assert (u, v) in removed
    assert removed <= {(u, v), (v, u)}, "edges of other streets at the junctions stay open"
    assert effects[0].closed_edges == len(removed)
    assert effects[0].streets == (str(n.name[edge]),)
    before = n.shortest_path(u, v)
    after = derived.shortest_path(u, v)
    assert before is not None
    assert after is None or after.travel_time_s > before.travel_time_s


def test_a_slowdown_multiplies_travel_time_on_the_street_only() -> None:
    n = net()
    edge = _long_named_edge(n)
    derived, effects = apply_closures(n, [_closure(edge, slowdown=2.0)], NOW)
    assert derived.n_edges == n.n_edges
    assert effects[0].slowed_edges >= 1
    changed = np.flatnonzero(~np.isclose(derived.travel_time_s, n.travel_time_s))
    assert edge in changed
    assert np.allclose(derived.travel_time_s[changed], 2 * n.travel_time_s[changed])
    assert len(changed) <= 2


def test_inactive_closures_change_nothing() -> None:
    n = net()
    c = _closure(_long_named_edge(n))
    same, effects = apply_closures(n, [c], NOW + timedelta(days=1))
    assert same is n and effects == []
    assert closure_key([c]) == closure_key([c]) != closure_key([])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"valid_to": NOW - timedelta(hours=2)}, "valid_to must be after"),
        ({"slowdown": 0.5}, "slowdown must be >= 1"),
        ({"buffer_m": -1.0}, "buffer_m"),
        ({"valid_from": datetime(2026, 1, 1)}, "timezone-aware"),
    ],
)
def test_invalid_closures_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _closure(_long_named_edge(net()), **changes)
