"""Protection of the public API: a per-client rate limit and a request body size limit.

The rate limit is a token bucket per client address, held in this process: with several
API replicas each one limits on its own (a client may get replicas x the rate), so the
ingress in front should limit as well. Loopback is exempt by default: local tools and the
benchmarks run there, and a reverse proxy on the same host passes the real client address
in `X-Forwarded-For`, which uvicorn applies for proxies it trusts (FORWARDED_ALLOW_IPS,
default 127.0.0.1).
"""

from __future__ import annotations

import ipaddress
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fastapi import Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cityops.api.errors import RateLimitedError

__all__ = ["BodySizeLimit", "TokenBucketLimiter", "parse_networks", "public_rate_limit"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """`127.0.0.0/8,::1` as networks; raises ValueError naming a bad entry."""
    out = []
    for part in text.split(","):
        if part.strip():
            try:
                out.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"CITYOPS_API_RATE_LIMIT_EXEMPT: not a network: {part!r}"
                ) from None
    return tuple(out)


@dataclass
class TokenBucketLimiter:
    """`rate_per_s` requests per second per client, up to `burst` at once.

    A client's bucket starts full; each request takes one token; tokens come back at
    `rate_per_s`. Only the `max_clients` most recently seen clients are remembered (an
    evicted one starts again with a full bucket), so memory stays bounded.
    """

    rate_per_s: float
    burst: int
    exempt: Sequence[Network] = ()
    max_clients: int = 100_000
    clock: Callable[[], float] = time.monotonic
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.rate_per_s < 0 or self.burst < 1 or self.max_clients < 1:
            raise ValueError("rate_per_s must be >= 0, burst and max_clients >= 1")

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0

    def is_exempt(self, client: str) -> bool:
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return False
        return any(address in net for net in self.exempt)

    def take(self, client: str) -> float:
        """0 when the request may go ahead, else the seconds until it would."""
        if not self.enabled or self.is_exempt(client):
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate_per_s)
            if tokens >= 1.0:
                tokens -= 1.0
                wait = 0.0
            else:
                wait = (1.0 - tokens) / self.rate_per_s
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return wait


async def public_rate_limit(request: Request) -> None:
    """Dependency of the public endpoints: 429 with Retry-After when over the limit."""
    limiter: TokenBucketLimiter = request.app.state.rate_limiter
    client = request.client.host if request.client else ""
    wait = limiter.take(client)
    if wait > 0:
        raise RateLimitedError(max(1, math.ceil(wait)))


class _TooLarge(StarletteHTTPException):
    """Raised from `receive` when the body passes the limit. An HTTPException, so that
    FastAPI's body parsing passes it on and the app's handler answers 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body refused: the limit is {max_bytes} bytes")


class BodySizeLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413 (the JSON error body).

    A declared `Content-Length` over the limit is refused before anything is read; a
    chunked body is counted as it arrives and refused when it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(send, value.decode("latin-1"))
                return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if started:
                raise
            await self._refuse(send, f"more than {self.max_bytes}")

    async def _refuse(self, send: Send, size: str) -> None:
        body = json.dumps(
            {
                "error": "payload_too_large",
                "message": f"request body of {size} bytes refused: the limit is {self.max_bytes} "
                "bytes",
                "details": [
                    {
                        "location": "body",
                        "field": "body",
                        "message": f"at most {self.max_bytes} bytes",
                    }
                ],
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
