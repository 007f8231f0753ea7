"""The errors of the traffic package, for the CLI and the API to map in one place."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["TrafficError", "UnknownControllerError"]


class TrafficError(Exception):
    """Base of the traffic package's errors: a stable `code`, a message and field details,
    which the API maps to a response in its one error table (`cityops.api.errors`)."""

    code = "traffic_error"

    def __init__(self, message: str, details: Sequence[Mapping[str, object]] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.details: list[dict[str, object]] = [dict(d) for d in details]


class UnknownControllerError(TrafficError):
    """No signal controller with that id in the registry (HTTP 404)."""

    code = "not_found"

    def __init__(self, controller_id: str) -> None:
        message = f"no signal controller {controller_id!r} in the registry"
        super().__init__(message, [{"location": "path", "field": "controller_id",
                                    "message": message}])
        self.controller_id = controller_id
