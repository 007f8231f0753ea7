"""What the re-planner reads for a re-plan: the day's state (the database merged with what
it heard), the changes of the street closures, and the street network under the active
closures with the streets they close."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from cityops.routing import repository as repo
from cityops.routing.closures import (
    ClosedStreets,
    Closure,
    apply_closures,
    closure_key,
    node_index,
)
from cityops.routing.network import CachingNetwork, RoadNetwork
from cityops.routing.planning import BERLIN, DayAxis
from cityops.routing.replan.day import DayState, day_state
from cityops.routing.replan.heard import Heard
from cityops.routing.replan.options import ReplanOptions
from cityops.routing.replan.triggers import Trigger, TriggerKind

__all__ = ["ClosureWatch", "Streets", "load_day"]

logger = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]


def load_day(
    conn: Conn, now: datetime, heard: Heard, options: ReplanOptions
) -> tuple[DayState, list[Closure]]:
    """The state of the day of `now` and the closures valid at or after it."""
    axis = DayAxis(now.astimezone(BERLIN).date())
    bins, sites, trucks = repo.load_bins(conn), repo.load_sites(conn), repo.load_trucks(conn)
    routes = repo.current_routes_on(conn, axis.day, geometry=False)
    events, states = heard.merged(
        repo.load_truck_events(conn, axis.midnight), repo.load_truck_states(conn)
    )
    breaks = repo.load_break_ends(conn, axis.day, now)
    closures = repo.load_closures(conn, valid_at_or_after=now)
    state = day_state(
        now=now,
        bins=bins,
        sites=sites,
        trucks=trucks,
        routes=routes,
        events=events,
        states=states,
        break_ends=breaks,
        options=options,
    )
    return state, closures


class ClosureWatch:
    """Which street closures changed since the last poll."""

    def __init__(self) -> None:
        self._stamp: tuple[datetime | None, int] | None = None
        self._active: frozenset[str] = frozenset()

    def start(self, conn: Conn, now: datetime) -> None:
        self._stamp = repo.closures_stamp(conn)
        self._active = repo.closures_active_at(conn, now)

    def poll(self, conn: Conn, now: datetime) -> list[Trigger]:
        """A closure trigger per row added or changed, or that began or ended since the
        last poll (its row unchanged); one without an id when one was removed."""
        stamp = repo.closures_stamp(conn)
        active = repo.closures_active_at(conn, now)
        if self._stamp is None:
            self._stamp, self._active = stamp, active
            return []
        ids = set(active ^ self._active)
        removed = False
        if stamp != self._stamp:
            changed = repo.closures_changed_since(conn, self._stamp[0])
            ids.update(changed)
            removed = not changed
        self._stamp, self._active = stamp, active
        if not ids and not removed:
            return []
        return [Trigger(TriggerKind.CLOSURE, now, detail=c) for c in sorted(ids)] or [
            Trigger(TriggerKind.CLOSURE, now)  # one was removed
        ]


class Streets:
    """The street network under the active closures (one :class:`CachingNetwork` per set
    of closures, so consecutive re-plans share its memory) and the streets they close."""

    def __init__(self, base: RoadNetwork | None) -> None:
        self.base = base
        self._network: RoadNetwork | None = None
        self._key: str | None = None
        self._closed: ClosedStreets | None = None
        self._node_at: dict[tuple[float, float], int] | None = None

    def at(self, closures: Sequence[Closure], now: datetime) -> RoadNetwork:
        base = self.base
        assert base is not None  # loaded by the service's start()
        active = [c for c in closures if c.active_at(now)]
        key = closure_key(active)
        if key != self._key or self._network is None:
            derived, effects = apply_closures(base, active, now)
            self._network = CachingNetwork.of(derived)
            self._key = key
            self._closed = ClosedStreets.between(base, derived)
            for e in effects:
                logger.info("closure %s affects %s", e.closure_id, ", ".join(e.streets) or "-")
        return self._network

    def drives_closed(self, conn: Conn, state: DayState, triggers: Sequence[Trigger]) -> list[str]:
        """Today's trucks whose current route drives a closed street, when a closure
        changed (only then are the routes' geometries read)."""
        closed = self._closed
        if closed is None or not any(t.kind is TriggerKind.CLOSURE for t in triggers):
            return []
        if not closed.codes.size or not state.routes:
            return []
        if self._node_at is None:
            self._node_at = node_index(closed.base)
        routes = repo.current_routes_on(conn, state.day)
        return closed.drivers(routes, list(state.routes), self._node_at)
