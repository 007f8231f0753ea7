"""`cityops api`: serve the HTTP API with uvicorn."""

from __future__ import annotations

import argparse
import logging
from datetime import timedelta

from cityops.ingest.config import load_settings

__all__ = ["register"]

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    api = sub.add_parser(
        "api",
        help="serve the HTTP API (bins, devices, trucks and routes, roadworks, traffic; "
        "docs at /docs)",
        description="Serves the HTTP API with uvicorn: health; bins with their readings, "
        "devices and stats; the trucks' routes (current route, stream of versions, stop "
        "events) and the dispatchers' view of all routes; roadworks (public search, map, "
        "open-data feeds, daily overviews, and editing for promoters and the authority); "
        "traffic (controllers, measures, detector health, modes, Purdue diagrams) and the "
        "switching of adaptive control. Everything but health and the public roadworks "
        "needs an API key or a token (cityops auth). Host and port default to "
        "CITYOPS_API_HOST and CITYOPS_API_PORT (127.0.0.1:8000); OpenAPI docs are at /docs.",
    )
    api.add_argument("--host", help="address to bind (default: CITYOPS_API_HOST)")
    api.add_argument("--port", type=int, help="port to bind (default: CITYOPS_API_PORT)")
    api.add_argument(
        "--device-stale-minutes", type=float, default=15.0,
        help="a device silent this long is reported offline (default 15)",
    )
    api.set_defaults(func=_cmd_api)


def _cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from cityops.api.app import create_app
    from cityops.ingest.city import announce_city

    settings = load_settings()
    announce_city(settings, "API")
    host: str = args.host or settings.api_host
    port: int = args.port if args.port is not None else settings.api_port
    if not 0 < port < 65_536:
        print(f"cityops api: --port must be between 1 and 65535, got {port}")
        return 2
    if args.device_stale_minutes <= 0:
        print("cityops api: --device-stale-minutes must be positive")
        return 2
    app = create_app(settings, device_stale_after=timedelta(minutes=args.device_stale_minutes))
    logger.info("serving the API on http://%s:%d (docs at /docs)", host, port)
    # log_config=None: keep the logging that `cityops` configured.
    # Behind the city's reverse proxy the client address comes from X-Forwarded-For, which
    # uvicorn believes only from these addresses (else all clients share one rate limit).
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        proxy_headers=True,
        forwarded_allow_ips=settings.api_forwarded_allow_ips,
    )
    return 0
