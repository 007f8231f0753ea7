"""The errors of the roadworks registry, for the API to map to HTTP in one place.

Each carries a stable machine-readable `code`, a human `message` and optional field-level
`details` (like `cityops.api.errors`), but knows nothing about HTTP. Suggested mapping:

===============================  ====  ===============================================
class                            HTTP  when
===============================  ====  ===============================================
`NotFoundError` (and children)   404   no roadwork / finding / resurfaced segment
`PayloadTooLargeError`           413   the request body or a list in it is too large
`InvalidPayloadError` (others)   422   a field is missing, malformed or implausible
`NotPermittedError`              403   the actor's role may not do this
`InvalidStateError` (children)   409   illegal transition, not editable, obsolete
`StaleVersionError`              409   someone else changed it first (optimistic)
`DuplicateReferenceError`        409   a reference number that is already taken
===============================  ====  ===============================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "DuplicateReferenceError",
    "FindingNotFoundError",
    "IllegalTransitionError",
    "InvalidGeometryError",
    "InvalidPayloadError",
    "InvalidPeriodError",
    "InvalidStateError",
    "NotEditableError",
    "NotFoundError",
    "NotPermittedError",
    "PayloadTooLargeError",
    "RoadworkNotFoundError",
    "RoadworksError",
    "SegmentNotFoundError",
    "StaleVersionError",
]


class RoadworksError(Exception):
    """Base of every error the roadworks registry raises on purpose."""

    code = "roadworks_error"

    def __init__(self, message: str, details: Sequence[Mapping[str, object]] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.details: list[dict[str, object]] = [dict(d) for d in details]


# -- not found ---------------------------------------------------------------------------


class NotFoundError(RoadworksError):
    code = "not_found"


class RoadworkNotFoundError(NotFoundError):
    def __init__(self, key: int | str) -> None:
        what = f"id {key}" if isinstance(key, int) else f"reference {key!r}"
        super().__init__(f"no roadwork with {what}")
        self.key = key


class FindingNotFoundError(NotFoundError):
    def __init__(self, finding_id: int) -> None:
        super().__init__(f"no coordination finding with id {finding_id}")
        self.finding_id = finding_id


class SegmentNotFoundError(NotFoundError):
    def __init__(self, segment_id: int) -> None:
        super().__init__(f"no resurfaced street segment with id {segment_id}")
        self.segment_id = segment_id


# -- bad input ---------------------------------------------------------------------------


class InvalidPayloadError(RoadworksError):
    """Input that cannot be accepted; `details` lists each problem with its field path."""

    code = "invalid_payload"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", [{"field": field, "message": message}])
        self.field = field

    @classmethod
    def many(cls, problems: Iterable[tuple[str, str]]) -> InvalidPayloadError:
        """One error listing several problems (the first one names the error)."""
        items = list(problems)
        if not items:
            raise ValueError("no problems given")
        err = cls(*items[0])
        if len(items) > 1:
            err.message = "; ".join(f"{f}: {m}" for f, m in items)
            err.args = (err.message,)
            err.details = [{"field": f, "message": m} for f, m in items]
        return err


class InvalidGeometryError(InvalidPayloadError):
    """A geometry that is empty, invalid, of the wrong type or outside the city."""

    code = "invalid_geometry"


class InvalidPeriodError(InvalidPayloadError):
    """A time range that ends before it starts, lacks a time zone or is implausible."""

    code = "invalid_period"


class PayloadTooLargeError(InvalidPayloadError):
    """A request body, text or geometry beyond the registry's limits."""

    code = "payload_too_large"


class DuplicateReferenceError(RoadworksError):
    code = "duplicate_reference"

    def __init__(self, reference: str) -> None:
        super().__init__(f"reference {reference!r} is already taken")
        self.reference = reference


# -- state and permission ----------------------------------------------------------------


class InvalidStateError(RoadworksError):
    """The object is in a state that does not allow the request."""

    code = "invalid_state"


class IllegalTransitionError(InvalidStateError):
    code = "illegal_transition"

    def __init__(self, message: str, *, from_status: str, to_status: str,
                 allowed: Sequence[str] = ()) -> None:
        super().__init__(
            message,
            [{"from": from_status, "to": to_status, "allowed": list(allowed)}],
        )
        self.from_status = from_status
        self.to_status = to_status
        self.allowed = tuple(allowed)


class NotEditableError(InvalidStateError):
    code = "not_editable"


class StaleVersionError(InvalidStateError):
    code = "stale_version"

    def __init__(self, reference: str, expected: int, actual: int) -> None:
        super().__init__(
            f"roadwork {reference} was changed meanwhile: you edited version {expected}, "
            f"the current version is {actual}; reload and apply your change again"
        )
        self.expected = expected
        self.actual = actual


class NotPermittedError(RoadworksError):
    code = "not_permitted"
