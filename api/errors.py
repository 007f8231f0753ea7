"""The errors the HTTP API reports on purpose.

They carry a stable machine-readable `code`, a human message and optional field-level
details, but know nothing about HTTP: `cityops.api.app` maps each class to a status code
and the JSON body `{"error": code, "message": ..., "details": [...]}` in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = [
    "ApiError",
    "BinNotFoundError",
    "BrokerUnavailableError",
    "DatabaseUnavailableError",
    "ForbiddenError",
    "InvalidParameterError",
    "NotFoundError",
    "PreconditionFailedError",
    "PreconditionRequiredError",
    "RecordInvalidError",
]


class ApiError(Exception):
    """Base of the API's errors."""

    code = "error"

    def __init__(self, message: str, details: Sequence[Mapping[str, object]] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.details: list[dict[str, object]] = [dict(d) for d in details]


class NotFoundError(ApiError):
    """The addressed resource does not exist."""

    code = "not_found"


class BinNotFoundError(NotFoundError):
    def __init__(self, bin_id: str) -> None:
        super().__init__(f"no bin with id {bin_id!r}")
        self.bin_id = bin_id


class InvalidParameterError(ApiError):
    """A request parameter is well-typed but its value is not acceptable (bbox, time range...)."""

    code = "validation_error"

    def __init__(self, field: str, message: str, *, location: str = "query") -> None:
        super().__init__(
            f"invalid {field}: {message}",
            [{"location": location, "field": field, "message": message}],
        )
        self.field = field


class DatabaseUnavailableError(ApiError):
    """The database cannot be reached, is too slow, or is not migrated."""

    code = "database_unavailable"


class ForbiddenError(ApiError):
    """The caller is known but may not see or change this resource."""

    code = "forbidden"


class BrokerUnavailableError(ApiError):
    """The MQTT broker did not accept a message in time."""

    code = "broker_unavailable"


class PreconditionFailedError(ApiError):
    """`If-Match` names another version than the stored one: someone changed it meanwhile."""

    code = "precondition_failed"


class PreconditionRequiredError(ApiError):
    """A change of an existing resource without `If-Match` (a lost update waiting to happen)."""

    code = "precondition_required"


class RecordInvalidError(ApiError):
    """A registry record that does not pass the registry's checks, one detail per problem."""

    code = "validation_error"
