"""The device registry in PostgreSQL: import (all-or-nothing, idempotent), export, retire.

`import_records` checks records from files (or the API) against the city and the registry
as it is (bounds, depots, sensors in use, links), then upserts by the city's own ids in one
transaction: a record equal to the stored one is left alone (no new version, no audit), a
changed one gets version + 1 and an audit row with before and after, a retired one listed
again is revived. Any problem and nothing is written. Bins are snapped to the road network;
those farther than `max_street_m` from any street are listed, as the planner would reach
them only on foot.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb

from cityops.ingest.registry_files import ParsedFile, RowProblem
from cityops.ingest.registry_model import (
    SENSOR_MODELS,
    BinRecord,
    ControllerRecord,
    DetectorRecord,
    LinkRecord,
    PhaseRecord,
    Record,
    SiteRecord,
    TruckRecord,
    as_json,
    record_id,
    record_kind,
)

if TYPE_CHECKING:
    from cityops.ingest.city import City
    from cityops.routing.network import RoadNetwork

__all__ = [
    "FarBin",
    "ImportReport",
    "RegistryConflictError",
    "RegistryNotFoundError",
    "import_records",
    "load_records",
    "retire",
]

logger = logging.getLogger(__name__)
Conn = psycopg.Connection[Any]
_POINT = "ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)"
_ORDER = ("site", "truck", "bin", "signal_controller")
_TABLE = {"site": "sites", "bin": "bin_registry", "truck": "truck_registry",
          "signal_controller": "signal_controller_registry"}
_ID = {"site": "site_id", "bin": "bin_id", "truck": "truck_id",
       "signal_controller": "controller_id"}


class RegistryConflictError(Exception):
    """A write against another version than the stored one (the API answers 412)."""


class RegistryNotFoundError(LookupError):
    """No active record of that kind and id (the API answers 404)."""


@dataclass(frozen=True, slots=True)
class FarBin:
    bin_id: str
    street_distance_m: float
    nearest_street: str


@dataclass
class ImportReport:
    created: dict[str, list[str]] = field(default_factory=dict)
    updated: dict[str, list[str]] = field(default_factory=dict)
    revived: dict[str, list[str]] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    far_from_street: list[FarBin] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    written: bool = False
    accounts_changed: bool = False  # a device's MQTT identity (a bin's sensor) changed

    @property
    def devices_changed(self) -> bool:
        """Whether the set of MQTT accounts changes (new, revived devices, a bin with
        another sensor; `cityops mqtt credentials` then has to run)."""
        devices = ("bin", "truck", "signal_controller")
        return self.accounts_changed or any(
            self.created.get(k) or self.revived.get(k) for k in devices
        )

    def summary(self) -> str:
        parts = []
        for kind in _ORDER:
            n = [len(self.created.get(kind, [])), len(self.updated.get(kind, [])),
                 len(self.revived.get(kind, [])), self.unchanged.get(kind, 0)]
            if any(n):
                parts.append(f"{kind}s: {n[0]} new, {n[1]} changed, {n[2]} revived, "
                             f"{n[3]} unchanged")
        return "; ".join(parts) or "nothing to import"


# -- reading the registry as records --------------------------------------------------------


def load_records(conn: Conn, kind: str, *, include_retired: bool = False,
                 ids: Sequence[str] | None = None) -> dict[str, tuple[Record, bool, int]]:
    """{id: (record, retired, version)} of one kind, as stored."""
    where = [] if include_retired or kind == "site" else ["retired_at IS NULL"]
    params: list[Any] = []
    if ids is not None:
        where.append(f"{_ID[kind]} = ANY(%s)")
        params.append(list(ids))
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    retired = "false" if kind == "site" else "retired_at IS NOT NULL"
    table = _TABLE[kind]
    out: dict[str, tuple[Record, bool, int]] = {}
    if kind == "site":
        rows = conn.execute(
            f"SELECT site_id, name, kind, ST_X(geom), ST_Y(geom), {retired}, version "
            f"FROM {table}{clause} ORDER BY 1", params).fetchall()
        for r in rows:
            out[r[0]] = (SiteRecord(r[0], r[1], r[2], r[3], r[4]), r[5], r[6])
    elif kind == "bin":
        rows = conn.execute(
            "SELECT bin_id, sensor_id, ST_X(geom), ST_Y(geom), street, house_number, district,"
            " fraction, capacity_l, collection_days, access_from, access_to, dev_eui,"
            " sensor_model, empty_distance_mm, full_distance_mm,"
            f" {retired}, version FROM {table}{clause} ORDER BY 1", params).fetchall()
        for r in rows:
            out[r[0]] = (BinRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8],
                                   tuple(r[9]), r[10], r[11], r[12], r[13], r[14], r[15]),
                         r[16], r[17])
    elif kind == "truck":
        rows = conn.execute(
            "SELECT truck_id, name, capacity_l, capacity_kg, depot_id, fractions, shift_start,"
            f" shift_end, {retired}, version FROM {table}{clause} ORDER BY 1", params).fetchall()
        for r in rows:
            out[r[0]] = (TruckRecord(r[0], r[1], r[2], r[3], r[4], tuple(r[5]), r[6], r[7]),
                         r[8], r[9])
    else:
        rows = conn.execute(
            f"SELECT controller_id, name, ST_X(geom), ST_Y(geom), cycle_s, {retired}, version "
            f"FROM {table}{clause} ORDER BY 1", params).fetchall()
        found = [r[0] for r in rows]
        phases = _group(conn.execute(
            "SELECT controller_id, phase, seq, movement, min_green_s, max_green_s, "
            "fixed_green_s, yellow_s, red_clearance_s FROM signal_phases "
            "WHERE controller_id = ANY(%s) ORDER BY controller_id, seq", (found,)).fetchall(),
            lambda r: PhaseRecord(*r[1:]))
        detectors = _group(conn.execute(
            "SELECT controller_id, channel, phase, kind, lane, distance_m FROM signal_detectors"
            " WHERE controller_id = ANY(%s) ORDER BY controller_id, channel", (found,)
        ).fetchall(), lambda r: DetectorRecord(*r[1:]))
        links = _group(conn.execute(
            "SELECT controller_id, channel, to_controller_id, to_channel, share "
            "FROM signal_links WHERE controller_id = ANY(%s) "
            "ORDER BY controller_id, channel, to_controller_id, to_channel", (found,)
        ).fetchall(), lambda r: LinkRecord(*r[1:]))
        for r in rows:
            cid = r[0]
            record = ControllerRecord(cid, r[1], r[2], r[3], r[4],
                                      tuple(phases.get(cid, [])), tuple(detectors.get(cid, [])),
                                      tuple(links.get(cid, [])))
            out[cid] = (record, r[5], r[6])
    return out


def _group(rows: Iterable[tuple[Any, ...]], make: Callable[[tuple[Any, ...]], Any]
           ) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for row in rows:
        out.setdefault(row[0], []).append(make(row))
    return out


def _account(rec: Record) -> str | None:
    """The MQTT user a record's device connects as (bins: their sensor)."""
    return rec.sensor_id if isinstance(rec, BinRecord) else record_id(rec)


