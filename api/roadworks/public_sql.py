"""The public work, rendered by PostgreSQL.

The search renders its page in the database: one `json_build_object` per work with the
fields of `PublicWork` (schemas.py), in its order, from the same labels. `PublicWork.of`
stays the definition (and renders single works); tests check that both give the same JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from cityops.api.roadworks.schemas import GEOMETRY_PRECISION, IMPACT_DE
from cityops.roadworks.feeds.wzdx import VEHICLE_IMPACTS, vehicle_impact
from cityops.roadworks.labels import CATEGORY_DE, MEASURE_DE, SECTOR_DE, STATUS_DE
from cityops.roadworks.model import Measure

__all__ = ["PUBLIC_WORK_SQL", "public_work_json"]


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_case(column: str, labels: Mapping[str, str]) -> str:
    whens = " ".join(f"WHEN {_sql_text(k)} THEN {_sql_text(v)}" for k, v in labels.items())
    return f"(CASE {column} {whens} END)"


_MEASURE_ORDER = "ARRAY[" + ", ".join(_sql_text(m.value) for m in Measure) + "]"
_IMPACT_SQL = (
    "(CASE WHEN 'road_closure' = ANY(w.measures) THEN 'closure' "
    "WHEN w.measures && ARRAY['lane_closure', 'alternating_one_way', 'temporary_signals'] "
    "THEN 'restriction' ELSE 'minor' END)"
)
_VEHICLE_IMPACT_SQL = (
    "(CASE "
    + " ".join(
        f"WHEN {_sql_text(m.value)} = ANY(w.measures) THEN {_sql_text(impact)}"
        for m, impact in VEHICLE_IMPACTS
    )
    + f" ELSE {_sql_text(vehicle_impact([]))} END)"
)
# Python's str.strip(): every character for which str.isspace() holds.
_WHITESPACE = _sql_text("".join(c for c in map(chr, range(0x3001)) if c.isspace()))


def _rfc3339_sql(ts: str) -> str:
    return f"""to_char({ts} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""


def _local_iso_sql(ts: str) -> str:
    """`local_iso`: Berlin wall-clock time, microseconds when there are any, offset."""
    local = f"({ts} AT TIME ZONE 'Europe/Berlin')"
    offset = f"({local} - ({ts} AT TIME ZONE 'UTC'))"
    return (
        f"""(to_char({local}, 'YYYY-MM-DD"T"HH24:MI:SS')"""
        f" || CASE WHEN mod(date_part('microseconds', {ts})::bigint, 1000000) <> 0"
        f" THEN to_char({local}, '.US') ELSE '' END"
        f" || CASE WHEN {offset} < interval '0' THEN '-' ELSE '+' END"
        f" || to_char(abs(extract(epoch FROM {offset}))::int / 3600, 'FM00') || ':'"
        f" || to_char(mod(abs(extract(epoch FROM {offset}))::int, 3600) / 60, 'FM00'))"
    )


def _de_datetime_sql(ts: str) -> str:
    """`fmt_datetime`: `03.03.2025, 07:00 Uhr` on Berlin time."""
    return f"""to_char({ts} AT TIME ZONE 'Europe/Berlin', 'DD.MM.YYYY, HH24:MI "Uhr"')"""


def _de_period_sql(start: str, end: str) -> str:
    """`fmt_period`: first to last Berlin day; an end at midnight ends the day before."""
    first = f"({start} AT TIME ZONE 'Europe/Berlin')::date"
    end_local = f"({end} AT TIME ZONE 'Europe/Berlin')"
    last = (
        f"(CASE WHEN {end_local}::time = time '00:00' AND {end_local}::date > {first} "
        f"THEN {end_local}::date - 1 ELSE {end_local}::date END)"
    )
    return (
        f"(CASE WHEN {first} = {last} THEN to_char({first}, 'DD.MM.YYYY') "
        f"ELSE to_char({first}, 'DD.MM.YYYY') || ' bis ' || to_char({last}, 'DD.MM.YYYY') "
        "END)"
    )


_OBSTRUCTIONS_SQL = f"""ARRAY(SELECT o.text FROM (
        SELECT array_position({_MEASURE_ORDER}, m) AS k,
               CASE WHEN m = 'lane_closure' AND w.lanes_affected <> 0
                    THEN {_sql_text(MEASURE_DE[Measure.LANE_CLOSURE])} || ' ('
                         || w.lanes_affected || ' Fahrstreifen)'
                    ELSE {_sql_case("m", {x.value: MEASURE_DE[x] for x in Measure})} END AS text
        FROM (SELECT DISTINCT unnest(w.measures) AS m) ms
        UNION ALL
        SELECT 100, CASE WHEN cardinality(w.bus_lines) = 1 THEN 'Buslinie ' ELSE 'Buslinien '
                    END || array_to_string(w.bus_lines, ', ') || ' betroffen'
        WHERE cardinality(w.bus_lines) > 0
        UNION ALL SELECT 101, 'Müllabfuhr betroffen' WHERE w.waste_collection_affected
        UNION ALL SELECT 102, 'Nachtarbeit' WHERE w.night_works
    ) o ORDER BY o.k)"""

# The fields of `PublicWork` in its order, as SQL over a row `w` of `roadworks` with the
# effective period as `w.eff_start`, `w.eff_end`; `%(base_url)s`: the public pages.
# `overdue` depends on the time of the request, so it is set when a page is assembled,
# between the two halves (see `public_work_json`).
_FIELDS_HEAD: tuple[tuple[str, str], ...] = (
    ("reference", "w.reference"),
    ("title", "w.title"),
    ("description", f"btrim(coalesce(nullif(w.public_text, ''), w.title), {_WHITESPACE})"),
    ("status", "w.status"),
    ("status_de", _sql_case("w.status", {k.value: v for k, v in STATUS_DE.items()})),
    ("category", "w.category"),
    ("category_de", _sql_case("w.category", {k.value: v for k, v in CATEGORY_DE.items()})),
    ("promoter", "w.promoter"),
    ("sector", "w.sector"),
    ("sector_de", _sql_case("w.sector", {k.value: v for k, v in SECTOR_DE.items()})),
    ("contractor", "w.contractor"),
    ("public_contact", "w.public_contact"),
    (
        "streets",
        "ARRAY(SELECT s.name FROM roadwork_streets s WHERE s.work_id = w.id "
        "GROUP BY s.name ORDER BY min(s.seq))",
    ),
    ("district", "w.district"),
    ("start", _rfc3339_sql("w.eff_start")),
    ("end", _rfc3339_sql("w.eff_end")),
    ("start_local", _local_iso_sql("w.eff_start")),
    ("end_local", _local_iso_sql("w.eff_end")),
    ("start_de", _de_datetime_sql("w.eff_start")),
    ("end_de", _de_datetime_sql("w.eff_end")),
    ("period_de", _de_period_sql("w.eff_start", "w.eff_end")),
    ("start_verified", "w.actual_start IS NOT NULL"),
    ("end_verified", "w.actual_end IS NOT NULL"),
)
_FIELDS_TAIL: tuple[tuple[str, str], ...] = (
    ("working_hours", "w.working_hours"),
    ("night_works", "w.night_works"),
    (
        "measures",
        "ARRAY(SELECT m FROM (SELECT DISTINCT unnest(w.measures) AS m) ms "
        f"ORDER BY array_position({_MEASURE_ORDER}, m))",
    ),
    ("lanes_affected", "w.lanes_affected"),
    ("obstructions_de", _OBSTRUCTIONS_SQL),
    ("impact", _IMPACT_SQL),
    ("impact_de", _sql_case(_IMPACT_SQL, {k.value: v for k, v in IMPACT_DE.items()})),
    ("vehicle_impact", _VEHICLE_IMPACT_SQL),
    ("detour_description", "w.detour_description"),
    ("bus_lines", "w.bus_lines"),
    ("waste_collection_affected", "w.waste_collection_affected"),
    ("url", "%(base_url)s || '/roadworks/' || w.reference"),
    ("updated_at", _rfc3339_sql("w.updated_at")),
    ("geometry", f"ST_AsGeoJSON(w.footprint, {GEOMETRY_PRECISION})::json"),
    ("detour_geometry", f"ST_AsGeoJSON(w.detour, {GEOMETRY_PRECISION})::json"),
)


def _json_object_sql(fields: tuple[tuple[str, str], ...]) -> str:
    return "json_build_object(" + ", ".join(f"{_sql_text(k)}, {v}" for k, v in fields) + ")"


#: A `PublicWork` as two JSON objects built by PostgreSQL (`repository.render_public`):
#: the fields before `overdue` and those after it.
PUBLIC_WORK_SQL: Final = (_json_object_sql(_FIELDS_HEAD), _json_object_sql(_FIELDS_TAIL))


def public_work_json(head: str, tail: str, overdue: bool) -> str:
    """One work's JSON from the halves PostgreSQL rendered plus `overdue`: the fields of
    `PublicWork`, in its order."""
    return f'{head[:-1]}, "overdue" : {"true" if overdue else "false"}, {tail[1:]}'
