"""A SUMO grid with traffic lights, its induction loops, demand, and our controllers' layout.

`build_grid(spec, work_dir)` runs SUMO's `netgenerate` (from the `eclipse-sumo` wheel) for
an n x n grid of two-lane streets with fringe roads, one traffic light per inner junction,
and describes each junction as one of our controllers: NEMA phase 2 serves the
north-south approaches (through, right and permitted left), phase 4 east-west, in the
fixed order 2 -> 4. For each incoming lane it places a stop-bar presence loop ~1 m and an
advance loop 50 m before the stop line. `write_demand` writes seeded random trips between
fringe roads (Poisson departures at the requested vehicles per hour; SUMO routes them).

Generated files go into `work_dir` (a cache or temporary folder, never the repository).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = [
    "ADVANCE_M",
    "STOP_BAR_M",
    "GridSpec",
    "Intersection",
    "LaneSite",
    "Loop",
    "build_grid",
    "lane_loops",
    "sumo_binary",
    "turns_of",
    "two_phase",
    "write_demand",
    "write_trips",
]

STOP_BAR_M = 1.0
ADVANCE_M = 50.0
_NS, _EW = 2, 4


@dataclass(frozen=True, slots=True)
class GridSpec:
    """The grid and its signal timings (seconds)."""

    size: int = 3
    block_m: float = 200.0
    lanes: int = 2
    speed_kmh: float = 50.0
    green_s: float = 25.0
    min_green_s: float = 5.0
    max_green_s: float = 60.0
    yellow_s: float = 3.0
    red_clearance_s: float = 2.0
    id_prefix: str = "GRID-"

    def __post_init__(self) -> None:
        if not 1 <= self.size <= 10:
            raise ValueError("grid size must be 1..10")
        if self.block_m < ADVANCE_M + 40.0:
            raise ValueError(f"block_m must be at least {ADVANCE_M + 40.0:g} m")
        if not 1 <= self.lanes <= 3:
            raise ValueError("lanes must be 1..3")


@dataclass(frozen=True, slots=True)
class Loop:
    """An induction loop: our detector channel and where SUMO has it."""

    loop_id: str
    channel: int
    phase: int
    kind: Literal["stop_bar", "advance"]
    lane: int  # numbered per phase over its approaches, as the measures key lanes
    sumo_lane: str
    pos_m: float
    distance_m: float
    approach: str


@dataclass(frozen=True, slots=True)
class Intersection:
    """One traffic light of the grid as our controller sees it."""

    tls_id: str
    controller_id: str
    x: float
    y: float
    link_count: int
    green: dict[int, str]  # phase -> SUMO signal state during its green
    yellow: dict[int, str]
    all_red: str
    loops: tuple[Loop, ...]
    #: (incoming SUMO lane, outgoing SUMO lane) of each controlled link, in link order:
    #: which lanes downstream a lane feeds (the registry derives `signal_links` from it)
    turns: tuple[tuple[str, str], ...] = ()


def sumo_binary(name: str) -> str:
    """Path of a SUMO tool (`sumo`, `netgenerate`) from the eclipse-sumo wheel."""
    import sumo

    return str(Path(sumo.SUMO_HOME) / "bin" / name)


def _approach(dx: float, dy: float) -> tuple[int, str]:
    """Phase and approach name of a lane heading (dx, dy) into the junction."""
    if abs(dy) >= abs(dx):
        return _NS, "southbound" if dy < 0 else "northbound"
    return _EW, "westbound" if dx < 0 else "eastbound"


def build_grid(spec: GridSpec, work_dir: Path, tls_type: str = "static") -> Path:
    """Generate the grid network (SUMO programs of `tls_type`: static or actuated)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    net = work_dir / f"grid{spec.size}_{spec.lanes}l_{spec.block_m:g}m_{tls_type}.net.xml"
    if net.exists():
        return net
    tmp = net.with_suffix(f".{os.getpid()}.tmp.xml")
    subprocess.run(
        [
            sumo_binary("netgenerate"),
            "--grid",
            "--grid.number",
            str(spec.size),
            "--grid.length",
            f"{spec.block_m:g}",
            "--grid.attach-length",
            f"{spec.block_m:g}",
            "--default.lanenumber",
            str(spec.lanes),
            "--default.speed",
            f"{spec.speed_kmh / 3.6:.2f}",
            "--default-junction-type",
            "traffic_light",
            "--no-turnarounds",
            "true",
            "--tls.default-type",
            tls_type,
            "--tls.yellow.time",
            f"{spec.yellow_s:g}",
            "--tls.allred.time",
            f"{spec.red_clearance_s:g}",
            "--tls.min-dur",
            f"{spec.min_green_s:g}",
            "--tls.max-dur",
            f"{spec.max_green_s:g}",
            "--no-warnings",
            "true",
            "-o",
            str(tmp),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    tmp.replace(net)
    return net


def intersections(spec: GridSpec, net_file: Path) -> tuple[Intersection, ...]:
    """Our controllers and their loops, read from the generated network."""
    import sumolib

    net = sumolib.net.readNet(str(net_file), withPrograms=True)
    out = []
    for tls in sorted(net.getTrafficLights(), key=lambda t: t.getID()):
        conns = tls.getConnections()
        n = 1 + max(int(c[2]) for c in conns)
        phase_of: dict[int, int] = {}
        lanes: dict[str, tuple[int, str, object]] = {}
        for in_lane, _out, index in conns:
            shape = in_lane.getShape()
            (x0, y0), (x1, y1) = shape[-2], shape[-1]
            phase, approach = _approach(x1 - x0, y1 - y0)
            phase_of[int(index)] = phase
            lanes[in_lane.getID()] = (phase, approach, in_lane)
        program = next(iter(tls.getPrograms().values()))
        green_char = ["r"] * n
        for ph in program.getPhases():
            for i, ch in enumerate(ph.state):
                if ch in "Gg" and green_char[i] == "r":
                    green_char[i] = ch
        green = {
            p: "".join(green_char[i] if phase_of.get(i) == p else "r" for i in range(n))
            for p in (_NS, _EW)
        }
        controller_id = f"{spec.id_prefix}{tls.getID()}"
        loops = lane_loops(
            controller_id,
            [
                LaneSite(lane_id, phase, float(lane.getLength()), approach)  # type: ignore[attr-defined]
                for lane_id, (phase, approach, lane) in lanes.items()
            ],
        )
        x, y = net.getNode(tls.getID()).getCoord()
        out.append(
            two_phase(tls.getID(), controller_id, (x, y), green, phase_of, loops, turns_of(conns))
        )
    return tuple(out)


@dataclass(frozen=True, slots=True)
class LaneSite:
    """An incoming car lane of a junction: where its loops go and whom they report to."""

    sumo_lane: str
    phase: int
    length_m: float
    approach: str


def lane_loops(
    controller_id: str, lanes: Iterable[LaneSite], min_advance_lane_m: float = 0.0
) -> tuple[Loop, ...]:
    """The induction loops of a junction's incoming lanes, as the grid and OSM networks
    place them: a stop-bar loop per lane and an advance loop on lanes at least
    `min_advance_lane_m` long. Channels count from 1 over phase 2's lanes, then phase
    4's; lanes are numbered per phase (the measures key lanes that way), both in SUMO
    lane id order, so a network always gives the same layout."""
    loops: list[Loop] = []
    channel = 0
    for phase in (_NS, _EW):
        mine = sorted((ln for ln in lanes if ln.phase == phase), key=lambda ln: ln.sumo_lane)
        for lane_no, lane in enumerate(mine, 1):
            places: list[tuple[Literal["stop_bar", "advance"], float]] = [("stop_bar", STOP_BAR_M)]
            if lane.length_m >= min_advance_lane_m:
                places.append(("advance", ADVANCE_M))
            for kind, dist in places:
                channel += 1
                loops.append(
                    Loop(
                        loop_id=f"{controller_id}_{channel}",
                        channel=channel,
                        phase=phase,
                        kind=kind,
                        lane=lane_no,
                        sumo_lane=lane.sumo_lane,
                        pos_m=max(0.0, lane.length_m - dist),
                        distance_m=dist,
                        approach=lane.approach,
                    )
                )
    return tuple(loops)


def turns_of(conns: Iterable[tuple[Any, Any, Any]]) -> tuple[tuple[str, str], ...]:
    """(incoming lane id, outgoing lane id) of sumolib's `tls.getConnections()` between
    lanes cars may use, by link index then lane ids (a link index may carry several)."""
    rows = sorted(
        (int(i), str(a.getID()), str(b.getID()))
        for a, b, i in conns
        if a.allows("passenger") and b.allows("passenger")
    )
    return tuple(dict.fromkeys((a, b) for _i, a, b in rows))


def two_phase(
    tls_id: str,
    controller_id: str,
    xy: tuple[float, float],
    green: Mapping[int, str],
    phase_of: Mapping[int, int],
    loops: tuple[Loop, ...],
    turns: tuple[tuple[str, str], ...] = (),
) -> Intersection:
    """One of our two-phase controllers for a SUMO light: `green` per phase (2 and 4) over
    its `link_count` links; during a phase's yellow its own links (`phase_of`: link index
    -> phase) show yellow and every other link red. `turns`: see `Intersection.turns`."""
    n = len(green[_NS])
    yellow = {
        p: "".join("y" if phase_of.get(i) == p else "r" for i in range(n)) for p in (_NS, _EW)
    }
    return Intersection(
        tls_id=tls_id,
        controller_id=controller_id,
        x=float(xy[0]),
        y=float(xy[1]),
        link_count=n,
        green=dict(green),
        yellow=yellow,
        all_red="r" * n,
        loops=loops,
        turns=turns,
    )


def write_loops(path: Path, junctions: tuple[Intersection, ...]) -> Path:
    """The induction loops as a SUMO additional file (no file output: we read them live)."""
    rows = [
        f'    <inductionLoop id="{lp.loop_id}" lane="{lp.sumo_lane}" pos="{lp.pos_m:.2f}" '
        f'period="86400" file="{os.devnull}"/>'
        for j in junctions
        for lp in j.loops
    ]
    path.write_text("<additional>\n" + "\n".join(rows) + "\n</additional>\n")
    return path


def write_demand(path: Path, net_file: Path, vph: float, duration_s: float, seed: int) -> int:
    """Random trips fringe road -> fringe road, Poisson at `vph`; returns the trip count."""
    import sumolib

    net = sumolib.net.readNet(str(net_file))
    sources = sorted(e.getID() for e in net.getEdges() if e.getFromNode().getType() == "dead_end")
    sinks = sorted(e.getID() for e in net.getEdges() if e.getToNode().getType() == "dead_end")
    fringe_node = {e: net.getEdge(e).getFromNode().getID() for e in sources}
    fringe_node |= {e: net.getEdge(e).getToNode().getID() for e in sinks}
    return write_trips(path, tuple(sources), tuple(sinks), fringe_node, vph, duration_s, seed)


def write_trips(
    path: Path,
    sources: tuple[str, ...],
    sinks: tuple[str, ...],
    fringe_node: Mapping[str, str],
    vph: float,
    duration_s: float,
    seed: int,
) -> int:
    """Seeded Poisson trips at `vph` from a random source edge to a random sink edge
    (not back out at the fringe node it came in from: `fringe_node` maps a source edge
    to its start node, a sink edge to its end node); returns the trip count."""
    if not sources or not sinks:
        raise ValueError("the network has no fringe edges for demand")
    rng = np.random.default_rng([seed, 5])
    rows = []
    t = float(rng.exponential(3600.0 / vph)) if vph > 0 else duration_s
    i = 0
    choices = {s: [d for d in sinks if fringe_node[d] != fringe_node[s]] for s in sources}
    while t < duration_s:
        src = sources[int(rng.integers(len(sources)))]
        if choices[src]:
            dst = choices[src][int(rng.integers(len(choices[src])))]
            rows.append(
                f'    <trip id="v{i}" type="car" depart="{t:.1f}" from="{src}" to="{dst}" '
                'departLane="best" departSpeed="max"/>'
            )
            i += 1
        t += float(rng.exponential(3600.0 / vph))
    path.write_text(
        '<routes>\n    <vType id="car" length="4.5" minGap="2.5" maxSpeed="15" sigma="0.5"/>\n'
        + "\n".join(rows)
        + "\n</routes>\n"
    )
    return i
