"""Demo data: about forty works on the real streets of the bundled street network.

Deterministic for a given day: every work is a hand-written row (`DEMO_WORKS`) placed on a
stretch of a named street of `cityops.routing.network` (metres along the street), dated
relative to `today`, and driven through the real service (create, submit, consult,
approve, schedule, start, complete...) with a simulated clock, so audit history,
coordination and findings are exactly what the registry itself produces.

Planted for coordination (`PLANTED`): two clashes (one overlapping, one 6 m apart within
the 10 m buffer), a dig-once opportunity, a protection-period warning and two parallel
closures. Near misses that must *not* be found are planted too: the same place at another
time by the same promoter, an excavation in a street whose protection period has expired,
road marking (no digging) on a freshly resurfaced street, parallel closures at different
times.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any, Final

from shapely.geometry import LineString, MultiLineString
from shapely.ops import linemerge, substring

from cityops.roadworks import store_coordination, store_sql, store_works
from cityops.roadworks.errors import InvalidStateError
from cityops.roadworks.geometry import Projector
from cityops.roadworks.labels import BERLIN
from cityops.roadworks.model import (
    Actor,
    Category,
    Decision,
    FindingKind,
    FindingStatus,
    Measure,
    RoadworkSpec,
    Role,
    Sector,
    Status,
    Street,
)
from cityops.roadworks.service import RoadworksService
from cityops.routing.network import RoadNetwork

__all__ = [
    "DEMO_PREFIX",
    "DEMO_WORKS",
    "PLANTED",
    "DemoSegment",
    "DemoWork",
    "SeedReport",
    "seed_demo",
    "street_lines",
]

logger = logging.getLogger(__name__)

#: References of demo works start with this; `--replace` deletes exactly those.
DEMO_PREFIX: Final = "DEMO-"
_SEED_USER: Final = "seed-demo"

M = Measure
_L, _P, _C, _S = M.LANE_CLOSURE, M.PARKING_SUSPENDED, M.CYCLE_LANE_CLOSURE, M.SIDEWALK_CLOSURE
_R, _A, _T = M.ROAD_CLOSURE, M.ALTERNATING_ONE_WAY, M.TEMPORARY_SIGNALS

_GAS = "Stadtwerke Netz GmbH"
_POWER = "Energienetz Mitte GmbH"
_HEAT = "Fernwärme Main GmbH"
_FIBRE = "Glasfaser Plus GmbH"
_TELCO = "Netzbau Kommunikation AG"
_SEWER = "Stadtentwässerung (Eigenbetrieb)"
_ROAD = "Tiefbauamt – Straßenbau"

_CONTACTS = {
    _GAS: ("Anna Schmidt", "Störungsdienst 0800 123 45 67"),
    _POWER: ("Mehmet Yılmaz", "Hotline 0800 765 43 21"),
    _HEAT: ("Katrin Wagner", "fernwaerme-baustellen@example.org"),
    _FIBRE: ("Lukas Becker", "ausbau@glasfaser-plus.example"),
    _TELCO: ("Sofia Rossi", "baustellen@netzbau.example"),
    _SEWER: ("Peter Hoffmann", "Bürgertelefon 069 0000 111"),
    _ROAD: ("Julia Neumann", "strassenbau@stadt.example"),
}
_AUTHORITY = Actor("Jonas Weber", "Straßenverkehrsbehörde", Role.AUTHORITY)


@dataclass(frozen=True, slots=True)
class DemoWork:
    key: str
    street: str
    at: tuple[float, float]  # metres along the street
    promoter: str
    sector: Sector
    category: Category
    status: Status
    start_day: int  # relative to today
    days: int
    title: str
    public_text: str
    half_width_m: float = 4.0
    measures: frozenset[Measure] = frozenset()
    lanes: int = 0
    excavation: bool = True
    contractor: str | None = None
    bus_lines: tuple[str, ...] = ()
    waste: bool = False
    night: bool = False
    hours: str | None = "Mo–Fr 07:00–17:00"
    detour: tuple[str, tuple[float, float], str] | None = None  # street, at, description
    is_public: bool = True
    late_days: int = 0  # start reported this many days after the planned start


@dataclass(frozen=True, slots=True)
class DemoSegment:
    key: str
    street: str
    at: tuple[float, float]
    years_ago: int
    note: str


def _w(key: str, street: str, at: tuple[float, float], promoter: str, sector: Sector,
       category: Category, status: Status, start_day: int, days: int, title: str,
       public_text: str, measures: Sequence[Measure] = (), **kw: Any) -> DemoWork:
    return DemoWork(key, street, at, promoter, sector, category, status, start_day, days,
                    title, public_text, measures=frozenset(measures), **kw)


G, W, E, H, TC, SW, RD = (Sector.GAS, Sector.WATER, Sector.ELECTRICITY,
                          Sector.DISTRICT_HEATING, Sector.TELECOM, Sector.SEWER, Sector.ROAD)
MIN, STD, MAJ, EMG = Category.MINOR, Category.STANDARD, Category.MAJOR, Category.EMERGENCY
St = Status

DEMO_WORKS: Final[tuple[DemoWork, ...]] = (
    # -- planted: clash, footprints overlap ---------------------------------------------
    _w("gas-unionin", "Unioninkatu", (270, 325), _GAS, G, STD, St.SCHEDULED, 3, 21,
       "Erneuerung Gasversorgungsleitung DN 150",
       "Die Gasleitung wird erneuert. Ein Fahrstreifen ist gesperrt.", [_L, _P], lanes=1,
       contractor="Rohrleitungsbau Fischer GmbH"),
    _w("fibre-unionin", "Unioninkatu", (290, 322), _FIBRE, TC, MIN, St.APPROVED, 10, 8,
       "Glasfaser-Hausanschlüsse", "Verlegung von Glasfaser im Gehweg.", [_S, _P],
       half_width_m=2.0, contractor="Kabelbau Weber GmbH"),
    # -- planted: clash, 6 m apart within the 10 m buffer --------------------------------
    _w("water-emergency-mannerheim", "Mannerheimintie", (300, 330), _GAS, W, EMG,
       St.IN_PROGRESS, -2, 7, "Rohrbruch Wasserleitung",
       "Reparatur eines Rohrbruchs. Zwei Fahrstreifen gesperrt, Baustellenampel.",
       [_L, _T], lanes=2, half_width_m=5.0, bus_lines=("18", "20"), hours="durchgehend",
       night=True),
    _w("power-mannerheim", "Mannerheimintie", (336, 400), _POWER, E, STD, St.SCHEDULED, 1,
       14, "Mittelspannungskabel Umverlegung", "Umverlegung eines Stromkabels.", [_L],
       lanes=1, contractor="Kabelbau Weber GmbH"),
    # -- planted: dig once (same street, 27 days apart, two promoters) --------------------
    _w("heat-fabian", "Fabianinkatu", (250, 320), _HEAT, H, MAJ, St.APPROVED, 20, 28,
       "Neubau Fernwärmeleitung", "Neue Fernwärmeleitung; Radweg und Parkplätze gesperrt.",
       [_L, _C, _P], lanes=1, contractor="Bauunternehmung Müller GmbH"),
    _w("fibre-fabian", "Fabianinkatu", (262, 318), _TELCO, TC, MIN, St.SUBMITTED, 75, 10,
       "Glasfaserausbau Fabianinkatu", "Glasfaserkabel im Gehweg.", [_S],
       half_width_m=2.0),
    # -- planted: protection period (Kasarmikatu resurfaced two years ago) ---------------
    _w("sewer-kasarmi", "Kasarmikatu", (40, 100), _SEWER, SW, STD, St.IN_CONSULTATION, 30,
       35, "Kanalsanierung in offener Bauweise",
       "Der Abwasserkanal wird erneuert. Wechselseitiger Verkehr mit Baustellenampel.",
       [_A, _T], contractor="Tiefbau Schneider & Söhne"),
    # near miss: protection period expired (resurfaced seven years ago)
    _w("water-annan", "Annankatu", (220, 300), _GAS, W, STD, St.SCHEDULED, 5, 14,
       "Erneuerung Hausanschlüsse Wasser", "Wasserhausanschlüsse werden erneuert.",
       [_L, _P], lanes=1),
    # near miss: no digging on a freshly resurfaced street
    _w("marking-korkea", "Korkeavuorenkatu", (90, 170), _ROAD, RD, MIN, St.SCHEDULED, 2, 2,
       "Fahrbahnmarkierung", "Neue Fahrbahnmarkierung, nachts.", [_L], lanes=1,
       excavation=False, night=True, hours="20:00–05:00", half_width_m=5.0),
    # -- planted: parallel closures at the same time --------------------------------------
    _w("resurface-pohjois", "Pohjoisesplanadi", (240, 400), _ROAD, RD, MAJ, St.SCHEDULED,
       7, 10, "Fahrbahndeckenerneuerung",
       "Die Fahrbahn erhält eine neue Asphaltdecke. Vollsperrung.", [_R, _P, _C],
       excavation=False, half_width_m=7.0, bus_lines=("16",),
       detour=("Aleksanterinkatu", (20, 270),
               "Umleitung über Aleksanterinkatu und Unioninkatu"),
       contractor="Straßenbau Becker KG"),
    _w("heat-etela", "Eteläesplanadi", (160, 220), _HEAT, H, STD, St.SCHEDULED, 9, 14,
       "Fernwärme-Hausanschluss", "Hausanschluss Fernwärme; Vollsperrung.", [_R],
       half_width_m=5.0, waste=True,
       detour=("Pohjoinen Makasiinikatu", (20, 240),
               "Umleitung über Kasarmikatu und Pohjoinen Makasiinikatu")),
    # near miss: parallel closures at different times
    _w("closure-kaleva", "Kalevankatu", (20, 90), _GAS, G, STD, St.IN_PROGRESS, -10, 14,
       "Gasleitung Querung", "Querung der Fahrbahn; Vollsperrung.", [_R],
       half_width_m=5.0, detour=("Lönnrotinkatu", (165, 250), "Umleitung über Lönnrotinkatu")),
    _w("closure-lonnrot", "Lönnrotinkatu", (175, 240), _POWER, E, STD, St.APPROVED, 40, 6,
       "Kabelquerung Lönnrotinkatu", "Querung der Fahrbahn; Vollsperrung.", [_R],
       half_width_m=5.0),
    # near miss: same place as a later work of the same promoter, at another time
    _w("emergency-simon", "Simonkatu", (30, 120), _POWER, E, EMG, St.COMPLETED, -12, 3,
       "Kabelstörung behoben", "Reparatur eines defekten Stromkabels.", [_L], lanes=1,
       hours="durchgehend"),
    _w("power-simon", "Simonkatu", (30, 120), _POWER, E, STD, St.SUBMITTED, 50, 20,
       "Netzverstärkung Niederspannung", "Neue Stromkabel im Gehweg.", [_S, _P]),
    # -- the rest of the city ------------------------------------------------------------
    _w("tele-kaisaniemenkatu", "Kaisaniemenkatu", (100, 200), _FIBRE, TC, STD,
       St.IN_PROGRESS, -5, 20, "Glasfaser-Backbone", "Glasfaserausbau im Gehweg.", [_S, _P],
       half_width_m=2.5),
    _w("power-snellman", "Snellmaninkatu", (150, 260), _POWER, E, STD, St.COMPLETED, -40,
       21, "Erneuerung Niederspannungskabel", "Stromkabel werden erneuert.", [_L], lanes=1),
    _w("gas-yrjon", "Yrjönkatu", (160, 240), _GAS, G, STD, St.IN_PROGRESS, -3, 18,
       "Gasleitung Yrjönkatu", "Gasleitung wird erneuert.", [_L, _P], lanes=1,
       late_days=1),
    _w("water-bulevardi", "Bulevardi", (200, 320), _GAS, W, MAJ, St.APPROVED, 45, 60,
       "Hauptwasserleitung Bulevardi", "Die Hauptwasserleitung wird erneuert.", [_L, _C],
       lanes=1, bus_lines=("14", "20"), half_width_m=5.0),
    _w("sewer-uudenmaan", "Uudenmaankatu", (30, 130), _SEWER, SW, STD, St.SUBMITTED, 60,
       30, "Kanalanschlüsse", "Kanalhausanschlüsse werden erneuert.", [_A, _T]),
    _w("heat-kaivokatu", "Kaivokatu", (60, 200), _HEAT, H, MAJ, St.IN_CONSULTATION, 90, 60,
       "Fernwärmetrasse Kaivokatu", "Neue Fernwärmetrasse; zwei Fahrstreifen gesperrt.",
       [_L, _P], lanes=2, bus_lines=("15", "16")),
    _w("tele-vilhon", "Vilhonkatu", (60, 95), _TELCO, TC, MIN, St.COMPLETED, -20, 5,
       "Kabelschacht", "Kabelschacht im Gehweg.", [_S], half_width_m=2.0,
       is_public=False),
    _w("power-liisan", "Liisankatu", (20, 130), _POWER, E, STD,
       St.MODIFICATION_REQUESTED, 35, 15, "Trafostation Anschluss",
       "Anschluss einer Trafostation.", [_L], lanes=1),
    _w("road-erottajan", "Erottajankatu", (95, 200), _ROAD, RD, STD, St.DRAFT, 100, 20,
       "Gehwegsanierung Erottajankatu", "Der Gehweg wird saniert.", [_S],
       excavation=False),
    _w("water-siltasaaren", "Siltasaarenkatu", (50, 160), _GAS, W, STD, St.REFUSED, 25, 20,
       "Wasserleitung Siltasaarenkatu", "Wasserleitung wird erneuert.", [_L], lanes=1),
    _w("gas-pitkansillan", "Pitkänsillanranta", (130, 290), _GAS, G, MAJ, St.IN_PROGRESS,
       -25, 50, "Gashochdruckleitung", "Erneuerung der Gashochdruckleitung.", [_L, _P],
       lanes=1, half_width_m=5.0),
    _w("tele-john", "John Stenbergin ranta", (40, 200), _FIBRE, TC, STD, St.SCHEDULED, 12,
       15, "Glasfaser Uferweg", "Glasfaser entlang des Ufers.", [_S, _C],
       half_width_m=2.5),
    _w("sewer-saariniemen", "Saariniemenkatu", (110, 160), _SEWER, SW, STD, St.CANCELLED,
       15, 10, "Kanalinspektion mit Aufgrabung", "Kanalreparatur.", [_L], lanes=1),
    _w("power-makasiini", "Eteläinen Makasiinikatu", (120, 180), _POWER, E, MIN,
       St.COMPLETED, -15, 6, "Straßenbeleuchtung Kabel", "Kabel der Straßenbeleuchtung.",
       [_S], half_width_m=2.0),
    _w("tele-makasiini", "Pohjoinen Makasiinikatu", (210, 250), _TELCO, TC, MIN,
       St.SCHEDULED, 4, 5, "Hausanschluss Telekommunikation", "Hausanschluss.", [_S],
       half_width_m=2.0),
    _w("water-kaisaniemenranta", "Kaisaniemenranta", (100, 250), _GAS, W, STD,
       St.IN_PROGRESS, -7, 30, "Trinkwasserleitung Ufer", "Trinkwasserleitung.", [_L],
       lanes=1),
    _w("heat-puistokuja", "Kaisaniemen puistokuja", (150, 300), _HEAT, H, MAJ,
       St.APPROVED, 30, 90, "Fernwärme Parkweg", "Fernwärmeleitung unter dem Parkweg.",
       [_S], half_width_m=3.0),
    _w("road-siltavuori", "Siltavuorenpenger", (50, 180), _ROAD, RD, STD, St.REVOKED, 5, 20,
       "Stützmauer Sanierung", "Sanierung der Stützmauer.", [_L], lanes=1),
    _w("gas-aleksanterin", "Aleksanterinkatu", (40, 150), _GAS, G, STD, St.DRAFT, 120, 14,
       "Gasleitung Aleksanterinkatu", "Gasleitung wird erneuert.", [_L], lanes=1),
    _w("tele-yliopisto", "Yliopistonkatu", (140, 200), _FIBRE, TC, MIN, St.IN_PROGRESS,
       -1, 4, "Glasfaser Hausanschluss Universität", "Hausanschluss.", [_S],
       half_width_m=2.0),
    _w("water-etelaranta", "Eteläranta", (100, 230), _GAS, W, MAJ, St.IN_CONSULTATION, 70,
       45, "Hauptwasserleitung Eteläranta", "Hauptwasserleitung; zwei Fahrstreifen.",
       [_L], lanes=2, bus_lines=("17",)),
    _w("sewer-korkea", "Korkeavuorenkatu", (240, 370), _SEWER, SW, STD, St.APPROVED, 25,
       30, "Kanalerneuerung Korkeavuorenkatu", "Kanal wird erneuert.", [_A, _T]),
    _w("tele-pieni-roobert", "Pieni Roobertinkatu", (80, 150), _FIBRE, TC, MIN,
       St.COMPLETED, -30, 7, "Glasfaser Pieni Roobertinkatu", "Glasfaser im Gehweg.", [_S],
       half_width_m=2.0),
    _w("power-kaleva", "Kalevankatu", (150, 240), _POWER, E, STD, St.SCHEDULED, 20, 10,
       "Kabelerneuerung Kalevankatu", "Stromkabel werden erneuert.", [_L], lanes=1),
    _w("gas-yrjon-south", "Yrjönkatu", (540, 600), _GAS, G, STD, St.APPROVED, 60, 25,
       "Gasleitung Yrjönkatu Süd", "Gasleitung, zweiter Abschnitt.", [_L], lanes=1),
)

DEMO_SEGMENTS: Final[tuple[DemoSegment, ...]] = (
    DemoSegment("res-kasarmi", "Kasarmikatu", (10, 170), 2, "Deckenerneuerung"),
    DemoSegment("res-annan", "Annankatu", (195, 325), 7, "Deckenerneuerung"),
    DemoSegment("res-korkea", "Korkeavuorenkatu", (75, 185), 1, "Vollausbau"),
    DemoSegment("res-siltavuorenranta", "Siltavuorenranta", (10, 180), 3, "Deckenerneuerung"),
)

#: What coordination must find in the demo data, and nothing else: (kind, key, key).
PLANTED: Final[tuple[tuple[FindingKind, str, str], ...]] = (
    (FindingKind.CLASH, "gas-unionin", "fibre-unionin"),
    (FindingKind.CLASH, "water-emergency-mannerheim", "power-mannerheim"),
    (FindingKind.DIG_ONCE, "heat-fabian", "fibre-fabian"),
    (FindingKind.PARALLEL_CLOSURE, "resurface-pohjois", "heat-etela"),
    (FindingKind.PROTECTION_PERIOD, "sewer-kasarmi", "res-kasarmi"),
)


@dataclass(slots=True)
class SeedReport:
    works: int = 0
    segments: int = 0
    findings: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)  # key -> reference
    segment_ids: dict[str, int] = field(default_factory=dict)  # key -> id


class _Clock:
    """The simulated time of the seed's actions (never after `now`)."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.t = now

    def set(self, t: datetime) -> None:
        self.t = min(t, self.now)

    def __call__(self) -> datetime:
        return self.t


