"""Who is calling, and what they may do: the principal and the role rules.

Every endpoint that needs to know the caller depends on `current_principal`, which
verifies the request's bearer token or API key (`cityops.api.credentials`) and answers
401 when there is none or it does not verify. `require_roles(...)` guards whole endpoints
(403 for a wrong role); the helpers below decide per resource: a truck sees only its own
route, a roadworks editor only its organisation's works.

Roles: `public` (anyone, no login), `truck` (bound to a truck id), `dispatcher`,
`roadworks_editor` (bound to an organisation), `traffic_engineer`, `admin`. The table of
who may do what is in docs/operations.md and is tested exhaustively by
tests/api/test_authz_matrix.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Final

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from cityops.api.errors import ForbiddenError
from cityops.roadworks.model import same_organisation

if TYPE_CHECKING:
    from cityops.api.credentials import Authenticator

__all__ = [
    "LOGIN_ROLES",
    "OPERATOR",
    "PUBLIC",
    "ROADWORKS_EDITOR",
    "ROADWORKS_STAFF",
    "ROLES",
    "Principal",
    "current_principal",
    "is_roadworks_staff",
    "require_roadworks_editor",
    "require_roadworks_staff",
    "require_roles",
    "require_truck",
]

#: Every role; `public` is everyone's, the others come from a token or an API key.
ROLES: Final = ("public", "truck", "dispatcher", "roadworks_editor", "traffic_engineer", "admin")
LOGIN_ROLES: Final = ROLES[1:]


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)
    truck_id: str | None = None  # set for role "truck"
    organisation: str | None = None  # set for role "roadworks_editor"


OPERATOR = Principal("operator", frozenset({"dispatcher", "admin"}))
#: The caller without credentials (public endpoints only).
PUBLIC = Principal("anonymous", frozenset({"public"}))

#: Roles of city staff: they may register, change and decide on every roadwork. Traffic
#: engineers are the road authority's staff who order the traffic management of works.
ROADWORKS_STAFF = frozenset({"dispatcher", "traffic_engineer", "admin"})
#: The role of a promoter's (utility's, contractor's) user, bound to its organisation.
ROADWORKS_EDITOR = "roadworks_editor"

# Declared for the OpenAPI document (the "Authorize" button of /docs); the headers are
# read and verified by the app's Authenticator.
_bearer_scheme = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="a JWT from the city's identity provider or `cityops auth token`",
)
_key_scheme = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="an API key from `cityops auth create-key` (also `Authorization: ApiKey ...`)",
)


def current_principal(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)],
    _key: Annotated[str | None, Depends(_key_scheme)],
) -> Principal:
    """The authenticated caller of this request; 401 without valid credentials."""
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator.authenticate(request.headers, request.app.state.pool)


Caller = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: str) -> Callable[[Principal], Principal]:
    """A dependency that lets through callers with one of `roles` (403 for the others)."""
    unknown = set(roles) - set(LOGIN_ROLES)
    if not roles or unknown:
        raise ValueError(f"unknown roles: {sorted(unknown)}")
    allowed = frozenset(roles)
    needed = ", ".join(r for r in LOGIN_ROLES if r in allowed)

    def dependency(principal: Caller) -> Principal:
        if principal.roles & allowed:
            return principal
        raise ForbiddenError(
            f"{principal.subject} may not use this endpoint: it needs the role {needed}"
            if len(allowed) == 1
            else f"{principal.subject} may not use this endpoint: it needs one of the roles "
            f"{needed}"
        )

    dependency.__name__ = f"require_{'_or_'.join(sorted(allowed))}"
    return dependency


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

    City staff (dispatcher, traffic engineer, admin) may edit every work. A
    `roadworks_editor` is bound to its organisation and may edit only the works whose
    promoter is that organisation (compared without regard to case and surrounding spaces).
    """
    if is_roadworks_staff(principal):
        return
    if ROADWORKS_EDITOR not in principal.roles:
        raise ForbiddenError(
            f"{principal.subject} may not edit roadworks: that needs the role "
            f"{ROADWORKS_EDITOR} (or city staff: dispatcher, traffic_engineer, admin)"
        )
    own = (principal.organisation or "").strip()
    if not own:
        raise ForbiddenError(
            f"{principal.subject} has the role {ROADWORKS_EDITOR} but no organisation, so "
            "there are no works it may edit"
        )
    if organisation is not None and not same_organisation(own, organisation):
        raise ForbiddenError(
            f"{principal.subject} edits the roadworks of {own!r} only; this one is "
            f"of {organisation!r}"
        )


def require_roadworks_staff(principal: Principal, action: str) -> None:
    """Only city staff may `action` (e.g. decide on coordination findings)."""
    if not is_roadworks_staff(principal):
        raise ForbiddenError(
            f"{principal.subject} may not {action}: only city staff (dispatcher, "
            "traffic_engineer, admin) may"
        )
