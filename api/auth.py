"""Who is calling: the seam where authentication plugs in.

Every endpoint that needs to know the caller depends on `current_principal`. Today it
returns an operator principal for every request (there is no login yet); the security
issue replaces it with bearer-token and API-key verification. The authorisation rules
already live here and are enforced, so a truck principal only ever sees its own route.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cityops.api.errors import ForbiddenError

__all__ = ["OPERATOR", "Principal", "current_principal", "require_truck"]


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)
    truck_id: str | None = None  # set for role "truck"
    organisation: str | None = None  # set for role "roadworks_editor"


OPERATOR = Principal("operator", frozenset({"dispatcher", "admin"}))


def current_principal() -> Principal:
    """The caller of this request (no authentication yet: everyone is an operator)."""
    return OPERATOR


def require_truck(principal: Principal, truck_id: str) -> None:
    """A truck may act only as itself; dispatchers and admins may act for any truck."""
    if principal.roles & {"dispatcher", "admin"}:
        return
    if "truck" in principal.roles and principal.truck_id == truck_id:
        return
    raise ForbiddenError(f"{principal.subject} may not access truck {truck_id!r}")
