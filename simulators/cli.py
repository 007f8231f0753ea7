"""`cityops simulate`: run the simulated city against the broker."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime, timedelta

from cityops.ingest.config import load_settings

__all__ = ["register"]

logger = logging.getLogger(__name__)

_DESCRIPTION = """\
Simulates the devices of a city and publishes their messages to the MQTT broker
(CITYOPS_MQTT_URL) under CITYOPS_TOPIC_PREFIX, each device with its own MQTT client:
waste-bin fill sensors, traffic signal controllers (Indiana hi-res events) and refuse
trucks driving the road network of the OpenStreetMap extract (CITYOPS_OSM_FILE or the
scenario's, default the bundled one).

Simulated time starts in the past (scenario 'start', default 'now - 2 days') and runs
--speed times faster than real time until it reaches the present, then in real time, so
a dashboard has history at once and live data afterwards. Before running, the city's
devices are upserted into the device registry (CITYOPS_DATABASE_URL) so the ingest
accepts them; that is idempotent.

Stop with Ctrl-C (or SIGTERM): every device then publishes a retained offline status.
"""

_EPILOG = """\
examples:
  cityops simulate                              the demo city, history of the last 2 days
  cityops simulate --scenario test --duration 60
  cityops simulate --start now --speed 1        live only, real time
  cityops simulate --scenario ./my-city.yaml --seed 7 --no-seed-registry
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from cityops.simulators.scenario import bundled_scenarios

    p = sub.add_parser(
        "simulate",
        help="simulate bins, traffic signals and trucks publishing to the broker",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--scenario", metavar="NAME|PATH",
        help=f"bundled scenario ({', '.join(bundled_scenarios())}) or a YAML file "
        "(default: CITYOPS_SCENARIO, else demo)",
    )
    p.add_argument("--speed", type=_positive, metavar="X",
                   help="clock acceleration until simulated time reaches now "
                   "(default: scenario's, 120)")
    p.add_argument("--duration", type=_positive, metavar="S",
                   help="stop after S wall-clock seconds (default: run until interrupted)")
    p.add_argument("--seed", type=int, metavar="N",
                   help="random seed: same seed, same city and same messages (default: scenario's)")
    p.add_argument("--start", metavar="ISO",
                   help="simulated start: ISO 8601 time, 'now' or 'now - 6 hours' "
                   "(default: scenario's, 'now - 2 days')")
    p.add_argument("--no-seed-registry", dest="seed_registry", action="store_false",
                   help="do not upsert the devices into the registry tables first")
    p.add_argument("--client-id-prefix", default="", metavar="TEXT",
                   help="prefix of every device's MQTT client id (default: none, the client "
                   "id is the device id); lets two simulations of one city share a broker")
    p.set_defaults(func=_cmd_simulate)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _fail(message: str, code: int = 2) -> int:
    print(f"cityops simulate: {message}", file=sys.stderr)
    return code


def _cmd_simulate(args: argparse.Namespace) -> int:
    import psycopg

    from cityops.routing.errors import NetworkError
    from cityops.routing.network import load_network
    from cityops.simulators.city import build_city
    from cityops.simulators.errors import ScenarioError
    from cityops.simulators.models import CitySim
    from cityops.simulators.runner import run
    from cityops.simulators.scenario import load_scenario, parse_start
    from cityops.simulators.seed import seed_registry

    settings = load_settings()
    try:
        scenario = load_scenario(args.scenario or settings.scenario)
    except ScenarioError as exc:
        return _fail(str(exc))
    updates: dict[str, object] = {}
    if args.seed is not None:
        if args.seed < 0:
            return _fail("--seed must be >= 0")
        updates["seed"] = args.seed
    if args.speed is not None:
        if args.speed < 1.0:
            return _fail("--speed must be >= 1: simulated time cannot fall behind real time")
        updates["speed"] = args.speed
    scenario = scenario.model_copy(update=updates)

    now = datetime.now(UTC)
    try:
        start = parse_start(args.start or scenario.start, now, scenario.zone)
    except ValueError as exc:
        return _fail(str(exc))
    if start > now + timedelta(seconds=1):
        return _fail(f"start {start.isoformat()} is in the future: the ingest refuses future times")
    if now - start > timedelta(days=settings.ingest_max_age_days):
        logger.warning(
            "start %s is older than the ingest accepts (%s days): early messages will be "
            "dead-lettered", start.isoformat(), settings.ingest_max_age_days,
        )

    try:
        network = load_network(settings.osm_file or scenario.osm_file)
    except NetworkError as exc:
        return _fail(str(exc))
    city = build_city(scenario, network)
    if args.seed_registry:
        try:
            seed_registry(settings.database_url, city)
        except psycopg.Error as exc:
            return _fail(
                f"cannot seed the device registry at {settings.redacted_database_url()}: "
                f"{str(exc).strip()}\n(run 'cityops db migrate' first, or pass --no-seed-registry)",
                1,
            )
    sim = CitySim(city, scenario, network, start.timestamp())
    run(sim, settings, speed=scenario.speed, duration_s=args.duration,
        client_id_prefix=args.client_id_prefix)
    return 0