def street_lines(network: RoadNetwork, projector: Projector) -> dict[str, Any]:
    """The longest continuous line of every named street, in the metric CRS, running
    from its western (or northern) end."""
    pairs: dict[str, set[tuple[int, int]]] = {}
    for e in range(network.n_edges):
        name = str(network.name[e])
        if not name or network.tunnel[e]:
            continue
        u, v = int(network.src[e]), int(network.dst[e])
        pairs.setdefault(name, set()).add((min(u, v), max(u, v)))
    lines: dict[str, Any] = {}
    for name in sorted(pairs):
        parts = [
            LineString([(network.lon[u], network.lat[u]), (network.lon[v], network.lat[v])])
            for u, v in sorted(pairs[name])
        ]
        merged = linemerge(MultiLineString(parts))
        pieces = list(getattr(merged, "geoms", [merged]))
        best = max((projector.to_metric(p) for p in pieces), key=lambda g: (g.length, g.wkb))
        (x0, y0), (x1, y1) = best.coords[0], best.coords[-1]
        if (x0, -y0) > (x1, -y1):
            best = LineString(list(best.coords)[::-1])
        lines[name] = best
    return lines


def seed_demo(
    conn: store_sql.Conn, service: RoadworksService, network: RoadNetwork, today: date, *,
    replace: bool = False,
) -> SeedReport:
    """Create the demo works (references `DEMO-01`...) for `today`; the service's clock is
    replaced by a simulated one. Raises InvalidStateError when demo works exist and not
    `replace`."""
    projector = service.frame.projector
    lines = street_lines(network, projector)
    missing = sorted({w.street for w in DEMO_WORKS} - set(lines))
    if missing:
        raise InvalidStateError(f"the street network lacks the demo streets: {', '.join(missing)}")
    with conn.transaction():
        ours = store_works.WorkFilter(reference_prefix=DEMO_PREFIX)
        existing = store_works.count_works(conn, ours)
        if existing and not replace:
            raise InvalidStateError(f"{existing} demo works exist already; use --replace")
        deleted = store_works.delete_works(conn, DEMO_PREFIX)
        store_coordination.delete_segments(conn, created_by=_SEED_USER)
        if deleted:
            logger.info("deleted %d demo works", deleted)

    now = datetime.combine(today, time(8, 0), BERLIN)
    clock = _Clock(now)
    svc = RoadworksService(service.frame, service.rules, clock)
    report = SeedReport()
    system = Actor(_SEED_USER, _ROAD, Role.AUTHORITY)

    for seg in DEMO_SEGMENTS:
        line = projector.to_lonlat(substring(lines[seg.street], *seg.at))
        on = today.replace(year=today.year - seg.years_ago, day=min(today.day, 28)) \
            - timedelta(days=30)
        clock.set(datetime.combine(on, time(12), BERLIN))
        segment = svc.add_resurfaced_segment(conn, seg.street, line, on, system,
                                             note=f"{seg.note} (Demo)")
        report.segment_ids[seg.key] = segment.id

    for i, demo in enumerate(DEMO_WORKS, start=1):
        reference = f"{DEMO_PREFIX}{i:02d}"
        report.references[demo.key] = reference
        _drive(svc, clock, conn, demo, reference, _spec(demo, lines, projector, today))
        report.by_status[demo.status.value] = report.by_status.get(demo.status.value, 0) + 1

    _decide(svc, clock, conn, report, now)
    clock.set(now)
    with conn.transaction():
        report.works = store_works.count_works(conn, store_works.WorkFilter())
        report.segments = len(report.segment_ids)
        report.findings = len(store_coordination.list_findings(conn, statuses=_CURRENT))
    logger.info("seeded %d demo works, %d resurfaced segments, %d findings", len(DEMO_WORKS),
                report.segments, report.findings)
    return report


