"""API load benchmark: the public roadworks endpoints and the truck route endpoint, driven
by a second process over loopback against one uvicorn process of the API.

Setup (a throwaway database, dropped at the end, also on Ctrl-C):

  roadworks  --works public works on the real streets of the bundled extract, loaded as
             bench/roadworks/run.py does (COPY; periods from 90 days ago to a year ahead)
  daily plan a city of --bins bins and --trucks trucks seeded and filled as
             bench/routing/replan.py does, then `plan_day` (what `cityops routing plan`
             runs) for today: one stored route version per truck with stops
  callers    an API key (`cityops auth create-key --role truck --truck T..`) and a token
             per truck

Then, per endpoint: open loop at --rate for --seconds (latency from the due time, so a
slow server shows), and closed loop with --closed-threads clients back to back for
--seconds (the most one API process gives). Endpoints: the search by bbox and days, one
work, the WZDx and GeoJSON feeds, the truck route with an API key and with a token; the
search, the feeds and the route also with `If-None-Match` (the ETag of a previous answer),
which is what a polling map, feed reader or tablet sends: 304 without a body.

Progress goes to stderr; stdout gets a table and, last, one JSON line with the figures.
Not part of the test suite. Example:

  .venv/bin/python bench/api/load.py --rate 100 --seconds 8
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import SecretStr

from cityops.api.credentials import create_key
from cityops.api.security import AuthConfig, issue_token
from cityops.ingest.config import Settings
from cityops.ingest.db import connect
from cityops.routing.network import load_network
from cityops.routing.planning import BERLIN
from cityops.routing.repository import current_routes_on

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common.py
from common import (
    BENCH,
    ApiProcess,
    migrate_database,
    pct,
    proc_cpu_s,
    run_driver,
    say,
    sibling,
    throwaway_database,
)

HERE = Path(__file__).resolve().parent
rw_bench = sibling(BENCH / "roadworks" / "run.py", "bench_roadworks_run")
replan_bench = sibling(BENCH / "routing" / "replan.py", "bench_routing_replan")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/api/load.py",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--works", type=int, default=5000, help="public roadworks (default 5000)")
    p.add_argument("--bins", type=int, default=400, help="bins of the city (default 400)")
    p.add_argument("--trucks", type=int, default=8, help="trucks (default 8)")
    p.add_argument("--plan-time-limit", type=float, default=10.0, help="daily plan solve (s)")
    p.add_argument("--rate", type=float, default=100.0, help="open-loop requests/s (100)")
    p.add_argument("--seconds", type=float, default=8.0, help="per endpoint and mode (8)")
    p.add_argument("--threads", type=int, default=16, help="open-loop client threads (16)")
    p.add_argument("--closed-threads", type=int, default=8, help="closed-loop clients (8)")
    p.add_argument("--only", help="comma-separated endpoint names to run (default: all)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1000 works, 100 bins, 3 trucks, 3 s per measurement",
    )
    p.add_argument(
        "--admin-url",
        default=os.environ.get("CITYOPS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="maintenance database URL; the throwaway database is created beside it",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.works, args.bins, args.trucks = min(args.works, 1000), min(args.bins, 100), 3
        args.seconds, args.plan_time_limit = min(args.seconds, 3.0), min(args.plan_time_limit, 3)
    if min(args.works, args.bins, args.trucks, args.threads, args.closed_threads) < 1:
        p.error("--works, --bins, --trucks and the thread counts must be positive")
    if args.rate <= 0 or args.seconds <= 0:
        p.error("--rate and --seconds must be positive")
    return args


# -- setup ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Truck:
    truck_id: str
    api_key: str
    token: str
    stops: int


def setup_routes(settings: Settings, args: argparse.Namespace) -> list[Truck]:
    """A seeded city and today's daily plan; credentials for every truck with a route."""
    day = datetime.now(BERLIN).date()
    _, report, plan_s = replan_bench.plan_city(settings, load_network(), args, day)
    say(replan_bench.plan_summary(report, plan_s))
    config = AuthConfig.from_settings(settings)
    out = []
    with connect(settings.database_url, autocommit=True) as conn:
        routes = current_routes_on(conn, day, geometry=False)
        for truck_id, route in sorted(routes.items()):
            key = create_key(conn, f"bench tablet {truck_id}", ["truck"], truck_id=truck_id)
            token = issue_token(
                config, f"tablet-{truck_id}", ["truck"], truck_id=truck_id, ttl=timedelta(hours=2)
            )
            stops = sum(s.kind == "stop" for s in route.stops)
            out.append(Truck(truck_id, key.clear, token, stops))
    if not out:
        raise RuntimeError("the daily plan stored no route")
    return out


