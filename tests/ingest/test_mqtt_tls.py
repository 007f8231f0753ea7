"""MQTT over TLS: the shipped `deploy/mosquitto/tls.conf` on a real Mosquitto, reached
through `make_client` with `mqtts://` and `CITYOPS_MQTT_CA_FILE`.

A throw-away CA and server certificate are made per test module with `cryptography`.
"""

from __future__ import annotations

import datetime as dt
import gc
import ipaddress
import queue
import ssl
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cityops.ingest.config import ConfigError, Settings
from cityops.ingest.mqttclient import make_client
from tests.support.brokers import MosquittoProcess, free_port, start_mosquitto
from tests.support.clock import NOW

REPO = Path(__file__).resolve().parents[2]
SHIPPED_TLS_CONF = REPO / "deploy/mosquitto/tls.conf"
SHIPPED_CERT_DIR = "/mosquitto/config/certs/"
TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Pki:
    ca: Path
    other_ca: Path
    directory: Path


#: Certificates are judged by OpenSSL's clock (Mosquitto's and this process's), which the
#: suite's date shift (tests/support/run-at.sh) does not move: valid years either side.
VALIDITY = dt.timedelta(days=3 * 365)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = NOW
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - VALIDITY)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for 127.0.0.1 signed by it, and an unrelated second CA."""
    directory = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _ca("cityops test CA")
    _, other_cert = _ca("some other CA")
    server_key = ec.generate_private_key(ec.SECP256R1())
    now = NOW
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("mqtt.cityops.test"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - VALIDITY)
        .not_valid_after(now + VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.crt").write_bytes(_pem(ca_cert))
    (directory / "other-ca.crt").write_bytes(_pem(other_cert))
    (directory / "server.crt").write_bytes(_pem(server_cert))
    key_path = directory / "server.key"
    key_path.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return Pki(ca=directory / "ca.crt", other_ca=directory / "other-ca.crt", directory=directory)


def shipped_tls_listener_options(cert_dir: Path) -> list[str]:
    """The listener options of the shipped tls.conf, with the certificate paths moved."""
    options = []
    for raw in SHIPPED_TLS_CONF.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("listener "):
            assert line == "listener 8883", "tls.conf is expected to open 8883"
            continue
        options.append(line.replace(SHIPPED_CERT_DIR, f"{cert_dir}/"))
    return options


@pytest.fixture
def tls_broker(pki: Pki, tmp_path: Path) -> Iterator[MosquittoProcess]:
    broker = start_mosquitto(
        tmp_path / "mosquitto",
        include_dir=None,
        port=free_port(),
        listener_options=shipped_tls_listener_options(pki.directory),
        tls=True,
    )
    try:
        yield broker
    finally:
        broker.stop()


def _settings(broker: MosquittoProcess, ca_file: Path | None) -> Settings:
    # a user name is needed on this listener (use_username_as_clientid); this broker has no
    # password file, test_mqtt_security covers authentication
    return Settings(
        mqtt_url=broker.url, mqtt_ca_file=ca_file, mqtt_username="S-1", topic_prefix="tls"
    )


def test_shipped_tls_conf_uses_the_certificate_files() -> None:
    options = shipped_tls_listener_options(Path("/x"))
    assert {"cafile /x/ca.crt", "certfile /x/server.crt", "keyfile /x/server.key"} <= set(options)
    assert "require_certificate false" in options
    # devices cannot claim a service's client id (test_mqtt_security shows why)
    assert "use_username_as_clientid true" in options


def test_make_client_connects_over_tls_with_the_ca_file(
    tls_broker: MosquittoProcess, pki: Pki
) -> None:
    settings = _settings(tls_broker, pki.ca)
    assert settings.mqtt_tls and settings.mqtt_port == tls_broker.port
    received: queue.Queue[bytes] = queue.Queue()
    subscribed: queue.Queue[bool] = queue.Queue()
    client = make_client(settings, f"tls-{uuid.uuid4().hex[:6]}")
    client.on_message = lambda _c, _u, m: received.put(m.payload)
    client.on_subscribe = lambda _c, _u, _m, _rc, _p: subscribed.put(True)
    client.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe("tls/v1/bin/S-1/telemetry", qos=1)
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    try:
        subscribed.get(timeout=TIMEOUT_S)
        client.publish("tls/v1/bin/S-1/telemetry", b"over tls", qos=1)
        assert received.get(timeout=TIMEOUT_S) == b"over tls"
        sock = client.socket()
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.parametrize("which", ["system trust store", "another CA"])
def test_the_broker_certificate_is_verified(
    tls_broker: MosquittoProcess, pki: Pki, which: str
) -> None:
    """Without our CA (system store) or with the wrong one, the handshake fails."""
    ca_file = None if which == "system trust store" else pki.other_ca
    client = make_client(_settings(tls_broker, ca_file), f"tls-{uuid.uuid4().hex[:6]}")
    # paho leaves the socket of a failed handshake to the garbage collector: collect it here,
    # with its ResourceWarning silenced, rather than in some later test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client.connect("127.0.0.1", tls_broker.port)
        except ssl.SSLCertVerificationError as exc:
            reason = str(exc)
        else:
            reason = "connected"
        gc.collect()
    assert "certificate verify failed" in reason


def test_a_missing_ca_file_is_a_configuration_error(
    tls_broker: MosquittoProcess, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="CITYOPS_MQTT_CA_FILE"):
        make_client(_settings(tls_broker, tmp_path / "nope.crt"), "tls-missing-ca")
