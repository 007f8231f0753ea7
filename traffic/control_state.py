"""What the adaptive control service (`cityops.traffic.control`) is told and remembers.

Its options, the lockstep clock's tick and topic, the filter of the controllers' events,
and per controller: its clock as the service estimates it between events, and whether it
is degraded, switched to fixed or silent. Nothing here does I/O.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from cityops.ingest.contract import CONTRACT_VERSION, Channel, DeviceKind

from .maxpressure import ControlParams

__all__ = [
    "ControlOptions",
    "Controlled",
    "ControllerClock",
    "Tick",
    "clock_topic",
    "events_subscription",
]


def clock_topic(prefix: str) -> str:
    """The simulator's lockstep clock (two levels after v1: the ingest never sees it)."""
    return f"{prefix}/{CONTRACT_VERSION}/sim/clock"


def events_subscription(prefix: str) -> str:
    return f"{prefix}/{CONTRACT_VERSION}/{DeviceKind.SIGNAL.value}/+/{Channel.EVENTS.value}"


class Tick(BaseModel):
    """A lockstep tick: the simulator's time after the events of step `step`."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    ts: AwareDatetime
    step: int = Field(ge=0)


def _default_issuer() -> str:
    host = socket.gethostname().split(".")[0][:20] or "host"
    return f"control-{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class ControlOptions:
    """How the service runs; see `cityops.traffic.control` and `cityops traffic control -h`."""

    decision_interval_s: float = 2.0
    clock: Literal["wall", "mqtt"] = "wall"
    controllers: tuple[str, ...] | None = None  # None: every registered controller
    valid_for_s: float = 10.0
    issuer: str = field(default_factory=_default_issuer)
    modes_refresh_s: float = 5.0
    registry_refresh_s: float = 60.0
    summary_every_s: float = 60.0
    params: ControlParams = field(default_factory=ControlParams)

    def __post_init__(self) -> None:
        if self.decision_interval_s <= 0 or self.modes_refresh_s <= 0:
            raise ValueError("decision interval and modes refresh must be positive")
        if not 0 < self.valid_for_s <= 300:
            raise ValueError("valid_for_s must be in (0, 300]")
        if not 1 <= len(self.issuer) <= 64:
            raise ValueError("issuer must be 1 to 64 characters")
        if self.controllers is not None and not self.controllers:
            raise ValueError("controllers: give at least one id, or None for all")


@dataclass(slots=True)
class ControllerClock:
    """A controller's time as the wall-clock service estimates it between its events.

    `newest` is the time of the newest event heard from the controller and `heard` the
    wall (monotonic) time at which that event was received; events older than `newest`,
    arriving late, change neither. The controller's time at wall time `mono` is then
    `newest + (mono - heard)`: never ahead of the controller as long as its clock runs at
    wall speed, behind it by the delivery delay of its events. The elapsed part is capped
    at `cap_s` (the stale-detector limit): a controller unheard for that long has only
    stale detectors and is degraded anyway, and its time is not guessed further.
    """

    newest: datetime
    heard: float

    def heard_event(self, newest: datetime, mono: float) -> None:
        """Events up to `newest` were received at `mono`."""
        if newest > self.newest:
            self.newest, self.heard = newest, mono

    def silent_s(self, mono: float) -> float:
        """Wall seconds since the newest event was received."""
        return max(0.0, mono - self.heard)

    def now(self, mono: float, cap_s: float) -> datetime:
        """The controller's estimated time at wall time `mono`."""
        return self.newest + timedelta(seconds=min(self.silent_s(mono), cap_s))


@dataclass(slots=True)
class Controlled:
    """What the service remembers about a controller it controls."""

    degraded: str | None = None  # reason, while in fallback for bad detectors
    switched_off: bool = False  # a fallback was sent for mode 'fixed'
    silent: bool = False  # unheard for the stale-detector limit (wall clock)
    reported_mode: int | None = None
