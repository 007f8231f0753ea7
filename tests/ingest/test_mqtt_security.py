"""Per-device MQTT credentials and ACLs (`cityops mqtt credentials`) on a real Mosquitto.

The pure parts (hash format, ACL lines, keeping and rotating passwords) are checked
directly; the rest runs a second Mosquitto with `password_file`, `acl_file` and
`allow_anonymous false` on a free loopback port, fed with files generated from a test
database, and shows over real connections what a device and each service may do.
"""

from __future__ import annotations

import base64
import queue
import stat
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cityops.api.cli import main
from cityops.ingest.config import Settings
from cityops.ingest.contract import DeviceKind
from cityops.ingest.mqttauth import (
    CredentialError,
    Device,
    acl_for_device,
    hash_password,
    parse_password_file,
    plan_credentials,
    render_acl,
    verify_password,
)
from cityops.ingest.mqttclient import make_client
from tests.api.factories import add_truck
from tests.support.brokers import MosquittoProcess, free_port, start_mosquitto
from tests.support.mqttauth import Registry
from tests.support.mqttauth import generate as _generate

REPO = Path(__file__).resolve().parents[2]
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
TIMEOUT_S = 5.0
NOT_AUTHORIZED = 0x87


Connect = Callable[..., "Conn"]


# --- pure: hashes, ACL lines, password plans ---------------------------------------------


def test_hash_is_the_one_mosquitto_passwd_writes(tmp_path: Path) -> None:
    pwfile = tmp_path / "pw"
    subprocess.run([MOSQUITTO_PASSWD, "-c", "-b", str(pwfile), "S-B0001", "s3cret"], check=True)
    encoded = parse_password_file(pwfile.read_text())["S-B0001"]
    _, seven, iterations, salt_b64, _ = encoded.split("$")
    assert seven == "7"
    assert verify_password("s3cret", encoded)
    assert not verify_password("s3creT", encoded)
    salt = base64.b64decode(salt_b64)
    assert hash_password("s3cret", salt=salt, iterations=int(iterations)) == encoded


def test_each_hash_has_its_own_salt() -> None:
    first, second = hash_password("same"), hash_password("same")
    assert first != second
    assert verify_password("same", first) and verify_password("same", second)
    assert not verify_password("same", "$7$101$not base64$x")
    assert not verify_password("same", "plain")


def test_a_bin_is_confined_to_its_sensor_id_topics() -> None:
    acl = acl_for_device("city", Device(DeviceKind.BIN, "S-B0001"))
    assert acl.user == "S-B0001"
    assert acl.write == (
        "city/v1/bin/S-B0001/telemetry",
        "city/v1/bin/S-B0001/events",
        "city/v1/bin/S-B0001/status",
    )
    assert acl.read == ("city/v1/bin/S-B0001/cmd/#",)


def test_acl_file_lists_services_then_devices_without_anonymous_lines() -> None:
    text = render_acl("a/b", [Device(DeviceKind.TRUCK, "T1"), Device(DeviceKind.SIGNAL, "K1")])
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines[0] == "user cityops-ingest", "no topic line may come before the first user"
    assert "topic read a/b/v1/+/+/+" in lines
    block = lines[lines.index("user K1") : lines.index("user T1")]
    assert block == [
        "user K1",
        "topic read a/b/v1/signal/K1/cmd/#",
        "topic write a/b/v1/signal/K1/telemetry",
        "topic write a/b/v1/signal/K1/events",
        "topic write a/b/v1/signal/K1/status",
    ]
    assert "user cityops-simulator" not in lines
    assert "user cityops-simulator" in render_acl("a", [], simulator=True)


def test_user_names_must_be_unique() -> None:
    with pytest.raises(CredentialError, match="used by a bin and a truck"):
        render_acl("c", [Device(DeviceKind.BIN, "X1"), Device(DeviceKind.TRUCK, "X1")])
    with pytest.raises(CredentialError, match="clashes with the service accounts"):
        render_acl("c", [Device(DeviceKind.TRUCK, "cityops-ingest")])
    with pytest.raises(CredentialError, match="clashes with the service accounts"):
        render_acl("c", [Device(DeviceKind.BIN, "Cityops-ingest-1")])
    with pytest.raises(CredentialError, match="not a valid topic level"):
        Device(DeviceKind.BIN, "a/b")


def _counter() -> Iterator[str]:
    n = 0
    while True:
        n += 1
        yield f"pw{n}"


