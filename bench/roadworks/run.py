"""Roadworks benchmark: the public bounding-box search under load, against plain SQL, plus
the daily overview and the WZDx feed, over a registry of --works public works.

Steps (a throwaway database, dropped at the end, also on Ctrl-C):

  setup     create + migrate the database; bulk-load --works works with COPY: footprints
            are stretches of 20-400 m of the real named streets of the bundled extract,
            buffered 2-9 m; random sector, category, measures; periods from 90 days ago to
            a year ahead; status approved / scheduled / in progress, all public
  search    the API (`create_app`, as `cityops api` serves it: uvicorn, one process) on a
            free 127.0.0.1 port; a separate driver process sends
            `GET /api/v1/roadworks?bbox=..&from=..&to=..` open-loop at --rate for --seconds
            (boxes: --city-share city-sized, the rest street-sized; 0-30 day ranges).
            Issue target: p99 <= 50 ms at 200 requests/s on 2 cores
  sql       the same boxes and days straight in PostGIS (`&& ST_MakeEnvelope`, first page
            of 100, ordered by start), timed from Python: the database alone
  where     in-process breakdown of what the endpoint does per request: the data version
            read, the search in memory, rendering a page's works in PostgreSQL (cold),
            and the same search in SQL for comparison
  overview  `publish_daily` (what `cityops roadworks publish-daily` runs) and the CLI
  wzdx      `GET /api/v1/roadworks/feeds/wzdx` and `cityops roadworks feed wzdx`

Progress goes to stderr; stdout gets a table and, last, one JSON line with the figures.
Not part of the test suite. Example:

  .venv/bin/python bench/roadworks/run.py --works 10000 --rate 200 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import shapely
from psycopg import sql
from shapely.ops import substring

from cityops.ingest.db import connect
from cityops.roadworks import store_public as repo
from cityops.roadworks.config import load_roadworks_settings
from cityops.roadworks.feeds.common import FeedContext
from cityops.roadworks.geometry import BBox
from cityops.roadworks.labels import BERLIN, street_key
from cityops.roadworks.model import Period
from cityops.roadworks.overview import day_window, publish_daily
from cityops.roadworks.seed import street_lines
from cityops.routing.network import load_network

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common.py
from common import (
    PY,
    ApiProcess,
    migrate_database,
    ms_stats,
    proc_cpu_s,
    run_driver,
    say,
    throwaway_database,
)

HERE = Path(__file__).resolve().parent
SECTORS = ["electricity", "gas", "district_heating", "water", "telecom", "sewer", "road", "other"]
MEASURES = [
    "road_closure",
    "lane_closure",
    "alternating_one_way",
    "temporary_signals",
    "sidewalk_closure",
    "cycle_lane_closure",
    "parking_suspended",
]
PROMOTERS = [
    "Stadtwerke Netz GmbH",
    "Wasserverband",
    "Telekom Deutschland",
    "Glasfaser Plus",
    "Fernwärme AG",
    "Tiefbauamt",
    "Stadtentwässerung",
    "Gasnetz GmbH",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/roadworks/run.py",
        description=__doc__.split("\n\n")[0],
        epilog="Needs PostgreSQL with PostGIS (--admin-url). Everything runs on 127.0.0.1.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--works", type=int, default=10_000, help="works to load (default 10000)")
    p.add_argument("--rate", type=float, default=200.0, help="offered requests/s (default 200)")
    p.add_argument("--seconds", type=float, default=30.0, help="load duration (default 30)")
    p.add_argument(
        "--threads", type=int, default=32, help="client threads (bounded concurrency, default 32)"
    )
    p.add_argument(
        "--city-share",
        type=float,
        default=0.2,
        help="share of city-sized boxes; the rest are street-sized (default 0.2)",
    )
    p.add_argument(
        "--sql-queries",
        type=int,
        default=2000,
        help="queries for the plain-SQL comparison (default 2000)",
    )
    p.add_argument("--target-p99-ms", type=float, default=50.0, help="issue target (50 ms)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--limit", type=int, help="page size asked for (default: the endpoint's)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 5 s of load, 200 SQL queries, one feed repetition, no CLI timings",
    )
    p.add_argument(
        "--admin-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="postgresql:// URL of the server's maintenance database; the "
        "throwaway database is created beside it",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.seconds = min(args.seconds, 5.0)
        args.sql_queries = min(args.sql_queries, 200)
    if args.works < 1 or args.rate <= 0 or args.seconds <= 0 or args.threads < 1:
        p.error("--works, --rate, --seconds and --threads must be positive")
    if not 0 <= args.city_share <= 1:
        p.error("--city-share must be within 0..1")
    return args


# -- data -----------------------------------------------------------------------------------


@dataclass
class Data:
    bounds: BBox
    works: int
    by_status: dict[str, int]
    centroids: list[tuple[float, float]]
    load_s: float


def load_works(url: str, n: int, rng: random.Random, now: datetime) -> Data:
    rw = load_roadworks_settings()
    frame = rw.frame()
    proj = frame.projector
    lines = street_lines(load_network(rw_osm()), proj)
    names = sorted(lines)
    weights = [lines[k].length for k in names]
    works, streets, centroids = [], [], []
    by_status: dict[str, int] = {}
    t0 = time.perf_counter()
    while len(works) < n:
        name = rng.choices(names, weights)[0]
        line = lines[name]
        length = min(line.length, rng.uniform(20, 400))
        a = rng.uniform(0, line.length - length)
        piece = substring(line, a, a + length)
        if piece.length < 5:
            continue
        half = rng.uniform(2, 9)
        fp_m = piece.buffer(half, cap_style="flat")
        fp = proj.to_lonlat(fp_m)
        if not fp.is_valid or fp.is_empty or not frame.bounds.contains(fp):
            continue
        i = len(works) + 1
        start = now + timedelta(days=rng.uniform(-90, 365))
        start = start.replace(minute=0, second=0, microsecond=0)
        days = rng.choice([1, 2, 3, 5, 7, 14, 21, 30, 45, 60, 90, 120, 180])
        end = start + timedelta(days=days, hours=rng.choice([0, 8, 10]))
        if end <= now:
            end = now + timedelta(days=rng.randint(1, 30))
        actual_start = None
        if start <= now:
            status = "in_progress"
            actual_start = start + timedelta(hours=rng.choice([0, 1, 24]))
            actual_start = min(actual_start, now)
        else:
            status = rng.choice(["approved", "scheduled"])
        by_status[status] = by_status.get(status, 0) + 1
        sector = rng.choice(SECTORS)
        measures = sorted(set(rng.sample(MEASURES, rng.randint(0, 3))))
        excavation = sector != "road" or rng.random() < 0.3
        category = rng.choices(["minor", "standard", "major", "emergency"], [4, 5, 2, 1])[0]
        ewkb = shapely.to_wkb(shapely.set_srid(fp, 4326), hex=True, include_srid=True)
        works.append(
            (
                f"RW-BENCH-{i:06d}",
                f"{sector.replace('_', ' ').title()}: {name}",
                f"Bench work {i} on {name}",
                rng.choice(PROMOTERS),
                sector,
                category,
                status,
                ewkb,
                proj.area_m2(fp),
                frame.district_of(fp),
                start,
                end,
                actual_start,
                "Mo-Fr 07:00-17:00",
                rng.random() < 0.1,
                excavation,
                "{" + ",".join(measures) + "}",
                (1 if "lane_closure" in measures else 2 if "road_closure" in measures else 0),
                f"Baustelle {name}",
                now - timedelta(days=120),
                "bench",
                now - timedelta(days=1),
            )
        )
        line_ll = proj.to_lonlat(piece)
        streets.append(
            (
                name,
                street_key(name),
                shapely.to_wkb(shapely.set_srid(line_ll, 4326), hex=True, include_srid=True),
            )
        )
        c = fp.centroid
        centroids.append((c.x, c.y))
    gen_s = time.perf_counter() - t0
    cols = [
        "reference",
        "title",
        "description",
        "promoter",
        "sector",
        "category",
        "status",
        "footprint",
        "area_m2",
        "district",
        "planned_start",
        "planned_end",
        "actual_start",
        "working_hours",
        "night_works",
        "excavation",
        "measures",
        "lanes_affected",
        "public_text",
        "created_at",
        "created_by",
        "updated_at",
    ]
    t1 = time.perf_counter()
    with connect(url) as conn:
        with conn.cursor() as cur:
            copy_sql = sql.SQL("COPY roadworks ({}) FROM STDIN").format(
                sql.SQL(", ").join(map(sql.Identifier, cols))
            )
            with cur.copy(copy_sql) as cp:
                for row in works:
                    cp.write_row(row)
            ids = dict(cur.execute("SELECT reference, id FROM roadworks").fetchall())
            with cur.copy(
                "COPY roadwork_streets (work_id, seq, name, street_key, geom) FROM STDIN"
            ) as cp:
                for row, (name, key, geom) in zip(works, streets, strict=True):
                    cp.write_row((ids[row[0]], 0, name, key, geom))
            cur.execute(
                "INSERT INTO roadwork_audit (work_id, at, actor, organisation, role, action, "
                "to_status) SELECT id, created_at, 'bench', 'bench', 'system', 'create', "
                "status FROM roadworks"
            )
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE roadworks")
        conn.execute("VACUUM ANALYZE roadwork_streets")
    say(
        f"generated {n} works in {gen_s:.1f} s, COPY + index + analyze "
        f"{time.perf_counter() - t1:.1f} s ({by_status})"
    )
    return Data(frame.bounds, n, by_status, centroids, time.perf_counter() - t0)


def rw_osm() -> Path | None:
    from cityops.ingest.config import load_settings

    return load_settings().osm_file


# -- queries --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    box: BBox
    first: date
    last: date
    city: bool

    @property
    def path(self) -> str:
        b = self.box
        return (
            f"/api/v1/roadworks?bbox={b.min_lon:.5f},{b.min_lat:.5f},{b.max_lon:.5f},"
            f"{b.max_lat:.5f}&from={self.first.isoformat()}&to={self.last.isoformat()}"
        )

    @property
    def rounded_box(self) -> BBox:
        b = self.box
        return BBox(
            round(b.min_lon, 5), round(b.min_lat, 5), round(b.max_lon, 5), round(b.max_lat, 5)
        )


def make_queries(
    data: Data, n: int, city_share: float, today: date, rng: random.Random
) -> list[Query]:
    b = data.bounds
    w, h = b.max_lon - b.min_lon, b.max_lat - b.min_lat
    out = []
    for _ in range(n):
        if rng.random() < city_share:  # a city-wide map view: 50-100 % of the city
            f = rng.uniform(0.5, 1.0)
            x0 = rng.uniform(b.min_lon, b.max_lon - w * f)
            y0 = rng.uniform(b.min_lat, b.max_lat - h * f)
            box, city = BBox(x0, y0, x0 + w * f, y0 + h * f), True
        else:  # a street view: 150-500 m around a place with works
            cx, cy = rng.choice(data.centroids)
            half_m = rng.uniform(75, 250)
            dx, dy = half_m / 55_500, half_m / 111_200  # degrees at ~60 N
            cx, cy = cx + rng.uniform(-dx, dx), cy + rng.uniform(-dy, dy)
            box, city = BBox(cx - dx, cy - dy, cx + dx, cy + dy), False
        first = today + timedelta(days=rng.randint(0, 30))
        out.append(Query(box, first, first + timedelta(days=rng.randint(0, 30)), city))
    return out


# -- processes ------------------------------------------------------------------------------


class Api(ApiProcess):
    """The API on the benchmark's database, ready once a search answers."""

    def __init__(self, url: str, log: Path, *, wrap: Sequence[str] = ()) -> None:
        self.dbname = url.rsplit("/", 1)[1]
        super().__init__(
            {"CITYOPS_DATABASE_URL": url},
            log,
            ready_path="/api/v1/roadworks?limit=1",
            wrap=wrap,
        )


