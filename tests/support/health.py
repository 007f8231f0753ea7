"""Scraping a service's liveness and metrics endpoint (`cityops.ingest.health.Endpoint`)
over HTTP, as a kubelet and Prometheus do."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(url: str, method: str = "GET") -> tuple[int, bytes]:
    """Status and body of one request (a 4xx/5xx is an answer, not an error)."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), bytes(exc.read())


def wait_status(url: str, status: int, timeout: float = 10.0) -> dict[str, Any]:
    """Poll `url` until it answers `status`; its JSON body."""
    deadline = time.monotonic() + timeout
    seen: tuple[int, bytes] = (0, b"")
    while time.monotonic() < deadline:
        try:
            seen = get(url)
        except OSError as exc:  # not listening yet
            seen = (0, str(exc).encode())
        if seen[0] == status:
            body: dict[str, Any] = json.loads(seen[1])
            return body
        time.sleep(0.05)
    raise AssertionError(f"{url} did not answer {status} in {timeout} s; last: {seen!r}")


def scrape(base: str) -> Samples:
    """Every sample of `base`/metrics, parsed as Prometheus parses the text format."""
    status, body = get(f"{base}/metrics")
    assert status == 200, body
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no {name}{labels or ''} in {sorted(n for n, _ in samples)}"
    return samples[key]
