"""Every error body keeps the documented shape: each entry of `details` has a location, a
field and a message, also when the error comes from the roadworks registry (which knows no
HTTP) or names only a field. Found by tests/api/test_schemathesis.py, whose response
schema check failed on these bodies."""

from __future__ import annotations

from typing import Any

import jsonschema

from cityops.api.roadworks.context import roadworks_api
from tests.api.test_roadworks_api import MANAGE, create, roadworks_context
from tests.api.testclient import TestClient


def _error_body_validator(client: TestClient) -> jsonschema.Draft202012Validator:
    """The `ErrorBody` schema of the app's OpenAPI document, references resolved."""
    components = client.get("/openapi.json").json()["components"]["schemas"]
    schema = _rewrite_refs({"$ref": "#/components/schemas/ErrorBody", "$defs": components})
    return jsonschema.Draft202012Validator(schema)


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (v.replace("#/components/schemas/", "#/$defs/") if k == "$ref" else _rewrite_refs(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


def _check(client: TestClient, body: dict[str, Any]) -> None:
    _error_body_validator(client).validate(body)
    for detail in body["details"]:
        assert {"location", "field", "message"} <= detail.keys(), detail


def test_illegal_transition_details_name_the_request_and_keep_the_allowed_targets(
    client: TestClient,
) -> None:
    app: Any = client.app
    ctx = roadworks_context()
    app.dependency_overrides[roadworks_api] = lambda: ctx
    ref = create(client)["reference"]
    r = client.post(f"{MANAGE}/works/{ref}/transitions", json={"to": "completed"})
    assert r.status_code == 409
    body = r.json()
    _check(client, body)
    (detail,) = body["details"]
    assert detail["location"] == "request"
    assert detail["message"] == body["message"]
    assert detail["from"] == "draft" and detail["to"] == "completed"
    assert set(detail["allowed"]) == {"submitted (submit)", "cancelled (cancel)"}


def test_roadworks_payload_problems_are_in_the_body(client: TestClient) -> None:
    app: Any = client.app
    ctx = roadworks_context()
    app.dependency_overrides[roadworks_api] = lambda: ctx
    bad = {
        "title": "0",
        "promoter": "0",
        "sector": "gas",
        "planned_start": "2000-01-01T00:00:00Z",
        "planned_end": "2000-01-01T00:00:00Z",
        "footprint": {},
        "streets": [{"name": "0", "geometry": {}}],
    }
    r = client.post(f"{MANAGE}/preview", json=bad)
    assert r.status_code == 422
    body = r.json()
    _check(client, body)
    assert body["details"] and all(d["location"] == "body" for d in body["details"])


def test_unknown_controller_detail_has_a_message(client: TestClient) -> None:
    r = client.get("/api/v1/traffic/control/modes/K-unknown")
    assert r.status_code == 404
    body = r.json()
    _check(client, body)
    assert body["details"][0] == {
        "location": "path",
        "field": "controller_id",
        "message": body["message"],
    }