# -- the API process -----------------------------------------------------------------------


class Api(ApiProcess):
    """The API on the benchmark's database, signing tokens with `secret`."""

    def __init__(self, url: str, secret: str, log: Path) -> None:
        super().__init__({"CITYOPS_DATABASE_URL": url, "CITYOPS_AUTH_JWT_SECRET": secret}, log)

    def etag(self, path: str, headers: dict[str, str]) -> str:
        req = urllib.request.Request(self.url(path), headers=headers)
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
            tag = r.headers.get("ETag")
        if not tag:
            raise RuntimeError(f"{path} sent no ETag")
        return str(tag)


# -- endpoints -----------------------------------------------------------------------------

Request = tuple[str, dict[str, str]]


def endpoints(
    api: Api,
    data: Any,
    trucks: list[Truck],
    rng: random.Random,
    refs: list[str],
    searches: int,
) -> dict[str, list[Request]]:
    """Name -> the requests to cycle through (each with its headers)."""
    today = datetime.now(BERLIN).date()
    # map views: a fifth city-wide, the rest street-sized; as many as the open loop sends,
    # so that it meets the search's response cache cold (the conditional ones are warm)
    queries = rw_bench.make_queries(data, max(200, searches), 0.2, today, rng)
    search = [q.path for q in queries]
    feeds = ["/api/v1/roadworks/feeds/wzdx", "/api/v1/roadworks/feeds/geojson"]
    route = [f"/api/v1/trucks/{t.truck_id}/route" for t in trucks]
    keys = [{"X-API-Key": t.api_key} for t in trucks]
    tokens = [{"Authorization": f"Bearer {t.token}"} for t in trucks]
    say("collecting ETags for the conditional requests (this renders each feed once)")
    return {
        "search": [(p, {}) for p in search],
        "search 304": [(p, {"If-None-Match": api.etag(p, {})}) for p in search[:50]],
        "one work": [(f"/api/v1/roadworks/{r}", {}) for r in refs],
        "feed wzdx": [(feeds[0], {})],
        "feed wzdx 304": [(feeds[0], {"If-None-Match": api.etag(feeds[0], {})})],
        "feed geojson": [(feeds[1], {})],
        "feed geojson 304": [(feeds[1], {"If-None-Match": api.etag(feeds[1], {})})],
        "route (key)": list(zip(route, keys, strict=True)),
        "route (key) 304": [
            (p, {**h, "If-None-Match": api.etag(p, h)}) for p, h in zip(route, keys, strict=True)
        ],
        "route (token)": list(zip(route, tokens, strict=True)),
        "route (token) 304": [
            (p, {**h, "If-None-Match": api.etag(p, h)}) for p, h in zip(route, tokens, strict=True)
        ],
    }


def drive(api: Api, requests: list[Request], mode: str, args: argparse.Namespace) -> dict[str, Any]:
    job = {
        "port": api.port,
        "mode": mode,
        "rate": args.rate,
        "seconds": args.seconds,
        "threads": args.threads if mode == "open" else args.closed_threads,
        "requests": requests,
    }
    cpu0 = proc_cpu_s(api.proc.pid)
    res = run_driver(HERE / "driver.py", job, timeout=args.seconds + 90)
    res["server_cpu_s"] = proc_cpu_s(api.proc.pid) - cpu0
    return res