def _same(a: Any, b: Any) -> bool:
    """Equal as stored: `real` columns keep about 7 digits."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _normalised(record: Record) -> Record:
    if isinstance(record, ControllerRecord):
        links = tuple(sorted(record.links,
                             key=lambda k: (k.channel, k.to_controller_id, k.to_channel)))
        return replace(record, detectors=tuple(sorted(record.detectors, key=lambda d: d.channel)),
                       links=links)
    return record


# -- checks that need the city and the registry ---------------------------------------------


def _check(conn: Conn, files: Sequence[ParsedFile], city: City) -> list[RowProblem]:
    problems: list[RowProblem] = []
    depots = {rid for rid, (rec, _, _) in load_records(conn, "site").items()
              if isinstance(rec, SiteRecord) and rec.kind == "depot"}
    stored_controllers = {
        rid: rec for rid, (rec, _, _) in load_records(conn, "signal_controller").items()
        if isinstance(rec, ControllerRecord)
    }
    controllers: dict[str, set[int]] = {
        rid: {d.channel for d in rec.detectors} for rid, rec in stored_controllers.items()
    }
    active_bins = [(rid, rec) for rid, (rec, _, _) in load_records(conn, "bin").items()
                   if isinstance(rec, BinRecord)]
    sensor_owner = {rec.sensor_id: rid for rid, rec in active_bins if rec.sensor_id}
    eui_owner = {rec.dev_eui: rid for rid, rec in active_bins if rec.dev_eui}
    for f in files:
        for _, rec in f.records:
            if isinstance(rec, SiteRecord):
                if rec.kind == "depot":
                    depots.add(rec.site_id)
                else:
                    depots.discard(rec.site_id)
            elif isinstance(rec, ControllerRecord):
                controllers[rec.controller_id] = {d.channel for d in rec.detectors}
    imported_bins = {rec.bin_id for f in files for _, rec in f.records
                     if isinstance(rec, BinRecord)}
    sensor_owner = {s: b for s, b in sensor_owner.items() if b not in imported_bins}
    eui_owner = {s: b for s, b in eui_owner.items() if b not in imported_bins}
    # links of every junction as they will be: a detector another junction links to must stay
    incoming: dict[str, set[tuple[str, int]]] = {}
    imported = {rec.controller_id: rec for f in files for _, rec in f.records
                if isinstance(rec, ControllerRecord)}
    for rid, rec in {**stored_controllers, **imported}.items():
        for link in rec.links:
            incoming.setdefault(link.to_controller_id, set()).add((rid, link.to_channel))
    for f in files:
        for line, rec in f.records:
            def bad(column: str, reason: str, *, _f: ParsedFile = f, _line: int | None = line
                    ) -> None:
                problems.append(RowProblem(_f.path, _line, column, reason))

            if isinstance(rec, SiteRecord | BinRecord | ControllerRecord) and not city.contains(
                rec.lon, rec.lat
            ):
                bad("lon/lat", f"{rec.lon}, {rec.lat} is outside {city.name} (bounds "
                    f"{list(city.bounds)}); lat/lon swapped?")
            if isinstance(rec, TruckRecord) and rec.depot_id not in depots:
                bad("depot_id", f"{rec.depot_id} is not a depot (in the registry or the files)")
            if isinstance(rec, BinRecord) and rec.sensor_id:
                owner = sensor_owner.setdefault(rec.sensor_id, rec.bin_id)
                if owner != rec.bin_id:
                    bad("sensor_id", f"sensor {rec.sensor_id} is on bin {owner}; retire that "
                        "bin or move the sensor in the same import")
            if isinstance(rec, BinRecord) and rec.sensor_model and (
                rec.sensor_model not in SENSOR_MODELS
                and rec.sensor_model not in city.lorawan_mappings
            ):
                bad("sensor_model", f"unknown sensor model {rec.sensor_model!r}: a built-in "
                    f"codec ({', '.join(SENSOR_MODELS)}) or a mapping of the city profile's "
                    "lorawan section")
            if isinstance(rec, BinRecord) and rec.dev_eui:
                owner = eui_owner.setdefault(rec.dev_eui, rec.bin_id)
                if owner != rec.bin_id:
                    bad("dev_eui", f"DevEUI {rec.dev_eui} is on bin {owner}; retire that bin "
                        "or move the sensor in the same import")
            if isinstance(rec, ControllerRecord):
                kept = {d.channel for d in rec.detectors}
                for source, channel in sorted(incoming.get(rec.controller_id, set())):
                    if channel not in kept:
                        bad("detectors", f"channel {channel} goes, but {source} links to it; "
                            f"change {source}'s links in the same import")
                for link in rec.links:
                    target = controllers.get(link.to_controller_id)
                    if target is None:
                        bad("links", f"{link.to_controller_id} is not a signal controller")
                    elif link.to_channel not in target:
                        bad("links", f"{link.to_controller_id} has no detector channel "
                            f"{link.to_channel}")
    return problems


# -- writing ---------------------------------------------------------------------------------


def import_records(
    conn: Conn,
    files: Sequence[ParsedFile],
    city: City,
    *,
    actor: str,
    network: RoadNetwork | None = None,
    max_street_m: float = 50.0,
    dry_run: bool = False,
    locked: bool = False,
) -> ImportReport:
    """Check and write every record of `files` in one transaction (or none of them).

    An import holds each kind it writes for itself (`lock_kind`) until it commits; a caller
    that holds the `lock` of the one record it writes (the registry API) says `locked`."""
    report = ImportReport()
    for f in files:
        report.problems.extend(f.problems)
    with conn.transaction():
        # the rows that did parse are checked too: every problem of an import at once
        report.problems.extend(_check(conn, files, city))
        if report.problems:
            return report
        by_kind: dict[str, list[tuple[str, Record]]] = {}
        for f in files:
            for _, rec in f.records:
                if isinstance(rec, BinRecord) and rec.district is None:
                    rec = replace(rec, district=city.districts.district_of(rec.lon, rec.lat))
                by_kind.setdefault(record_kind(rec), []).append((f.path, rec))
        try:
            with conn.transaction():  # a savepoint: a refused row leaves a clean transaction
                for kind in _ORDER:
                    items = by_kind.get(kind, [])
                    if items:
                        _upsert_kind(conn, kind, items, actor, report, dry_run, locked)
        except psycopg.errors.UniqueViolation as exc:
            # another writer claimed the same sensor or DevEUI since the check above
            detail = exc.diag.message_detail or str(exc).splitlines()[0]
            report.problems.append(RowProblem(files[0].path if files else "", None, "",
                                              f"changed meanwhile by another writer: {detail}"))
            report.created.clear()
            report.updated.clear()
            report.revived.clear()
            return report
        if not dry_run:
            for _, rec in by_kind.get("signal_controller", []):
                assert isinstance(rec, ControllerRecord)
                _write_links(conn, rec)
        if network is not None:
            for _, rec in by_kind.get("bin", []):
                assert isinstance(rec, BinRecord)
                snapped = network.snap(rec.lat, rec.lon)
                if snapped.street_distance_m > max_street_m:
                    report.far_from_street.append(
                        FarBin(rec.bin_id, round(snapped.street_distance_m, 1),
                               snapped.street or "(unnamed)"))
        report.written = not dry_run
    return report


def _upsert_kind(conn: Conn, kind: str, items: list[tuple[str, Record]], actor: str,
                 report: ImportReport, dry_run: bool, locked: bool) -> None:
    if not locked:
        lock_kind(conn, kind)
    stored = load_records(conn, kind, include_retired=True, ids=[record_id(r) for _, r in items])
    for source, rec in items:
        rid = record_id(rec)
        old = stored.get(rid)
        if old is None:
            action = "create"
        elif old[1]:
            action = "revive"
        elif _same(as_json(_normalised(old[0])), as_json(_normalised(rec))):
            report.unchanged[kind] = report.unchanged.get(kind, 0) + 1
            continue
        else:
            action = "update"
        if action == "update" and old is not None and _account(old[0]) != _account(rec):
            report.accounts_changed = True
        target = {"create": report.created, "update": report.updated,
                  "revive": report.revived}[action]
        target.setdefault(kind, []).append(rid)
        if dry_run:
            continue
        write(conn, rec)
        audit(conn, actor=actor, source=source, action=action, kind=kind, entity_id=rid,
              before=as_json(old[0]) if old else None, after=as_json(rec))


def lock(conn: Conn, kind: str, entity_id: str) -> None:
    """Serialise the writers of one record (also of one not yet created) until the end of
    the transaction: the API's check of If-Match and its write, a retirement. They share
    their kind with each other and wait for an import of it (two advisory locks, however
    many records an import has: a city's thousands of bins are one lock, not thousands)."""
    conn.execute(
        "SELECT pg_advisory_xact_lock_shared(hashtext(%s)), pg_advisory_xact_lock(hashtext(%s))",
        (f"registry:{kind}", f"registry:{kind}:{entity_id}"),
    )


def lock_kind(conn: Conn, kind: str) -> None:
    """An import's hold on a whole kind until it commits (see `lock`)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"registry:{kind}",))


def write(conn: Conn, rec: Record) -> None:
    """Upsert one record (and revive it); a changed row gets the next version."""
    bump = "version = {t}.version + 1, updated_at = now()"
    if isinstance(rec, SiteRecord):
        conn.execute(
            f"INSERT INTO sites (site_id, name, kind, geom) VALUES (%(site_id)s, %(name)s, "
            f"%(kind)s, {_POINT}) ON CONFLICT (site_id) DO UPDATE SET name = EXCLUDED.name, "
            f"kind = EXCLUDED.kind, geom = EXCLUDED.geom, {bump.format(t='sites')}",
            asdict(rec))
    elif isinstance(rec, BinRecord):
        conn.execute(
            "INSERT INTO bin_registry (bin_id, sensor_id, geom, street, house_number, district,"
            " fraction, capacity_l, collection_days, access_from, access_to, dev_eui,"
            " sensor_model, empty_distance_mm, full_distance_mm)"
            f" VALUES (%(bin_id)s, %(sensor_id)s, {_POINT}, %(street)s, %(house_number)s, "
            "%(district)s, %(fraction)s, %(capacity_l)s, %(collection_days)s, %(access_from)s,"
            " %(access_to)s, %(dev_eui)s, %(sensor_model)s, %(empty_distance_mm)s,"
            " %(full_distance_mm)s) ON CONFLICT (bin_id) DO UPDATE SET "
            "sensor_id = EXCLUDED.sensor_id, geom = EXCLUDED.geom, street = EXCLUDED.street, "
            "house_number = EXCLUDED.house_number, district = EXCLUDED.district, "
            "fraction = EXCLUDED.fraction, capacity_l = EXCLUDED.capacity_l, "
            "collection_days = EXCLUDED.collection_days, access_from = EXCLUDED.access_from,"
            " access_to = EXCLUDED.access_to, dev_eui = EXCLUDED.dev_eui, "
            "sensor_model = EXCLUDED.sensor_model, empty_distance_mm = EXCLUDED.empty_distance_mm,"
            " full_distance_mm = EXCLUDED.full_distance_mm, "
            f"retired_at = NULL, {bump.format(t='bin_registry')}",
            {**asdict(rec), "collection_days": list(rec.collection_days)})
    elif isinstance(rec, TruckRecord):
        conn.execute(
            "INSERT INTO truck_registry (truck_id, name, capacity_l, capacity_kg, depot_id, "
            "fractions, shift_start, shift_end) VALUES (%(truck_id)s, %(name)s, %(capacity_l)s,"
            " %(capacity_kg)s, %(depot_id)s, %(fractions)s, %(shift_start)s, %(shift_end)s) "
            "ON CONFLICT (truck_id) DO UPDATE SET name = EXCLUDED.name, "
            "capacity_l = EXCLUDED.capacity_l, capacity_kg = EXCLUDED.capacity_kg, "
            "depot_id = EXCLUDED.depot_id, fractions = EXCLUDED.fractions, "
            "shift_start = EXCLUDED.shift_start, shift_end = EXCLUDED.shift_end, "
            f"retired_at = NULL, {bump.format(t='truck_registry')}",
            {**asdict(rec), "fractions": list(rec.fractions)})
    else:
        _write_controller(conn, rec)


def _write_controller(conn: Conn, rec: ControllerRecord) -> None:
    cid = rec.controller_id
    conn.execute(
        "INSERT INTO signal_controller_registry (controller_id, name, geom, cycle_s) VALUES "
        f"(%(controller_id)s, %(name)s, {_POINT}, %(cycle_s)s) ON CONFLICT (controller_id) DO "
        "UPDATE SET name = EXCLUDED.name, geom = EXCLUDED.geom, cycle_s = EXCLUDED.cycle_s, "
        "retired_at = NULL, version = signal_controller_registry.version + 1, "
        "updated_at = now()",
        {"controller_id": cid, "name": rec.name, "lon": rec.lon, "lat": rec.lat,
         "cycle_s": rec.cycle_s})
    # Upsert first, delete what is gone last: a detector that moves to another phase keeps
    # its row, so the links of other junctions to it survive (they cascade on delete).
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO signal_phases (controller_id, phase, seq, movement, min_green_s, "
            "max_green_s, fixed_green_s, yellow_s, red_clearance_s) VALUES (%(cid)s, %(phase)s,"
            " %(seq)s, %(movement)s, %(min_green_s)s, %(max_green_s)s, %(fixed_green_s)s, "
            "%(yellow_s)s, %(red_clearance_s)s) ON CONFLICT (controller_id, phase) DO UPDATE "
            "SET seq = EXCLUDED.seq, movement = EXCLUDED.movement, "
            "min_green_s = EXCLUDED.min_green_s, max_green_s = EXCLUDED.max_green_s, "
            "fixed_green_s = EXCLUDED.fixed_green_s, yellow_s = EXCLUDED.yellow_s, "
            "red_clearance_s = EXCLUDED.red_clearance_s",
            [{"cid": cid, **asdict(p)} for p in rec.phases])
        cur.executemany(
            "INSERT INTO signal_detectors (controller_id, channel, phase, kind, lane, distance_m)"
            " VALUES (%(cid)s, %(channel)s, %(phase)s, %(kind)s, %(lane)s, %(distance_m)s) "
            "ON CONFLICT (controller_id, channel) DO UPDATE SET phase = EXCLUDED.phase, "
            "kind = EXCLUDED.kind, lane = EXCLUDED.lane, distance_m = EXCLUDED.distance_m",
            [{"cid": cid, **asdict(d)} for d in rec.detectors])
    conn.execute("DELETE FROM signal_detectors WHERE controller_id = %s AND channel <> ALL(%s)",
                 (cid, [d.channel for d in rec.detectors]))
    conn.execute("DELETE FROM signal_phases WHERE controller_id = %s AND phase <> ALL(%s)",
                 (cid, [p.phase for p in rec.phases]))


def _write_links(conn: Conn, rec: ControllerRecord) -> None:
    conn.execute("DELETE FROM signal_links WHERE controller_id = %s", (rec.controller_id,))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO signal_links (controller_id, channel, to_controller_id, to_channel, "
            "share) VALUES (%(cid)s, %(channel)s, %(to_controller_id)s, %(to_channel)s, "
            "%(share)s)",
            [{"cid": rec.controller_id, **asdict(k)} for k in rec.links])


def audit(conn: Conn, *, actor: str, source: str, action: str, kind: str, entity_id: str,
          before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
    conn.execute(
        "INSERT INTO registry_audit (actor, source, action, kind, entity_id, before, after) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (actor, source, action, kind, entity_id, Jsonb(before) if before else None,
         Jsonb(after) if after else None))


def retire(conn: Conn, kind: str, entity_id: str, *, actor: str, source: str,
           expected_version: int | None = None) -> int:
    """Retire one device; returns its new version. Raises RegistryNotFoundError when there
    is no such active device, RegistryConflictError when `expected_version` is not the
    stored one."""
    if kind == "site":
        raise RegistryConflictError("sites are not retired; trucks and plans refer to them")
    table, id_col = _TABLE[kind], _ID[kind]
    with conn.transaction():
        lock(conn, kind, entity_id)
        row = conn.execute(
            f"SELECT version FROM {table} WHERE {id_col} = %s AND retired_at IS NULL "
            "FOR UPDATE", (entity_id,)).fetchone()
        if row is None:
            raise RegistryNotFoundError(f"no active {kind} {entity_id!r} in the registry")
        if expected_version is not None and row[0] != expected_version:
            raise RegistryConflictError(
                f"{entity_id} is at version {row[0]}, not {expected_version}")
        before = load_records(conn, kind, ids=[entity_id])[entity_id][0]
        new = conn.execute(
            f"UPDATE {table} SET retired_at = now(), version = version + 1, updated_at = now() "
            f"WHERE {id_col} = %s RETURNING version", (entity_id,)).fetchone()
        assert new is not None
        audit(conn, actor=actor, source=source, action="retire", kind=kind,
              entity_id=entity_id, before=as_json(before), after=None)
    logger.info("retired %s %s (by %s)", kind, entity_id, actor)
    return int(new[0])
