"""`cityops deadletters list|replay`: see why messages were refused and feed them back."""

from __future__ import annotations

import logging
import uuid
from typing import cast

from cityops.ingest.config import Settings
from cityops.ingest.db import connect
from cityops.ingest.mqttclient import make_client

__all__ = ["print_summary", "replay"]

logger = logging.getLogger(__name__)


def print_summary(settings: Settings, *, limit: int) -> int:
    with connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT reason, count(*), max(received_at) FROM dead_letters "
            "WHERE replayed_at IS NULL GROUP BY reason ORDER BY count(*) DESC"
        ).fetchall()
        if not rows:
            print("no dead letters")
            return 0
        print(f"{'reason':<22} {'count':>8}  newest (UTC)")
        for reason, count, newest in rows:
            print(f"{reason!s:<22} {count:>8,}  {newest:%Y-%m-%d %H:%M:%S}")
        print()
        for rid, at, topic, reason, detail in conn.execute(
            "SELECT id, received_at, topic, reason, detail FROM dead_letters "
            "WHERE replayed_at IS NULL ORDER BY id DESC LIMIT %s",
            (limit,),
        ):
            print(f"#{rid} {at:%Y-%m-%d %H:%M:%S} {topic}\n    {reason}: {detail}")
    return 0


def replay(settings: Settings, *, reason: str, limit: int) -> int:
    """Re-publish stored payloads at QoS 1; marked replayed once the broker acknowledged."""
    client = make_client(settings, f"cityops-replay-{uuid.uuid4().hex[:8]}")
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    replayed = 0
    try:
        with connect(settings.database_url) as conn:
            rows = conn.execute(
                "SELECT id, topic, payload FROM dead_letters WHERE reason = %s AND replayed_at IS "
                "NULL ORDER BY id LIMIT %s",
                (reason, limit),
            ).fetchall()
            for rid, topic, payload in rows:
                info = client.publish(str(topic), cast(bytes, payload), qos=1)
                info.wait_for_publish(timeout=10)
                if not info.is_published():
                    logger.error("broker did not acknowledge dead letter #%s; stopping", rid)
                    break
                # The replayed copy may fail again and must then be stored anew: free its key.
                conn.execute(
                    "UPDATE dead_letters SET replayed_at = now(), "
                    "payload_sha256 = sha256(payload || int8send(id)) WHERE id = %s",
                    (rid,),
                )
                conn.commit()
                replayed += 1
    finally:
        client.disconnect()
        client.loop_stop()
    print(f"replayed {replayed} dead letters with reason {reason!r}")
    return 0
