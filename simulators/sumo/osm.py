"""A SUMO network converted from the city's OpenStreetMap extract, with our controllers.

`build_osm_network(osm_pbf, work_dir)` does three things:

1. **Drivable roads only.** The `.osm.pbf` is streamed with pyosmium; a way is kept when
   `cityops.routing.osm.way_profile` calls it drivable by car (the same rule as the
   routing network), with every node it references (tags kept, so the
   `highway=traffic_signals` nodes survive). The result is written as OSM XML, which is
   what netconvert reads.
2. **netconvert** (from the eclipse-sumo wheel) builds the SUMO network: junction
   clusters joined (`--junctions.join`, recommended for OSM), geometry nodes removed,
   ramps guessed, no U-turns, only the largest connected part kept. Traffic lights come
   from OSM: every `highway=traffic_signals` node, and with `--tls.guess-signals` the
   signals mapped on a junction's approaches (the usual OSM pattern) become one light at
   the junction. netconvert's own guessing by road class (`--tls.guess`) would invent
   lights that the city does not have, so it is off unless asked for (`guess_tls`).
   Lights are not joined across junctions (`--tls.join` off): each light is one node.
3. **Our controllers.** Every light whose approaches fall on two directions (the
   incoming edges' headings into the junction, folded to axes modulo 180 degrees, each
   within `axis_tolerance_deg` of one of two axes at least `min_axis_gap_deg` apart)
   becomes a two-phase controller like the grid's: phase 2 serves the axis nearer
   north-south, phase 4 the other, fixed order 2 -> 4. A stop-bar loop sits ~1 m before
   the stop line of each car lane; an advance loop 50 m before it where the lane is long
   enough (`ADVANCE_M + ADVANCE_MARGIN_M`); shorter lanes get no advance loop (the OSM
   edge ends at the previous junction, so 50 m upstream would be another street).
   Controller ids come from the OSM node: `OSM-<node id>`, for a joined cluster the
   smallest OSM node id in it. Lights that do not fit (one axis only, as at a mid-block
   pedestrian signal; three or more axes; links shared between axes) keep SUMO's own
   program and are listed in `OsmNetwork.left_to_sumo` with the reason.

Demand: seeded Poisson trips between fringe edges (dead ends within `fringe_m` of the
network's bounding box, i.e. where streets leave the extract), restricted to edges that
reach, and are reached from, the largest strongly connected part, so every trip has a
route. Generated files go into `work_dir` (a cache keyed by the extract and options).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cityops.simulators.sumo.network import (
    ADVANCE_M,
    Intersection,
    LaneSite,
    Loop,
    lane_loops,
    sumo_binary,
    turns_of,
    two_phase,
    write_trips,
)

__all__ = [
    "ADVANCE_MARGIN_M",
    "OsmNetwork",
    "OsmSite",
    "OsmSpec",
    "build_osm_network",
    "osm_to_xml",
]

#: A lane needs this much length beyond the advance loop's distance to carry one.
ADVANCE_MARGIN_M = 10.0
_NS, _EW = 2, 4
_MAX_CHANNEL = 255
_COMPASS = ("north", "northeast", "east", "southeast", "south", "southwest", "west", "northwest")


@dataclass(frozen=True, slots=True)
class OsmSpec:
    """How the extract is converted and which lights become our controllers."""

    guess_tls: bool = False
    discard_simple: bool = False
    junction_join_m: float = 10.0
    axis_tolerance_deg: float = 30.0
    min_axis_gap_deg: float = 45.0
    fringe_m: float = 150.0
    yellow_s: float = 3.0
    red_clearance_s: float = 2.0
    tls_type: str = "static"
    id_prefix: str = "OSM-"

    def __post_init__(self) -> None:
        if not 0.0 < self.axis_tolerance_deg < 45.0:
            raise ValueError("axis_tolerance_deg must be in (0, 45)")
        if not self.axis_tolerance_deg <= self.min_axis_gap_deg <= 90.0:
            raise ValueError("min_axis_gap_deg must be in [axis_tolerance_deg, 90]")
        if self.junction_join_m <= 0 or self.fringe_m <= 0:
            raise ValueError("junction_join_m and fringe_m must be positive")
        if self.tls_type not in ("static", "actuated"):
            raise ValueError("tls_type must be static or actuated")


@dataclass(frozen=True, slots=True)
class OsmSite:
    """Where a controller stands and what its phases serve (for the registry)."""

    controller_id: str
    osm_node: int
    name: str
    lat: float
    lon: float
    movements: Mapping[int, str]


@dataclass(frozen=True)
class OsmNetwork:
    """The converted network: our controllers, the lights left to SUMO, the fringe."""

    net_file: Path
    junctions: tuple[Intersection, ...]
    sites: Mapping[str, OsmSite]
    left_to_sumo: tuple[tuple[str, str], ...]  # (SUMO light id, reason)
    sources: tuple[str, ...]
    sinks: tuple[str, ...]
    fringe_node: Mapping[str, str]  # source edge -> its start node, sink edge -> its end
    edges: int

    def write_demand(self, path: Path, vph: float, duration_s: float, seed: int) -> int:
        """Random trips fringe edge -> fringe edge, Poisson at `vph`; returns the count."""
        return write_trips(path, self.sources, self.sinks, self.fringe_node, vph, duration_s, seed)


def osm_to_xml(osm_pbf: Path, out: Path) -> tuple[int, int]:
    """Write the drivable ways of `osm_pbf` and their nodes as OSM XML; (ways, nodes)."""
    import osmium

    from cityops.routing.osm import way_profile

    ways: set[int] = set()
    refs: set[int] = set()
    for obj in osmium.FileProcessor(str(osm_pbf), osmium.osm.WAY):
        if isinstance(obj, osmium.osm.Way) and way_profile(dict(obj.tags)) is not None:
            ways.add(obj.id)
            refs.update(n.ref for n in obj.nodes)
    tmp = out.with_name(f"{out.stem}.tmp.osm")
    try:
        with osmium.SimpleWriter(str(tmp), overwrite=True) as writer:
            for obj in osmium.FileProcessor(str(osm_pbf), osmium.osm.NODE | osmium.osm.WAY):
                if (isinstance(obj, osmium.osm.Node) and obj.id in refs) or (
                    isinstance(obj, osmium.osm.Way) and obj.id in ways
                ):
                    writer.add(obj)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return len(ways), len(refs)


def _cache_key(osm_pbf: Path, spec: OsmSpec) -> str:
    st = osm_pbf.stat()
    raw = json.dumps([str(osm_pbf.resolve()), st.st_size, st.st_mtime_ns, asdict(spec)])
    return hashlib.sha256(raw.encode()).hexdigest()[:12]


def _netconvert(osm_xml: Path, net: Path, joins: Path, spec: OsmSpec) -> None:
    import sumo

    args = [
        sumo_binary("netconvert"),
        "--osm-files",
        str(osm_xml),
        "--keep-edges.by-vclass",
        "passenger",
        "--keep-edges.components",
        "1",
        "--remove-edges.isolated",
        "--geometry.remove",
        "--ramps.guess",
        "--junctions.join",
        "--junctions.join-dist",
        f"{spec.junction_join_m:g}",
        "--junctions.join-output",
        str(joins),
        "--tls.guess-signals",
        "--tls.default-type",
        spec.tls_type,
        "--tls.yellow.time",
        f"{spec.yellow_s:g}",
        "--tls.allred.time",
        f"{spec.red_clearance_s:g}",
        "--no-turnarounds",
        "--output.street-names",
        "--no-warnings",
        "-o",
        str(net),
    ]
    if spec.guess_tls:
        args.append("--tls.guess")
    if spec.discard_simple:
        args.append("--tls.discard-simple")
    env = dict(os.environ, SUMO_HOME=str(sumo.SUMO_HOME))
    subprocess.run(args, check=True, capture_output=True, text=True, env=env)


def build_osm_network(osm_pbf: Path, work_dir: Path, spec: OsmSpec | None = None) -> OsmNetwork:
    """Convert `osm_pbf` (cached in `work_dir`) and describe its lights as controllers."""
    spec = spec or OsmSpec()
    work_dir.mkdir(parents=True, exist_ok=True)
    key = _cache_key(osm_pbf, spec)
    net = work_dir / f"osm_{key}.net.xml"
    joins = work_dir / f"osm_{key}.joins.xml"
    if not net.exists():
        osm_xml = work_dir / f"osm_{key}.{os.getpid()}.osm"
        tmp_net = net.with_name(f"{net.stem}.{os.getpid()}.tmp.xml")
        tmp_joins = joins.with_name(f"{joins.stem}.{os.getpid()}.tmp.xml")
        try:
            osm_to_xml(osm_pbf, osm_xml)
            _netconvert(osm_xml, tmp_net, tmp_joins, spec)
            tmp_joins.replace(joins)
            tmp_net.replace(net)
        finally:
            for f in (osm_xml, tmp_net, tmp_joins):
                f.unlink(missing_ok=True)
    return describe(net, joins, spec)


def _clusters(joins: Path) -> list[list[str]]:
    if not joins.exists():
        return []
    root = ET.parse(joins).getroot()  # noqa: S314  (netconvert's own output)
    return [el.get("nodes", "").split() for el in root.iter("join")]


def osm_node_of(tls_id: str, clusters: Iterable[list[str]]) -> int | None:
    """The OSM node a light stands for: its node, or the smallest of its joined cluster.

    netconvert names a joined cluster `cluster_<id>_<id>..._#<n>more` with the first few
    of its node ids (in the order of `--junctions.join-output`), and a light moved onto a
    junction by `--tls.guess-signals` `GS_<id>`.
    """
    name = tls_id.removeprefix("GS_")
    if name.isdigit():
        return int(name)
    if name.startswith("cluster_"):
        listed = [p for p in name.removeprefix("cluster_").split("_") if p.isdigit()]
        for nodes in clusters:
            if listed and nodes[: len(listed)] == listed:
                return min(int(n) for n in nodes if n.isdigit())
        return min((int(p) for p in listed), default=None)
    return None


def _bearing(dx: float, dy: float) -> float:
    """Compass heading in degrees (0 = north, clockwise) of the vector (dx, dy)."""
    return math.degrees(math.atan2(dx, dy)) % 360.0


def _axis_gap(a: float, b: float) -> float:
    """Angle between two axes (directions modulo 180 degrees)."""
    d = abs(a - b) % 180.0
    return min(d, 180.0 - d)


def _axis_mean(axes: list[float]) -> float:
    # mean of axes: double the angles, average as vectors, halve
    s = sum(math.sin(math.radians(2 * a)) for a in axes)
    c = sum(math.cos(math.radians(2 * a)) for a in axes)
    return (math.degrees(math.atan2(s, c)) / 2.0) % 180.0


def two_axes(
    headings: Mapping[str, float], tolerance: float, min_gap: float
) -> tuple[dict[str, int], str]:
    """Assign each approach (id -> heading) to phase 2 or 4, or say why it cannot be.

    The first axis is the one that gathers most approaches within `tolerance`, the
    second the same over the rest; every approach must be on one of them, and the two
    axes at least `min_gap` apart. Phase 2 is the axis nearer north-south.
    """
    axes = {k: h % 180.0 for k, h in headings.items()}
    rest = dict(sorted(axes.items()))
    found: list[tuple[float, list[str]]] = []
    while rest and len(found) < 2:
        best: list[str] = []
        for a in rest.values():
            members = [k for k, b in rest.items() if _axis_gap(a, b) <= tolerance]
            if len(members) > len(best):
                best = members
        found.append((_axis_mean([rest[k] for k in best]), best))
        for k in best:
            del rest[k]
    if len(found) < 2:
        return {}, "one approach axis only"
    if rest:
        return {}, f"approaches on more than two axes ({len(axes)} approaches)"
    (a1, m1), (a2, m2) = found
    if _axis_gap(a1, a2) < min_gap:
        return {}, f"axes only {_axis_gap(a1, a2):.0f} degrees apart"
    if _axis_gap(a1, 0.0) > _axis_gap(a2, 0.0):
        (a1, m1), (a2, m2) = (a2, m2), (a1, m1)
    phase = {k: _NS for k in m1} | {k: _EW for k in m2}
    return phase, ""


def _compass(heading: float) -> str:
    return _COMPASS[round(heading / 45.0) % 8]


def describe(net_file: Path, joins: Path, spec: OsmSpec) -> OsmNetwork:
    """Our controllers, the lights left to SUMO and the fringe of a converted network."""
    import sumolib

    net = sumolib.net.readNet(str(net_file), withPrograms=True)
    clusters = _clusters(joins)
    junctions: list[Intersection] = []
    sites: dict[str, OsmSite] = {}
    left: list[tuple[str, str]] = []
    for tls in sorted(net.getTrafficLights(), key=lambda t: t.getID()):
        tls_id = tls.getID()
        node_id = osm_node_of(tls_id, clusters)
        controller_id = f"{spec.id_prefix}{node_id}"
        junction, reason = _junction(net, tls, controller_id, spec)
        if node_id is None:
            reason = "no OSM node id"
        elif controller_id in sites:
            reason = f"controller id {controller_id} already taken"
        if junction is None or node_id is None or reason:
            left.append((tls_id, reason))
            continue
        lon, lat = net.convertXY2LonLat(junction.x, junction.y)
        names = sorted({e.getName() for e in tls.getEdges() if e.getName()})
        sites[controller_id] = OsmSite(
            controller_id=controller_id,
            osm_node=node_id,
            name=" / ".join(names[:3]) or f"OSM node {node_id}",
            lat=float(lat),
            lon=float(lon),
            movements=_movements(junction),
        )
        junctions.append(junction)
    sources, sinks, fringe_node = _fringe(net, spec.fringe_m)
    return OsmNetwork(
        net_file=net_file,
        junctions=tuple(junctions),
        sites=sites,
        left_to_sumo=tuple(left),
        sources=sources,
        sinks=sinks,
        fringe_node=fringe_node,
        edges=sum(1 for e in net.getEdges() if not e.isSpecial()),
    )


def _junction(
    net: Any, tls: Any, controller_id: str, spec: OsmSpec
) -> tuple[Intersection | None, str]:
    conns = tls.getConnections()
    if not conns:
        return None, "no controlled links"
    nodes = {in_lane.getEdge().getToNode().getID() for in_lane, _o, _i in conns}
    if len(nodes) != 1:
        return None, f"controls {len(nodes)} junctions"
    programs = tls.getPrograms()
    if not programs:
        return None, "no program"
    program = programs[sorted(programs)[0]]
    states = [ph.state for ph in program.getPhases()]
    n = len(states[0])
    # heading of each incoming edge into the junction (its lanes' last segment)
    headings: dict[str, float] = {}
    for in_lane, _out, _index in conns:
        edge = in_lane.getEdge()
        if edge.getID() not in headings:
            (x0, y0), (x1, y1) = in_lane.getShape()[-2], in_lane.getShape()[-1]
            headings[edge.getID()] = _bearing(x1 - x0, y1 - y0)
    phase_of_edge, reason = two_axes(headings, spec.axis_tolerance_deg, spec.min_axis_gap_deg)
    if reason:
        return None, reason
    phase_of: dict[int, int] = {}
    for in_lane, _out, index in conns:
        p = phase_of_edge[in_lane.getEdge().getID()]
        if phase_of.setdefault(int(index), p) != p:
            return None, "a signal shared by both axes"
    green = {p: _green(states, phase_of, p, n) for p in (_NS, _EW)}
    loops = _loops(conns, phase_of_edge, headings, controller_id)
    if len(loops) > _MAX_CHANNEL:
        return None, f"{len(loops)} detectors, more than {_MAX_CHANNEL} channels"
    xy = net.getNode(next(iter(nodes))).getCoord()
    turns = turns_of(conns)
    return two_phase(tls.getID(), controller_id, xy, green, phase_of, loops, turns), ""


def _green(states: list[str], phase_of: Mapping[int, int], phase: int, n: int) -> str:
    """The signal state while `phase` is green.

    SUMO's own program phase that best matches ours (most of our links green, fewest of
    the other axis) tells which of our links may go with priority ('G'); links green
    only in another SUMO phase (a protected left, say) run permitted ('g': they yield).
    """
    mine = [i for i in range(n) if phase_of.get(i) == phase]
    other = [i for i in range(n) if phase_of.get(i, phase) != phase]

    def score(state: str) -> tuple[int, int]:
        return (
            sum(state[i] in "Gg" for i in mine) - 2 * sum(state[i] in "Gg" for i in other),
            -sum(state[i] == "g" for i in mine),
        )

    best = max(states, key=score)
    out = ["r"] * n
    for i in mine:
        out[i] = best[i] if best[i] in "Gg" else "g"
    return "".join(out)


def _loops(
    conns: list[Any],
    phase_of_edge: Mapping[str, int],
    headings: Mapping[str, float],
    controller_id: str,
) -> tuple[Loop, ...]:
    lanes: dict[str, Any] = {}
    for in_lane, _out, _index in conns:
        if in_lane.allows("passenger"):
            lanes.setdefault(in_lane.getID(), in_lane)
    sites = [
        LaneSite(
            lane_id,
            phase_of_edge[lane.getEdge().getID()],
            float(lane.getLength()),
            f"{_compass(headings[lane.getEdge().getID()])}bound",
        )
        for lane_id, lane in lanes.items()
    ]
    return lane_loops(controller_id, sites, min_advance_lane_m=ADVANCE_M + ADVANCE_MARGIN_M)


def _movements(j: Intersection) -> dict[int, str]:
    out: dict[int, str] = {}
    for p in (_NS, _EW):
        approaches = sorted({lp.approach for lp in j.loops if lp.phase == p})
        out[p] = f"{', '.join(approaches) or 'no car lanes'}: through, right, permitted left"
    return out


def _fringe(net: Any, fringe_m: float) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, str]]:
    """Source and sink edges at dead ends near the boundary, all mutually routable."""
    edges = [e for e in net.getEdges() if not e.isSpecial() and e.allows("passenger")]
    succ = {e.getID(): sorted(o.getID() for o in e.getAllowedOutgoing("passenger")) for e in edges}
    core = _largest_scc(succ)
    pred: dict[str, list[str]] = {k: [] for k in succ}
    for k, outs in succ.items():
        for o in outs:
            pred.setdefault(o, []).append(k)
    reach_core = _reaching(core, pred)  # edges from which the core is reachable
    from_core = _reaching(core, succ)  # edges reachable from the core
    (xmin, ymin), (xmax, ymax) = net.getBBoxXY()

    def at_fringe(node: Any) -> bool:
        x, y = node.getCoord()
        near = min(x - xmin, xmax - x, y - ymin, ymax - y) <= fringe_m
        return bool(near and node.getType() == "dead_end")

    sources = sorted(
        e.getID() for e in edges if e.getID() in reach_core and at_fringe(e.getFromNode())
    )
    sinks = sorted(e.getID() for e in edges if e.getID() in from_core and at_fringe(e.getToNode()))
    node = {e: net.getEdge(e).getFromNode().getID() for e in sources}
    node |= {e: net.getEdge(e).getToNode().getID() for e in sinks}
    return tuple(sources), tuple(sinks), node


def _reaching(seeds: set[str], graph: Mapping[str, list[str]]) -> set[str]:
    """Nodes reachable from `seeds` along `graph` (itself included)."""
    seen = set(seeds)
    stack = list(seeds)
    while stack:
        for nxt in graph.get(stack.pop(), []):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def _largest_scc(graph: Mapping[str, list[str]]) -> set[str]:
    """The largest strongly connected component (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    best: set[str] = set()
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack.add(v)
            outs = graph.get(v, [])
            if i < len(outs):
                work.append((v, i + 1))
                w = outs[i]
                if w not in index:
                    work.append((w, 0))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                comp: set[str] = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > len(best):
                    best = comp
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return best
