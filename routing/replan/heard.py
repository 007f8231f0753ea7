"""What the re-planner knows without the database, shared by the MQTT thread (readings,
events and positions as they arrive) and the worker (reloads, merges, sent versions).

The rules are pure functions (``triggers.py``); this class holds the state they read and
the lock, and remembers which alarms it raised today so each raises one re-plan.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Final

from cityops.ingest.contract import BinTelemetry, RouteCommand, TruckEvent, TruckTelemetry
from cityops.ingest.lorawan_readings import LoraSensor
from cityops.routing.replan.options import ReplanOptions
from cityops.routing.replan.triggers import (
    Emptying,
    Trigger,
    alarm,
    event_trigger,
    late_trigger,
)
from cityops.routing.rows import TruckEventRow, TruckStateRow

__all__ = ["LATE_COOLDOWN_S", "Heard"]

logger = logging.getLogger(__name__)

#: A late truck re-plans at most this often (its new version's ETAs are fresh).
LATE_COOLDOWN_S: Final = 300.0


class Heard:
    """The sensors of the bins, today's current routes and emptyings, the events and
    positions heard (the ingest may not have stored them yet), and the alarms raised."""

    def __init__(self, day: date) -> None:
        self._lock = threading.Lock()
        self.day = day
        self.sensors: dict[str, str] = {}  # sensor -> bin
        self.lora: dict[str, LoraSensor] = {}
        self.routes: dict[str, RouteCommand] = {}
        self.done: dict[str, Emptying] = {}  # bin -> its last emptying today
        # Sensors of bins emptied today that have not reported a level below overflow_pct
        # since: a stuck sensor must not send a truck back (read without the lock).
        self.awaiting_low: set[str] = set()
        self.events: list[TruckEventRow] = []
        self.positions: dict[str, TruckStateRow] = {}
        self.flagged: set[tuple[str, str]] = set()  # (bin id, trigger kind), today
        self.late_at: dict[str, float] = {}

    # -- the MQTT thread --------------------------------------------------------------
    def bin_reading(
        self, sensor_id: str, reading: BinTelemetry, now: datetime, options: ReplanOptions
    ) -> Trigger | None:
        """The alarm a reading raises (once a day per bin and kind, see ``alarm``)."""
        if reading.fill_pct < options.overflow_pct and (
            reading.temperature_c is None or reading.temperature_c < options.fire_c
        ):
            if sensor_id in self.awaiting_low:  # rare: a bin emptied today
                self._seen_low(sensor_id, reading)
            return None  # the common case: no lock, no lookup
        with self._lock:
            bin_id = self.sensors.get(sensor_id)
            if bin_id is None:
                logger.info("alarm from unknown bin sensor %s ignored", sensor_id)
                return None
            trigger = alarm(
                bin_id,
                reading,
                now=now,
                done=self.done,
                routes=self.routes.values(),
                unconfirmed=sensor_id in self.awaiting_low,
                options=options,
            )
            if trigger is None:
                return None
            key = (bin_id, str(trigger.kind))
            if key in self.flagged:
                return None
            self.flagged.add(key)
        return trigger

    def _seen_low(self, sensor_id: str, reading: BinTelemetry) -> None:
        with self._lock:
            bin_id = self.sensors.get(sensor_id)
            emptied = self.done.get(bin_id) if bin_id is not None else None
            if emptied is None or reading.ts > emptied.at:
                self.awaiting_low.discard(sensor_id)

    def truck_event(self, truck_id: str, event: TruckEvent, heard: datetime) -> Trigger | None:
        row = TruckEventRow(truck_id, event.ts, event.kind, event.bin_id, event.reason, heard)
        with self._lock:
            self.events.append(row)
            if event.kind == "stop_done" and event.bin_id:
                self._emptied(event.bin_id, event.ts, heard)
        if event.kind == "stop_done":
            logger.debug("truck %s emptied %s", truck_id, event.bin_id)
        return event_trigger(truck_id, event)

    def truck_position(
        self, truck_id: str, t: TruckTelemetry, options: ReplanOptions
    ) -> Trigger | None:
        row = TruckStateRow(truck_id, t.ts, t.lat, t.lon, t.load_l)
        with self._lock:
            old = self.positions.get(truck_id)
            if old is None or old.ts <= t.ts:
                self.positions[truck_id] = row
            trigger = late_trigger(truck_id, t.ts, self.routes.get(truck_id), self.done, options)
            if trigger is None:
                return None
            last = self.late_at.get(truck_id)
            if last is not None and time.monotonic() - last < LATE_COOLDOWN_S:
                return None
            self.late_at[truck_id] = time.monotonic()
        return trigger

    # -- the worker -------------------------------------------------------------------
    def reload(
        self,
        day: date,
        midnight: datetime,
        *,
        sensors: dict[str, str],
        lora: dict[str, LoraSensor],
        routes: dict[str, RouteCommand],
        events: Iterable[TruckEventRow],
    ) -> None:
        """Take what the database says (on a new day, forget yesterday's alarms first)."""
        with self._lock:
            if day != self.day:
                logger.info("new day %s: forgetting yesterday's triggers", day)
                self.day = day
                self.flagged.clear()
                self.late_at.clear()
                self.done.clear()
                self.awaiting_low.clear()
                self.events = [e for e in self.events if e.ts >= midnight]
            self.sensors = sensors
            self.lora = lora
            self.routes = routes
            for e in events:
                if e.kind == "stop_done" and e.bin_id:
                    self._emptied(e.bin_id, e.ts, e.known_at or e.ts)

    def _emptied(self, bin_id: str, ts: datetime, known_at: datetime) -> None:
        """Record an emptying (under the lock): once the bin has reported a lower level, its
        alarms may trigger again (it filled up again)."""
        last = self.done.get(bin_id)
        if last is None or ts > last.at:
            self.done[bin_id] = Emptying(ts, known_at)
            self.flagged = {k for k in self.flagged if k[0] != bin_id}
            self.awaiting_low.update(s for s, b in self.sensors.items() if b == bin_id)
        elif ts == last.at and known_at < last.known_at:
            self.done[bin_id] = Emptying(ts, known_at)  # heard before the ingest stored it

    def merged(
        self, events: list[TruckEventRow], states: dict[str, TruckStateRow]
    ) -> tuple[list[TruckEventRow], dict[str, TruckStateRow]]:
        """The database's events and positions with what was heard and is not stored yet
        (the newer position wins)."""
        with self._lock:
            heard = list(self.events)
            positions = dict(self.positions)
        seen = {(e.truck_id, e.ts, e.kind, e.bin_id) for e in events}
        events = [*events, *(e for e in heard if (e.truck_id, e.ts, e.kind, e.bin_id) not in seen)]
        states = dict(states)
        for truck_id, row in positions.items():
            old = states.get(truck_id)
            if old is None or old.ts < row.ts:
                states[truck_id] = row
        return events, states

    def unflag(self, triggers: Sequence[Trigger]) -> None:
        """Let a bin raise its alarm again after a failed re-plan."""
        with self._lock:
            for t in triggers:
                self.flagged.discard((t.bin_id or "", str(t.kind)))

    def sent(self, routes: Sequence[RouteCommand]) -> None:
        """New versions are the trucks' current routes, with fresh ETAs."""
        with self._lock:
            self.routes.update({r.truck_id: r for r in routes})
            for r in routes:
                self.late_at[r.truck_id] = time.monotonic()

    def current_routes(self) -> list[RouteCommand]:
        with self._lock:
            return list(self.routes.values())
