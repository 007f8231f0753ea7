"""Where a public roadworks search spends its time: the API under py-spy while the load
driver sends the benchmark's bounding-box searches.

Creates a throwaway database with --works works (as run.py does, dropped at the end),
starts the API (uvicorn, one process, as `cityops api` serves it) under `py-spy record`,
offers --rate searches/s for --seconds, stops the API and prints the collapsed stacks
summarised: the share of samples per function (self and inclusive) and per module.

py-spy is a development tool, not a dependency: `.venv/bin/pip install py-spy`.

  .venv/bin/python bench/roadworks/profile.py --works 10000 --rate 20 --seconds 20
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run

from cityops.ingest.db import ensure_database
from cityops.roadworks.labels import BERLIN


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="bench/roadworks/profile.py", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--works", type=int, default=10_000)
    p.add_argument("--rate", type=float, default=20.0, help="searches/s (default 20)")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--top", type=int, default=25, help="functions to list (default 25)")
    p.add_argument("--out", type=Path, help="keep the collapsed stacks in this file")
    p.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = p.parse_args(argv)
    pyspy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if pyspy is None:
        p.error("py-spy not found: .venv/bin/pip install py-spy")
    rng = random.Random(1)
    name = f"cityops_bench_rw_{secrets.token_hex(4)}"
    url = args.admin_url.rsplit("/", 1)[0] + "/" + name
    with ExitStack() as stack:
        ensure_database(url)

        def drop() -> None:
            with psycopg.connect(args.admin_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )

        stack.callback(drop)
        run.migrate_database(url)
        now = datetime.now(UTC).replace(microsecond=0)
        data = run.load_works(url, args.works, rng, now)
        queries = run.make_queries(
            data, max(200, int(args.rate * args.seconds)), 0.2, now.astimezone(BERLIN).date(), rng
        )
        tmp = Path(tempfile.mkdtemp(prefix="cityops-profile-rw-"))
        stack.callback(shutil.rmtree, tmp, True)
        stacks = args.out or tmp / "stacks.txt"
        api = run.Api(
            url,
            tmp / "api.log",
            wrap=[pyspy, "record", "--format", "raw", "--rate", "200", "-o", str(stacks), "--"],
        )
        run.say(f"API under py-spy on port {api.port}; {args.rate}/s for {args.seconds} s")
        res = run.drive(api, queries, args.rate, args.seconds, 8)
        ok = [i for i, s in enumerate(res["status"]) if s == 200]
        run.say(
            f"{len(ok)} of {res['offered']} answered; service time "
            f"{run.ms_stats([res['service_s'][i] for i in ok])}"
        )
        os.killpg(api.proc.pid, signal.SIGINT)  # py-spy writes its file when uvicorn ends
        try:
            api.proc.wait(60)
        except subprocess.TimeoutExpired:
            api.stop()
        print(summarise(stacks.read_text(), args.top))
    return 0


def summarise(collapsed: str, top: int) -> str:
    """Self and inclusive shares of the samples per function, from py-spy's raw format
    (`frame;frame;... count` per line, frames as `function (file:line)`)."""
    self_n: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        total += n
        self_n[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    lines = [f"{total} busy samples", "", "self %   function"]
    lines += [f"{100 * n / total:6.1f}   {f}" for f, n in self_n.most_common(top)]
    lines += ["", "incl %   function"]
    lines += [f"{100 * n / total:6.1f}   {f}" for f, n in incl.most_common(top * 2)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    fn, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{fn} ({path})"


if __name__ == "__main__":
    raise SystemExit(main())