_CURRENT = (FindingStatus.OPEN, FindingStatus.ACCEPTED, FindingStatus.RESOLVED)


def _spec(demo: DemoWork, lines: dict[str, Any], projector: Projector,
          today: date) -> RoadworkSpec:
    piece = substring(lines[demo.street], *demo.at)
    footprint = piece.buffer(demo.half_width_m, cap_style="flat")
    start = datetime.combine(today + timedelta(days=demo.start_day), time(7), BERLIN)
    end = datetime.combine(today + timedelta(days=demo.start_day + demo.days - 1), time(17),
                           BERLIN)
    detour = detour_text = None
    if demo.detour is not None:
        street, at, detour_text = demo.detour
        detour = projector.to_lonlat(substring(lines[street], *at))
    name, contact = _CONTACTS[demo.promoter]
    return RoadworkSpec(
        title=demo.title, promoter=demo.promoter, sector=demo.sector,
        category=demo.category, footprint=projector.to_lonlat(footprint),
        streets=(Street(demo.street, projector.to_lonlat(piece)),),
        planned_start=start, planned_end=end,
        description=f"{demo.title} ({demo.street}). Ansprechpartner: {name}.",
        contractor=demo.contractor, public_contact=contact, working_hours=demo.hours,
        night_works=demo.night, excavation=demo.excavation, measures=demo.measures,
        lanes_affected=demo.lanes, detour_description=detour_text, detour=detour,
        bus_lines=demo.bus_lines, waste_collection_affected=demo.waste,
        is_public=demo.is_public, public_text=demo.public_text,
    )


