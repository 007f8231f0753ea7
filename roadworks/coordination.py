"""Coordination rules: pure functions over metric geometries and time ranges.

Four rules look at pairs of works (and at works against resurfaced streets):

* **clash**: footprints within `buffer_m` of each other *and* periods overlapping. Space
  alone or time alone is no clash.
* **dig once**: two excavations by different promoters on the same street (same name,
  centrelines within `dig_once_distance_m`) whose periods are at most
  `dig_once_window_days` apart, so they could share one trench. Not reported for a pair
  that already clashes.
* **protection period**: an excavation in a street resurfaced less than
  `protection_years` before the work (Aufbruchsperre).
* **parallel closures**: two full road closures at the same time on different, roughly
  parallel streets close to each other: traffic loses both routes at once. Not reported
  for a pair that already clashes.

Each finding carries a German sentence that explains it, machine-readable details and a
location in the frame of the input geometries. Everything here is deterministic; the
service feeds it works projected to the city's metric CRS.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import shapely
from shapely.geometry import LineString

from cityops.roadworks.geometry import Projector
from cityops.roadworks.labels import BERLIN, SECTOR_DE, fmt_date, fmt_period, street_key
from cityops.roadworks.model import (
    FindingDraft,
    FindingKind,
    Measure,
    Period,
    ResurfacedSegment,
    Roadwork,
    Sector,
    Severity,
    Street,
    same_organisation,
)

__all__ = [
    "CoordinationRules",
    "Segment",
    "Subject",
    "check_pair",
    "check_protection",
    "coordinate",
    "coordinate_all",
    "find_clash",
    "find_dig_once",
    "find_parallel_closure",
    "protected_until",
    "segment_of",
    "subject_of",
]

Geometry = Any


@dataclass(frozen=True, slots=True)
class CoordinationRules:
    """Thresholds of the rules; distances in metres."""

    buffer_m: float = 10.0
    dig_once_window_days: int = 180
    dig_once_distance_m: float = 25.0
    protection_years: int = 5
    protection_tolerance_m: float = 1.0
    parallel_max_distance_m: float = 250.0
    parallel_min_distance_m: float = 20.0
    parallel_max_angle_deg: float = 25.0
    parallel_min_overlap_m: float = 30.0

    def __post_init__(self) -> None:
        for name in ("buffer_m", "dig_once_distance_m", "protection_tolerance_m",
                     "parallel_min_distance_m", "parallel_min_overlap_m"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.dig_once_window_days < 0 or self.protection_years < 0:
            raise ValueError("dig_once_window_days and protection_years must not be negative")
        if not 0 <= self.parallel_max_angle_deg <= 90:
            raise ValueError("parallel_max_angle_deg must be between 0 and 90")
        if self.parallel_max_distance_m < self.parallel_min_distance_m:
            raise ValueError("parallel_max_distance_m must be at least parallel_min_distance_m")

    @property
    def reach_m(self) -> float:
        """How far apart two works can be and still be related by some rule."""
        return max(self.buffer_m, self.dig_once_distance_m, self.parallel_max_distance_m)

    @property
    def window(self) -> timedelta:
        """How far apart in time two works can be and still be related by some rule."""
        return timedelta(days=self.dig_once_window_days)


@dataclass(frozen=True, slots=True)
class Subject:
    """A work as the rules see it, with geometries in a metric frame."""

    work_id: int
    reference: str
    promoter: str
    sector: Sector
    period: Period
    footprint: Geometry
    streets: tuple[Street, ...]
    excavation: bool = True
    road_closure: bool = False

    @property
    def label(self) -> str:
        return f"{self.reference} ({self.promoter}, {SECTOR_DE[self.sector]})"


@dataclass(frozen=True, slots=True)
class Segment:
    """A resurfaced street segment in the metric frame."""

    segment_id: int
    street: str
    line: Geometry
    resurfaced_on: date


def subject_of(work: Roadwork, projector: Projector) -> Subject:
    spec = work.spec
    return Subject(
        work_id=work.id,
        reference=work.reference,
        promoter=spec.promoter,
        sector=spec.sector,
        period=work.effective_period,
        footprint=projector.to_metric(spec.footprint),
        streets=tuple(Street(s.name, projector.to_metric(s.line)) for s in spec.streets),
        excavation=spec.excavation,
        road_closure=Measure.ROAD_CLOSURE in spec.measures,
    )


def segment_of(segment: ResurfacedSegment, projector: Projector) -> Segment:
    return Segment(segment.id, segment.street, projector.to_metric(segment.line),
                   segment.resurfaced_on)


# -- the rules ----------------------------------------------------------------------------


def find_clash(a: Subject, b: Subject, rules: CoordinationRules) -> FindingDraft | None:
    """A clash when the footprints are within the buffer and the periods overlap."""
    both = a.period.intersection(b.period)
    if both is None:
        return None
    distance = float(a.footprint.distance(b.footprint))
    if distance > rules.buffer_m:
        return None
    lo, hi = _ordered(a, b)
    if distance == 0:
        where = "überschneiden sich räumlich"
        location = a.footprint.intersection(b.footprint).representative_point()
    else:
        where = (f"liegen nur {_metres(distance)} auseinander (Puffer "
                 f"{_metres(rules.buffer_m)})")
        location = _midpoint(a.footprint, b.footprint)
    common = _common_street(a, b)
    in_street = f" in der {common}" if common else ""
    message = (
        f"Konflikt{in_street}: {lo.label} und {hi.label} {where} und laufen gleichzeitig "
        f"({fmt_period(both)})."
    )
    return FindingDraft(
        kind=FindingKind.CLASH, severity=Severity.CONFLICT, work_a=lo.work_id,
        work_b=hi.work_id, message=message, street=common,
        details={"distance_m": round(distance, 1), "buffer_m": rules.buffer_m,
                 "overlap_start": _iso(both.start), "overlap_end": _iso(both.end)},
        location=location,
    )


def find_dig_once(a: Subject, b: Subject, rules: CoordinationRules) -> FindingDraft | None:
    """Two excavations of different promoters on one street within the time window."""
    if not (a.excavation and b.excavation):
        return None
    if same_organisation(a.promoter, b.promoter):
        return None
    gap = a.period.gap(b.period)
    if gap > rules.window:
        return None
    best: tuple[float, str, Geometry, Geometry] | None = None
    for sa in a.streets:
        for sb in b.streets:
            if street_key(sa.name) != street_key(sb.name):
                continue
            d = float(sa.line.distance(sb.line))
            if d <= rules.dig_once_distance_m and (best is None or d < best[0]):
                best = (d, sa.name, sa.line, sb.line)
    if best is None:
        return None
    distance, street, la, lb = best
    lo, hi = _ordered(a, b)
    first, second = sorted((lo, hi), key=lambda s: (s.period.start, s.work_id))
    if gap == timedelta(0):
        when = "und arbeiten teilweise gleichzeitig"
    else:
        when = (
            f"im Abstand von {gap.days} Tagen ({first.reference} bis "
            f"{fmt_date(first.period.end)}, {second.reference} ab "
            f"{fmt_date(second.period.start)})"
        )
    near = "an derselben Stelle" if distance == 0 else f"höchstens {_metres(distance)} voneinander"
    message = (
        f"Mitverlegung möglich (Dig once): {lo.label} und {hi.label} graben beide in der "
        f"{street}, {near}, {when}. Ein gemeinsamer Graben erspart eine zweite Aufgrabung."
    )
    return FindingDraft(
        kind=FindingKind.DIG_ONCE, severity=Severity.OPPORTUNITY, work_a=lo.work_id,
        work_b=hi.work_id, message=message, street=street,
        details={"distance_m": round(distance, 1), "gap_days": gap.days,
                 "window_days": rules.dig_once_window_days},
        location=_midpoint(la, lb),
    )


def find_parallel_closure(
    a: Subject, b: Subject, rules: CoordinationRules
) -> FindingDraft | None:
    """Two full closures at the same time on nearby, roughly parallel, different streets."""
    if not (a.road_closure and b.road_closure):
        return None
    both = a.period.intersection(b.period)
    if both is None:
        return None
    best: tuple[float, float, Street, Street] | None = None
    for sa in a.streets:
        for sb in b.streets:
            if street_key(sa.name) == street_key(sb.name):
                continue
            measured = _parallel(sa.line, sb.line, rules)
            if measured is not None and (best is None or measured[0] < best[0]):
                best = (measured[0], measured[1], sa, sb)
    if best is None:
        return None
    distance, angle, sa, sb = best
    (lo, s_lo), (hi, s_hi) = sorted(((a, sa), (b, sb)), key=lambda p: p[0].work_id)
    message = (
        f"Kumulative Wirkung: {lo.reference} sperrt die {s_lo.name} voll und {hi.reference} "
        f"zur selben Zeit ({fmt_period(both)}) die parallele {s_hi.name}, etwa "
        f"{_metres(distance)} entfernt; der Verkehr verliert beide Strecken zugleich."
    )
    location = LineString([lo.footprint.representative_point(),
                           hi.footprint.representative_point()])
    return FindingDraft(
        kind=FindingKind.PARALLEL_CLOSURE, severity=Severity.WARNING, work_a=lo.work_id,
        work_b=hi.work_id, message=message, street=f"{s_lo.name} / {s_hi.name}",
        details={"distance_m": round(distance, 1), "angle_deg": round(angle, 1),
                 "overlap_start": _iso(both.start), "overlap_end": _iso(both.end)},
        location=location,
    )


def protected_until(segment: Segment, years: int) -> date:
    """The first day digging is allowed again after resurfacing."""
    d = segment.resurfaced_on
    try:
        return d.replace(year=d.year + years)
    except ValueError:  # 29 February
        return d.replace(year=d.year + years, day=28)


def check_protection(
    work: Subject, segment: Segment, rules: CoordinationRules
) -> FindingDraft | None:
    """An excavation in a street still within its protection period after resurfacing."""
    if not work.excavation or rules.protection_years == 0:
        return None
    if float(work.footprint.distance(segment.line)) > rules.protection_tolerance_m:
        return None
    until = protected_until(segment, rules.protection_years)
    first_day = _local_date(work.period.start)
    last_day = _local_date(work.period.end - timedelta(microseconds=1))
    if first_day >= until or last_day < segment.resurfaced_on:
        return None
    message = (
        f"Aufbruchsperre: {work.label} gräbt in der {segment.street}, die am "
        f"{fmt_date(segment.resurfaced_on)} neu asphaltiert wurde; die Schutzfrist von "
        f"{rules.protection_years} Jahren läuft bis {fmt_date(until - timedelta(days=1))}."
    )
    touched = work.footprint.intersection(segment.line.buffer(rules.protection_tolerance_m))
    location = (touched if not touched.is_empty else work.footprint).representative_point()
    return FindingDraft(
        kind=FindingKind.PROTECTION_PERIOD, severity=Severity.WARNING, work_a=work.work_id,
        work_b=None, segment_id=segment.segment_id, message=message, street=segment.street,
        details={"resurfaced_on": segment.resurfaced_on.isoformat(),
                 "protected_until": until.isoformat(),
                 "protection_years": rules.protection_years},
        location=location,
    )


def check_pair(a: Subject, b: Subject, rules: CoordinationRules) -> list[FindingDraft]:
    """Every finding between two works; a clash supersedes dig-once and parallel."""
    if a.work_id == b.work_id:
        return []
    clash = find_clash(a, b, rules)
    if clash is not None:
        return [clash]
    found = [find_dig_once(a, b, rules), find_parallel_closure(a, b, rules)]
    return [f for f in found if f is not None]


def coordinate(
    subject: Subject,
    others: Iterable[Subject],
    segments: Iterable[Segment],
    rules: CoordinationRules,
) -> list[FindingDraft]:
    """Every finding that involves `subject`, sorted by key."""
    found: list[FindingDraft] = []
    for other in others:
        found += check_pair(subject, other, rules)
    for segment in segments:
        hit = check_protection(subject, segment, rules)
        if hit is not None:
            found.append(hit)
    return sorted(found, key=_sort_key)


def coordinate_all(
    subjects: Sequence[Subject], segments: Sequence[Segment], rules: CoordinationRules
) -> list[FindingDraft]:
    """Every finding among `subjects` (each pair once), sorted by key."""
    found: list[FindingDraft] = []
    for i, a in enumerate(subjects):
        for b in subjects[i + 1 :]:
            found += check_pair(a, b, rules)
        for segment in segments:
            hit = check_protection(a, segment, rules)
            if hit is not None:
                found.append(hit)
    return sorted(found, key=_sort_key)


# -- helpers ------------------------------------------------------------------------------


def _parallel(la: Geometry, lb: Geometry, rules: CoordinationRules) -> tuple[float, float] | None:
    """(distance, angle) when two lines run side by side, else None."""
    ua = _direction(la)
    ub = _direction(lb)
    if ua is None or ub is None:
        return None
    cos = min(1.0, abs(ua[0] * ub[0] + ua[1] * ub[1]))
    angle = math.degrees(math.acos(cos))
    if angle > rules.parallel_max_angle_deg:
        return None
    distance = float(la.distance(lb))
    if not rules.parallel_min_distance_m <= distance <= rules.parallel_max_distance_m:
        return None
    # Side by side: their extents along the common direction overlap.
    pa = [x * ua[0] + y * ua[1] for x, y in shapely.get_coordinates(la)]
    pb = [x * ua[0] + y * ua[1] for x, y in shapely.get_coordinates(lb)]
    overlap = min(max(pa), max(pb)) - max(min(pa), min(pb))
    if overlap < rules.parallel_min_overlap_m:
        return None
    return distance, angle


def _direction(line: Geometry) -> tuple[float, float] | None:
    xy = shapely.get_coordinates(line)
    dx, dy = float(xy[-1][0] - xy[0][0]), float(xy[-1][1] - xy[0][1])
    norm = math.hypot(dx, dy)
    if norm < 1.0:
        return None
    return dx / norm, dy / norm


def _common_street(a: Subject, b: Subject) -> str | None:
    keys = {street_key(s.name) for s in b.streets}
    for s in a.streets:
        if street_key(s.name) in keys:
            return s.name
    return None


def _ordered(a: Subject, b: Subject) -> tuple[Subject, Subject]:
    return (a, b) if a.work_id < b.work_id else (b, a)


def _midpoint(a: Geometry, b: Geometry) -> Geometry:
    return shapely.shortest_line(a, b).interpolate(0.5, normalized=True)


def _metres(value: float) -> str:
    return f"{value:.0f} m" if value >= 1 or value == 0 else "weniger als 1 m"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _local_date(value: datetime) -> date:
    return value.astimezone(BERLIN).date()


def _sort_key(f: FindingDraft) -> tuple[str, int, int, int]:
    return (f.kind.value, f.work_a, f.work_b or 0, f.segment_id or 0)
