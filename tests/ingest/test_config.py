"""Settings from CITYOPS_* variables, validated with messages that name the variable."""

from __future__ import annotations

import pytest

from cityops.ingest.config import ConfigError, load_settings


def test_defaults_are_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CITYOPS_DATABASE_URL", "CITYOPS_MQTT_URL", "CITYOPS_TOPIC_PREFIX"):
        monkeypatch.delenv(var, raising=False)
    s = load_settings()
    assert s.mqtt_host == "127.0.0.1" and s.mqtt_port == 1883 and not s.mqtt_tls
    assert s.topic_prefix == "cityops"


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYOPS_MQTT_URL", "mqtts://broker.example:8883")
    monkeypatch.setenv("CITYOPS_DATABASE_URL", "postgresql://u:secret@db/cityops")
    s = load_settings()
    assert s.mqtt_tls and s.mqtt_port == 8883 and s.mqtt_host == "broker.example"
    assert "secret" not in s.redacted_database_url()


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("CITYOPS_DATABASE_URL", "mysql://x/y", "CITYOPS_DATABASE_URL"),
        ("CITYOPS_MQTT_URL", "http://broker", "mqtt://"),
        ("CITYOPS_TOPIC_PREFIX", "city/#", "wildcards"),
        ("CITYOPS_INGEST_BATCH_SIZE", "0", "CITYOPS_INGEST_BATCH_SIZE"),
        ("CITYOPS_DB_MODE", "mongo", "CITYOPS_DB_MODE"),
    ],
)
def test_invalid_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match="invalid configuration") as info:
        load_settings()
    assert needle in str(info.value)
