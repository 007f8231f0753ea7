"""The traffic closed loop of `cityops demo`: a SUMO grid under adaptive control.

Three child processes of the demo close the loop of issue #5 on a small grid:

* `cityops traffic sumo --clock realtime`: the SUMO grid's controllers publish their
  Indiana events (phase changes, detector on/off) over MQTT and obey `cmd/timing`;
* `cityops traffic control --clock wall`: max-pressure decisions from those events, sent
  back as timing commands to the grid's controllers (and only to them: the demo city's
  emulated signals run their own plans);
* `cityops traffic measures-service`: 15-minute measures from the events the demo's
  ingest stored.

A 15-minute bin is stored once the controller's clock is 5 minutes past its end, so a live
run alone shows its first bin after 20 minutes or more. The demo therefore first replays
`history_min` minutes of the grid on its own fixed-time plans in fast-forward (a one-shot
`cityops traffic sumo --clock lockstep`, announced as such), ending where the live run
begins: the measures have bins at once, and the live bins under adaptive control join
them every 15 minutes. A repeated demo only replays what the database does not yet hold.

Everything SUMO-specific is imported lazily: without SUMO `unavailable()` says why, and
the demo runs without this part.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from cityops.ingest.config import Settings
from cityops.ingest.contract import CONTRACT_VERSION, DeviceKind
from cityops.ingest.db import connect
from cityops.ingest.mqttclient import make_client

__all__ = [
    "DEFAULT_HISTORY_MIN",
    "DEFAULT_VPH",
    "CommandWatch",
    "TrafficLoop",
    "controller_modes",
    "history_window",
    "loop_status",
    "seed_grid_registry",
    "unavailable",
]

logger = logging.getLogger(__name__)

_MODE_NAMES = {1: "own plan", 2: "plan", 3: "adaptive"}

#: A moderate demand for a 3x3 grid of two-lane streets (the benchmark runs 3,600 and 4,800).
DEFAULT_VPH = 2400.0
DEFAULT_HISTORY_MIN = 45.0


@dataclass(frozen=True, slots=True)
class TrafficLoop:
    """How the demo runs the loop; `controllers` are the grid's ids once seeded."""

    grid: int = 3
    vph: float = DEFAULT_VPH
    seed: int = 1
    history_min: float = DEFAULT_HISTORY_MIN
    decision_interval_s: float = 2.0
    #: commands stay valid this long (the service's default): the wall clock's `issued_at`
    #: is each controller's estimated time, so a quiet junction keeps getting fresh
    #: commands, and the controllers are back on their own plans 10 s after the service dies
    valid_for_s: float = 10.0
    measures_interval_s: float = 30.0
    work_dir: Path = field(
        default_factory=lambda: Path(tempfile.gettempdir()) / f"cityops-demo-sumo-{os.getuid()}"
    )
    controllers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.grid <= 10 or self.vph < 0 or self.history_min < 0:
            raise ValueError("grid must be 1..10, vph and history_min not negative")

    def sim_args(self, duration_s: float, start: float | None = None) -> list[str]:
        """`cityops traffic sumo` arguments after the executable: live (real time, commands
        obeyed) without `start`, else a fast-forward fixed-time replay from `start`."""
        common = [
            "traffic",
            "sumo",
            "--grid",
            str(self.grid),
            "--vph",
            f"{self.vph:g}",
            "--seed",
            str(self.seed),
            "--duration",
            f"{duration_s:g}",
            "--work-dir",
            str(self.work_dir),
        ]
        if start is None:
            return [*common, "--control", "fixed", "--clock", "realtime"]
        return [
            *common,
            "--control",
            "fixed",
            "--clock",
            "lockstep",
            "--start",
            datetime.fromtimestamp(start, UTC).isoformat(),
        ]

    def control_args(self) -> list[str]:
        return [
            "traffic",
            "control",
            "--clock",
            "wall",
            "--decision-interval",
            f"{self.decision_interval_s:g}",
            "--valid-for",
            f"{self.valid_for_s:g}",
            "--controllers",
            ",".join(self.controllers),
            "--summary-every",
            "30",
        ]

    def measures_args(self) -> list[str]:
        return ["traffic", "measures-service", "--interval", f"{self.measures_interval_s:g}"]


def unavailable() -> str | None:
    """Why the SUMO loop cannot run here (None when it can)."""
    missing = [m for m in ("sumo", "sumolib", "libsumo") if importlib.util.find_spec(m) is None]
    if missing:
        return (
            f"SUMO is not installed (no {', '.join(missing)}; it comes with "
            "`pip install eclipse-sumo libsumo`, part of the project's dependencies)"
        )
    from cityops.simulators.sumo.network import sumo_binary

    for tool in ("netgenerate", "sumo"):
        if not Path(sumo_binary(tool)).exists():
            return f"the SUMO tool {tool} is missing from the eclipse-sumo package"
    return None


