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


def _free_text_fields() -> list[tuple[str, str, object]]:
    """(model, field, annotation) of every string field of the contract that is neither a
    literal nor held to a pattern (device ids): free text from a device or a service."""
    from typing import Annotated

    from pydantic import BaseModel

    import cityops.ingest.contract as contract

    found = []
    for name in dir(contract):
        model = getattr(contract, name)
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or model is BaseModel:
            continue
        for field_name, field in model.model_fields.items():
            if any(getattr(m, "pattern", None) for m in field.metadata):
                continue
            text = str(field.annotation)
            if "str" in text and "Literal" not in text:
                # a top-level Annotated comes apart into annotation and metadata
                whole = (
                    Annotated[(field.annotation, *field.metadata)]  # type: ignore[valid-type]
                    if field.metadata
                    else field.annotation
                )
                found.append((name, field_name, whole))
    return found


def test_every_free_text_field_of_the_contract_refuses_control_characters() -> None:
    """One rule for every string a device or a service sends (issue 14: a NUL in a truck
    event's reason stalled the ingest)."""
    from pydantic import TypeAdapter, ValidationError

    fields = _free_text_fields()
    names = {f"{m}.{f}" for m, f, _ in fields}
    assert {"TruckEvent.reason", "DeviceStatus.firmware", "RouteCommand.reason",
            "TimingCommand.issuer"} <= names, names
    for model, field, annotation in fields:
        adapter: TypeAdapter[object] = TypeAdapter(annotation)
        for bad in ("a\x00b", "\x1b[31m", "x\ud800"):
            value: object = bad
            if "dict" in str(annotation):
                value = {bad: 1.0} if "float" in str(annotation) else [{bad: "x"}]
            with pytest.raises(ValidationError, match=r"control characters|unicode"):
                adapter.validate_python(value)
        good = "Zufahrt zugeparkt\tseit 7 Uhr"
        if "dict" not in str(annotation):
            assert adapter.validate_python(good) == good, f"{model}.{field}"
