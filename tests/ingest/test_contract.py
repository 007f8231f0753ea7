"""The MQTT contract: topics, and the published JSON Schemas match the models."""

from __future__ import annotations

import json

import pytest

from cityops.ingest.contract import (
    Channel,
    DeviceKind,
    TopicError,
    command_topic,
    device_topic,
    ingest_subscription,
    json_schemas,
    parse_topic,
)
from tests.conftest import REPO


def test_topics_round_trip() -> None:
    topic = device_topic("of", DeviceKind.BIN, "S-B0001", Channel.TELEMETRY)
    assert topic == "of/v1/bin/S-B0001/telemetry"
    info = parse_topic("of", topic)
    assert (info.kind, info.device_id, info.channel) == (
        DeviceKind.BIN,
        "S-B0001",
        Channel.TELEMETRY,
    )
    assert command_topic("of", DeviceKind.TRUCK, "T1", "route") == "of/v1/truck/T1/cmd/route"


def test_command_topics_are_not_ingested() -> None:
    with pytest.raises(TopicError):
        parse_topic("of", command_topic("of", DeviceKind.SIGNAL, "K1", "timing"))
    assert ingest_subscription("of", None) == "of/v1/+/+/+"
    assert ingest_subscription("of", "g") == "$share/g/of/v1/+/+/+"


def test_published_schemas_are_current() -> None:
    folder = REPO / "docs" / "schemas"
    for name, schema in json_schemas().items():
        path = folder / name
        assert path.exists(), f"{path} missing: run 'cityops mqtt schemas'"
        assert json.loads(path.read_text()) == schema, (
            f"{path} is stale: run 'cityops mqtt schemas'"
        )