def seed_grid_registry(database_url: str, loop: TrafficLoop) -> tuple[str, ...]:
    """Generate the grid (cached in `loop.work_dir`) and upsert its controllers, phases and
    detectors into the registry (idempotent); returns the controller ids."""
    from cityops.simulators.sumo.network import GridSpec, build_grid, intersections
    from cityops.simulators.sumo.registry import seed_grid

    spec = GridSpec(size=loop.grid)
    junctions = intersections(spec, build_grid(spec, loop.work_dir, "static"))
    with connect(database_url) as conn:
        seed_grid(conn, spec, junctions)
    return tuple(j.controller_id for j in junctions)


def history_window(
    database_url: str, controllers: tuple[str, ...], now: float, minutes: float
) -> tuple[float, float] | None:
    """`(start, seconds)` of the replay ending at `now`: `minutes` back, but not before
    the newest event already stored for the grid (a repeated demo does not overlay its
    earlier runs); None when less than a minute is left to replay."""
    if minutes <= 0:
        return None
    start = math.floor(now - minutes * 60.0)
    with connect(database_url) as conn:
        row = conn.execute(
            "SELECT max(ts) FROM signal_events WHERE controller_id = ANY(%s)",
            (list(controllers),),
        ).fetchone()
    newest = row[0] if row is not None else None
    if isinstance(newest, datetime):
        start = max(start, math.floor(newest.timestamp()) + 1)
    span = math.floor(now) - start
    return (float(start), float(span)) if span >= 60 else None


class CommandWatch:
    """Counts the timing commands on `{prefix}/v1/signal/+/cmd/timing` (what the control
    service sends; the controllers' answer shows in their event 131)."""

    def __init__(self, settings: Settings, client_id: str) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._topic = (
            f"{settings.topic_prefix}/{CONTRACT_VERSION}/{DeviceKind.SIGNAL.value}/+/cmd/timing"
        )
        self._client = make_client(settings, client_id)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.connect_async(settings.mqtt_host, settings.mqtt_port, keepalive=60)
        self._client.loop_start()

    def _on_connect(
        self, client: mqtt.Client, _ud: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if not reason.is_failure:
            client.subscribe(self._topic, qos=0)

    def _on_message(self, _client: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            data = json.loads(msg.payload)
            kind = str(data.get("action") or data["mode"])
        except (ValueError, KeyError, TypeError, AttributeError):
            kind = "unreadable"
        with self._lock:
            self._counts[kind] += 1

    def take(self) -> Counter[str]:
        """The counts since the previous call."""
        with self._lock:
            out, self._counts = self._counts, Counter()
        return out

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def controller_modes(conn: Any, controllers: list[str]) -> dict[str, str]:
    """The mode each controller reports in its latest stored event 131: `own plan`, `plan`,
    `adaptive`, or `none` before the first. Two changes in the same tenth of a second are
    stored without their order (and a repeated one only once); the lower pattern is read
    then, so `adaptive` is never overstated."""
    rows = conn.execute(
        """
        SELECT c.cid, e.param FROM unnest(%s::text[]) AS c(cid)
        LEFT JOIN LATERAL (
            SELECT param FROM signal_events
            WHERE controller_id = c.cid AND code = 131 ORDER BY ts DESC, param LIMIT 1
        ) e ON true
        """,
        (controllers,),
    ).fetchall()
    return {
        str(cid): "none" if param is None else _MODE_NAMES.get(param, f"pattern {param}")
        for cid, param in rows
    }


def _measures(conn: Any, controllers: list[str]) -> str:
    row = conn.execute(
        """
        WITH latest AS (
            SELECT controller_id, max(bin_start) AS bin_start FROM signal_measures
            WHERE controller_id = ANY(%s) GROUP BY 1)
        SELECT (SELECT count(DISTINCT (controller_id, bin_start)) FROM signal_measures
                WHERE controller_id = ANY(%s)),
               max(l.bin_start),
               100.0 * sum(m.arrivals_on_green) / nullif(sum(m.arrivals_in_cycles), 0)
        FROM latest l JOIN signal_measures m USING (controller_id, bin_start)
        """,
        (controllers, controllers),
    ).fetchone()
    if row is None or not row[0]:
        return "measures: no complete 15-min bin yet"
    bins, newest, aog = row
    aog_text = f"{aog:.0f}%" if aog is not None else "-"
    return f"measures: {bins} bins stored, latest {newest:%H:%M} UTC: arrivals on green {aog_text}"


def loop_status(database_url: str, controllers: tuple[str, ...], commands: Counter[str]) -> str:
    """One status line: commands since the last line, the controllers' reported modes
    (event 131 as stored by the ingest) and the stored measures of the grid."""
    sent = sum(commands.values())
    detail = ", ".join(f"{k} {n}" for k, n in sorted(commands.items()))
    parts = [f"timing commands {sent}" + (f" ({detail})" if detail else "")]
    try:
        with connect(database_url) as conn:
            modes = Counter(controller_modes(conn, list(controllers)).values())
            parts.append(
                "controllers "
                + ", ".join(f"{n} {m}" for m, n in sorted(modes.items(), key=lambda x: -x[1]))
            )
            parts.append(_measures(conn, list(controllers)))
    except Exception as exc:  # status output only
        parts.append(f"database not reachable: {exc}")
    return "traffic loop: " + "; ".join(parts)
