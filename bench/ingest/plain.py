"""The plain zero-loss baseline: what a careful user writes in an hour without the ingest.

paho with MQTT 3.1.1, a persistent session (clean session false), QoS 1 and manual
acknowledgement. `on_message` parses the JSON into a row and queues it; a writer thread
takes up to 2,000 rows or what arrives within 100 ms, COPYs them into a temporary table,
merges them into bin_readings with `INSERT ... SELECT ... ON CONFLICT DO NOTHING` on the
natural key (bin_id, ts), commits, and only then acknowledges the batch's messages. The
broker sends a 3.1.1 client at most `max_inflight_messages` unacknowledged messages (100 in
deploy/mosquitto/conf.d), so a batch holding that many is written at once instead of
waiting for messages that cannot come. No contract validation, latest state, last seen or
dead letters: it does less per message than the ingest.

Run by `run.py` as its own process; prints `ready` once subscribed.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import sys
import threading
import time
import traceback
from types import FrameType
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

_COLS = "bin_id, ts, sensor_id, fill_pct, temperature_c, battery_pct"
_MERGE = (
    f"INSERT INTO bin_readings ({_COLS}, ingested_at) SELECT {_COLS}, clock_timestamp() "
    "FROM stage ON CONFLICT DO NOTHING"
)
Item = tuple[int, int, tuple[object, ...]]  # connection number, message id, row


def write_batches(conn: psycopg.Connection[Any], items: queue.Queue[Item],
                  client: mqtt.Client, link: list[int], max_rows: int) -> None:
    """The writer thread: batch, COPY, merge, COMMIT, then acknowledge."""
    conn.execute(
        "CREATE TEMP TABLE stage (LIKE bin_readings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    conn.commit()
    while True:
        batch = [items.get()]
        deadline = time.monotonic() + 0.1
        while len(batch) < max_rows and (left := deadline - time.monotonic()) > 0:
            try:
                batch.append(items.get(timeout=left))
            except queue.Empty:
                break
        with conn.cursor() as cur, cur.copy(f"COPY stage ({_COLS}) FROM STDIN") as copy:
            for _, _, row in batch:
                copy.write_row(row)
        conn.execute(_MERGE)
        conn.commit()
        for gen, mid, _ in batch:
            if gen == link[0]:  # ids of an earlier connection mean nothing on this one
                client.ack(mid, 1)


def writer(*args: Any) -> None:
    """The writer thread; the process ends with it, loudly, rather than stop acknowledging."""
    try:
        write_batches(*args)
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--max-inflight", type=int, default=100,
                        help="the broker's max_inflight_messages (run.py passes the shipped "
                        "conf.d's) [100]")
    args = parser.parse_args()

    conn = psycopg.connect(args.database_url, application_name=args.client_id)
    bins = {str(s): str(b) for s, b in conn.execute("SELECT sensor_id, bin_id FROM bins")}
    conn.commit()
    items: queue.Queue[Item] = queue.Queue()
    link = [0]  # connection number, bumped on every CONNACK

    def on_connect(client: mqtt.Client, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        link[0] += 1
        client.subscribe(f"{args.prefix}/v1/bin/+/telemetry", qos=1)

    def on_subscribe(_c: Any, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        print("ready", flush=True)

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        sensor = msg.topic.split("/")[3]
        d = json.loads(msg.payload)
        row = (bins[sensor], d["ts"], sensor, d["fill_pct"], d.get("temperature_c"),
               d.get("battery_pct"))
        items.put((link[0], msg.mid, row))

    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                         client_id=args.client_id, protocol=mqtt.MQTTv311,
                         clean_session=False, manual_ack=True)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    max_rows = min(2000, args.max_inflight)
    threading.Thread(target=writer, args=(conn, items, client, link, max_rows),
                     daemon=True, name="writer").start()

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        client.disconnect()

    signal.signal(signal.SIGTERM, on_term)
    client.connect(args.host, args.port)
    client.loop_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
