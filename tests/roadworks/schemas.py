"""Offline JSON Schema validators for the official WZDx 4.2 and GeoJSON schemas.

The schema files are copies in tests/fixtures (with their licences), registered under their
`$id`s with `referencing`, so `$ref`s to https://geojson.org/schema/... resolve without a
network. Formats are checked; `date-time` strictly as RFC 3339.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator, FormatChecker
from referencing import Registry, Resource

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
WZDX = FIXTURES / "wzdx-4.2"
GEOJSON = FIXTURES / "geojson"
WZDX_BASE = "https://raw.githubusercontent.com/usdot-jpo-ode/wzdx/main/schemas/4.2/"

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)


def _checker() -> FormatChecker:
    checker = FormatChecker()

    @checker.checks("date-time")
    def _date_time(value: object) -> bool:
        return not isinstance(value, str) or bool(_RFC3339.match(value))

    return checker


@cache
def registry() -> Registry[Any]:
    resources = []
    for path in sorted([*(WZDX / "schemas").glob("*.json"), *GEOJSON.glob("*.json")]):
        contents = json.loads(path.read_text(encoding="utf-8"))
        resources.append((contents["$id"], Resource.from_contents(contents)))
    return Registry().with_resources(resources)


def _validator(schema_id: str) -> Draft7Validator:
    schema = registry().contents(schema_id)
    return Draft7Validator(schema, registry=registry(), format_checker=_checker())


@cache
def wzdx_feed_validator() -> Draft7Validator:
    return _validator(WZDX_BASE + "WorkZoneFeed.json")


@cache
def feature_collection_validator() -> Draft7Validator:
    return _validator("https://geojson.org/schema/FeatureCollection.json")


def errors(validator: Draft7Validator, instance: object) -> list[str]:
    """Every validation error as `path: message` (empty: valid)."""
    return [
        f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    ]