def _drive(svc: RoadworksService, clock: _Clock, conn: store_sql.Conn, demo: DemoWork,
           reference: str, spec: RoadworkSpec) -> None:
    """Create the work and take it through the lifecycle to its demo state."""
    promoter = Actor(_CONTACTS[demo.promoter][0], demo.promoter, Role.PROMOTER)
    start = spec.planned_start
    if demo.category is Category.EMERGENCY:
        clock.set(start + timedelta(hours=2))  # registered after the repair began
        work = svc.create(conn, spec, promoter, reference=reference)
        work = svc.report_start(conn, work.id, promoter, at=start,
                                note="Notmaßnahme, sofort begonnen")
        if demo.status is Status.COMPLETED:
            clock.set(spec.planned_end + timedelta(hours=1))
            svc.report_end(conn, work.id, promoter, at=spec.planned_end)
        return
    lead = {Category.MINOR: 21, Category.STANDARD: 42, Category.MAJOR: 90}[demo.category]
    t = start - timedelta(days=lead)
    clock.set(t)
    work = svc.create(conn, spec, promoter, reference=reference)
    path = _PATHS[demo.status]
    for step, target in enumerate(path, start=1):
        actor = promoter if target in _PROMOTER_STEPS else _AUTHORITY
        at = None
        if target is Status.IN_PROGRESS:
            at = start + timedelta(days=demo.late_days)
            clock.set(at + timedelta(hours=1))
        elif target is Status.COMPLETED:
            at = spec.planned_end
            clock.set(at + timedelta(hours=1))
        else:
            clock.set(t + timedelta(days=3 * step))
        note = _NOTES.get(target)
        work = svc.transition(conn, work.id, target, actor, at=at, note=note)
    if demo.key == "heat-kaivokatu":  # a change after submission, for the audit trail
        clock.set(t + timedelta(days=10))
        longer = _replace_end(work.spec, work.spec.planned_end + timedelta(days=14))
        svc.update(conn, work.id, longer, promoter, note="Bauzeit um zwei Wochen verlängert")


