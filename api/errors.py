"""The errors the HTTP API reports, and the one table that turns every error a route can
raise into an HTTP status and the JSON body `{"error": code, "message": ..., "details": [...]}`.

The API's own errors (below) and the errors of the domain packages (the roadworks
registry, traffic, routing, the ingest's device registry) know nothing about HTTP:
`STATUS` maps each class to a status code, and `install_error_handlers` answers with the
body; nothing else in the API translates an error by hand. Request validation (422),
unknown endpoints and methods, an unreachable database (503) and unexpected errors (500,
the cause only in the log) get the same body shape.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Final

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from cityops.ingest.registry_store import RegistryConflictError, RegistryNotFoundError
from cityops.roadworks.errors import (
    DuplicateReferenceError,
    InvalidPayloadError,
    InvalidStateError,
    NotPermittedError,
    PayloadTooLargeError,
    RoadworksError,
)
from cityops.roadworks.errors import NotFoundError as RoadworksNotFoundError
from cityops.routing.errors import RoutingError
from cityops.traffic.errors import TrafficError, UnknownControllerError

__all__ = [
    "REALM",
    "STATUS",
    "ApiError",
    "AuthProviderUnavailableError",
    "BinNotFoundError",
    "BrokerUnavailableError",
    "DatabaseUnavailableError",
    "ForbiddenError",
    "InvalidParameterError",
    "NotFoundError",
    "PreconditionFailedError",
    "PreconditionRequiredError",
    "RateLimitedError",
    "RecordInvalidError",
    "UnauthenticatedError",
    "install_error_handlers",
]

logger = logging.getLogger(__name__)


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


# -- authentication ---------------------------------------------------------------------


#: The realm named in `WWW-Authenticate`.
REALM: Final = "cityops"


class UnauthenticatedError(ApiError):
    """No credentials, or credentials that do not verify (401)."""

    code = "unauthenticated"

    def __init__(self, message: str, *, invalid: bool = False) -> None:
        super().__init__(message)
        bearer = f'Bearer realm="{REALM}"'
        if invalid:  # RFC 6750 3.1: the client sent a token and it is not acceptable
            # error_description allows printable ASCII but " and \ (RFC 6750 3): the
            # message may quote a hostile token's header, which must not break the response
            reason = "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in message)
            bearer += f', error="invalid_token", error_description="{reason}"'
        self.headers = {"WWW-Authenticate": f'{bearer}, ApiKey realm="{REALM}"'}


class AuthProviderUnavailableError(ApiError):
    """The identity provider's keys could not be fetched (503)."""

    code = "auth_provider_unavailable"


class RateLimitedError(ApiError):
    """Too many requests from one client address (429)."""

    code = "rate_limited"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many requests; try again in {retry_after_s} s")
        self.headers = {"Retry-After": str(retry_after_s)}


# -- the one table ----------------------------------------------------------------------

#: Every error class a route may raise, most specific first: its HTTP status, and the
#: body's `error` code for the classes that carry none of their own (the API's, the
#: roadworks registry's and traffic's errors carry code, message and details; the others
#: answer with their message and no details).
STATUS: Final[tuple[tuple[type[Exception], int, str | None], ...]] = (
    # the API's own
    (NotFoundError, 404, None),
    (UnauthenticatedError, 401, None),
    (ForbiddenError, 403, None),
    (RateLimitedError, 429, None),
    (AuthProviderUnavailableError, 503, None),
    (InvalidParameterError, 422, None),
    (RecordInvalidError, 422, None),
    (PreconditionFailedError, 412, None),
    (PreconditionRequiredError, 428, None),
    (DatabaseUnavailableError, 503, None),
    (BrokerUnavailableError, 503, None),
    # the roadworks registry
    (RoadworksNotFoundError, 404, None),
    (PayloadTooLargeError, 413, None),
    (InvalidPayloadError, 422, None),  # also InvalidGeometryError, InvalidPeriodError
    (NotPermittedError, 403, None),
    # IllegalTransitionError, NotEditableError, StaleVersionError, an obsolete finding
    (InvalidStateError, 409, None),
    (DuplicateReferenceError, 409, None),
    # traffic
    (UnknownControllerError, 404, None),
    # the device registry (ingest): a write against another version than the stored one
    (RegistryConflictError, 412, PreconditionFailedError.code),
    (RegistryNotFoundError, 404, NotFoundError.code),
    # routing: no route plans today (the API reads plans from the database); a plan that
    # cannot be made would be the server's problem, not the caller's
    (RoutingError, 503, "routing_unavailable"),
)

_CARRIES_CODE = (ApiError, RoadworksError, TrafficError)

def _error(
    status: int, code: str, message: str, details: list[Mapping[str, object]] | None = None
) -> JSONResponse:
    body = {"error": code, "message": message, "details": list(details or [])}
    return JSONResponse(status_code=status, content=body)


def _status_of(exc: Exception) -> tuple[int, str | None]:
    for cls, status, code in STATUS:
        if isinstance(exc, cls):
            return status, code
    return 500, None


def _error_details(exc: ApiError | RoadworksError | TrafficError) -> list[Mapping[str, object]]:
    """`exc.details` in the documented `ErrorDetail` shape: each has a location, a field and
    a message (further keys, such as a refused transition's allowed targets, are kept).

    The roadworks registry knows no HTTP: its field problems are in the request body, its
    other details (a refused transition) concern the request as a whole; a detail without
    a message of its own carries the error's.
    """
    location = "body" if isinstance(exc, InvalidPayloadError) else "request"
    out: list[Mapping[str, object]] = []
    for detail in exc.details:
        item = dict(detail)
        item.setdefault("location", location)
        item.setdefault("field", item["location"])
        item.setdefault("message", exc.message)
        out.append(item)
    return out


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error with its status of `STATUS` (500 for any other) and the JSON body."""

    async def domain_error(request: Request, exc: Exception) -> JSONResponse:
        status, code = _status_of(exc)
        if isinstance(exc, _CARRIES_CODE):
            code, message, details = exc.code, exc.message, _error_details(exc)
        else:
            code, message, details = code or "internal_error", str(exc), []
        if status >= 500:
            logger.warning("%s %s: %s", request.method, request.url.path, message)
        elif status in (401, 403):
            logger.info("%s %s refused (%d): %s", request.method, request.url.path, status, message)
        response = _error(status, code, message, details)
        response.headers.update(getattr(exc, "headers", None) or {})
        return response

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details: list[Mapping[str, object]] = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ())]
            location = loc[0] if loc else "request"
            field = ".".join(loc[1:]) or location
            message = str(err.get("msg", "")).removeprefix("Value error, ")
            kind = str(err.get("type", ""))
            raw = err.get("input")
            if kind.startswith("datetime") and isinstance(raw, str) and " " in raw:
                message += " (a '+' in a URL must be written as %2B)"
            details.append({"location": location, "field": field, "message": message, "type": kind})
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        return _error(422, "validation_error", f"invalid request: {summary}", details)

    async def database_error(request: Request, exc: Exception) -> JSONResponse:
        logger.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return _error(
            503, DatabaseUnavailableError.code, "the database is unreachable or too slow; try again"
        )

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        code = codes.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no such endpoint: {request.url.path}"
        response = _error(exc.status_code, code, message)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal_error", "internal error; the cause is in the server log")

    for cls in (*_CARRIES_CODE, RegistryConflictError, RegistryNotFoundError, RoutingError):
        app.add_exception_handler(cls, domain_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(PoolTimeout, database_error)
    app.add_exception_handler(psycopg.OperationalError, database_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)
