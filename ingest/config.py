"""Settings read from `CITYOPS_*` environment variables and validated at start.

One `Settings` object is built in each entry point and passed down; nothing else reads
the environment.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ConfigError", "Settings", "load_settings", "weak_secret_reason"]

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*$")

#: The shortest HS256 secret accepted (RFC 7518 3.2: a key of at least the hash size).
MIN_SECRET_BYTES = 32
# Secrets that come from examples, tutorials and templates: whoever uses them has not set one.
_KNOWN_DEFAULT_SECRETS = frozenset(
    {
        "secret",
        "changeme",
        "change-me",
        "change_me",
        "password",
        "cityops",
        "jwt-secret",
        "your-256-bit-secret",
        "supersecret",
        "default",
        "development",
        "test",
    }
)
_PLACEHOLDER_RE = re.compile(
    r"change[-_ ]?me|changeit|replace[-_ ]?(me|this|with)|your[-_ ]?(secret|key)|example|"
    r"default|placeholder|insecure|not[-_ ]?secret|xxxx",
    re.IGNORECASE,
)


def weak_secret_reason(secret: str) -> str | None:
    """Why `secret` must not sign tokens (a known default, a placeholder, too short or too
    uniform), or None when it is acceptable."""
    if secret.strip().casefold() in _KNOWN_DEFAULT_SECRETS or _PLACEHOLDER_RE.search(secret):
        return (
            "is a known default or placeholder value; generate one (e.g. `openssl rand -base64 48`)"
        )
    if len(secret.encode()) < MIN_SECRET_BYTES:
        return (
            f"is shorter than {MIN_SECRET_BYTES} bytes; generate one (e.g. `openssl rand "
            "-base64 48`)"
        )
    if len(set(secret)) < 8:
        return "has fewer than 8 distinct characters; generate a random one"
    return None


class ConfigError(Exception):
    """Raised when the configuration is invalid; the message lists every problem."""


class Settings(BaseSettings):
    """Runtime configuration for every cityops service."""

    model_config = SettingsConfigDict(env_prefix="CITYOPS_", extra="ignore", frozen=True)

    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/cityops",
        description="libpq URL of the cityops database",
    )
    mqtt_url: str = Field(
        default="mqtt://127.0.0.1:1883",
        description="broker URL: mqtt://host:port or mqtts://host:port (TLS)",
    )
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_ca_file: Path | None = None
    db_mode: str = Field(
        default="auto",
        pattern="^(auto|plain|timescale)$",
        description="storage mode chosen on the first migration: auto, plain or timescale",
    )
    retention_days: int = Field(default=400, ge=1, description="raw time series kept this long")
    topic_prefix: str = Field(default="cityops", description="first level(s) of every topic")
    scenario: str = Field(default="demo", description="scenario name or path to a YAML file")
    osm_file: Path | None = Field(
        default=None,
        description="OpenStreetMap extract overriding the city profile's and the imported one",
    )
    city_profile: str | None = Field(
        default=None,
        description="the city profile (docs/city.md): a YAML path, or `demo` for the demo city",
    )
    allow_demo_city: bool = Field(
        default=False, description="let a service start with the demo city's profile"
    )

    # ingest tuning
    ingest_client_id: str = Field(default="cityops-ingest-1", min_length=1, max_length=64)
    ingest_share_group: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9_\-]*$",
        description="MQTT v5 shared-subscription group for several ingest instances; empty: one "
        "instance with an exclusive subscription (see docs/operations.md for the trade-off)",
    )
    ingest_sources: str = Field(
        default="cityops",
        description="what this ingest instance subscribes to, comma-separated: cityops (the "
        "MQTT contract), chirpstack (ChirpStack v4 uplinks), tts (The Things Stack v3 uplinks)",
    )
    ingest_lorawan_root: str = Field(
        default="",
        pattern=r"^([A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*)?$",
        description="topic levels in front of the network servers' own topics, where a "
        "broker bridge puts them (e.g. `lorawan`); empty: as the servers publish them",
    )
    ingest_batch_size: int = Field(default=2000, ge=1, le=50_000)
    # 100 ms: at 10,000 msgs/s a batch of 1,000 (docs/performance.md: p99 publish-to-row)
    ingest_flush_ms: int = Field(default=100, ge=5, le=60_000)
    ingest_receive_maximum: int = Field(default=10_000, ge=10, le=65_535)
    ingest_session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    ingest_mqtt_client: str = Field(
        default="wire",
        pattern="^(wire|paho)$",
        description="how the ingest reads the broker: wire (its own MQTT 5 subscriber, built "
        "for throughput; over TLS paho is used) or paho",
    )
    ingest_metrics_port: int = Field(default=9108, ge=0, le=65_535)
    ingest_liveness_limit_s: float = Field(
        default=60.0, gt=0, description="the ingest's writer loop silent this long: 503"
    )
    # liveness (/healthz) and Prometheus (/metrics) of the other long-running services
    # (docs/operations.md, "Liveness and metrics of the services"); port 0: no endpoint
    replanner_metrics_port: int = Field(default=9109, ge=0, le=65_535)
    replanner_liveness_limit_s: float = Field(
        default=120.0, gt=0, description="the re-planner's worker silent this long: 503"
    )
    traffic_control_metrics_port: int = Field(default=9110, ge=0, le=65_535)
    traffic_control_liveness_limit_s: float = Field(
        default=30.0, gt=0, description="traffic control's worker silent this long: 503"
    )
    traffic_measures_metrics_port: int = Field(default=9111, ge=0, le=65_535)
    traffic_measures_liveness_limit_s: float = Field(
        default=300.0, gt=0, description="the measures service silent this long: 503"
    )
    ingest_max_payload_bytes: int = Field(default=64 * 1024, ge=256)
    ingest_max_future_s: float = Field(default=300.0, ge=0)
    ingest_max_age_days: float = Field(default=30.0, gt=0)

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65_535)
    api_cors_origins: str = Field(
        default="",
        description="comma-separated origins allowed by CORS (e.g. https://city.example); "
        "empty: no cross-origin access",
    )
    api_max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="larger request bodies are refused (413)"
    )
    api_rate_limit_per_s: float = Field(
        default=20.0,
        ge=0,
        description="public endpoints: sustained requests per second per "
        "client address (0: no limit)",
    )
    api_rate_limit_burst: int = Field(
        default=100, ge=1, description="public endpoints: requests a client may make at once"
    )
    api_forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="addresses (comma-separated, or *) of the reverse proxies whose "
        "X-Forwarded-For gives the client address (rate limits, logs)",
    )
    api_stream_recheck_s: float = Field(
        default=30.0,
        gt=0,
        le=30.0,
        description="long-lived streams (SSE) check their credentials again this often",
    )
    api_rate_limit_exempt: str = Field(
        default="127.0.0.0/8,::1",
        description="comma-separated client networks the public rate limit does not apply to "
        "(loopback: local tools and benchmarks); empty: none",
    )

    # API authentication (see docs/operations.md, "Authentication and roles")
    auth_jwt_secret: SecretStr | None = Field(
        default=None,
        description="HS256 secret of the standalone install (>= 32 bytes, random); unset: "
        "only OIDC tokens and API keys are accepted",
    )
    auth_jwks_url: str | None = Field(
        default=None, description="OIDC provider's JWKS URL (https), for RS256/ES256 tokens"
    )
    auth_public_key: str | None = Field(
        default=None, description="PEM public key (or path to a PEM file) for RS256/ES256"
    )
    auth_algorithms: str = Field(
        default="RS256,ES256", description="asymmetric algorithms accepted with the JWKS/key"
    )
    auth_issuer: str = Field(default="cityops", min_length=1, description="required `iss`")
    auth_audience: str = Field(default="cityops-api", min_length=1, description="required `aud`")
    auth_roles_claim: str = Field(
        default="roles",
        pattern=r"^[A-Za-z0-9_:\-]+(\.[A-Za-z0-9_:\-]+)*$",
        description="dotted path of the roles claim, e.g. realm_access.roles (Keycloak)",
    )
    auth_role_prefix: str = Field(
        default="", description="prefix stripped from role names, e.g. 'cityops-'"
    )
    auth_organisation_claim: str = Field(
        default="organisation", pattern=r"^[A-Za-z0-9_:\-]+(\.[A-Za-z0-9_:\-]+)*$"
    )
    auth_truck_claim: str = Field(
        default="truck_id", pattern=r"^[A-Za-z0-9_:\-]+(\.[A-Za-z0-9_:\-]+)*$"
    )
    auth_leeway_s: float = Field(default=30.0, ge=0, le=300, description="clock skew allowed")
    auth_max_token_lifetime_s: float = Field(
        default=7 * 86400.0,
        gt=0,
        le=366 * 86400.0,
        description="tokens expiring further ahead than this are refused (and not issued)",
    )

    @field_validator("auth_jwt_secret")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        reason = weak_secret_reason(value.get_secret_value())
        if reason is not None:
            raise ValueError(f"refused: the JWT secret {reason}")
        return value

    @field_validator("auth_jwks_url")
    @classmethod
    def _check_jwks_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise ValueError(f"must be an https:// URL (http only on loopback), got {value!r}")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_db_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in ("postgresql", "postgres"):
            raise ValueError(f"must start with postgresql://, got {value!r}")
        return value

    @field_validator("mqtt_url")
    @classmethod
    def _check_mqtt_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"must start with mqtt:// or mqtts://, got {value!r}")
        if not parts.hostname:
            raise ValueError(f"has no host: {value!r}")
        return value

    @field_validator("ingest_sources")
    @classmethod
    def _check_sources(cls, value: str) -> str:
        names = [p.strip() for p in value.split(",") if p.strip()]
        unknown = sorted(set(names) - {"cityops", "chirpstack", "tts"})
        if not names or unknown:
            raise ValueError(
                f"must name one or more of cityops, chirpstack, tts; got {value!r}"
            )
        return ",".join(dict.fromkeys(names))

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(self.ingest_sources.split(","))

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _PREFIX_RE.match(value) or value.startswith("$"):
            raise ValueError(
                f"must be topic levels of letters, digits, '_' or '-' separated by '/', "
                f"without wildcards: {value!r}"
            )
        return value

    @property
    def mqtt_host(self) -> str:
        return urlsplit(self.mqtt_url).hostname or "127.0.0.1"

    @property
    def mqtt_port(self) -> int:
        parts = urlsplit(self.mqtt_url)
        if parts.port:
            return parts.port
        return 8883 if self.mqtt_tls else 1883

    @property
    def mqtt_tls(self) -> bool:
        return urlsplit(self.mqtt_url).scheme in ("mqtts", "ssl")

    def redacted_database_url(self) -> str:
        parts = urlsplit(self.database_url)
        if parts.password:
            return self.database_url.replace(f":{parts.password}@", ":***@")
        return self.database_url


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment (plus overrides) or raise `ConfigError`."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            lines.append(f"  CITYOPS_{field.upper()}: {err['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
