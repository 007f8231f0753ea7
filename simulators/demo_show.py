"""What `cityops demo` shows a newcomer: the status line, the start-up text of the traffic
loop, the API tokens it prints, and the scripted bin overflow that shows a re-plan reach a
truck. The orchestration of the child processes is `cityops.simulators.demo`.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, cast

import numpy as np

from cityops.ingest.config import Settings
from cityops.ingest.db import connect
from cityops.simulators.sumo.loop import TrafficLoop

if TYPE_CHECKING:
    from cityops.routing.network import RoadNetwork

__all__ = ["demo_token", "engineer_token", "scripted_overflow", "status_line", "traffic_banner"]


def status_line(settings: Settings, real_time: tuple[str, ...] = ()) -> str:
    """The status line; the simulated clock leaves out the controllers in `real_time`
    (the SUMO grid runs at the wall clock, the city's simulation catches up to it)."""
    try:
        with connect(settings.database_url) as conn:
            row = conn.execute(
                """
                SELECT (SELECT count(*) FROM bins),
                       (SELECT count(*) FROM bin_state WHERE fill_pct >= 80),
                       (SELECT count(*) FROM bin_readings),
                       (SELECT count(*) FROM signal_events),
                       (SELECT count(*) FROM truck_positions),
                       (SELECT count(*) FROM truck_events WHERE kind = 'stop_done'),
                       (SELECT count(*) FROM dead_letters),
                       (SELECT max(ts) FROM signal_events
                        WHERE NOT controller_id = ANY(%s)),
                       (SELECT count(*) FROM route_versions)
                """,
                (list(real_time),),
            ).fetchone()
    except Exception as exc:  # status output only; the children log the cause
        return f"database not reachable: {exc}"
    if row is None:
        return "no data"
    bins, full, readings, events, positions, emptied, dead, newest, versions = row
    when = f", simulated clock {newest:%Y-%m-%d %H:%M} UTC" if newest else ""
    return (
        f"bins {bins} ({full} at 80%+), readings {readings:,}, signal events {events:,}, "
        f"truck positions {positions:,}, bins emptied {emptied:,}, route versions {versions}, "
        f"dead letters {dead:,}{when}"
    )


def scripted_overflow(settings: Settings, network: RoadNetwork) -> str:
    """Publish, as its sensor would, a 98 % reading for a bin that no route collects
    today, that no truck emptied lately and that a truck can reach (a bin behind today's
    street closures would only be reported unserved).

    A demo aid, announced as such: it lets a newcomer watch the real loop (MQTT ->
    re-planner -> new route version -> the truck follows it) without waiting for a bin to
    overflow on its own. Returns what was done.
    """
    from cityops.ingest.contract import BinTelemetry, Channel, DeviceKind, device_topic
    from cityops.ingest.mqttclient import make_client
    from cityops.routing.closures import apply_closures
    from cityops.routing.repository import load_closures, load_sites

    now = datetime.now(UTC)
    with connect(settings.database_url) as conn:
        rows = conn.execute(
            """
            SELECT b.bin_id, b.sensor_id, ST_Y(b.geom), ST_X(b.geom) FROM bins b
            WHERE b.sensor_id IS NOT NULL
              AND b.fraction IN (SELECT fraction FROM current_routes WHERE fraction IS NOT NULL)
              AND NOT EXISTS (
                SELECT 1 FROM current_routes r, jsonb_array_elements(r.stops) s
                WHERE s ->> 'bin_id' = b.bin_id)
              -- the re-planner takes a bin emptied today back only after a lower
              -- reading and 30 min (a late reading must not bring it back), which one
              -- scripted reading does not show; the simulated trucks' clock runs
              -- behind, hence three days
              AND NOT EXISTS (
                SELECT 1 FROM truck_events e
                WHERE e.kind = 'stop_done' AND e.bin_id = b.bin_id
                  AND e.ts >= %s - interval '3 days')
            ORDER BY b.bin_id
            """,
            (now,),
        ).fetchall()
        depots = [s for s in load_sites(conn) if s.kind == "depot"]
        closures = load_closures(conn, valid_at_or_after=now)
    roads, _ = apply_closures(network, closures, now)
    homes = [network.nearest_node(d.lat, d.lon) for d in depots]
    candidates = [(str(b), str(s), cast(float, la), cast(float, lo)) for b, s, la, lo in rows]
    reachable = (
        (bin_id, sensor)
        for bin_id, sensor, lat, lon in candidates
        if np.isfinite(roads.matrix(homes, [node := network.nearest_node(lat, lon)])).any()
        and np.isfinite(roads.matrix([node], homes)).any()
    )
    picked = next(reachable, None)
    if picked is None:
        return "no bin outside today's routes that a truck can reach to overflow"
    bin_id, sensor = picked
    reading = BinTelemetry(ts=datetime.now(UTC), fill_pct=98.0, battery_pct=80.0)
    client = make_client(settings, f"cityops-demo-incident-{os.getpid()}")
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    try:
        topic = device_topic(settings.topic_prefix, DeviceKind.BIN, sensor, Channel.TELEMETRY)
        client.publish(topic, reading.model_dump_json(exclude_none=True), qos=1).wait_for_publish(
            10
        )
    finally:
        client.disconnect()
        client.loop_stop()
    return f"bin {bin_id} (sensor {sensor}) reports 98 % on {topic}"


def demo_token(settings: Settings, env: dict[str, str]) -> tuple[str, str]:
    """A dispatcher token for the demo, and where its signing secret comes from.

    Without CITYOPS_AUTH_JWT_SECRET the demo makes a random secret for this run and hands
    it to the API process in its environment (nothing is written to disk): tokens of one
    demo run do not work in the next.
    """
    from pydantic import SecretStr

    from cityops.api.security import AuthConfig, issue_token

    if settings.auth_jwt_secret is None:
        secret = secrets.token_urlsafe(48)
        env["CITYOPS_AUTH_JWT_SECRET"] = secret
        settings = settings.model_copy(update={"auth_jwt_secret": SecretStr(secret)})
        note = "CITYOPS_AUTH_JWT_SECRET is not set: this run signs tokens with a random one."
    else:
        note = "Tokens are signed with CITYOPS_AUTH_JWT_SECRET."
    token = issue_token(
        AuthConfig.from_settings(settings),
        "demo-dispatcher",
        ["dispatcher"],
        ttl=timedelta(hours=12),
    )
    return token, note


def engineer_token(settings: Settings, env: dict[str, str]) -> str:
    """A traffic engineer token signed like the dispatcher's (after `demo_token`), for
    switching adaptive control off and on in the demo."""
    from pydantic import SecretStr

    from cityops.api.security import AuthConfig, issue_token

    secret = env.get("CITYOPS_AUTH_JWT_SECRET")
    if secret:
        settings = settings.model_copy(update={"auth_jwt_secret": SecretStr(secret)})
    return issue_token(
        AuthConfig.from_settings(settings),
        "demo-traffic-engineer",
        ["traffic_engineer"],
        ttl=timedelta(hours=12),
    )


def traffic_banner(
    traffic: TrafficLoop | None,
    history: tuple[float, float] | None,
    base: str,
    engineer: str,
) -> tuple[str, str]:
    """The start-up text of the traffic loop: where to look, and how to switch control."""
    if traffic is None:
        return "", ""
    first = (
        f"\n                   first {history[1] / 60:.0f} min of fixed-time grid traffic "
        "replayed in fast-forward, so the measures have bins at once"
        if history is not None
        else ""
    )
    junction = traffic.controllers[len(traffic.controllers) // 2]
    where = (
        f"  traffic loop     SUMO {traffic.grid}x{traffic.grid} grid, {traffic.vph:g} veh/h in "
        "real time -> ingest -> measures; adaptive control -> cmd/timing"
        f"{first}\n"
        f"  signals          {base}/api/v1/traffic/controllers\n"
        f"  control modes    {base}/api/v1/traffic/control/modes\n"
        f"  measures         {base}/api/v1/traffic/controllers/{junction}/measures\n"
        "  dashboard        Grafana 'Traffic signals' (deploy/grafana, docs/dashboards.md)\n"
    )
    switch = (
        "  A traffic engineer token, to switch adaptive control off at one junction\n"
        "  (its controller goes back to its own fixed-time plan) and on again:\n"
        f"    export ENGINEER={engineer}\n"
        '    curl -X PUT -H "Authorization: Bearer $ENGINEER" '
        "-H 'Content-Type: application/json' \\\n"
        f'      -d \'{{"mode": "fixed", "reason": "demo"}}\' '
        f"{base}/api/v1/traffic/control/modes/{junction}\n"
    )
    return where, switch
