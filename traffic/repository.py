"""SQL for the traffic measures: a controller's registry rows and its stored events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from .errors import UnknownController
from .events import ControllerConfig, DetectorConfig, DetectorKind, Event, PhaseConfig

__all__ = ["load_config", "load_events"]

Connection = psycopg.Connection[Any]


def load_config(conn: Connection, controller_id: str) -> ControllerConfig:
    """The controller's phases and detectors, or raise `UnknownController`."""
    if conn.execute(
        "SELECT 1 FROM signal_controllers WHERE controller_id = %s", (controller_id,)
    ).fetchone() is None:
        raise UnknownController(controller_id)
    phases = [
        PhaseConfig(int(r[0]), int(r[1]), str(r[2]), float(r[3]), float(r[4]), float(r[5]),
                    float(r[6]), float(r[7]))
        for r in conn.execute(
            "SELECT phase, seq, movement, min_green_s, max_green_s, fixed_green_s, yellow_s,"
            " red_clearance_s FROM signal_phases WHERE controller_id = %s ORDER BY seq, phase",
            (controller_id,),
        )
    ]
    detectors = [
        DetectorConfig(int(r[0]), int(r[1]), _kind(str(r[2])),
                       None if r[3] is None else int(r[3]), float(r[4]))
        for r in conn.execute(
            "SELECT channel, phase, kind, lane, distance_m FROM signal_detectors"
            " WHERE controller_id = %s ORDER BY channel",
            (controller_id,),
        )
    ]
    return ControllerConfig.of(controller_id, phases, detectors)


def _kind(kind: str) -> DetectorKind:
    if kind == "stop_bar":
        return "stop_bar"
    if kind == "advance":
        return "advance"
    if kind == "count":
        return "count"
    if kind == "pedestrian":
        return "pedestrian"
    raise ValueError(f"unknown detector kind {kind!r}")


def load_events(
    conn: Connection, controller_id: str, start: datetime, end: datetime
) -> list[Event]:
    """The stored events in `[start, end)`, in time order (ties by code, then param)."""
    rows = conn.execute(
        "SELECT ts, code, param FROM signal_events WHERE controller_id = %s"
        " AND ts >= %s AND ts < %s ORDER BY ts, code, param",
        (controller_id, start, end),
    )
    return [Event(r[0].timestamp(), int(r[1]), int(r[2])) for r in rows]
