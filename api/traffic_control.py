"""Routes for traffic engineers: adaptive signal control on or off, per controller.

`GET /api/v1/traffic/control/modes` lists every registered controller with its control
mode (`adaptive` unless someone switched it to `fixed`), `GET .../modes/{id}` one of them,
and `PUT .../modes/{id}` switches it, with a reason for the audit log. The control
service (`cityops traffic control`) re-reads the modes every few seconds and sends the
controller `fallback` (its own fixed-time plan) once it is `fixed`. Changing a mode
needs the role `traffic_engineer` or `admin` (`require_traffic_engineer`), reading one
also `dispatcher` (`require_traffic_reader`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Request
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from cityops.api.auth import Principal, current_principal
from cityops.api.errors import ForbiddenError
from cityops.api.schemas import STORABLE
from cityops.ingest.contract import DEVICE_ID_PATTERN
from cityops.traffic.control_store import ModeRow, get_mode, list_modes, set_mode

__all__ = [
    "TRAFFIC_CONTROL_ROLES",
    "TRAFFIC_READ_ROLES",
    "require_traffic_engineer",
    "require_traffic_reader",
    "router",
]

#: Roles that may switch adaptive control on or off.
TRAFFIC_CONTROL_ROLES = frozenset({"traffic_engineer", "admin"})
#: Roles that may see the control modes (city staff who work with the signals).
TRAFFIC_READ_ROLES = TRAFFIC_CONTROL_ROLES | {"dispatcher"}

router = APIRouter(prefix="/api/v1/traffic/control", tags=["traffic control"])

ControllerId = Annotated[
    str, Path(pattern=DEVICE_ID_PATTERN, description="signal controller id, e.g. C01")
]
Caller = Annotated[Principal, Depends(current_principal)]


def require_traffic_engineer(principal: Principal) -> None:
    """Only traffic engineers and admins may switch adaptive control."""
    if not principal.roles & TRAFFIC_CONTROL_ROLES:
        raise ForbiddenError(
            f"{principal.subject} may not change signal control: that needs the role "
            "traffic_engineer (or admin)"
        )


def require_traffic_reader(principal: Principal) -> None:
    """Traffic engineers, dispatchers and admins may see the control modes."""
    if not principal.roles & TRAFFIC_READ_ROLES:
        raise ForbiddenError(
            f"{principal.subject} may not see signal control modes: that needs the role "
            "traffic_engineer, dispatcher or admin"
        )


def _pool(request: Request) -> ConnectionPool:
    pool: ConnectionPool = request.app.state.pool
    return pool


Pool = Annotated[ConnectionPool, Depends(_pool)]


class ControlModeOut(BaseModel):
    """A controller's control mode; `changed_*` are null while it has the default."""

    controller_id: str
    mode: Literal["adaptive", "fixed"]
    changed_by: str | None
    changed_at: datetime | None
    reason: str

    @classmethod
    def of(cls, row: ModeRow) -> ControlModeOut:
        return cls(
            controller_id=row.controller_id,
            mode=row.mode,
            changed_by=row.changed_by,
            changed_at=row.changed_at,
            reason=row.reason,
        )


class ControlModesOut(BaseModel):
    items: list[ControlModeOut]


class ControlModeIn(BaseModel):
    """The new mode and why (kept in the audit log)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["adaptive", "fixed"] = Field(
        description="adaptive: the control service decides; fixed: the controller's own plan"
    )
    # stripped before the length check: "   " is no reason
    reason: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500), STORABLE
    ] = Field(description="why, for the audit log")


@router.get("/modes")
def get_modes(pool: Pool, caller: Caller) -> ControlModesOut:
    """Every registered signal controller with its control mode."""
    require_traffic_reader(caller)
    with pool.connection() as conn:
        return ControlModesOut(items=[ControlModeOut.of(r) for r in list_modes(conn)])


@router.get("/modes/{controller_id}")
def get_controller_mode(controller_id: ControllerId, pool: Pool, caller: Caller) -> ControlModeOut:
    """One controller's control mode."""
    require_traffic_reader(caller)
    with pool.connection() as conn:
        return ControlModeOut.of(get_mode(conn, controller_id))  # unknown: 404


@router.put("/modes/{controller_id}")
def put_controller_mode(
    controller_id: ControllerId, body: ControlModeIn, pool: Pool, caller: Caller
) -> ControlModeOut:
    """Switch adaptive control on (`adaptive`) or off (`fixed`) for one controller."""
    require_traffic_engineer(caller)
    with pool.connection() as conn:
        row = set_mode(conn, controller_id, body.mode, caller.subject, body.reason.strip())
    return ControlModeOut.of(row)
