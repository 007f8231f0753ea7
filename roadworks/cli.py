"""`cityops roadworks ...`: demo data, the daily overview, open-data feeds, findings.

Reads the database from CITYOPS_DATABASE_URL and the registry's settings from
CITYOPS_ROADWORKS_* (see `cityops.roadworks.config`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

import psycopg

from cityops.ingest.config import load_settings
from cityops.ingest.db import connect
from cityops.roadworks.config import RoadworksSettings, load_roadworks_settings
from cityops.roadworks.errors import RoadworksError
from cityops.roadworks.feeds.common import FeedContext, FeedQuery
from cityops.roadworks.geometry import BBox
from cityops.roadworks.labels import BERLIN
from cityops.roadworks.model import FindingStatus
from cityops.roadworks.service import RoadworksService

__all__ = ["register"]

logger = logging.getLogger(__name__)

_FORMATS = ("wzdx", "geojson", "csv", "ical", "atom")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rw = sub.add_parser(
        "roadworks",
        help="roadworks registry: demo data, daily overview, open-data feeds, findings, "
        "recheck, street closures for routing",
        description="The roadworks registry: works with footprints and affected streets, "
        "lifecycle, coordination (clashes, dig once, protection period, parallel closures), "
        "daily overview, open-data feeds, and the street closures that routing avoids.",
    )
    rsub = rw.add_subparsers(dest="roadworks_command", metavar="ACTION", required=True)

    seed = rsub.add_parser(
        "seed-demo",
        help="create ~40 demo works on the bundled street network (planted findings)",
        description="Creates about forty works (references DEMO-01...) on real streets of "
        "the street network (CITYOPS_OSM_FILE or the bundled extract), dated around --today, "
        "across sectors and states, with planted clashes, a dig-once opportunity, a "
        "protection-period warning and parallel closures. Deterministic for a date.",
    )
    seed.add_argument("--today", type=_date, help="reference day (default: today, Berlin)")
    seed.add_argument("--replace", action="store_true",
                      help="delete existing demo works and segments first")
    seed.set_defaults(func=_cmd_seed)

    daily = rsub.add_parser(
        "publish-daily",
        help="publish the daily construction overview (HTML, GeoJSON, snapshot)",
        description="Builds the overview of a day: works active that day and works "
        "starting within the next days (CITYOPS_ROADWORKS_HORIZON_DAYS, 14), grouped by "
        "district. Writes <out>/<date>/baustellen-<date>.html and .geojson, refreshes "
        "<out>/index.html and stores a snapshot in the database.",
    )
    daily.add_argument("--date", type=_date, help="day (default: today, Berlin)")
    daily.add_argument("--out", type=Path,
                       help="folder (default: CITYOPS_ROADWORKS_OVERVIEW_DIR, "
                       "var/roadworks/overviews)")
    daily.set_defaults(func=_cmd_daily)

    feed = rsub.add_parser(
        "feed",
        help="print an open-data feed of the public works to stdout",
        description="Prints the public works (approved, scheduled or in progress, public "
        "flag set, not over) as WZDx 4.2, GeoJSON, CSV, iCalendar or Atom; --bbox or "
        "--street select an area or one street.",
    )
    feed.add_argument("format", choices=_FORMATS)
    where = feed.add_mutually_exclusive_group()
    where.add_argument("--bbox", type=_bbox, metavar="MINLON,MINLAT,MAXLON,MAXLAT")
    where.add_argument("--street", metavar="NAME", help="street name (Str./Straße folded)")
    feed.add_argument("--out", type=Path, help="write to a file instead of stdout")
    feed.add_argument("--at", type=_datetime, metavar="ISO",
                      help="the feed as of this time (default: now), e.g. 2025-03-03T08:00+01:00")
    feed.set_defaults(func=_cmd_feed)

    fnd = rsub.add_parser("findings", help="list coordination findings")
    fnd.add_argument("--all", action="store_true", help="include decided and obsolete ones")
    fnd.add_argument("--json", action="store_true", help="as JSON lines")
    fnd.set_defaults(func=_cmd_findings)

    chk = rsub.add_parser("recheck", help="run coordination again for every work")
    chk.set_defaults(func=_cmd_recheck)

    sync = rsub.add_parser(
        "sync-closures",
        help="rebuild the roadworks' rows in street_closures (what routing avoids)",
        description="Recomputes every street_closures row of the registry (closure id "
        "roadwork:<reference>, source roadworks) from the works: approved, scheduled and "
        "in-progress works with a road closure close their streets, lane closures, "
        "alternating one-way traffic and temporary signals slow them; every other registry "
        "row is deleted. The registry keeps the rows in step by itself; this is a repair "
        "and safe to repeat.",
    )
    sync.set_defaults(func=_cmd_sync_closures)


# -- commands -------------------------------------------------------------------------------


def _cmd_seed(args: argparse.Namespace) -> int:
    from cityops.roadworks.seed import seed_demo
    from cityops.routing.errors import NetworkError
    from cityops.routing.network import load_network

    settings = load_settings()
    rw = load_roadworks_settings()
    today = args.today or datetime.now(BERLIN).date()
    try:
        network = load_network(settings.osm_file)
    except NetworkError as exc:
        print(f"cityops roadworks: {exc}", file=sys.stderr)
        return 1

    def run(conn: psycopg.Connection[tuple[object, ...]]) -> int:
        report = seed_demo(conn, RoadworksService.from_settings(rw), network, today,
                           replace=args.replace)
        states = ", ".join(f"{k} {v}" for k, v in sorted(report.by_status.items()))
        print(f"seeded {len(report.references)} demo works for {today} ({states}), "
              f"{report.segments} resurfaced segments, {report.findings} findings")
        return 0

    return _with_db(settings.database_url, run)


def _cmd_daily(args: argparse.Namespace) -> int:
    from cityops.roadworks.overview import publish_daily

    settings = load_settings()
    rw = load_roadworks_settings()
    day = args.date or datetime.now(BERLIN).date()
    out = args.out or rw.overview_dir

    def run(conn: psycopg.Connection[tuple[object, ...]]) -> int:
        ctx = FeedContext.from_settings(rw, datetime.now(BERLIN))
        published = publish_daily(conn, day, out, ctx, horizon_days=rw.horizon_days)
        print(f"overview of {day}: {len(published.overview.active)} active, "
              f"{len(published.overview.upcoming)} starting within {rw.horizon_days} days")
        print(f"  {published.html_path}")
        print(f"  {published.geojson_path}")
        return 0

    return _with_db(settings.database_url, run)


def _cmd_feed(args: argparse.Namespace) -> int:
    settings = load_settings()
    rw = load_roadworks_settings()

    def run(conn: psycopg.Connection[tuple[object, ...]]) -> int:
        query = FeedQuery(bbox=args.bbox, street=args.street)
        text = render_feed(conn, rw, args.format, query, now=args.at)
        if args.out:
            args.out.write_text(text, encoding="utf-8", newline="")
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
        return 0

    return _with_db(settings.database_url, run)


def render_feed(conn: psycopg.Connection[tuple[object, ...]], rw: RoadworksSettings,
                fmt: str, query: FeedQuery, now: datetime | None = None) -> str:
    """One feed of the public works as text (what `cityops roadworks feed` prints)."""
    from cityops.roadworks.feeds import atom, csv_feed, geojson, ical, wzdx

    service = RoadworksService.from_settings(rw)
    now = now or service.clock()
    works = service.public_works(conn, bbox=query.bbox, street=query.street, now=now)
    ctx = FeedContext.from_settings(rw, now)
    if fmt == "wzdx":
        return json.dumps(wzdx.work_zone_feed(works, ctx), ensure_ascii=False, indent=1) + "\n"
    if fmt == "geojson":
        return json.dumps(geojson.feature_collection(works, ctx), ensure_ascii=False,
                          indent=1) + "\n"
    if fmt == "csv":
        return csv_feed.to_csv(works, ctx)
    if fmt == "ical":
        return ical.calendar(works, ctx, query)
    if fmt == "atom":
        return atom.feed(works, ctx, query)
    raise ValueError(f"unknown feed format {fmt!r}; expected one of {', '.join(_FORMATS)}")


def _cmd_findings(args: argparse.Namespace) -> int:
    settings = load_settings()
    rw = load_roadworks_settings()
    statuses = None if args.all else [FindingStatus.OPEN]

    def run(conn: psycopg.Connection[tuple[object, ...]]) -> int:
        found = RoadworksService.from_settings(rw).findings(conn, statuses=statuses)
        for f in found:
            if args.json:
                print(json.dumps({
                    "id": f.id, "kind": f.kind.value, "severity": f.severity.value,
                    "status": f.status.value, "works": [r for r in (f.reference_a,
                                                                    f.reference_b) if r],
                    "message": f.message, "decision_note": f.decision_note,
                }, ensure_ascii=False))
            else:
                print(f"#{f.id} [{f.status.value}] {f.kind.value}: {f.message}")
                if f.decision_note:
                    print(f"    decision by {f.decided_by}: {f.decision_note}")
        if not args.json:
            print(f"{len(found)} finding(s)")
        return 0

    return _with_db(settings.database_url, run)


def _cmd_recheck(args: argparse.Namespace) -> int:
    settings = load_settings()
    rw = load_roadworks_settings()

    def run(conn: psycopg.Connection[tuple[object, ...]]) -> int:
        n = RoadworksService.from_settings(rw).recheck_all(conn)
        print(f"coordination ran for every work: {n} current finding(s)")
        return 0

    return _with_db(settings.database_url, run)


def _cmd_sync_closures(args: argparse.Namespace) -> int:
    from cityops.roadworks.closures import rebuild_closures

    settings = load_settings()

    def run(conn: psycopg.Connection[tuple[object, ...]]) -> int:
        done = rebuild_closures(conn)
        print(f"street closures from the registry: {done.rows} row(s); {done.added} added, "
              f"{done.updated} updated, {done.removed} removed, {done.unchanged} unchanged")
        return 0

    return _with_db(settings.database_url, run)


# -- helpers --------------------------------------------------------------------------------


def _with_db(url: str, run: Callable[[psycopg.Connection[tuple[object, ...]]], int]) -> int:
    try:
        with connect(url, autocommit=True, application_name="cityops-roadworks") as conn:
            return run(conn)
    except RoadworksError as exc:
        print(f"cityops roadworks: {exc.message}", file=sys.stderr)
        return 1
    except psycopg.errors.UndefinedTable as exc:
        print(f"cityops roadworks: the database is not migrated ({exc.diag.message_primary}); "
              "run 'cityops db migrate'", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        print(f"cityops roadworks: cannot reach the database: {exc}", file=sys.stderr)
        return 1


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _datetime(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a time zone, e.g. {text}+01:00 or {text}Z")
    return value


def _bbox(text: str) -> BBox:
    parts = text.split(",")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(
            f"expected MINLON,MINLAT,MAXLON,MAXLAT (four numbers), got {text!r}")
    try:
        return BBox(*(float(p) for p in parts))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid bbox {text!r}: {exc}") from None
