"""The routing package's exceptions: one tree, every name ending in ``Error``.

Callers (the commands, the API) catch :class:`RoutingError` for any of them, or one kind.
"""

from __future__ import annotations

__all__ = ["NetworkError", "RoutingError", "UnsupportedProblemError", "VrplibError"]


class RoutingError(Exception):
    """Base of the routing package's errors."""


class NetworkError(RoutingError):
    """An extract could not be turned into a road network (missing, unreadable, empty)."""


class UnsupportedProblemError(RoutingError):
    """An engine cannot represent this problem (e.g. breaks for PyVRP); use another engine."""


class VrplibError(RoutingError, ValueError):
    """A file is missing, unreadable or not a CVRP instance/solution we understand."""
