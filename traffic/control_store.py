"""SQL for adaptive control: control modes per controller, their history, the links.

Tables of migration 0007: `signal_control_modes` (no row means `adaptive`),
`signal_control_mode_log` and `signal_links`. Used by the control service and the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg

from .errors import UnknownControllerError
from .maxpressure import Link

__all__ = [
    "DEFAULT_MODE",
    "ControlMode",
    "ModeRow",
    "controller_ids",
    "get_mode",
    "list_modes",
    "load_links",
    "set_mode",
]

Connection = psycopg.Connection[Any]
ControlMode = Literal["adaptive", "fixed"]

#: The mode of a controller without a row in `signal_control_modes`.
DEFAULT_MODE: ControlMode = "adaptive"


@dataclass(frozen=True, slots=True)
class ModeRow:
    """A controller's control mode; `changed_*` are None while it has its default."""

    controller_id: str
    mode: ControlMode
    changed_by: str | None
    changed_at: datetime | None
    reason: str


def _mode(text: object) -> ControlMode:
    if text == "fixed":
        return "fixed"
    return "adaptive"


_SELECT = (
    "SELECT c.controller_id, m.mode, m.changed_by, m.changed_at, coalesce(m.reason, '')"
    " FROM signal_controllers c LEFT JOIN signal_control_modes m USING (controller_id)"
)


def _row(r: tuple[Any, ...]) -> ModeRow:
    return ModeRow(
        str(r[0]), _mode(r[1]) if r[1] is not None else DEFAULT_MODE, r[2], r[3], str(r[4])
    )


def list_modes(conn: Connection) -> list[ModeRow]:
    """Every registered controller with its mode, by controller id."""
    return [_row(r) for r in conn.execute(_SELECT + " ORDER BY c.controller_id")]


def get_mode(conn: Connection, controller_id: str) -> ModeRow:
    """One controller's mode, or raise `UnknownControllerError`."""
    r = conn.execute(_SELECT + " WHERE c.controller_id = %s", (controller_id,)).fetchone()
    if r is None:
        raise UnknownControllerError(controller_id)
    return _row(r)


def set_mode(
    conn: Connection, controller_id: str, mode: ControlMode, changed_by: str, reason: str
) -> ModeRow:
    """Switch a controller's control mode (and log it); commits. `UnknownControllerError` if
    it is not registered."""
    with conn.transaction():
        if (
            conn.execute(
                "SELECT 1 FROM signal_controllers WHERE controller_id = %s FOR SHARE",
                (controller_id,),
            ).fetchone()
            is None
        ):
            raise UnknownControllerError(controller_id)
        conn.execute(
            "INSERT INTO signal_control_modes (controller_id, mode, changed_by, changed_at,"
            " reason) VALUES (%s, %s, %s, now(), %s) ON CONFLICT (controller_id) DO UPDATE"
            " SET mode = excluded.mode, changed_by = excluded.changed_by,"
            " changed_at = excluded.changed_at, reason = excluded.reason",
            (controller_id, mode, changed_by, reason),
        )
        conn.execute(
            "INSERT INTO signal_control_mode_log (controller_id, mode, changed_by, reason)"
            " VALUES (%s, %s, %s, %s)",
            (controller_id, mode, changed_by, reason),
        )
    return get_mode(conn, controller_id)


def controller_ids(conn: Connection) -> list[str]:
    """Every registered controller id, sorted."""
    return [
        str(r[0]) for r in conn.execute("SELECT controller_id FROM signal_controllers ORDER BY 1")
    ]


def load_links(conn: Connection) -> list[Link]:
    """Every row of `signal_links`."""
    return [
        Link(str(r[0]), int(r[1]), str(r[2]), int(r[3]), float(r[4]))
        for r in conn.execute(
            "SELECT controller_id, channel, to_controller_id, to_channel, share"
            " FROM signal_links ORDER BY 1, 2, 3, 4"
        )
    ]