def _replace_end(spec: RoadworkSpec, end: datetime) -> RoadworkSpec:
    return replace(spec, planned_end=end)


def _decide(svc: RoadworksService, clock: _Clock, conn: store_sql.Conn, report: SeedReport,
            now: datetime) -> None:
    """A coordinator has looked at the emergency clash already."""
    clock.set(now - timedelta(hours=1))
    ids = {report.references[k] for k in ("water-emergency-mannerheim", "power-mannerheim")}
    for finding in svc.findings(conn):
        if finding.kind is FindingKind.CLASH and {finding.reference_a, finding.reference_b} == ids:
            svc.decide_finding(
                conn, finding.id, Decision.ACCEPTED,
                "Abgestimmt: Die Stromarbeiten beginnen im Anschlussbereich erst nach der "
                "Rohrbruchreparatur.", _AUTHORITY,
            )


_S_ = Status
_PATHS: Final[dict[Status, tuple[Status, ...]]] = {
    _S_.DRAFT: (),
    _S_.SUBMITTED: (_S_.SUBMITTED,),
    _S_.IN_CONSULTATION: (_S_.SUBMITTED, _S_.IN_CONSULTATION),
    _S_.MODIFICATION_REQUESTED: (_S_.SUBMITTED, _S_.IN_CONSULTATION,
                                 _S_.MODIFICATION_REQUESTED),
    _S_.APPROVED: (_S_.SUBMITTED, _S_.IN_CONSULTATION, _S_.APPROVED),
    _S_.REFUSED: (_S_.SUBMITTED, _S_.IN_CONSULTATION, _S_.REFUSED),
    _S_.SCHEDULED: (_S_.SUBMITTED, _S_.IN_CONSULTATION, _S_.APPROVED, _S_.SCHEDULED),
    _S_.IN_PROGRESS: (_S_.SUBMITTED, _S_.IN_CONSULTATION, _S_.APPROVED, _S_.SCHEDULED,
                      _S_.IN_PROGRESS),
    _S_.COMPLETED: (_S_.SUBMITTED, _S_.IN_CONSULTATION, _S_.APPROVED, _S_.SCHEDULED,
                    _S_.IN_PROGRESS, _S_.COMPLETED),
    _S_.CANCELLED: (_S_.SUBMITTED, _S_.CANCELLED),
    _S_.REVOKED: (_S_.SUBMITTED, _S_.IN_CONSULTATION, _S_.APPROVED, _S_.REVOKED),
}
_PROMOTER_STEPS = frozenset({_S_.SUBMITTED, _S_.SCHEDULED, _S_.IN_PROGRESS, _S_.COMPLETED,
                             _S_.CANCELLED})
_NOTES: Final[dict[Status, str]] = {
    _S_.IN_CONSULTATION: "Anhörung Polizei, Verkehrsbetriebe, Feuerwehr",
    _S_.MODIFICATION_REQUESTED: "Bitte Verkehrszeichenplan nachreichen",
    _S_.APPROVED: "Genehmigt mit Auflagen",
    _S_.REFUSED: "Abgelehnt: Konflikt mit Großveranstaltung",
    _S_.REVOKED: "Widerrufen: Auflagen nicht eingehalten",
    _S_.CANCELLED: "Vorhaben zurückgestellt",
}