def db_cpu_s(dbname: str) -> float:
    """CPU seconds used so far by the PostgreSQL backends connected to `dbname` (their
    process titles name the database; Linux /proc)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read()
            if title.startswith(b"postgres:") and f" {dbname} ".encode() in title:
                total += proc_cpu_s(int(entry))
        except OSError:
            continue
    return total


def drive(
    api: Api, queries: list[Query], rate: float, seconds: float, threads: int, suffix: str = ""
) -> dict[str, Any]:
    job = {
        "port": api.port,
        "rate": rate,
        "seconds": seconds,
        "threads": threads,
        "paths": [q.path + suffix for q in queries],
    }
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    db0 = db_cpu_s(api.dbname)
    cpu0, t0 = proc_cpu_s(api.proc.pid), time.perf_counter()
    res = run_driver(HERE / "load.py", job, timeout=seconds + 90)
    wall = time.perf_counter() - t0
    res["server_cpu_s"] = proc_cpu_s(api.proc.pid) - cpu0
    res["db_cpu_s"] = db_cpu_s(api.dbname) - db0  # backends that lived through the run
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    res["driver_cpu_s"] = (
        children.ru_utime + children.ru_stime - children0.ru_utime - children0.ru_stime
    )
    res["wall_s"] = wall
    return res


# -- measurements ---------------------------------------------------------------------------

_EFF_START = "coalesce(actual_start, planned_start)"
_EFF_END = (
    "CASE WHEN actual_end IS NOT NULL THEN actual_end WHEN planned_end > "
    f"{_EFF_START} THEN planned_end ELSE {_EFF_START} + (planned_end - planned_start) END"
)
PLAIN_SQL = f"""
SELECT id, reference, title, sector, status, {_EFF_START} AS start, {_EFF_END} AS "end",
       ST_AsGeoJSON(footprint, 6) AS geometry
