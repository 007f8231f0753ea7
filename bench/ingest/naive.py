"""The naive baseline: what a user would write without the ingest service.

A paho subscriber (MQTT 3.1.1 defaults, QoS 1, clean session) that does one INSERT with
autocommit per message from its `on_message` callback; paho acknowledges each message after
the callback returned, i.e. after the commit, so it is at-least-once like the ingest. It
does less work than the ingest per message (plain `json.loads`, no contract validation, no
latest-state or last-seen upserts), so the ingest/baseline ratio is if anything too low.

Run by `run.py` as its own process; prints `ready` once subscribed.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from types import FrameType
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

_INSERT = (
    "INSERT INTO bin_readings (bin_id, ts, sensor_id, fill_pct, temperature_c, battery_pct, "
    "ingested_at) VALUES (%s, %s, %s, %s, %s, %s, clock_timestamp()) ON CONFLICT DO NOTHING"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--client-id", required=True)
    args = parser.parse_args()

    conn = psycopg.connect(args.database_url, autocommit=True, application_name=args.client_id)
    bins = {str(s): str(b) for s, b in conn.execute("SELECT sensor_id, bin_id FROM bins")}

    def on_connect(client: mqtt.Client, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        client.subscribe(f"{args.prefix}/v1/bin/+/telemetry", qos=1)

    def on_subscribe(_c: Any, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        print("ready", flush=True)

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        sensor = msg.topic.split("/")[3]
        data = json.loads(msg.payload)
        conn.execute(
            _INSERT,
            (
                bins[sensor],
                data["ts"],
                sensor,
                data["fill_pct"],
                data.get("temperature_c"),
                data.get("battery_pct"),
            ),
        )

    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=args.client_id)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        client.disconnect()

    signal.signal(signal.SIGTERM, on_term)
    client.connect(args.host, args.port)
    client.loop_forever()
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