def test_plan_keeps_passwords_adds_new_users_and_rotates_one() -> None:
    passwords = _counter()
    first = plan_credentials(["A", "B"], {}, {}, make_password=lambda: next(passwords))
    assert first.added == ["A", "B"] and first.passwords == {"A": "pw1", "B": "pw2"}
    again = plan_credentials(["A", "B", "C"], first.passwords, first.hashes)
    assert again.added == ["C"] and again.kept == ["A", "B"]
    assert {u: again.hashes[u] for u in "AB"} == first.hashes, "kept hashes are reused"
    assert {u: again.passwords[u] for u in "AB"} == first.passwords
    rotated = plan_credentials(
        ["A", "C"],
        again.passwords,
        again.hashes,
        rotate=["A"],
        make_password=lambda: next(passwords),
    )
    assert rotated.rotated == ["A"] and rotated.removed == ["B"] and rotated.kept == ["C"]
    assert rotated.passwords["A"] == "pw3" and rotated.passwords["C"] == again.passwords["C"]
    assert verify_password("pw3", rotated.hashes["A"])
    with pytest.raises(CredentialError, match="unknown user"):
        plan_credentials(["A"], {}, {}, rotate=["Z"])


def test_a_hash_that_no_longer_matches_is_rebuilt() -> None:
    plan = plan_credentials(["A"], {"A": "right"}, {"A": hash_password("wrong")})
    assert verify_password("right", plan.hashes["A"])


# --- the command line ----------------------------------------------------------------------


