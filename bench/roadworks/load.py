"""Open-loop load driver for the public roadworks search (run by run.py as its own process).

Reads a JSON job on stdin: {"port", "rate", "seconds", "threads", "paths"}. Request i is
due at t0 + i/rate; a bounded pool of threads with keep-alive connections to 127.0.0.1
takes the due requests in order, so a slow server shows up as latency (measured from the
due time, no coordinated omission) and as a lower achieved rate, never as a pause in the
offer. Writes one JSON object with the per-request results on stdout.
"""

from __future__ import annotations

import http.client
import json
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common.py
from common import run_workers

_TOTAL = re.compile(rb'"total"\s*:\s*(\d+)')


def _total(body: bytes) -> int:
    """The page's `total`: the top-level key after the items (a key inside an item's text
    would be escaped), so searched from the end; the whole JSON parsed only as a fallback
    (parsing 100 KB per answer costs the driver about a millisecond of CPU)."""
    found = _TOTAL.search(body, max(0, len(body) - 400))
    if found:
        return int(found.group(1))
    try:
        return int(json.loads(body).get("total", -1))
    except ValueError:
        return -1


def main() -> int:
    job = json.load(sys.stdin)
    port, rate, seconds = int(job["port"]), float(job["rate"]), float(job["seconds"])
    paths: list[str] = job["paths"]
    n_total = int(rate * seconds)
    lock = threading.Lock()
    next_i = [0]
    results: list[tuple[float, float, int, int, int] | None] = [None] * n_total
    t0 = time.perf_counter() + 0.2
    hard_stop = t0 + seconds + 30.0  # bounded: nothing new is sent after this

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while True:
            with lock:
                i = next_i[0]
                if i >= n_total:
                    break
                next_i[0] += 1
            due = t0 + i / rate
            now = time.perf_counter()
            if now > hard_stop:
                break
            if due > now:
                time.sleep(due - now)
            sent = time.perf_counter()
            status, total, size = 0, -1, 0
            body = b""
            try:
                conn.request("GET", paths[i % len(paths)])
                resp = conn.getresponse()
                body = resp.read()
                status, size = resp.status, len(body)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            done = time.perf_counter()  # the answer is in; reading it is the client's time
            if status == 200:
                total = _total(body)
            results[i] = (done - due, done - sent, status, total, size)
        conn.close()

    run_workers(worker, int(job["threads"]), hard_stop)
    t_end = time.perf_counter()
    done = [r for r in results if r is not None]
    last_done = max(
        (t0 + i / rate + r[0] for i, r in enumerate(results) if r is not None), default=t_end
    )
    out: dict[str, Any] = {
        "offered": n_total,
        "completed": len(done),
        "elapsed_s": last_done - t0,
        "latency_s": [r[0] for r in done],
        "service_s": [r[1] for r in done],
        "status": [r[2] for r in done],
        "total": [r[3] for r in done],
        "bytes": [r[4] for r in done],
    }
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
