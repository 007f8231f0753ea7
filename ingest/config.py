"""Settings read from `CITYOPS_*` environment variables and validated at start.

One `Settings` object is built in each entry point and passed down; nothing else reads
the environment.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ConfigError", "Settings", "load_settings"]

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*$")


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
        default=None, description="OpenStreetMap .osm.pbf extract; default: the bundled one"
    )

    # ingest tuning
    ingest_client_id: str = Field(default="cityops-ingest-1", min_length=1, max_length=64)
    ingest_share_group: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9_\-]*$",
        description="MQTT v5 shared-subscription group for several ingest instances; empty: one "
        "instance with an exclusive subscription (see docs/operations.md for the trade-off)",
    )
    ingest_batch_size: int = Field(default=2000, ge=1, le=50_000)
    ingest_flush_ms: int = Field(default=200, ge=5, le=60_000)
    ingest_receive_maximum: int = Field(default=10_000, ge=10, le=65_535)
    ingest_session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    ingest_metrics_port: int = Field(default=9108, ge=0, le=65_535)
    ingest_max_payload_bytes: int = Field(default=64 * 1024, ge=256)
    ingest_max_future_s: float = Field(default=300.0, ge=0)
    ingest_max_age_days: float = Field(default=30.0, gt=0)

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65_535)

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
