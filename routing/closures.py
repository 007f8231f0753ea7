"""Street closures applied to the road network before matrices are computed.

A closure is a geometry (a street centreline, a footprint polygon, a point) with a buffer,
a validity interval and either no slowdown (the street is closed) or a factor by which
travel times grow (a lane closure). `apply_closures` returns a new `RoadNetwork` in which
closed edges are gone and slowed edges take longer; everything downstream (matrices, route
geometry) uses that network and needs no special case. Roadworks feed closures through the
`street_closures` table; see `routing/repository.py`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np
import numpy.typing as npt
import pyproj
import shapely
from shapely import LineString, STRtree
from shapely.geometry.base import BaseGeometry
from shapely.ops import substring

from cityops.ingest.contract import RouteCommand
from cityops.routing.network import RoadNetwork

__all__ = [
    "ClosedStreets",
    "Closure",
    "ClosureEffect",
    "apply_closures",
    "closure_key",
    "node_index",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Closure:
    closure_id: str
    geometry: BaseGeometry  # WGS84, x = lon, y = lat
    valid_from: datetime
    valid_to: datetime
    reason: str
    buffer_m: float = 5.0
    slowdown: float | None = None  # None: closed; else travel-time factor >= 1

    def __post_init__(self) -> None:
        if self.valid_from.tzinfo is None or self.valid_to.tzinfo is None:
            raise ValueError(f"closure {self.closure_id}: times must be timezone-aware")
        if self.valid_to <= self.valid_from:
            raise ValueError(f"closure {self.closure_id}: valid_to must be after valid_from")
        if self.buffer_m < 0:
            raise ValueError(f"closure {self.closure_id}: buffer_m must be >= 0")
        if self.slowdown is not None and self.slowdown < 1:
            raise ValueError(f"closure {self.closure_id}: slowdown must be >= 1")
        if self.geometry.is_empty:
            raise ValueError(f"closure {self.closure_id}: empty geometry")

    def active_at(self, at: datetime) -> bool:
        return self.valid_from <= at < self.valid_to


@dataclass(frozen=True)
class ClosureEffect:
    closure_id: str
    closed_edges: int
    slowed_edges: int
    streets: tuple[str, ...]


def closure_key(closures: Sequence[Closure]) -> str:
    """A stable key for a set of closures (for matrix caches)."""
    h = hashlib.sha256()
    for c in sorted(closures, key=lambda c: c.closure_id):
        h.update(f"{c.closure_id}|{c.geometry.wkb_hex}|{c.buffer_m}|{c.slowdown}|".encode())
    return h.hexdigest()[:16]


def _local_projection(network: RoadNetwork) -> pyproj.Transformer:
    min_lat, min_lon, max_lat, max_lon = network.bbox
    crs = pyproj.CRS.from_proj4(
        f"+proj=aeqd +lat_0={(min_lat + max_lat) / 2} +lon_0={(min_lon + max_lon) / 2} "
        "+datum=WGS84 +units=m"
    )
    return pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)


def _along(segment: LineString, area: BaseGeometry, trim_m: float) -> bool:
    """True when the closure covers the edge itself, not just the junction at one end.

    The edge's ends are trimmed by `trim_m` before the test, so a crossing street whose end
    touches the buffered junction is not closed; a short edge counts only when it lies
    entirely within the closure.
    """
    length = segment.length
    if length <= 2 * trim_m:
        return bool(area.contains(segment))
    return bool(area.intersects(substring(segment, trim_m, length - trim_m)))


def apply_closures(
    network: RoadNetwork, closures: Sequence[Closure], at: datetime
) -> tuple[RoadNetwork, list[ClosureEffect]]:
    """The network as it is at `at`: edges near active closures removed or slowed."""
    active = [c for c in closures if c.active_at(at)]
    if not active:
        return network, []
    to_m = _local_projection(network)
    x, y = to_m.transform(network.lon, network.lat)
    xs, ys = np.asarray(x), np.asarray(y)
    segments = [
        LineString([(xs[s], ys[s]), (xs[d], ys[d])])
        for s, d in zip(network.src, network.dst, strict=True)
    ]
    tree = STRtree(segments)
    closed = np.zeros(network.n_edges, dtype=bool)
    factor = np.ones(network.n_edges)
    effects: list[ClosureEffect] = []
    for c in active:
        area = shapely.transform(
            c.geometry, lambda xy: np.column_stack(to_m.transform(xy[:, 0], xy[:, 1]))
        ).buffer(max(c.buffer_m, 0.5))
        candidates = np.asarray(tree.query(area, predicate="intersects"), dtype=np.int64)
        hit = np.asarray(
            [e for e in candidates if _along(segments[e], area, c.buffer_m + 1.0)], dtype=np.int64
        )
        if c.slowdown is None:
            closed[hit] = True
        else:
            factor[hit] = np.maximum(factor[hit], c.slowdown)
        streets = tuple(sorted({str(n) for n in network.name[hit] if n}))
        effects.append(
            ClosureEffect(
                c.closure_id,
                closed_edges=int(hit.size) if c.slowdown is None else 0,
                slowed_edges=int(hit.size) if c.slowdown is not None else 0,
                streets=streets,
            )
        )
        logger.info(
            "closure %s (%s): %s %d edges on %s",
            c.closure_id,
            c.reason,
            "closes" if c.slowdown is None else f"slows x{c.slowdown:g}",
            hit.size,
            ", ".join(streets) or "unnamed streets",
        )
    keep = ~closed
    if not keep.any():
        raise ValueError("the closures remove every edge of the network")
    derived = replace(
        network,
        src=network.src[keep],
        dst=network.dst[keep],
        length_m=network.length_m[keep],
        speed_kmh=network.speed_kmh[keep] / factor[keep],
        travel_time_s=network.travel_time_s[keep] * factor[keep],
        name=network.name[keep],
        highway=network.highway[keep],
        way_id=network.way_id[keep],
        tunnel=network.tunnel[keep],
    )
    return derived, effects


@dataclass(frozen=True, eq=False)
class ClosedStreets:
    """The directed edges of a base network that closures removed (``apply_closures``), as
    codes ``src * n_nodes + dst``, to tell which routes drive a closed street."""

    base: RoadNetwork
    codes: npt.NDArray[np.int64]

    @classmethod
    def between(cls, base: RoadNetwork, derived: RoadNetwork) -> ClosedStreets:
        """The edges of `base` that `derived` (the same nodes, closures applied) lacks."""
        return cls(base, np.setdiff1d(_edge_codes(base, base), _edge_codes(base, derived)))

    def drivers(
        self,
        routes: Mapping[str, RouteCommand],
        trucks: Sequence[str],
        node_at: Mapping[tuple[float, float], int],
    ) -> list[str]:
        """Those of `trucks` whose route (its street geometry, read as edges of the base
        network by `node_at`, see :func:`node_index`) drives a closed street."""
        if not self.codes.size or not trucks:
            return []
        out: list[str] = []
        for truck in trucks:
            route = routes.get(truck)
            if route is None:
                continue
            nodes = np.asarray(
                [node_at.get((float(c[0]), float(c[1])), -1) for c in route.geometry.coordinates],
                dtype=np.int64,
            )
            if nodes.size < 2:
                continue
            a, b = nodes[:-1], nodes[1:]
            ok = (a >= 0) & (b >= 0)
            driven = a[ok] * self.base.n_nodes + b[ok]
            if np.isin(driven, self.codes).any():
                logger.info("truck %s: its route drives a closed street", truck)
                out.append(truck)
        return out


def node_index(network: RoadNetwork) -> dict[tuple[float, float], int]:
    """The node at each ``(lon, lat)`` of the network (a route's geometry is made of them)."""
    return {
        (float(x), float(y)): i
        for i, (x, y) in enumerate(zip(network.lon, network.lat, strict=True))
    }


def _edge_codes(base: RoadNetwork, network: RoadNetwork) -> npt.NDArray[np.int64]:
    """The directed edges of `network` (same nodes as `base`) as src * n_nodes + dst."""
    return network.src.astype(np.int64) * base.n_nodes + network.dst.astype(np.int64)