def test_cli_writes_files_keeps_passwords_and_rotates(
    registry: Registry, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _generate(registry) == 0
    first = capsys.readouterr().out
    assert "4 devices (2 bin, 1 signal, 1 truck)" in first
    secrets_file = registry.out / "cityops-passwords.secret"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    secrets = registry.secrets
    assert {"S-B1", "S-B2", "K1", "T1", "cityops-ingest", "cityops-api"} <= set(secrets)
    assert "B1" not in secrets and "B3" not in secrets
    assert not any(pw in first for pw in secrets.values()), "passwords are never printed"
    hashes = parse_password_file((registry.out / "cityops.passwd").read_text())
    assert set(hashes) == set(secrets)
    assert all(verify_password(secrets[u], hashes[u]) for u in secrets)

    files = {p.name: p.read_bytes() for p in registry.out.iterdir()}
    assert _generate(registry) == 0
    assert {p.name: p.read_bytes() for p in registry.out.iterdir()} == files, "idempotent"
    assert "0 added, 0 rotated, 0 removed" in capsys.readouterr().out

    with psycopg.connect(db_url, autocommit=True) as conn:
        add_truck(conn, "T2")
    assert _generate(registry, "--rotate", "S-B1", "--show", "S-B1") == 0
    out = capsys.readouterr().out
    assert "1 added, 1 rotated" in out
    after = registry.secrets
    assert after["S-B1"] != secrets["S-B1"] and f"S-B1:{after['S-B1']}" in out
    assert set(after) == set(secrets) | {"T2"}
    assert {u: after[u] for u in secrets if u != "S-B1"} == {
        u: pw for u, pw in secrets.items() if u != "S-B1"
    }
    acl = (registry.out / "cityops.acl").read_text()
    assert f"topic write {registry.prefix}/v1/truck/T2/telemetry" in acl

    assert _generate(registry, "--rotate", "nobody") == 1
    assert "cannot rotate unknown user(s): nobody" in capsys.readouterr().err
    assert _generate(registry, "--prefix", "bad/+/prefix") == 2


# --- a real broker with the generated files -------------------------------------------------


@dataclass
class Secured:
    broker: MosquittoProcess
    registry: Registry

    @property
    def prefix(self) -> str:
        return self.registry.prefix

    def password(self, user: str) -> str:
        return self.registry.secrets[user]


@pytest.fixture
def secured(registry: Registry, tmp_path: Path) -> Iterator[Secured]:
    assert _generate(registry) == 0
    broker = start_mosquitto(
        tmp_path / "mosquitto",
        include_dir=None,
        options=[
            "allow_anonymous false",
            f"password_file {registry.out / 'cityops.passwd'}",
            f"acl_file {registry.out / 'cityops.acl'}",
        ],
    )
    try:
        yield Secured(broker, registry)
    finally:
        broker.stop()


class Conn:
    """A connected paho client that records CONNACK, SUBACK, PUBACK and messages."""

    def __init__(
        self,
        port: int,
        user: str | None,
        password: str | None,
        *,
        protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv5,
        client_id: str | None = None,
        session_expiry_s: int = 0,
    ) -> None:
        self.connack: queue.Queue[ReasonCode] = queue.Queue()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"t-{uuid.uuid4().hex[:8]}",
            protocol=protocol,
        )
        if user is not None:
            self.client.username_pw_set(user, password)
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connack.put(rc)
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, m.payload))
        if session_expiry_s:  # a persistent MQTT 5 session, resumed if present
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = session_expiry_s
            self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        else:
            self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.reason = self.connack.get(timeout=TIMEOUT_S)
        if self.reason.is_failure:  # no reconnect attempts in the background
            self.close()

    def subscribe(self, topic: str) -> None:
        """Subscribe at QoS 1 and wait for the SUBACK. Mosquitto 2.0's acl_file grants every
        subscription; what a client may read is checked on each message instead."""
        done: queue.Queue[int] = queue.Queue()
        self.client.on_subscribe = lambda _c, _u, m, _rc, _p: done.put(m)
        _, mid = self.client.subscribe(topic, qos=1)
        assert done.get(timeout=TIMEOUT_S) == mid

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1 and return the PUBACK reason code (always 0 for MQTT 3.1.1)."""
        acks: queue.Queue[int] = queue.Queue()
        self.client.on_publish = lambda _c, _u, _m, rc, _p: acks.put(rc.value)
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=TIMEOUT_S)
        return acks.get(timeout=TIMEOUT_S)

    def next_message(self) -> tuple[str, bytes]:
        return self.messages.get(timeout=TIMEOUT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def connect(secured: Secured) -> Iterator[Connect]:
    opened: list[Conn] = []

    def _connect(
        user: str | None, password: str | None = None, **kw: mqtt.MQTTProtocolVersion
    ) -> Conn:
        if user is not None and password is None:
            password = secured.password(user)
        conn = Conn(secured.broker.port, user, password, **kw)
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        conn.close()


def test_anonymous_and_wrong_passwords_are_refused(secured: Secured, connect: Connect) -> None:
    assert connect(None).reason.is_failure
    assert connect("S-B1", "wrong").reason.is_failure
    assert connect("S-B1", secured.password("S-B2")).reason.is_failure
    assert connect("nobody", "x").reason.is_failure
    assert not connect("S-B1").reason.is_failure


def _topic(s: Secured, kind: str, device: str, channel: str) -> str:
    return f"{s.prefix}/v1/{kind}/{device}/{channel}"


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["v5", "v311"])
def test_a_device_cannot_publish_as_another(
    secured: Secured, connect: Connect, protocol: mqtt.MQTTProtocolVersion
) -> None:
    ingest = connect("cityops-ingest")
    ingest.subscribe(f"{secured.prefix}/v1/+/+/+")
    sensor_a = connect("S-B1", protocol=protocol)
    spoof = sensor_a.publish(_topic(secured, "bin", "S-B2", "telemetry"), b"spoofed")
    as_truck = sensor_a.publish(_topic(secured, "truck", "T1", "telemetry"), b"spoofed")
    own = sensor_a.publish(_topic(secured, "bin", "S-B1", "telemetry"), b"genuine")
    if protocol == mqtt.MQTTv5:
        assert (spoof, as_truck, own) == (NOT_AUTHORIZED, NOT_AUTHORIZED, 0)
    # Messages of one client reach a subscriber in order: had a spoofed one been let
    # through, it would arrive before the genuine one.
    assert ingest.next_message() == (_topic(secured, "bin", "S-B1", "telemetry"), b"genuine")
    assert ingest.messages.empty()


def test_a_device_reads_only_its_own_commands(secured: Secured, connect: Connect) -> None:
    planner = connect("cityops-planner")
    truck_1 = connect("T1")
    truck_1.subscribe(f"{secured.prefix}/v1/truck/T9/cmd/#")  # someone else's (T9)
    truck_1.subscribe(f"{secured.prefix}/v1/#")  # everything, if it were allowed
    truck_1.subscribe(f"{secured.prefix}/v1/truck/T1/cmd/#")  # its own
    sensor = connect("S-B2")
    # telemetry of another device is not readable either
    assert sensor.publish(_topic(secured, "bin", "S-B2", "telemetry"), b"fill") == 0
    assert planner.publish(_topic(secured, "truck", "T9", "cmd/route"), b"for T9") == 0
    assert planner.publish(_topic(secured, "truck", "T1", "cmd/route"), b"for T1") == 0
    # delivered once per matching subscription (`v1/#` and `T1/cmd/#`), nothing else before
    expected = (_topic(secured, "truck", "T1", "cmd/route"), b"for T1")
    assert truck_1.next_message() == expected
    assert truck_1.next_message() == expected
    time.sleep(0.2)  # a stray message would have come with or before the expected ones
    assert truck_1.messages.empty()


def test_the_ingest_account_receives_device_messages_through_make_client(
    secured: Secured, connect: Connect
) -> None:
    settings = Settings(
        mqtt_url=secured.broker.url,
        mqtt_username="cityops-ingest",
        mqtt_password=secured.password("cityops-ingest"),
        topic_prefix=secured.prefix,
    )
    received: queue.Queue[str] = queue.Queue()
    subscribed: queue.Queue[bool] = queue.Queue()
    client = make_client(settings, f"ingest-{uuid.uuid4().hex[:6]}")
    client.on_message = lambda _c, _u, m: received.put(m.topic)
    client.on_subscribe = lambda _c, _u, _m, _rc, _p: subscribed.put(True)
    client.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe(
        f"$share/ingest/{secured.prefix}/v1/+/+/+", qos=1
    )
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    try:
        subscribed.get(timeout=TIMEOUT_S)
        topics = [
            _topic(secured, "bin", "S-B1", "telemetry"),
            _topic(secured, "signal", "K1", "events"),
            _topic(secured, "truck", "T1", "status"),
        ]
        for topic in topics:
            user = topic.split("/")[-2]
            assert connect(user).publish(topic, b"{}") == 0
        assert sorted(received.get(timeout=TIMEOUT_S) for _ in topics) == sorted(topics)
        # and the ingest may not publish anything
        ingest = connect("cityops-ingest")
        assert ingest.publish(topics[0], b"{}") == NOT_AUTHORIZED
    finally:
        client.disconnect()
        client.loop_stop()


# (user, kind, device, channel, may publish)
PUBLISH_TABLE = [
    ("K1", "signal", "K1", "events", True),
    ("K1", "signal", "K1", "status", True),
    ("K1", "signal", "K1", "cmd/timing", False),  # a device never commands itself
    ("K1", "signal", "K1", "extra", False),
    ("K1", "signal", "K1", "events/x", False),
    ("S-B1", "bin", "B1", "telemetry", False),  # the bin id is not the sensor's topic
    ("cityops-control", "signal", "K1", "cmd/timing", True),
    ("cityops-control", "truck", "T1", "cmd/route", False),
    ("cityops-control", "signal", "K1", "events", False),
    ("cityops-planner", "truck", "T1", "cmd/route", True),
    ("cityops-planner", "signal", "K1", "cmd/timing", False),
    ("cityops-planner", "bin", "S-B1", "telemetry", False),
    ("cityops-api", "truck", "T1", "events", True),
    ("cityops-api", "truck", "T1", "telemetry", False),
    ("cityops-api", "bin", "S-B1", "telemetry", False),
    ("cityops-api", "truck", "T1", "cmd/route", False),
    ("cityops-replay", "bin", "S-B1", "telemetry", True),
    ("cityops-replay", "truck", "T1", "cmd/route", False),
    ("cityops-ingest", "bin", "S-B1", "telemetry", False),
]


def test_what_each_account_may_publish(secured: Secured, connect: Connect) -> None:
    """The write table on one broker: MQTT 5 PUBACK carries the broker's verdict."""
    clients: dict[str, Conn] = {}
    wrong = []
    for user, kind, device, channel, allowed in PUBLISH_TABLE:
        client = clients.get(user) or clients.setdefault(user, connect(user))
        reason = client.publish(_topic(secured, kind, device, channel), b"{}")
        # accepted: 0x00, or 0x10 "no matching subscribers" (nobody listens here)
        if reason != NOT_AUTHORIZED and reason not in (0x00, 0x10):
            wrong.append(f"{user} on {kind}/{device}/{channel}: unexpected reason {reason:#x}")
        elif (reason != NOT_AUTHORIZED) != allowed:
            verdict = "refused" if allowed else "accepted"
            wrong.append(f"{user} on {kind}/{device}/{channel}: {verdict}")
    assert not wrong


