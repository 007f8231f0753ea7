"""Mosquitto's dynamic-security plugin with the file `cityops mqtt credentials` writes, on a
real broker: the same users and topics as the acl_file set-up, and what acl_file cannot
do, refusing subscriptions. Without it any device account could join the ingest's shared
subscription and take a share of every device's messages, which the broker then drops
silently (issue 14); the acl_file case below shows that loss on the same broker.
"""

from __future__ import annotations

import json
import queue
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityops.ingest.config import Settings
from cityops.ingest.mqttauth import verify_password
from tests.support.brokers import MosquittoProcess, start_mosquitto
from tests.support.clock import NOW
from tests.support.ingest import count, running_ingest, wait_for
from tests.support.mqttauth import Registry
from tests.support.mqttauth import generate as _generate

PLUGINS = (
    Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"),
    Path("/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so"),
    Path("/usr/lib/mosquitto_dynamic_security.so"),
)
PLUGIN = next((p for p in PLUGINS if p.exists()), None)
TIMEOUT_S = 5.0
NOT_AUTHORIZED = 0x87
MESSAGES = 40

pytestmark = pytest.mark.skipif(
    PLUGIN is None, reason="Mosquitto's dynamic-security plugin is not installed"
)


def _broker(registry: Registry, tmp_path: Path, *, dynsec: bool) -> MosquittoProcess:
    assert _generate(registry) == 0
    auth = (
        [f"plugin {PLUGIN}", f"plugin_opt_config_file {registry.out / 'dynamic-security.json'}"]
        if dynsec
        else [
            f"password_file {registry.out / 'cityops.passwd'}",
            f"acl_file {registry.out / 'cityops.acl'}",
        ]
    )
    return start_mosquitto(
        tmp_path / "mosquitto", include_dir=None, options=["allow_anonymous false", *auth]
    )


@pytest.fixture
def dynsec(registry: Registry, tmp_path: Path) -> Iterator[MosquittoProcess]:
    broker = _broker(registry, tmp_path, dynsec=True)
    try:
        yield broker
    finally:
        broker.stop()


class Client:
    """A paho client of one account that reports SUBACK and PUBACK reason codes."""

    def __init__(self, broker: MosquittoProcess, registry: Registry, user: str) -> None:
        self.acks: queue.Queue[list[int]] = queue.Queue()
        self.connack: queue.Queue[int] = queue.Queue()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set(user, registry.secrets[user])
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connack.put(rc.value)
        self.client.on_subscribe = lambda _c, _u, _m, rcs, _p: self.acks.put(
            [rc.value for rc in rcs]
        )
        self.client.on_publish = lambda _c, _u, _m, rc, _p: self.acks.put([rc.value])
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert self.connack.get(timeout=TIMEOUT_S) == 0, f"{user} could not connect"

    def subscribe(self, topic: str) -> int:
        self.client.subscribe(topic, qos=1)
        return self.acks.get(timeout=TIMEOUT_S)[0]

    def publish(self, topic: str, payload: bytes) -> int:
        self.client.publish(topic, payload, qos=1).wait_for_publish(TIMEOUT_S)
        return self.acks.get(timeout=TIMEOUT_S)[0]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_the_file_holds_the_password_files_users_and_refuses_by_default(
    registry: Registry,
) -> None:
    assert _generate(registry) == 0
    config = json.loads((registry.out / "dynamic-security.json").read_text())
    assert config["defaultACLAccess"] == {
        "publishClientSend": False, "publishClientReceive": False,
        "subscribe": False, "unsubscribe": True,
    }
    secrets = registry.secrets
    assert {c["username"] for c in config["clients"]} == set(secrets)
    for c in config["clients"]:  # the same PBKDF2 hash as in the password file
        encoded = f"$7${c['iterations']}${c['salt']}${c['password']}"
        assert verify_password(secrets[c["username"]], encoded)
    shared = {
        r["rolename"] for r in config["roles"]
        for a in r["acls"] if a["topic"].startswith("$share/")
    }
    assert shared == {"cityops-ingest", "cityops-planner", "cityops-control"}


def test_a_device_may_subscribe_to_its_own_commands_only(
    dynsec: MosquittoProcess, registry: Registry
) -> None:
    p = registry.prefix
    sensor = Client(dynsec, registry, "S-B1")
    try:
        assert sensor.subscribe(f"{p}/v1/bin/S-B1/cmd/#") in (0, 1)
        for topic in (
            f"$share/ingest/{p}/v1/+/+/+",
            f"$share/anything/{p}/v1/bin/+/telemetry",
            f"{p}/v1/+/+/+",
            f"{p}/v1/bin/S-B2/cmd/#",
            "#",
        ):
            assert sensor.subscribe(topic) == NOT_AUTHORIZED, topic
        # what it may publish is as with acl_file
        assert sensor.publish(f"{p}/v1/bin/S-B1/telemetry", b"{}") in (0, 0x10)  # 0x10: no one

        assert sensor.publish(f"{p}/v1/bin/S-B2/telemetry", b"{}") == NOT_AUTHORIZED
    finally:
        sensor.close()


@pytest.mark.parametrize(("mode", "stored_all"), [("dynsec", True), ("acl_file", False)])
def test_a_device_cannot_take_a_share_of_the_ingests_messages(
    mode: str, stored_all: bool, registry: Registry, tmp_path: Path, db_url: str,
    settings: Settings,
) -> None:
    broker = _broker(registry, tmp_path, dynsec=mode == "dynsec")
    group = f"ingest-{uuid.uuid4().hex}"
    ingest_settings = settings.model_copy(update={
        "mqtt_url": broker.url, "mqtt_username": "cityops-ingest",
        "mqtt_password": registry.secrets["cityops-ingest"], "topic_prefix": registry.prefix,
        "ingest_share_group": group,
    })
    p = registry.prefix
    thief = sensors = None
    try:
        with running_ingest(ingest_settings):
            # a device account that knows the group name tries to join it
            thief = Client(broker, registry, "K1")
            granted = thief.subscribe(f"$share/{group}/{p}/v1/+/+/+")
            assert (granted == NOT_AUTHORIZED) is stored_all
            sensors = [Client(broker, registry, s) for s in ("S-B1", "S-B2")]
            for i in range(MESSAGES):
                ts = (NOW + timedelta(milliseconds=i)).isoformat()
                body = json.dumps({"ts": ts, "fill_pct": 50.0}).encode()
                sensor = sensors[i % 2]
                user = ("S-B1", "S-B2")[i % 2]
                assert sensor.publish(f"{p}/v1/bin/{user}/telemetry", body) == 0
            if stored_all:
                wait_for(lambda: count(db_url, "SELECT count(*) FROM bin_readings") == MESSAGES,
                         what=f"{MESSAGES} readings")
            else:  # the broker hands the thief its share and drops it (no read ACL)
                wait_for(lambda: count(db_url, "SELECT count(*) FROM bin_readings") > 0,
                         what="some readings")
                assert count(db_url, "SELECT count(*) FROM bin_readings") < MESSAGES
        assert count(db_url, "SELECT count(*) FROM dead_letters") == 0
    finally:
        for c in [thief, *(sensors or [])]:
            if c is not None:
                c.close()
        broker.stop()