FROM roadworks
WHERE is_public AND status IN ('approved', 'scheduled', 'in_progress')
  AND footprint && ST_MakeEnvelope(%s, %s, %s, %s, 4326)
  AND {_EFF_START} < %s AND ({_EFF_END} > %s OR (status = 'in_progress' AND actual_end IS NULL))
ORDER BY {_EFF_START}, id
LIMIT 100
"""


def window(q: Query) -> Period:
    return Period(day_window(q.first).start, day_window(q.last).end)


def time_plain_sql(url: str, queries: list[Query]) -> dict[str, Any]:
    lat, rows = [], []
    with connect(url, autocommit=True) as conn:
        for q in queries[:20]:  # warm the plan and the cache
            b, p = q.rounded_box, window(q)
            conn.execute(
                PLAIN_SQL, (b.min_lon, b.min_lat, b.max_lon, b.max_lat, p.end, p.start)
            ).fetchall()
        t_all = time.perf_counter()
        for q in queries:
            b, p = q.rounded_box, window(q)
            t = time.perf_counter()
            got = conn.execute(
                PLAIN_SQL, (b.min_lon, b.min_lat, b.max_lon, b.max_lat, p.end, p.start)
            ).fetchall()
            lat.append(time.perf_counter() - t)
            rows.append(len(got))
        total = time.perf_counter() - t_all
    return {
        "n": len(queries),
        **ms_stats(lat),
        "rows_mean": round(statistics.mean(rows), 1),
        "closed_loop_qps": round(len(queries) / total, 1),
    }


def time_endpoint_parts(url: str, queries: list[Query]) -> dict[str, Any]:
    """What the search endpoint does per request, in-process and one by one: read the
    data version; search the public works in memory (`PublicIndex`, loaded once per
    version); render the page's works in PostgreSQL (only for works not rendered before:
    the cold case); and, for comparison, the same search in SQL (`search_public_keys`)."""
    from cityops.api.roadworks.public_sql import PUBLIC_WORK_SQL
    from cityops.roadworks.search_index import PublicIndex

    version_s, index_s, render_s, sql_s, matched = [], [], [], [], []
    now = datetime.now(UTC)
    with connect(url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        t = time.perf_counter()
        index = PublicIndex(*repo.public_index_rows(conn))
        load_s = time.perf_counter() - t
        head, tail = PUBLIC_WORK_SQL
        for q in queries:
            b, p = q.rounded_box, window(q)
            t = time.perf_counter()
            repo.data_version(conn)
            version_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            page = index.search(
                window_start=p.start,
                window_end=p.end,
                now=now,
                bbox=(b.min_lon, b.min_lat, b.max_lon, b.max_lat),
                limit=100,
            )
            index_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            repo.render_public(
                conn,
                [w.id for w in page.works],
                head=head,
                tail=tail,
                params={"base_url": "http://127.0.0.1:8000"},
            )
            render_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            repo.search_public_keys(conn, repo.PublicSearch(p, now, b), limit=100)
            sql_s.append(time.perf_counter() - t)
            matched.append(page.total)
    return {
        "n": len(queries),
        "index_load_s": round(load_s, 2),
        "index_works": len(index),
        "data_version": ms_stats(version_s),
        "index_search": ms_stats(index_s),
        "render_page_cold": ms_stats(render_s),
        "sql_search": ms_stats(sql_s),
        "total_mean": round(statistics.mean(matched), 1),
    }


def timed(fn: Callable[[], Any], reps: int) -> tuple[list[float], Any]:
    out, last = [], None
    for _ in range(reps):
        t = time.perf_counter()
        last = fn()
        out.append(time.perf_counter() - t)
    return out, last


def time_overview(url: str, out_dir: Path, reps: int) -> dict[str, Any]:
    rw = load_roadworks_settings()
    today = datetime.now(BERLIN).date()
    with connect(url, autocommit=True) as conn:

        def once() -> Any:
            ctx = FeedContext.from_settings(rw, datetime.now(BERLIN))
            return publish_daily(conn, today, out_dir, ctx, horizon_days=rw.horizon_days)

        secs, pub = timed(once, reps)
    return {
        "seconds": [round(s, 2) for s in secs],
        "active": len(pub.overview.active),
        "upcoming": len(pub.overview.upcoming),
        "html_bytes": pub.html_path.stat().st_size,
        "geojson_bytes": pub.geojson_path.stat().st_size,
    }


def time_cli(url: str, argv: list[str]) -> float:
    env = dict(os.environ, CITYOPS_DATABASE_URL=url)
    cityops = shutil.which("cityops", path=str(Path(PY).parent)) or "cityops"
    t = time.perf_counter()
    subprocess.run(
        [cityops, *argv],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=600,
        start_new_session=True,
    )
    return time.perf_counter() - t


def time_wzdx_http(api: Api, reps: int) -> dict[str, Any]:
    """The WZDx feed over HTTP: the first request renders it, the next ones get it as
    kept (no change in between), and one with its ETag in If-None-Match gets a 304."""
    secs, size, features, etag = [], 0, 0, ""
    for _ in range(max(reps, 2)):
        t = time.perf_counter()
        with urllib.request.urlopen(api.url("/api/v1/roadworks/feeds/wzdx"), timeout=300) as r:
            body = r.read()
            etag = r.headers.get("ETag", "")
        secs.append(time.perf_counter() - t)
        size = len(body)
        features = len(json.loads(body).get("features", []))
    req = urllib.request.Request(
        api.url("/api/v1/roadworks/feeds/wzdx"), headers={"If-None-Match": etag}
    )
    t = time.perf_counter()
    try:
        urllib.request.urlopen(req, timeout=300).read()
        status = 200
    except urllib.error.HTTPError as exc:
        status = exc.code
    not_modified = time.perf_counter() - t
    return {
        "seconds": [round(s, 3) for s in secs],
        "bytes": size,
        "features": features,
        "if_none_match_status": status,
        "if_none_match_s": round(not_modified, 4),
    }


# -- run ------------------------------------------------------------------------------------


def _raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace, stack: ExitStack) -> dict[str, Any]:
    rng = random.Random(args.seed)
    name = f"cityops_bench_rw_{secrets.token_hex(4)}"
    load_before = os.getloadavg()
    say(
        f"machine: {os.cpu_count()} CPUs, load average {load_before[0]:.2f} "
        f"{load_before[1]:.2f} {load_before[2]:.2f}"
    )
    stack.callback(say, f"database {name} dropped")
    url = stack.enter_context(throwaway_database(args.admin_url, name))
    migrate_database(url)
    say(f"database {name} created and migrated")
    tmp = Path(tempfile.mkdtemp(prefix="cityops-bench-rw-"))
    stack.callback(shutil.rmtree, tmp, True)

    now = datetime.now(UTC).replace(microsecond=0)
    data = load_works(url, args.works, rng, now)
    today = now.astimezone(BERLIN).date()
    n_paths = max(1000, int(args.rate * args.seconds))
    queries = make_queries(data, n_paths, args.city_share, today, rng)

    api = Api(url, tmp / "api.log")
    stack.callback(api.stop)
    say(f"API up on 127.0.0.1:{api.port} (pid {api.proc.pid})")
    suffix = f"&limit={args.limit}" if args.limit else ""
    warm = drive(api, queries[-20:], 10.0, 2.0, 2, suffix)
    say(f"warm-up: {warm['completed']} requests")
    n_seq = 20 if args.quick else 100
    say(f"unloaded: {n_seq} requests one at a time ...")
    seq = drive(api, queries[-n_seq - 20 : -20], 1000.0, n_seq / 1000, 1, suffix)
    seq_ok = [i for i, st in enumerate(seq["status"]) if st == 200]
    unloaded = {
        "n": len(seq_ok),
        **ms_stats([seq["service_s"][i] for i in seq_ok]),
        "closed_loop_rps": round(len(seq_ok) / seq["elapsed_s"], 1) if seq["elapsed_s"] else None,
    }
    say(
        f"unloaded: p50 {unloaded['p50_ms']} ms, p99 {unloaded['p99_ms']} ms, "
        f"{unloaded['closed_loop_rps']} requests/s with one client"
    )

    say(
        f"search: {args.rate:.0f} requests/s offered for {args.seconds:.0f} s "
        f"({args.city_share:.0%} city-sized boxes) ..."
    )
    load_mid = os.getloadavg()
    res = drive(api, queries, args.rate, args.seconds, args.threads, suffix)
    ok = [i for i, s in enumerate(res["status"]) if s == 200]
    errors = res["offered"] - len(ok)
    not_sent = res["offered"] - res["completed"]
    failed = sum(1 for s in res["status"] if s == 0)
    http_errors = sum(1 for s in res["status"] if s not in (0, 200))
    cities = {i for i, q in enumerate(queries[: res["offered"]]) if q.city}
    lat = res["latency_s"]
    search = {
        "offered_rate": args.rate,
        "offered": res["offered"],
        "completed": res["completed"],
        "ok": len(ok),
        "errors": errors,
        "not_sent_by_deadline": not_sent,
        "timeouts_or_conn_errors": failed,
        "http_errors": http_errors,
        "achieved_rate": round(len(ok) / res["elapsed_s"], 1) if res["elapsed_s"] else 0.0,
        "elapsed_s": round(res["elapsed_s"], 1),
        **ms_stats([lat[i] for i in ok]),
        "service": ms_stats([res["service_s"][i] for i in ok]),
        "city": ms_stats([lat[i] for i in ok if i in cities]),
        "street": ms_stats([lat[i] for i in ok if i not in cities]),
        "total_mean": round(statistics.mean([res["total"][i] for i in ok]), 1) if ok else None,
        "total_city_mean": round(statistics.mean([res["total"][i] for i in ok if i in cities]), 1)
        if cities
        else None,
        "bytes_mean": round(statistics.mean([res["bytes"][i] for i in ok])) if ok else None,
        # p99 per 5 s of the load (by due time): how start-up (rendering ahead) and
        # other jobs on the machine show over the run
        "p99_ms_per_5s": [
            ms_stats([lat[i] for i in ok if k <= i < k + int(args.rate * 5)])["p99_ms"]
            for k in range(0, res["offered"], int(args.rate * 5))
        ],
        "server_cpu_s": round(res["server_cpu_s"], 1),
        # CPU per answered request: the API process, its PostgreSQL backends, the driver
        "cpu_ms_per_request": {
            k: round(1000 * res[f"{k}_cpu_s"] / max(1, len(ok)), 2)
            for k in ("server", "db", "driver")
        },
        "server_cpu_pct": round(100 * res["server_cpu_s"] / res["wall_s"], 1),
    }
    say(
        f"search: {search['achieved_rate']}/s achieved, {errors} errors ({not_sent} not sent "
        f"by the deadline, {failed} timeouts, {http_errors} HTTP errors), p50 "
        f"{search['p50_ms']} ms, p99 {search['p99_ms']} ms, API process CPU "
        f"{search['server_cpu_pct']} % of one core; p99 per 5 s {search['p99_ms_per_5s']}; "
        f"CPU ms per request {search['cpu_ms_per_request']}"
    )

    reps = 1 if args.quick else 3
    say("WZDx feed over HTTP ...")
    wzdx_http = time_wzdx_http(api, reps)
    say(f"WZDx over HTTP: {wzdx_http}")
    api.stop()

    sample = queries[: args.sql_queries]
    say(f"plain SQL: {len(sample)} queries one by one ...")
    plain = time_plain_sql(url, sample)
    say(f"plain SQL: p50 {plain['p50_ms']} ms, p99 {plain['p99_ms']} ms")
    parts_n = min(len(sample), 100 if args.quick else 300)
    say(f"endpoint breakdown: {parts_n} queries in-process ...")
    parts = time_endpoint_parts(url, sample[:parts_n])
    say(f"endpoint breakdown: {parts}")

    say("daily overview (publish_daily) ...")
    overview = time_overview(url, tmp / "overviews", reps)
    say(f"overview: {overview}")
    cli: dict[str, float] = {}
    if not args.quick:
        say("CLI: cityops roadworks publish-daily / feed wzdx ...")
        cli["publish_daily_s"] = round(
            time_cli(url, ["roadworks", "publish-daily", "--out", str(tmp / "cli-overviews")]), 2
        )
        cli["feed_wzdx_s"] = round(
            time_cli(url, ["roadworks", "feed", "wzdx", "--out", str(tmp / "wzdx.json")]), 2
        )
        cli["version_s"] = round(time_cli(url, ["--help"]), 2)  # interpreter + import cost
        say(f"CLI: {cli}")
    load_after = os.getloadavg()
    return {
        "works": data.works,
        "by_status": data.by_status,
        "setup_s": round(data.load_s, 1),
        "cpus": os.cpu_count(),
        "load_avg": {
            "before": [round(x, 2) for x in load_before],
            "at_search": [round(x, 2) for x in load_mid],
            "after": [round(x, 2) for x in load_after],
        },
        "target_p99_ms": args.target_p99_ms,
        "target_met": bool(
            search["errors"] == 0
            and search["p99_ms"] <= args.target_p99_ms
            and search["achieved_rate"] >= 0.98 * args.rate
        ),
        "search": search,
        "unloaded": unloaded,
        "plain_sql": plain,
        "endpoint_parts": parts,
        "overview": overview,
        "wzdx_http": wzdx_http,
        "cli": cli,
        "seconds": args.seconds,
        "rate": args.rate,
        "city_share": args.city_share,
        "limit": args.limit,
    }


def render(r: dict[str, Any]) -> str:
    s, p, e = r["search"], r["plain_sql"], r["endpoint_parts"]
    rows = [
        ("what", "rate/s", "errors", "p50 ms", "p95 ms", "p99 ms", "rows"),
        (
            "API search under load",
            f"{s['achieved_rate']}/{s['offered_rate']:.0f}",
            str(s["errors"]),
            str(s["p50_ms"]),
            str(s["p95_ms"]),
            str(s["p99_ms"]),
            f"total {s['total_mean']}",
        ),
        (
            "  city-sized boxes",
            "",
            "",
            str(s["city"].get("p50_ms")),
            str(s["city"].get("p95_ms")),
            str(s["city"].get("p99_ms")),
            f"total {s['total_city_mean']}",
        ),
        (
            "  street-sized boxes",
            "",
            "",
            str(s["street"].get("p50_ms")),
            str(s["street"].get("p95_ms")),
            str(s["street"].get("p99_ms")),
            "",
        ),
        (
            "API one client, unloaded",
            f"{r['unloaded']['closed_loop_rps']} closed",
            "",
            str(r["unloaded"]["p50_ms"]),
            str(r["unloaded"]["p95_ms"]),
            str(r["unloaded"]["p99_ms"]),
            "",
        ),
        (
            "plain SQL (&&, LIMIT 100)",
            f"{p['closed_loop_qps']} closed",
            "0",
            str(p["p50_ms"]),
            str(p["p95_ms"]),
            str(p["p99_ms"]),
            f"{p['rows_mean']}",
        ),
        (
            "data version read",
            "",
            "",
            str(e["data_version"]["p50_ms"]),
            str(e["data_version"]["p95_ms"]),
            str(e["data_version"]["p99_ms"]),
            "",
        ),
        (
            "search in memory (PublicIndex)",
            "",
            "",
            str(e["index_search"]["p50_ms"]),
            str(e["index_search"]["p95_ms"]),
            str(e["index_search"]["p99_ms"]),
            f"total {e['total_mean']}",
        ),
        (
            "render a page in PostgreSQL (cold)",
            "",
            "",
            str(e["render_page_cold"]["p50_ms"]),
            str(e["render_page_cold"]["p95_ms"]),
            str(e["render_page_cold"]["p99_ms"]),
            "",
        ),
        (
            "same search in SQL (keys + count)",
            "",
            "",
            str(e["sql_search"]["p50_ms"]),
            str(e["sql_search"]["p95_ms"]),
            str(e["sql_search"]["p99_ms"]),
            "",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    o, w = r["overview"], r["wzdx_http"]
    lines += [
        "",
        f"works {r['works']} {r['by_status']}; API process CPU during the search "
        f"{s['server_cpu_pct']} % of one core; load average before/at search/after "
        f"{r['load_avg']['before'][0]}/{r['load_avg']['at_search'][0]}/"
        f"{r['load_avg']['after'][0]} on {r['cpus']} CPUs",
        f"daily overview (publish_daily): {o['seconds']} s, {o['active']} active, "
        f"{o['upcoming']} upcoming",
        f"WZDx over HTTP: {w['seconds']} s, {w['features']} features, {w['bytes']} bytes",
    ]
    if r["cli"]:
        lines.append(f"CLI wall time (incl. start-up): {r['cli']}")
    lines.append(
        f"target p99 <= {r['target_p99_ms']} ms at {r['rate']:.0f}/s: "
        f"{'MET' if r['target_met'] else 'NOT MET'}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        with ExitStack() as stack:
            result = run(args, stack)
    except KeyboardInterrupt:
        print("interrupted: processes stopped, database dropped", file=sys.stderr)
        return 130
    print(render(result), flush=True)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