def test_rotation_invalidates_the_old_password_after_a_reload(
    secured: Secured, connect: Connect, capsys: pytest.CaptureFixture[str]
) -> None:
    old, other = secured.password("S-B1"), secured.password("S-B2")
    assert _generate(secured.registry, "--rotate", "S-B1") == 0
    capsys.readouterr()
    new = secured.password("S-B1")
    assert new != old and secured.password("S-B2") == other
    assert connect("S-B1", new).reason.is_failure, "not before Mosquitto reloads"
    secured.broker.reload()
    deadline = time.monotonic() + TIMEOUT_S
    while connect("S-B1", new).reason.is_failure:
        assert time.monotonic() < deadline, "the new password was not accepted after SIGHUP"
        time.sleep(0.05)
    assert connect("S-B1", old).reason.is_failure
    assert not connect("S-B2", other).reason.is_failure


def test_the_shipped_auth_example_turns_anonymous_access_off(
    registry: Registry, tmp_path: Path
) -> None:
    """deploy/mosquitto/conf.d/cityops-auth.conf.example, enabled as production does (renamed
    to .conf, paths moved), overrides the `allow_anonymous true` that comes before it."""
    assert _generate(registry) == 0
    example = REPO / "deploy/mosquitto/conf.d/cityops-auth.conf.example"
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    text = example.read_text().replace("/mosquitto/config/auth/", f"{registry.out}/")
    (conf_d / "cityops-auth.conf").write_text(text)
    broker = start_mosquitto(tmp_path / "mosquitto", include_dir=conf_d)
    try:
        assert Conn(broker.port, None, None).reason.is_failure
        device = Conn(broker.port, "S-B1", registry.secrets["S-B1"])
        assert not device.reason.is_failure
        assert device.publish(f"{registry.prefix}/v1/bin/S-B2/status", b"{}") == NOT_AUTHORIZED
        device.close()
    finally:
        broker.stop()


