"""Fault injection: one message that the contract accepts but the database refuses, in a
stream of good ones, on every channel. The good ones are stored, the bad one is dead-lettered
with the database's reason, every message is acknowledged (a restarted ingest on the same
session gets nothing again), and nothing is lost or stored twice.

The refusal is real: a CHECK constraint added to this test's database refuses one value,
as PostgreSQL refuses a NUL in text or a number out of a column's range.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import psycopg
import pytest

from cityops.ingest.config import Settings
from cityops.ingest.contract import text_problem
from cityops.ingest.writer import is_poison
from tests.support.ingest import (
    T0,
    Publisher,
    add_bins,
    add_signal,
    add_truck,
    count,
    running_ingest,
    wait_for,
)

GOOD = 40
POISON_AT = 17  # published between the good ones, so that it shares their batch


def _ts(i: int) -> str:
    return (T0 + timedelta(seconds=i)).isoformat()


@dataclass(frozen=True)
class Channel:
    topic: str  # under the prefix
    constraint: str  # refuses the poison value
    good: Callable[[int], dict[str, object]]
    poison: dict[str, object]
    stored: str  # counts what the good messages stored
    expected: int


CHANNELS = {
    "bin telemetry": Channel(
        "v1/bin/S-B1/telemetry",
        "ALTER TABLE bin_readings ADD CONSTRAINT poison CHECK (fill_pct <> 13.25)",
        lambda i: {"ts": _ts(i), "fill_pct": 50.0},
        {"ts": _ts(1000), "fill_pct": 13.25},
        "SELECT count(*) FROM bin_readings WHERE bin_id = 'B1'",
        GOOD,
    ),
    "signal events": Channel(
        "v1/signal/K1/events",
        "ALTER TABLE signal_events ADD CONSTRAINT poison CHECK (param <> 254)",
        lambda i: {"events": [{"ts": _ts(i), "code": 82, "param": 3}]},
        {"events": [{"ts": _ts(1000), "code": 82, "param": 254}]},
        "SELECT count(*) FROM signal_events",
        GOOD,
    ),
    "truck telemetry": Channel(
        "v1/truck/T1/telemetry",
        "ALTER TABLE truck_positions ADD CONSTRAINT poison CHECK (speed_kmh <> 66.5)",
        lambda i: {"ts": _ts(i), "lat": 50.1, "lon": 8.76, "speed_kmh": 20.0},
        {"ts": _ts(1000), "lat": 50.1, "lon": 8.76, "speed_kmh": 66.5},
        "SELECT count(*) FROM truck_positions",
        GOOD,
    ),
    "truck events": Channel(
        "v1/truck/T1/events",
        "ALTER TABLE truck_events ADD CONSTRAINT poison "
        "CHECK (reason IS DISTINCT FROM 'Zufahrt <b>zugeparkt</b>')",
        lambda i: {"ts": _ts(i), "kind": "stop_skipped", "bin_id": "B1", "reason": "zugeparkt"},
        {"ts": _ts(1000), "kind": "stop_skipped", "bin_id": "B1",
         "reason": "Zufahrt <b>zugeparkt</b>"},
        "SELECT count(*) FROM truck_events",
        GOOD,
    ),
    "status": Channel(
        "v1/bin/S-B2/status",
        f"ALTER TABLE device_status ADD CONSTRAINT poison "
        f"CHECK (state_ts IS DISTINCT FROM '{_ts(1000)}')",
        lambda i: {"state": "online" if i % 2 else "offline", "ts": _ts(i)},
        {"state": "online", "ts": _ts(1000)},
        # every good status was merged: the device shows the newest of them
        f"SELECT count(*) FROM device_status WHERE device_id = 'S-B2' "
        f"AND state_ts = '{_ts(GOOD - 1)}' AND state = 'online'",
        1,
    ),
}


@pytest.mark.parametrize("name", list(CHANNELS))
def test_one_unstorable_message_is_dead_lettered_and_the_others_are_stored(
    name: str, settings: Settings, db_url: str
) -> None:
    channel = CHANNELS[name]
    add_bins(db_url, 3)
    add_signal(db_url, "K1")
    add_truck(db_url, "T1")
    with psycopg.connect(db_url) as conn:
        conn.execute(channel.constraint)
    # a long flush window: the poison and the good messages around it form one batch
    s = settings.model_copy(update={"ingest_flush_ms": 500, "ingest_batch_size": 500})
    topic = f"{s.topic_prefix}/{channel.topic}"
    poison = json.dumps(channel.poison).encode()
    pub = Publisher(s.mqtt_host, s.mqtt_port)
    with running_ingest(s) as service:
        for i in range(GOOD):
            if i == POISON_AT:
                pub.publish(topic, poison)
            pub.publish(topic, json.dumps(channel.good(i)).encode())
        pub.wait_all()
        wait_for(
            lambda: count(db_url, "SELECT count(*) FROM dead_letters") == 1,
            what="the poison message dead-lettered",
        )
        wait_for(lambda: count(db_url, channel.stored) == channel.expected, what="good rows")
        assert service.running
        assert service.metrics.totals["received"] == GOOD + 1
    with psycopg.connect(db_url) as conn:
        letter = conn.execute(
            "SELECT topic, payload, reason, detail FROM dead_letters"
        ).fetchone()
    assert letter is not None
    assert letter[0] == topic and bytes(letter[1]) == poison
    assert letter[2] == "unstorable"
    assert 'violates check constraint "poison"' in letter[3]

    # Everything was acknowledged: the same session, resumed, receives only what is new.
    sentinel_topic = f"{s.topic_prefix}/v1/bin/S-B3/telemetry"
    with running_ingest(s) as service:
        pub.publish(sentinel_topic, json.dumps({"ts": _ts(2000), "fill_pct": 1.0}).encode())
        pub.wait_all()
        wait_for(
            lambda: count(db_url, "SELECT count(*) FROM bin_readings WHERE bin_id = 'B3'") == 1,
            what="the message after the restart",
        )
        assert service.metrics.totals["received"] == 1, "something was redelivered"
    pub.close()
    assert count(db_url, channel.stored) == channel.expected
    assert count(db_url, "SELECT count(*) FROM dead_letters") == 1


def test_a_nul_in_a_truck_event_is_refused_by_the_contract_not_the_database() -> None:
    """The case that stalled the ingest: NUL is now invalid in every contract string."""
    assert text_problem("blocked\x00access") is not None
    assert text_problem("Zufahrt\tzugeparkt\n") is None
    assert text_problem("x\ud800") is not None


def test_only_data_errors_count_as_poison(db_url: str) -> None:
    """What the database says about the data is poison; what it says about itself is not."""
    with psycopg.connect(db_url) as conn:
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("SELECT 'x'::int")
        assert is_poison(refused.value)  # 22P02
        conn.rollback()
        with pytest.raises(psycopg.Error) as missing:
            conn.execute("SELECT * FROM no_such_table")
        assert not is_poison(missing.value)  # 42P01: a deployment error, retried
        conn.rollback()
        with pytest.raises(psycopg.Error) as nul:
            conn.execute("SELECT %s::text", ("a\x00b",))
        assert is_poison(nul.value)  # psycopg refuses it before the server sees it
    with pytest.raises(psycopg.OperationalError) as down:
        psycopg.connect("postgresql://nobody@127.0.0.1:1/x", connect_timeout=2)
    assert not is_poison(down.value)
