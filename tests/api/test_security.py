"""Authentication and the public-endpoint protections, against the real app and database:
expired, forged and foreign tokens, OIDC tokens (RS256 by public key and by JWKS, with
Keycloak-shaped claims), API keys stored hashed and revoked, weak secrets refused, the
rate limit, the body size limit and CORS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cityops.api.app import create_app
from cityops.api.credentials import create_key, revoke_key
from cityops.api.limits import TokenBucketLimiter, parse_networks
from cityops.api.security import AuthConfig, issue_token
from cityops.ingest.config import ConfigError, Settings, load_settings
from tests.api.authn import TEST_SECRET, bearer, token, with_auth
from tests.api.testclient import TestClient
from tests.support.brokers import free_port
from tests.support.clock import now_utc

BINS = "/api/v1/bins"


@pytest.fixture
def app_client(auth_settings: Settings) -> Iterator[TestClient]:
    """A client without default credentials."""
    with TestClient(create_app(auth_settings)) as c:
        yield c


def assert_401(resp: Any, fragment: str) -> None:
    assert resp.status_code == 401, resp.text
    body = resp.json()
    assert body["error"] == "unauthenticated" and fragment in body["message"], body
    assert resp.headers["www-authenticate"].startswith('Bearer realm="cityops"')


# -- bearer tokens ----------------------------------------------------------------------


def test_no_credentials_is_401_with_a_challenge(app_client: TestClient) -> None:
    resp = app_client.get(BINS)
    assert_401(resp, "authentication required")
    assert "invalid_token" not in resp.headers["www-authenticate"]  # nothing was sent


def test_valid_token_passes(app_client: TestClient, auth_settings: Settings) -> None:
    assert app_client.get(BINS, headers=bearer(auth_settings, "dispatcher")).status_code == 200


def test_expired_token_is_401(app_client: TestClient, auth_settings: Settings) -> None:
    old = issue_token(
        AuthConfig.from_settings(auth_settings),
        "anna",
        ["dispatcher"],
        ttl=timedelta(minutes=5),
        now=now_utc() - timedelta(hours=1),
    )
    resp = app_client.get(BINS, headers={"Authorization": f"Bearer {old}"})
    assert_401(resp, "token expired")
    assert 'error="invalid_token"' in resp.headers["www-authenticate"]


def test_wrong_signature_is_401(app_client: TestClient, auth_settings: Settings) -> None:
    forged_settings = with_auth(auth_settings, auth_jwt_secret="Zk3p9QwErTy7uIoP1aSdFgHjKlXcVbNm")
    forged = token(forged_settings, "admin")
    assert_401(app_client.get(BINS, headers={"Authorization": f"Bearer {forged}"}), "signature")
    # a signature cut off, or no token at all
    good = token(auth_settings, "admin")
    cut = good.rsplit(".", 1)[0] + "."
    assert_401(app_client.get(BINS, headers={"Authorization": f"Bearer {cut}"}), "")
    assert_401(app_client.get(BINS, headers={"Authorization": "Bearer not-a-jwt"}), "malformed")


def test_foreign_issuer_audience_and_alg_none_are_401(
    app_client: TestClient, auth_settings: Settings
) -> None:
    now = now_utc()
    base = {"sub": "x", "roles": ["admin"], "iat": now, "exp": now + timedelta(minutes=5)}
    for claims, fragment in (
        ({**base, "iss": "someone-else", "aud": "cityops-api"}, "issuer"),
        ({**base, "iss": "cityops", "aud": "another-api"}, "audience"),
        ({**base, "aud": "cityops-api"}, "iss"),  # no issuer at all
    ):
        forged = jwt.encode(claims, TEST_SECRET, algorithm="HS256")
        assert_401(app_client.get(BINS, headers={"Authorization": f"Bearer {forged}"}), fragment)
    unsigned = jwt.encode({**base, "iss": "cityops", "aud": "cityops-api"}, None, algorithm="none")
    assert_401(
        app_client.get(BINS, headers={"Authorization": f"Bearer {unsigned}"}),
        "algorithm 'none' not accepted",
    )


def test_a_token_valid_for_years_is_401_and_is_not_issued(
    app_client: TestClient, auth_settings: Settings
) -> None:
    """A token whose expiry is in the year 9999 was accepted (issue 14)."""
    now = now_utc()
    base = {"sub": "x", "roles": ["admin"], "iss": "cityops", "aud": "cityops-api", "iat": now}
    for exp in (datetime(9999, 12, 31, tzinfo=UTC), now + timedelta(days=8)):
        forged = jwt.encode({**base, "exp": exp}, TEST_SECRET, algorithm="HS256")
        assert_401(
            app_client.get(BINS, headers={"Authorization": f"Bearer {forged}"}), "too far ahead"
        )
    week = jwt.encode({**base, "exp": now + timedelta(days=6)}, TEST_SECRET, algorithm="HS256")
    assert app_client.get(BINS, headers={"Authorization": f"Bearer {week}"}).status_code == 200
    with pytest.raises(ValueError, match="longer than"):
        token(auth_settings, "admin", ttl=timedelta(days=30))


def test_unknown_roles_give_nothing(app_client: TestClient) -> None:
    now = now_utc()
    claims = {
        "sub": "x",
        "iss": "cityops",
        "aud": "cityops-api",
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "roles": ["superuser", "root"],
    }
    t = jwt.encode(claims, TEST_SECRET, algorithm="HS256")
    resp = app_client.get(BINS, headers={"Authorization": f"Bearer {t}"})
    assert resp.status_code == 403 and resp.json()["error"] == "forbidden"


# -- OIDC: asymmetric keys, Keycloak-shaped claims --------------------------------------


def _keycloak_claims(roles: list[str]) -> dict[str, Any]:
    now = now_utc()
    return {
        "sub": "f3a1-uuid",
        "iss": "https://sso.city.example/realms/city",
        "aud": ["cityops-api", "account"],
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "realm_access": {"roles": roles},
        "preferred_username": "anna",
    }


def _oidc_settings(settings: Settings, **extra: object) -> Settings:
    return with_auth(
        settings,
        auth_jwt_secret=None,
        auth_issuer="https://sso.city.example/realms/city",
        auth_roles_claim="realm_access.roles",
        auth_role_prefix="cityops-",
        **extra,
    )


def test_rs256_with_a_configured_public_key(settings: Settings) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    s = _oidc_settings(settings, auth_public_key=pem)
    good = jwt.encode(
        _keycloak_claims(["cityops-dispatcher", "offline_access"]), private, algorithm="RS256"
    )
    unprefixed = jwt.encode(_keycloak_claims(["dispatcher"]), private, algorithm="RS256")
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(_keycloak_claims(["cityops-admin"]), other_key, algorithm="RS256")
    hs = token(with_auth(settings), "admin")
    with TestClient(create_app(s)) as c:
        assert c.get(BINS, headers={"Authorization": f"Bearer {good}"}).status_code == 200
        # roles without the configured prefix are not cityops roles
        assert c.get(BINS, headers={"Authorization": f"Bearer {unprefixed}"}).status_code == 403
        assert_401(c.get(BINS, headers={"Authorization": f"Bearer {forged}"}), "signature")
        # no secret configured: HS256 tokens are refused, never checked against the RSA key
        assert_401(c.get(BINS, headers={"Authorization": f"Bearer {hs}"}), "HS256")


class _Jwks(BaseHTTPRequestHandler):
    document: bytes = b"{}"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.document)

    def log_message(self, *_args: Any) -> None:
        pass


def test_es256_verified_against_a_jwks_url(settings: Settings) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    handler = type(
        "Handler",
        (_Jwks,),
        {
            "document": json.dumps(
                {"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "ES256"}]}
            ).encode()
        },
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/realms/city/certs"
        s = _oidc_settings(settings, auth_jwks_url=url)
        claims = {**_keycloak_claims(["cityops-roadworks_editor"]), "organisation": "Stadtwerke"}
        good = jwt.encode(claims, private, algorithm="ES256", headers={"kid": "k1"})
        unknown_kid = jwt.encode(claims, private, algorithm="ES256", headers={"kid": "k9"})
        with TestClient(create_app(s)) as c:
            resp = c.get(
                "/api/v1/roadworks/manage/works", headers={"Authorization": f"Bearer {good}"}
            )
            assert resp.status_code == 200, resp.text
            assert c.get(BINS, headers={"Authorization": f"Bearer {good}"}).status_code == 403
            assert_401(c.get(BINS, headers={"Authorization": f"Bearer {unknown_kid}"}), "no key")
    finally:
        server.shutdown()
        server.server_close()


# -- API keys ---------------------------------------------------------------------------


def test_api_key_is_stored_hashed_and_works_until_revoked(
    app_client: TestClient, db_url: str
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        new = create_key(conn, "planning tool", ["dispatcher"])
        secret = new.clear[len("cok_") + 12 + 1 :]
        dump = conn.execute("SELECT string_agg(t::text, '|') FROM api_keys t").fetchone()
    assert dump is not None and new.clear not in str(dump[0]) and secret not in str(dump[0])
    assert new.clear.startswith(f"cok_{new.key.key_id}_")
    for headers in ({"X-API-Key": new.clear}, {"Authorization": f"ApiKey {new.clear}"}):
        assert app_client.get(BINS, headers=headers).status_code == 200
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT last_used_at FROM api_keys WHERE key_id = %s", (new.key.key_id,)
        ).fetchone()
        assert row is not None and row[0] is not None
        assert revoke_key(conn, new.key.key_id)
        assert not revoke_key(conn, new.key.key_id)
    assert_401(app_client.get(BINS, headers={"X-API-Key": new.clear}), "revoked")
    # a wrong secret for a known key id, an unknown id, and garbage
    wrong = new.clear[:-4] + ("AAAA" if not new.clear.endswith("AAAA") else "BBBB")
    assert_401(app_client.get(BINS, headers={"X-API-Key": wrong}), "unknown API key")
    unknown = "cok_zzzzzzzzzzzz_" + new.clear[-43:]
    assert_401(app_client.get(BINS, headers={"X-API-Key": unknown}), "unknown API key")
    assert_401(app_client.get(BINS, headers={"X-API-Key": "hunter2"}), "malformed")


def test_key_bindings_are_required(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        with pytest.raises(ValueError, match="truck"):
            create_key(conn, "tablet", ["truck"])
        with pytest.raises(ValueError, match="organisation"):
            create_key(conn, "utility", ["roadworks_editor"])
        with pytest.raises(ValueError, match="roles"):
            create_key(conn, "x", ["public"])


# -- secrets from the environment -------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [
        "changeme",
        "secret",
        "your-256-bit-secret",
        "short-but-random-Xy7",
        "please-change-me-to-something-long-and-random",
        "a" * 64,
    ],
)
def test_default_or_short_secret_is_refused(secret: str) -> None:
    with pytest.raises(ConfigError, match=r"CITYOPS_AUTH_JWT_SECRET: .*refused"):
        load_settings(auth_jwt_secret=secret)


def test_cityops_api_refuses_to_start_with_a_default_secret() -> None:
    env = {**os.environ, "CITYOPS_AUTH_JWT_SECRET": "changeme"}
    proc = subprocess.run(
        [sys.executable, "-m", "cityops.api.cli", "api", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "CITYOPS_AUTH_JWT_SECRET" in proc.stderr and "known default" in proc.stderr


# -- rate limit, body size, CORS --------------------------------------------------------


def test_public_rate_limit_is_429_with_retry_after(auth_settings: Settings) -> None:
    s = with_auth(auth_settings, api_rate_limit_per_s=0.5, api_rate_limit_burst=3)
    with TestClient(create_app(s)) as c:
        codes = [c.get("/api/v1/roadworks").status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        resp = c.get("/api/v1/roadworks/feeds/geojson")
        assert resp.status_code == 429 and resp.json()["error"] == "rate_limited"
        assert int(resp.headers["retry-after"]) >= 1
        assert c.get("/health").status_code == 429
        # signed-in endpoints are not counted against the public limit
        assert c.get(BINS, headers=bearer(s, "dispatcher")).status_code == 200


def test_token_bucket_refills_and_exempts_loopback() -> None:
    now = [0.0]
    limiter = TokenBucketLimiter(
        2.0, 2, parse_networks("127.0.0.0/8,::1"), max_clients=2, clock=lambda: now[0]
    )
    assert [limiter.take("203.0.113.9") for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("203.0.113.9") == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.take("203.0.113.9") == 0.0
    assert all(limiter.take("127.0.0.1") == 0.0 for _ in range(100))
    assert all(limiter.take("::1") == 0.0 for _ in range(100))
    # only the most recent clients are remembered
    limiter.take("198.51.100.1")
    limiter.take("198.51.100.2")
    assert len(limiter._buckets) == 2
    with pytest.raises(ValueError, match="not a network"):
        parse_networks("127.0.0.1,localhost")


def test_oversized_body_is_413(auth_settings: Settings) -> None:
    s = with_auth(auth_settings, api_max_body_bytes=1024)
    event = {
        "ts": "2026-11-23T06:00:00Z",
        "kind": "stop_skipped",
        "bin_id": "B1",
        "reason": "x" * 2000,
    }
    with TestClient(create_app(s), headers=bearer(s, "dispatcher")) as c:
        resp = c.post("/api/v1/trucks/T01/events", json=event)
        assert resp.status_code == 413 and resp.json()["error"] == "payload_too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            body = json.dumps(event).encode()
            for i in range(0, len(body), 256):
                yield body[i : i + 256]

        resp = c.post(
            "/api/v1/trucks/T01/events",
            content=chunks(),
            headers={"Content-Type": "application/json"},
        )
        assert resp.status_code == 413 and resp.json()["error"] == "payload_too_large"


def test_cors_is_off_by_default_and_configurable(auth_settings: Settings) -> None:
    preflight = {
        "Origin": "https://city.example",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    with TestClient(create_app(auth_settings)) as c:
        resp = c.get("/api/v1/roadworks", headers={"Origin": "https://city.example"})
        assert "access-control-allow-origin" not in resp.headers
    s = with_auth(auth_settings, api_cors_origins="https://city.example, https://ops.city.example")
    with TestClient(create_app(s)) as c:
        resp = c.options(BINS, headers=preflight)
        assert resp.status_code == 200
        assert resp.headers["access-control-allow-origin"] == "https://city.example"
        assert "authorization" in resp.headers["access-control-allow-headers"].lower()
        other = c.options(BINS, headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_unreachable_jwks_is_503_not_401(settings: Settings) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    s = _oidc_settings(settings, auth_jwks_url="http://127.0.0.1:1/certs")
    t = jwt.encode(
        _keycloak_claims(["cityops-admin"]), private, algorithm="ES256", headers={"kid": "k1"}
    )
    with TestClient(create_app(s)) as c:
        resp = c.get(BINS, headers={"Authorization": f"Bearer {t}"})
    assert resp.status_code == 503 and resp.json()["error"] == "auth_provider_unavailable"


@pytest.mark.parametrize(("trusted", "limited"), [("*", True), ("10.9.8.7", False)])
def test_behind_a_trusted_proxy_each_client_has_its_own_bucket(
    auth_settings: Settings, trusted: str, limited: bool
) -> None:
    """`cityops api` believes X-Forwarded-For from CITYOPS_API_FORWARDED_ALLOW_IPS only.
    Compose and k8s set it, because there the proxy is not 127.0.0.1: without it every
    citizen shared one rate-limit bucket (issue 15)."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CITYOPS_")},
        "CITYOPS_DATABASE_URL": auth_settings.database_url,
        "CITYOPS_MQTT_URL": auth_settings.mqtt_url,
        "CITYOPS_AUTH_JWT_SECRET": TEST_SECRET,
        "CITYOPS_API_RATE_LIMIT_PER_S": "0.01",
        "CITYOPS_API_RATE_LIMIT_BURST": "1",
        "CITYOPS_API_FORWARDED_ALLOW_IPS": trusted,
        "CITYOPS_CITY_PROFILE": "demo",
        "CITYOPS_ALLOW_DEMO_CITY": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "cityops.api.cli", "api", "--port", str(port)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/health"

    def get(client: str) -> int:
        request = urllib.request.Request(url, headers={"X-Forwarded-For": client})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                first = get("203.0.113.5")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "no API"
                time.sleep(0.2)
        assert first == 200
        second, other = get("203.0.113.5"), get("198.51.100.7")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # believed: the same citizen is limited, another one is not; not believed: all the
    # requests come from the proxy's loopback address, which is exempt
    assert (second, other) == ((429, 200) if limited else (200, 200))