def test_a_device_cannot_take_over_the_ingest_session(registry: Registry, tmp_path: Path) -> None:
    """On the device listener (`use_username_as_clientid`, as in deploy/mosquitto/tls.conf) a
    device that claims the ingest's client id gets its own name instead: the ingest's
    persistent session keeps its subscription and every queued message."""
    assert _generate(registry) == 0
    device_port = free_port()
    broker = start_mosquitto(
        tmp_path / "mosquitto",
        include_dir=None,
        options=[
            "allow_anonymous false",
            f"password_file {registry.out / 'cityops.passwd'}",
            f"acl_file {registry.out / 'cityops.acl'}",
            f"listener {device_port} 127.0.0.1",
            "use_username_as_clientid true",
        ],
    )
    secrets = registry.secrets
    ingest_login = ("cityops-ingest", secrets["cityops-ingest"])
    topic_b2 = f"{registry.prefix}/v1/bin/S-B2/telemetry"
    topic_b1 = f"{registry.prefix}/v1/bin/S-B1/telemetry"
    try:
        ingest = Conn(
            broker.port, *ingest_login, client_id="cityops-ingest-1", session_expiry_s=300
        )
        ingest.subscribe(f"{registry.prefix}/v1/+/+/+")
        ingest.close()
        other = Conn(device_port, "S-B2", secrets["S-B2"])
        assert other.publish(topic_b2, b"while the ingest is away") == 0  # queued
        other.close()
        intruder = Conn(
            device_port,
            "S-B1",
            secrets["S-B1"],
            client_id="cityops-ingest-1",
            session_expiry_s=300,
        )
        assert not intruder.reason.is_failure
        assert intruder.publish(topic_b1, b"from the intruder") == 0
        intruder.close()
        ingest = Conn(
            broker.port, *ingest_login, client_id="cityops-ingest-1", session_expiry_s=300
        )
        got = {ingest.next_message(), ingest.next_message()}
        ingest.close()
        assert got == {(topic_b2, b"while the ingest is away"), (topic_b1, b"from the intruder")}
    finally:
        broker.stop()


def test_the_default_configuration_stays_anonymous_for_the_demo() -> None:
    shipped = REPO / "deploy/mosquitto"
    assert "allow_anonymous true" in (shipped / "mosquitto.conf").read_text()
    assert not [p.name for p in (shipped / "conf.d").glob("*.conf") if "auth" in p.name]


def test_cli_without_a_migrated_registry_says_so(
    empty_db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CITYOPS_DATABASE_URL", empty_db_url)
    assert main(["mqtt", "credentials", "--out", str(tmp_path / "auth")]) == 1
    assert "cannot read the registry" in capsys.readouterr().err
    assert not (tmp_path / "auth").exists()
