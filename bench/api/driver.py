"""Load driver for the API benchmark (run by load.py as its own process).

Reads a JSON job on stdin: {"port", "mode", "rate", "seconds", "threads", "requests"}, each
request a `[path, {header: value}]`. Threads keep one keep-alive connection each to
127.0.0.1 and take requests in turn (request i is `requests[i % len(requests)]`).

* `open`: request i is due at t0 + i/rate. A slow server shows as latency (measured from
  the due time, so no coordinated omission) and as a lower achieved rate, never as a
  pause in the offer.
* `closed`: every thread sends its next request as soon as the previous answer is in,
  for `seconds`: the most the server gives with that many clients; latency is the
  service time.

Writes one JSON object with the per-request latency, status and size on stdout.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common.py
from common import run_workers


def main() -> int:
    job = json.load(sys.stdin)
    port, seconds, mode = int(job["port"]), float(job["seconds"]), str(job["mode"])
    requests: list[tuple[str, dict[str, str]]] = [(p, dict(h)) for p, h in job["requests"]]
    rate = float(job.get("rate", 0.0))
    n_total = int(rate * seconds) if mode == "open" else 10**9
    lock = threading.Lock()
    next_i = [0]
    results: list[tuple[float, int, int]] = []
    t0 = time.perf_counter() + 0.2
    stop_at = t0 + seconds
    hard_stop = stop_at + 30.0  # open loop: nothing new is sent after this

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine: list[tuple[float, int, int]] = []
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= n_total:
                break
            now = time.perf_counter()
            if mode == "open":
                due = t0 + i / rate
                if now > hard_stop:
                    break
                if due > now:
                    time.sleep(due - now)
            else:
                if now < t0:
                    time.sleep(t0 - now)
                due = time.perf_counter()
                if due >= stop_at:
                    break
            path, headers = requests[i % len(requests)]
            status, size = 0, 0
            try:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                size = len(resp.read())
                status = resp.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            mine.append((time.perf_counter() - due, status, size))
        conn.close()
        with lock:
            results.extend(mine)

    run_workers(worker, int(job["threads"]), hard_stop)
    elapsed = time.perf_counter() - t0
    with lock:
        done = list(results)
    out: dict[str, Any] = {
        "offered": n_total if mode == "open" else len(done),
        "completed": len(done),
        "elapsed_s": min(elapsed, seconds) if mode == "closed" else elapsed,
        "latency_s": [r[0] for r in done],
        "status": [r[1] for r in done],
        "bytes": [r[2] for r in done],
    }
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
