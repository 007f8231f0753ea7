"""Who is calling: the seam where authentication plugs in.

Every endpoint that needs to know the caller depends on `current_principal`. Today it
returns an operator principal for every request (there is no login yet); the security
issue replaces it with bearer-token and API-key verification. The authorisation rules
already live here and are enforced, so a truck principal only ever sees its own route.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cityops.api.errors import ForbiddenError

__all__ = [
    "OPERATOR",
    "ROADWORKS_EDITOR",
    "ROADWORKS_STAFF",
    "Principal",
    "current_principal",
    "is_roadworks_staff",
    "require_roadworks_editor",
    "require_roadworks_staff",
    "require_truck",
]


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)
    truck_id: str | None = None  # set for role "truck"
    organisation: str | None = None  # set for role "roadworks_editor"


OPERATOR = Principal("operator", frozenset({"dispatcher", "admin"}))

#: Roles of city staff: they may register, change and decide on every roadwork.
ROADWORKS_STAFF = frozenset({"dispatcher", "admin"})
#: The role of a promoter's (utility's, contractor's) user, bound to its organisation.
ROADWORKS_EDITOR = "roadworks_editor"


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


def is_roadworks_staff(principal: Principal) -> bool:
    return bool(principal.roles & ROADWORKS_STAFF)


def require_roadworks_editor(principal: Principal, organisation: str | None = None) -> None:
    """May the caller edit roadworks, and those of `organisation` when given?

    City staff (dispatcher, admin) may edit every work. A `roadworks_editor` is bound to
    its organisation and may edit only the works whose promoter is that organisation
    (compared without regard to case and surrounding spaces).
    """
    if is_roadworks_staff(principal):
        return
    if ROADWORKS_EDITOR not in principal.roles:
        raise ForbiddenError(
            f"{principal.subject} may not edit roadworks: that needs the role "
            f"{ROADWORKS_EDITOR} (or dispatcher/admin)"
        )
    own = (principal.organisation or "").strip()
    if not own:
        raise ForbiddenError(
            f"{principal.subject} has the role {ROADWORKS_EDITOR} but no organisation, so "
            "there are no works it may edit"
        )
    if organisation is not None and own.casefold() != organisation.strip().casefold():
        raise ForbiddenError(
            f"{principal.subject} edits the roadworks of {own!r} only; this one is "
            f"of {organisation!r}"
        )


def require_roadworks_staff(principal: Principal, action: str) -> None:
    """Only city staff may `action` (e.g. decide on coordination findings)."""
    if not is_roadworks_staff(principal):
        raise ForbiddenError(
            f"{principal.subject} may not {action}: only city staff (dispatcher, admin) may"
        )