def summary(res: dict[str, Any]) -> dict[str, Any]:
    lat = [x * 1000 for x in res["latency_s"]]
    codes: dict[str, int] = {}
    for s in res["status"]:
        codes[str(s)] = codes.get(str(s), 0) + 1
    done = res["completed"]
    return {
        "rps": round(done / res["elapsed_s"], 1) if res["elapsed_s"] > 0 else 0.0,
        "completed": done,
        "offered": res["offered"],
        "p50_ms": round(pct(lat, 50), 2),
        "p95_ms": round(pct(lat, 95), 2),
        "p99_ms": round(pct(lat, 99), 2),
        "status": codes,
        "kb_per_answer": round(sum(res["bytes"]) / max(done, 1) / 1024, 1),
        "server_cpu_ms_per_req": round(res["server_cpu_s"] * 1000 / max(done, 1), 2),
    }


# -- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    name = f"cityops_bench_api_{secrets.token_hex(4)}"
    api: Api | None = None

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    with throwaway_database(args.admin_url, name) as url:
        try:
            migrate_database(url)
            secret = secrets.token_urlsafe(36)
            settings = Settings(
                database_url=url,
                auth_jwt_secret=SecretStr(secret),
                mqtt_url="mqtt://127.0.0.1:9",
                topic_prefix=f"bench-{name[-8:]}",
            )
            rng = random.Random(args.seed)
            now = datetime.now(UTC)
            data = rw_bench.load_works(url, args.works, rng, now)
            with connect(url) as conn:
                refs = [
                    r
                    for (r,) in conn.execute(
                        "SELECT reference FROM roadworks ORDER BY reference LIMIT 200"
                    ).fetchall()
                ]
            trucks = setup_routes(settings, args)
            say(f"{len(trucks)} trucks with a route ({sum(t.stops for t in trucks)} stops)")
            log = Path(tempfile.gettempdir()) / f"{name}-api.log"
            api = Api(url, secret, log)
            plan = endpoints(api, data, trucks, rng, refs, int(args.rate * args.seconds))
            if args.only:
                wanted = {w.strip() for w in args.only.split(",")}
                plan = {k: v for k, v in plan.items() if k in wanted}
            results: dict[str, dict[str, Any]] = {}
            for endpoint, requests in plan.items():
                for mode in ("open", "closed"):
                    say(f"{endpoint}: {mode} loop, {args.seconds:g} s")
                    results[f"{endpoint} / {mode}"] = summary(drive(api, requests, mode, args))
            report(results, args, trucks)
            return 0
        except KeyboardInterrupt:
            say("interrupted")
            return 130
        finally:
            if api is not None:
                api.stop()


def report(
    results: dict[str, dict[str, Any]], args: argparse.Namespace, trucks: list[Truck]
) -> None:
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(
        f"API load: one uvicorn process, {args.works} works, {len(trucks)} trucks with a "
        f"route; open loop {args.rate:g}/s with {args.threads} threads, closed loop "
        f"{args.closed_threads} clients, {args.seconds:g} s each; load average "
        f"{' '.join(load)} at the end"
    )
    head = (
        f"{'endpoint / mode':34} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'KB':>7} {'cpu ms':>7}  status"
    )
    print(head)
    print("-" * len(head))
    for key, r in results.items():
        codes = ",".join(f"{k}:{v}" for k, v in sorted(r["status"].items()))
        print(
            f"{key:34} {r['rps']:7.1f} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f} "
            f"{r['p99_ms']:8.2f} {r['kb_per_answer']:7.1f} "
            f"{r['server_cpu_ms_per_req']:7.2f}  {codes}"
        )
    print(
        json.dumps(
            {
                "bench": "api_load",
                "works": args.works,
                "trucks": len(trucks),
                "rate": args.rate,
                "seconds": args.seconds,
                "loadavg": load,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
