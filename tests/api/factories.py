"""Plain functions that insert registry and time-series rows for API tests."""

from __future__ import annotations

from datetime import datetime

import psycopg

Conn = psycopg.Connection[tuple[object, ...]]


def add_bin(
    conn: Conn,
    bin_id: str,
    *,
    lon: float = 8.40,
    lat: float = 49.01,
    sensor_id: str | None = None,
    street: str = "Kaiserstraße",
    house_number: str | None = "1",
    district: str | None = "Innenstadt-West",
    fraction: str = "residual",
    capacity_l: int = 1100,
) -> None:
    conn.execute(
        """
        INSERT INTO bins (bin_id, sensor_id, geom, street, house_number, district,
                          capacity_l, fraction)
        VALUES (%s, %s, ST_SetSRID(ST_MakePoint(%s, %s), 4326), %s, %s, %s, %s, %s)
        """,
        (bin_id, sensor_id, lon, lat, street, house_number, district, capacity_l, fraction),
    )


def set_bin_state(
    conn: Conn,
    bin_id: str,
    ts: datetime,
    fill_pct: float,
    *,
    temperature_c: float | None = 18.5,
    battery_pct: float | None = 90.0,
    tilt: bool = False,
    fault: str | None = None,
) -> None:
    conn.execute(
        """
        INSERT INTO bin_state (bin_id, ts, fill_pct, temperature_c, battery_pct, tilt, fault)
        VALUES (%s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (bin_id) DO UPDATE SET ts = EXCLUDED.ts, fill_pct = EXCLUDED.fill_pct,
            temperature_c = EXCLUDED.temperature_c, battery_pct = EXCLUDED.battery_pct,
            tilt = EXCLUDED.tilt, fault = EXCLUDED.fault
        """,
        (bin_id, ts, fill_pct, temperature_c, battery_pct, tilt, fault),
    )


def add_reading(
    conn: Conn,
    bin_id: str,
    ts: datetime,
    fill_pct: float,
    *,
    sensor_id: str = "S-test",
    temperature_c: float | None = 18.0,
) -> None:
    conn.execute(
        "INSERT INTO bin_readings (bin_id, ts, sensor_id, fill_pct, temperature_c) "
        "VALUES (%s, %s, %s, %s, %s)",
        (bin_id, ts, sensor_id, fill_pct, temperature_c),
    )


def add_depot(conn: Conn, site_id: str = "DEPOT-1") -> None:
    conn.execute(
        "INSERT INTO sites (site_id, name, kind, geom) "
        "VALUES (%s, 'Betriebshof', 'depot', ST_SetSRID(ST_MakePoint(8.35, 49.0), 4326))",
        (site_id,),
    )


def add_truck(conn: Conn, truck_id: str, *, depot_id: str = "DEPOT-1") -> None:
    conn.execute(
        "INSERT INTO trucks (truck_id, name, capacity_l, depot_id) VALUES (%s, %s, 20000, %s)",
        (truck_id, f"Truck {truck_id}", depot_id),
    )


def add_controller(conn: Conn, controller_id: str) -> None:
    conn.execute(
        "INSERT INTO signal_controllers (controller_id, name, geom) "
        "VALUES (%s, %s, ST_SetSRID(ST_MakePoint(8.41, 49.01), 4326))",
        (controller_id, f"Kreuzung {controller_id}"),
    )


def set_device_status(
    conn: Conn,
    kind: str,
    device_id: str,
    *,
    state: str | None = None,
    state_ts: datetime | None = None,
    last_seen: datetime | None = None,
) -> None:
    conn.execute(
        "INSERT INTO device_status (kind, device_id, state, state_ts, last_seen) "
        "VALUES (%s, %s, %s, %s, %s)",
        (kind, device_id, state, state_ts, last_seen),
    )


def add_dead_letter(conn: Conn, topic: str, payload: bytes, reason: str) -> None:
    conn.execute(
        "INSERT INTO dead_letters (topic, payload, payload_sha256, reason, detail) "
        "VALUES (%s, %s, sha256(%s), %s, 'test')",
        (topic, payload, payload, reason),
    )
