"""The daily construction overview (Baustellenübersicht): what is active on a day and what
starts within the next days, grouped by district, with the obstructions.

`build_overview` is pure (works in, overview out); `render_html` gives a printable German
page, `overview_geojson` the same content as GeoJSON. `publish_daily` reads the public
works, writes both files into `<out>/<YYYY-MM-DD>/`, refreshes `<out>/index.html` and keeps
a snapshot in the database, so the overview of any past day stays readable as it was.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from cityops.roadworks import store_overview, store_sql, store_works
from cityops.roadworks.feeds.common import (
    FeedContext,
    obstructions_de,
    public_description,
    rfc3339,
)
from cityops.roadworks.feeds.geojson import feature
from cityops.roadworks.labels import (
    BERLIN,
    SECTOR_DE,
    fmt_date,
    fmt_datetime,
    fmt_period,
)
from cityops.roadworks.model import PUBLIC_STATUSES, Period, Roadwork, Status

__all__ = [
    "OVERVIEW_CSP",
    "DistrictGroup",
    "Overview",
    "Published",
    "build_overview",
    "day_window",
    "overview_geojson",
    "publish_daily",
    "render_html",
]

logger = logging.getLogger(__name__)

#: States that may appear: public ones, and completed works for the days they ran.
_SHOWN = PUBLIC_STATUSES | {Status.COMPLETED}


@dataclass(frozen=True, slots=True)
class DistrictGroup:
    district: str
    active: tuple[Roadwork, ...]
    upcoming: tuple[Roadwork, ...]


@dataclass(frozen=True, slots=True)
class Overview:
    day: date
    generated_at: datetime
    horizon_days: int
    districts: tuple[DistrictGroup, ...]
    overdue: frozenset[int]  # ids of works in progress past their planned end

    @property
    def active(self) -> list[Roadwork]:
        return [w for g in self.districts for w in g.active]

    @property
    def upcoming(self) -> list[Roadwork]:
        return [w for g in self.districts for w in g.upcoming]


def day_window(day: date, days: int = 1) -> Period:
    """[day 00:00, day + days 00:00) on Berlin time, as aware datetimes."""
    start = datetime.combine(day, time(0), BERLIN)
    end = datetime.combine(day + timedelta(days=days), time(0), BERLIN)
    return Period(start, end)


def build_overview(
    works: Iterable[Roadwork], day: date, *, generated_at: datetime, horizon_days: int = 14
) -> Overview:
    """Active on `day` (Berlin) and starting on one of the `horizon_days` days after it.

    Only public works count. A work in progress counts as active from its reported start
    until its reported end, also when it overruns its planned end (marked overdue).
    """
    today = day_window(day)
    ahead = Period(today.end, day_window(day, horizon_days + 1).end)
    active: list[Roadwork] = []
    upcoming: list[Roadwork] = []
    overdue: set[int] = set()
    for work in works:
        if not work.spec.is_public or work.status not in _SHOWN:
            continue
        period = work.effective_period
        on_site = (work.status is Status.IN_PROGRESS and work.actual_start is not None
                   and work.actual_start < today.end)
        if period.overlaps(today) or on_site:
            active.append(work)
            if on_site and work.spec.planned_end <= today.start:
                overdue.add(work.id)
        elif (work.status in PUBLIC_STATUSES and work.status is not Status.IN_PROGRESS
              and ahead.start <= period.start < ahead.end):
            upcoming.append(work)
    names = sorted({w.district for w in active + upcoming}, key=_district_order)
    groups = tuple(
        DistrictGroup(
            name,
            tuple(sorted((w for w in active if w.district == name), key=_work_order)),
            tuple(sorted((w for w in upcoming if w.district == name), key=_work_order)),
        )
        for name in names
    )
    return Overview(day, generated_at, horizon_days, groups, frozenset(overdue))


def _work_order(w: Roadwork) -> tuple[datetime, str]:
    return (w.effective_period.start, w.reference)


def _district_order(name: str) -> tuple[str, int, str]:
    m = re.match(r"^([A-Z]+)(\d+)$", name)
    return (m[1], int(m[2]), "") if m else ("~", 0, name)


# -- HTML -----------------------------------------------------------------------------------

_CSS = """
body { font-family: "Segoe UI", Arial, sans-serif; font-size: 10.5pt; margin: 1.5em;
       color: #111; }
h1 { font-size: 18pt; margin: 0 0 .2em; }
h2 { font-size: 14pt; margin: 1.4em 0 .4em; border-bottom: 2px solid #c00; }
h3 { font-size: 11.5pt; margin: 1em 0 .3em; }
p.meta { color: #444; margin: 0; }
table { border-collapse: collapse; width: 100%; margin-bottom: .8em; }
th, td { border: 1px solid #999; padding: .25em .4em; vertical-align: top; text-align: left; }
th { background: #eee; }
td.ref { white-space: nowrap; font-family: monospace; }
span.tag { display: inline-block; border: 1px solid #c00; color: #c00; border-radius: 3px;
           padding: 0 .3em; margin: 0 .2em .1em 0; font-size: 9pt; }
span.overdue { color: #fff; background: #c00; border-radius: 3px; padding: 0 .3em; }
footer { margin-top: 2em; font-size: 9pt; color: #444; }
@page { size: A4 landscape; margin: 12mm; }
@media print {
  body { margin: 0; font-size: 9pt; }
  h2 { break-after: avoid; }
  h3 { break-after: avoid; }
  tr { break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
}
"""

#: The overview page's Content-Security-Policy: nothing loads, scripts never run, and only
#: its own style block (by its hash) applies, so no text from a work can restyle the page.
OVERVIEW_CSP = (
    "default-src 'none'; "
    f"style-src 'sha256-{base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()}'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)


def render_html(overview: Overview, ctx: FeedContext) -> str:
    """A printable German HTML page of the overview."""
    e = html.escape
    day = fmt_date(overview.day, weekday=True)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="de">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Baustellenübersicht {e(fmt_date(overview.day))}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<header>",
        "<h1>Baustellenübersicht</h1>",
        f'<p class="meta">Stand: {e(day)} · erstellt am {e(fmt_datetime(overview.generated_at))}'
        f" · {e(ctx.publisher)}</p>",
        f'<p class="meta">Heute aktiv: {len(overview.active)} · Beginn in den nächsten '
        f"{overview.horizon_days} Tagen: {len(overview.upcoming)}</p>",
        "</header>",
    ]
    sections = (
        ("active", f"Heute aktiv ({len(overview.active)})", "Keine Baustellen aktiv."),
        ("upcoming", f"Beginn in den nächsten {overview.horizon_days} Tagen "
                     f"({len(overview.upcoming)})", "Keine Baustellen geplant."),
    )
    for attr, heading, empty in sections:
        parts.append(f'<section class="{attr}">')
        parts.append(f"<h2>{e(heading)}</h2>")
        groups = [g for g in overview.districts if getattr(g, attr)]
        if not groups:
            parts.append(f"<p>{e(empty)}</p>")
        for group in groups:
            parts.append(f"<h3>Bezirk {e(group.district)}</h3>")
            parts.append(_table(getattr(group, attr), overview, ctx))
        parts.append("</section>")
    parts += [
        "<footer>",
        "<p>Alle Zeiten in Ortszeit (Europe/Berlin). Angaben ohne Gewähr; kurzfristige "
        "Änderungen sind möglich. Bezirke sind Planquadrate des Stadtplans.</p>",
        "</footer>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def _table(works: Iterable[Roadwork], overview: Overview, ctx: FeedContext) -> str:
    e = html.escape
    rows = [
        "<table>",
        "<thead><tr><th>Nr.</th><th>Straße</th><th>Maßnahme</th><th>Vorhabenträger</th>"
        "<th>Zeitraum</th><th>Verkehrsbeeinträchtigung</th><th>Umleitung</th></tr></thead>",
        "<tbody>",
    ]
    for w in works:
        spec = w.spec
        tags = "".join(f'<span class="tag">{e(t)}</span>' for t in obstructions_de(w)) or "–"
        when = e(fmt_period(w.effective_period))
        if w.id in overview.overdue:
            when += ' <span class="overdue">überfällig</span>'
        if spec.working_hours:
            when += f"<br>{e(spec.working_hours)}"
        rows.append(
            "<tr>"
            f'<td class="ref"><a href="{e(ctx.work_url(w))}">{e(w.reference)}</a></td>'
            f"<td>{e(', '.join(spec.road_names))}</td>"
            f"<td><strong>{e(spec.title)}</strong><br>{e(public_description(w))}</td>"
            f"<td>{e(spec.promoter)}<br>{e(SECTOR_DE[spec.sector])}</td>"
            f"<td>{when}</td>"
            f"<td>{tags}</td>"
            f"<td>{e(spec.detour_description or '–')}</td>"
            "</tr>"
        )
    rows += ["</tbody>", "</table>"]
    return "\n".join(rows)


# -- GeoJSON --------------------------------------------------------------------------------


def overview_geojson(overview: Overview, ctx: FeedContext) -> dict[str, Any]:
    """The overview as a FeatureCollection; `section` is `active` or `upcoming`."""
    features = []
    for group in overview.districts:
        for section, works in (("active", group.active), ("upcoming", group.upcoming)):
            for w in works:
                features.append(feature(w, ctx, section=section,
                                        overdue=w.id in overview.overdue))
    return {
        "type": "FeatureCollection",
        "name": f"baustellen-{overview.day.isoformat()}",
        "day": overview.day.isoformat(),
        "generated_at": rfc3339(overview.generated_at),
        "horizon_days": overview.horizon_days,
        "features": features,
    }


# -- publishing -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Published:
    overview: Overview
    snapshot_id: int
    html_path: Path
    geojson_path: Path


def publish_daily(
    conn: store_sql.Conn, day: date, out_dir: Path, ctx: FeedContext, *, horizon_days: int = 14
) -> Published:
    """Build the overview of `day` from the database, store the snapshot, write the files.

    One transaction: a failure while writing the files rolls the snapshot back. Pass an
    autocommit or idle connection (it commits).
    """
    window = Period(day_window(day).start, day_window(day, horizon_days + 1).end)
    folder = out_dir / day.isoformat()
    with conn.transaction():
        works = store_works.list_works(conn, store_works.WorkFilter(statuses=_SHOWN, active=window))
        on_site = store_works.list_works(
            conn, store_works.WorkFilter(statuses=frozenset({Status.IN_PROGRESS}))
        )
        seen = {w.id for w in works}
        works += [w for w in on_site if w.id not in seen]
        overview = build_overview(works, day, generated_at=ctx.generated_at,
                                  horizon_days=horizon_days)
        page = render_html(overview, ctx)
        data = overview_geojson(overview, ctx)
        snapshot_id = store_overview.save_overview(
            conn, day=day, generated_at=ctx.generated_at, active=len(overview.active),
            upcoming=len(overview.upcoming), html=page, geojson=data,
        )
        folder.mkdir(parents=True, exist_ok=True)
        html_path = folder / f"baustellen-{day.isoformat()}.html"
        geojson_path = folder / f"baustellen-{day.isoformat()}.geojson"
        _write(html_path, page)
        _write(geojson_path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")
        _write(out_dir / "index.html", _index(store_overview.list_overviews(conn)))
    logger.info("published the overview of %s: %d active, %d upcoming -> %s", day,
                len(overview.active), len(overview.upcoming), folder)
    return Published(overview, snapshot_id, html_path, geojson_path)


def _write(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _index(days: list[tuple[date, datetime, int, int]]) -> str:
    e = html.escape
    items = "\n".join(
        f'<li><a href="{d.isoformat()}/baustellen-{d.isoformat()}.html">'
        f"{e(fmt_date(d, weekday=True))}</a> – {active} aktiv, {upcoming} geplant "
        f"(erstellt {e(fmt_datetime(at))})</li>"
        for d, at, active, upcoming in days
    )
    return (
        '<!DOCTYPE html>\n<html lang="de">\n<head><meta charset="utf-8">'
        "<title>Baustellenübersichten</title></head>\n<body>\n<h1>Baustellenübersichten</h1>\n"
        f"<ul>\n{items}\n</ul>\n</body>\n</html>\n"
    )
