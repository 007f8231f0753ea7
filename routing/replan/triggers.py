"""Which events call for a re-plan: triggers from bin readings and truck events and
positions, the emptyings that silence a bin's alarm, and the reason text of a version.

Pure functions over readings, events and the emptyings known so far; the listener's
rules (:func:`alarm`) take its state as arguments, so the service only holds the lock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from cityops.ingest.contract import BinTelemetry, RouteCommand, TruckEvent
from cityops.routing.planning import BERLIN
from cityops.routing.replan.options import ReplanOptions

__all__ = [
    "MAX_REASON",
    "Emptying",
    "Trigger",
    "TriggerKind",
    "alarm",
    "bin_trigger",
    "describe",
    "emptied_for",
    "event_trigger",
    "late_trigger",
    "refilled",
]

logger = logging.getLogger(__name__)

#: The longest reason a route version may carry (RouteCommand.reason).
MAX_REASON: Final = 500


class TriggerKind(StrEnum):
    OVERFLOW = "overflow"
    FIRE = "fire"
    SKIPPED = "skipped"
    BREAKDOWN = "breakdown"
    LATE = "late"
    CLOSURE = "closure"


@dataclass(frozen=True, slots=True)
class Trigger:
    """One event that calls for a re-plan. ``detail`` is the skip reason, the delay or the
    closure id; ``fill_pct`` the reading that raised an overflow or fire."""

    kind: TriggerKind
    at: datetime
    bin_id: str | None = None
    truck_id: str | None = None
    detail: str = ""
    fill_pct: float | None = None

    def __str__(self) -> str:
        k = self.kind
        if k is TriggerKind.OVERFLOW:
            return f"bin {self.bin_id} overflow"
        if k is TriggerKind.FIRE:
            return f"bin {self.bin_id} fire"
        if k is TriggerKind.SKIPPED:
            tail = f": {self.detail}" if self.detail else ""
            return f"truck {self.truck_id} skipped {self.bin_id}{tail}"
        if k is TriggerKind.BREAKDOWN:
            return f"truck {self.truck_id} breakdown"
        if k is TriggerKind.LATE:
            return f"truck {self.truck_id} {self.detail} behind"
        return f"street closure {self.detail} changed" if self.detail else "street closures changed"


_BAD_SENSOR: Final = frozenset({"stuck", "sensor_error"})


def bin_trigger(bin_id: str, reading: BinTelemetry, options: ReplanOptions) -> Trigger | None:
    """A fire (temperature) or overflow (fill level) trigger, or None. Readings the sensor
    itself marks as unreliable (stuck, sensor error) never trigger."""
    if reading.fault in _BAD_SENSOR:
        return None
    if reading.temperature_c is not None and reading.temperature_c >= options.fire_c:
        return Trigger(TriggerKind.FIRE, reading.ts, bin_id=bin_id, fill_pct=reading.fill_pct)
    if reading.fill_pct >= options.overflow_pct:
        return Trigger(TriggerKind.OVERFLOW, reading.ts, bin_id=bin_id, fill_pct=reading.fill_pct)
    return None


def event_trigger(truck_id: str, event: TruckEvent) -> Trigger | None:
    """A skipped stop or a breakdown; other events only update progress."""
    if event.kind == "stop_skipped" and event.bin_id:
        return Trigger(
            TriggerKind.SKIPPED,
            event.ts,
            bin_id=event.bin_id,
            truck_id=truck_id,
            detail=event.reason or "",
        )
    if event.kind == "breakdown":
        return Trigger(TriggerKind.BREAKDOWN, event.ts, truck_id=truck_id)
    return None


@dataclass(frozen=True, slots=True)
class Emptying:
    """A bin's last emptying today: when the truck emptied it (``at``, the truck's clock)
    and when the platform learned of it (``known_at``, the server's clock: when the ingest
    stored the ``stop_done`` or the re-planner heard it)."""

    at: datetime
    known_at: datetime


def emptied_for(
    route: RouteCommand, done: Mapping[str, Emptying], refill_after: timedelta
) -> frozenset[str]:
    """The bins whose stops on ``route`` are done: of ``done``, those whose emptying became
    known later than ``refill_after`` before the version was made (the version was planned
    without knowing it, or while the ``stop_done`` was on its way). A version made later
    lists an emptied bin on purpose: it filled up again (:func:`refilled`). Both times are
    the server's, so a truck's clock or a late ``stop_done`` cannot shift the rule."""
    since = route.created_at - refill_after
    return frozenset(b for b, e in done.items() if e.known_at > since)


def refilled(
    bin_id: str,
    at: datetime,
    now: datetime,
    done: Mapping[str, Emptying],
    refill_after: timedelta,
) -> bool:
    """Whether a reading taken at ``at`` may re-plan the bin at ``now``: it was not emptied
    today, or the reading was taken ``refill_after`` or more after the emptying and the
    emptying has been known that long (so the version that takes it back lists it as a
    stop to come, see :func:`emptied_for`)."""
    e = done.get(bin_id)
    return e is None or (at >= e.at + refill_after and now >= e.known_at + refill_after)


def late_trigger(
    truck_id: str,
    at: datetime,
    route: RouteCommand | None,
    done: Mapping[str, Emptying],
    options: ReplanOptions,
) -> Trigger | None:
    """A truck more than ``late_s`` behind the ETA of its next stop (the first stop of its
    current route not yet done, :func:`emptied_for`), or None. ``done`` holds each bin
    emptied today."""
    if route is None or route.truck_id != truck_id:
        return None
    finished = emptied_for(route, done, options.refill_after)
    nxt = next((s for s in route.stops if s.kind == "stop" and s.bin_id not in finished), None)
    if nxt is None:
        return None
    behind = (at - nxt.eta).total_seconds()
    if behind <= options.late_s:
        return None
    return Trigger(TriggerKind.LATE, at, truck_id=truck_id, detail=f"{int(behind // 60)} min")


def describe(triggers: Sequence[Trigger]) -> str:
    """The reason of a re-planned version: every trigger once, oldest first, ``; ``-joined,
    shortened to fit a route document."""
    parts: list[str] = []
    for t in sorted(triggers, key=lambda t: t.at):
        text = str(t)
        if text not in parts:
            parts.append(text)
    out = "; ".join(parts)
    if len(out) <= MAX_REASON:
        return out
    for n in range(len(parts) - 1, 0, -1):
        text = "; ".join(parts[:n]) + f"; and {len(parts) - n} more"
        if len(text) <= MAX_REASON:
            return text
    return out[: MAX_REASON - 3] + "..."


def alarm(
    bin_id: str,
    reading: BinTelemetry,
    *,
    now: datetime,
    done: Mapping[str, Emptying],
    routes: Iterable[RouteCommand],
    unconfirmed: bool,
    options: ReplanOptions,
) -> Trigger | None:
    """What a bin's reading heard over MQTT calls for: its fire or overflow trigger, or
    None when it raises no alarm (:func:`bin_trigger`), when the bin was emptied too
    shortly before (:func:`refilled`), for an overflow from a sensor ``unconfirmed`` since
    the bin's emptying (no lower level reported since: a stuck sensor must not send a
    truck back), and for an overflow of a bin still to come on a route today."""
    trigger = bin_trigger(bin_id, reading, options)
    if trigger is None:
        return None
    refill = options.refill_after
    emptied = done.get(bin_id)
    if emptied is not None and not refilled(bin_id, trigger.at, now, done, refill):
        logger.info(
            "%s: emptied at %s, reading of %s too close to it, ignored",
            trigger,
            f"{emptied.at.astimezone(BERLIN):%H:%M}",
            f"{trigger.at.astimezone(BERLIN):%H:%M}",
        )
        return None
    if trigger.kind is TriggerKind.OVERFLOW and unconfirmed:
        logger.info(
            "%s: no reading below %g%% since its emptying at %s (stuck sensor?), ignored",
            trigger,
            options.overflow_pct,
            f"{emptied.at.astimezone(BERLIN):%H:%M}" if emptied else "?",
        )
        return None
    if trigger.kind is TriggerKind.OVERFLOW and any(
        any(s.bin_id == bin_id for s in r.stops) and bin_id not in emptied_for(r, done, refill)
        for r in routes
    ):
        return None  # still to come on a route today: nothing to do
    return trigger
