"""Routes for traffic engineers: signal controllers, their stored performance measures,
detector health, control mode history and the Purdue coordination diagram.

Measures, health and the mode history are read from the tables `cityops traffic
measures-service` fills (migration 0006); the controller list's mode is live, the newest
event 131 in `signal_events` (`repository.list_controllers`); the Purdue diagram is
computed on request from the raw events of at most `PURDUE_MAX_SPAN` with
`cityops.traffic.purdue`. Readable by the roles in
`READER_ROLES` (`require_traffic_reader`, the one place that decides).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from psycopg_pool import ConnectionPool
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from cityops.api.auth import Principal, current_principal
from cityops.api.errors import ForbiddenError, InvalidParameterError
from cityops.api.schemas import (
    BERLIN,
    TimeRange,
    cursor_int,
    cursor_time,
    decode_cursor,
    encode_cursor,
    local_iso,
    resolve_range,
)
from cityops.traffic import repository as repo
from cityops.traffic.events import ControllerConfig, clean
from cityops.traffic.measures import DEFAULT_SPEED_KMH
from cityops.traffic.purdue import purdue
from cityops.traffic.store import StoreOptions

__all__ = ["PURDUE_MAX_SPAN", "READER_ROLES", "require_traffic_reader", "router"]

#: Who may read the traffic endpoints.
READER_ROLES = frozenset({"traffic_engineer", "dispatcher", "admin"})
#: The Purdue diagram reads raw events: its range is kept short.
PURDUE_MAX_SPAN = timedelta(hours=2)
#: Detector health summarises stored bins over at most this range.
HEALTH_MAX_SPAN = timedelta(days=31)

router = APIRouter(prefix="/api/v1/traffic", tags=["traffic"])

ControllerId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="controller id, e.g. LSA-001",
    ),
]
From = Annotated[
    datetime | None,
    Query(
        alias="from",
        description="start (inclusive), ISO 8601 with offset; default: 24 h before `to`",
    ),
]
To = Annotated[
    datetime | None, Query(description="end (exclusive), ISO 8601 with offset; default: now")
]
Phase = Annotated[int | None, Query(ge=1, le=16, description="only this phase")]


def require_traffic_reader(
    principal: Annotated[Principal, Depends(current_principal)],
) -> Principal:
    """Let through traffic engineers, dispatchers and admins (403 for other callers)."""
    if principal.roles & READER_ROLES:
        return principal
    raise ForbiddenError(
        f"{principal.subject} may not read traffic data: it needs one of the roles "
        + ", ".join(sorted(READER_ROLES))
    )


Reader = Annotated[Principal, Depends(require_traffic_reader)]


def _pool(request: Request) -> ConnectionPool:
    pool: ConnectionPool = request.app.state.pool
    return pool


Pool = Annotated[ConnectionPool, Depends(_pool)]


def _config(conn: repo.Connection, controller_id: str) -> ControllerConfig:
    return repo.load_config(conn, controller_id)  # UnknownControllerError: 404 (api/errors.py)


def _check_phase(config: ControllerConfig, phase: int | None) -> None:
    if phase is not None and phase not in config.phases:
        raise InvalidParameterError(
            "phase", f"{config.controller_id} has phases {sorted(config.phases)}, not {phase}"
        )


def _utc(ts: datetime | float) -> datetime:
    if isinstance(ts, float | int):
        return datetime.fromtimestamp(ts, UTC)
    return ts.astimezone(UTC)


# -- response models -----------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class ControllerOut(_Out):
    controller_id: str
    name: str
    lat: float
    lon: float
    cycle_s: float | None
    phases: list[int]
    detectors: int
    mode: str | None = Field(
        description="live control mode, from the controller's newest "
        "stored event 131: fixed (own plan, fallback), plan, adaptive "
        "or unknown; null before its first"
    )
    mode_since: AwareDatetime | None = Field(description="time of that event 131")
    mode_since_local: str | None
    measures_until: AwareDatetime | None = Field(
        description="every 15-minute bin before this is computed and stored"
    )


class ControllerList(_Out):
    items: list[ControllerOut]


class MeasureOut(_Out):
    bin_start: AwareDatetime
    bin_start_local: str
    phase: int
    volume: int
    arrivals_on_green: int
    pct_aog: float | None = Field(description="arrivals on green / arrivals in complete cycles")
    platoon_ratio: float | None
    delay_total_s: float
    delay_per_vehicle_s: float | None
    cycles: int
    split_failures: int | None = Field(description="null: the phase has no stop-bar detector")
    gap_outs: int
    max_outs: int
    force_offs: int
    other_terminations: int
    mean_green_s: float | None
    yellow_actuations: int
    red_clearance_actuations: int
    red_actuations: int
    ped_walks: int
    ped_delay_mean_s: float | None
    ped_delay_max_s: float | None
    flagged_events: int = Field(
        description="events of the controller in the bin kept out "
        "of the measures (bad codes, unknown detectors, ...)"
    )

    @classmethod
    def from_row(cls, r: repo.MeasureRow) -> MeasureOut:
        """The stored row as served: its fields of the same name as they are (a subset: the
        response leaves out what only the dashboards use), the bin start in UTC and in
        Berlin wall-clock time."""
        same = {name: getattr(r, name) for name in cls.model_fields if name not in _OWN}
        return cls(
            bin_start=_utc(r.bin_start),
            bin_start_local=r.bin_start.astimezone(BERLIN).isoformat(),
            **same,
        )


_OWN = frozenset({"bin_start", "bin_start_local"})  # MeasureOut's fields not copied as they are


class MeasurePage(_Out):
    controller_id: str
    from_: AwareDatetime = Field(serialization_alias="from")
    to: AwareDatetime
    items: list[MeasureOut] = Field(description="by bin, then phase")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


class DetectorHealthOut(_Out):
    channel: int
    phase: int
    kind: str
    actuations: int = Field(description="detector-on events in the range")
    longest_on_s: float
    bins: int
    bins_stuck_on: int
    bins_no_activity: int
    status: str = Field(
        description="status of the latest stored bin (over the hour "
        "ending there): ok, stuck_on or no_activity"
    )
    status_at: AwareDatetime
    status_at_local: str


class DetectorHealthList(_Out):
    controller_id: str
    from_: AwareDatetime = Field(serialization_alias="from")
    to: AwareDatetime
    detectors: list[DetectorHealthOut]


class ModeOut(_Out):
    ts: AwareDatetime
    ts_local: str
    pattern: int
    mode: str


class ModeList(_Out):
    controller_id: str
    from_: AwareDatetime = Field(serialization_alias="from")
    to: AwareDatetime
    items: list[ModeOut] = Field(description="the mode in force at `from` first, if known")


class PurdueCycleOut(_Out):
    start: AwareDatetime = Field(description="begin green")
    start_local: str
    green_s: float
    yellow_end_s: float
    length_s: float


class PurdueArrivalOut(_Out):
    ts: AwareDatetime = Field(description="arrival at the stop line")
    cycle_start: AwareDatetime
    offset_s: float = Field(description="seconds since the cycle's begin green")
    on_green: bool


class PurdueOut(_Out):
    controller_id: str
    phase: int
    from_: AwareDatetime = Field(serialization_alias="from")
    to: AwareDatetime
    speed_kmh: float
    pct_on_green: float | None
    cycles: list[PurdueCycleOut]
    arrivals: list[PurdueArrivalOut]


# -- routes --------------------------------------------------------------------------------


@router.get("/controllers")
def list_controllers(pool: Pool, _caller: Reader) -> ControllerList:
    """Every signal controller with its phases, current control mode and how far its
    measures are computed."""
    with pool.connection() as conn:
        rows = repo.list_controllers(conn)
    return ControllerList(
        items=[
            ControllerOut(
                controller_id=r.controller_id,
                name=r.name,
                lat=r.lat,
                lon=r.lon,
                cycle_s=r.cycle_s,
                phases=r.phases,
                detectors=r.detectors,
                mode=r.mode,
                mode_since=_utc(r.mode_since) if r.mode_since else None,
                mode_since_local=local_iso(r.mode_since),
                measures_until=_utc(r.computed_until) if r.computed_until else None,
            )
            for r in rows
        ]
    )


def _measure_cursor(cursor: str) -> tuple[datetime, int]:
    ts_text, phase_text = decode_cursor("traffic-measures", cursor, 2)
    return cursor_time(ts_text), cursor_int(phase_text)


@router.get("/controllers/{controller_id}/measures")
def measures(
    pool: Pool,
    _caller: Reader,
    controller_id: ControllerId,
    from_: From = None,
    to: To = None,
    phase: Phase = None,
    limit: Annotated[int, Query(ge=1, le=5000, description="bins per page")] = 500,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
) -> MeasurePage:
    """Stored measures per phase and 15-minute bin starting in `[from, to)` (at most 366
    days; paginated). Bins appear once the measures service has computed them."""
    span = resolve_range(from_, to, datetime.now(UTC))
    after = _measure_cursor(cursor) if cursor else None
    with pool.connection() as conn:
        _check_phase(_config(conn, controller_id), phase)
        rows = repo.load_measures(
            conn, controller_id, span.start, span.end, phase, limit=limit + 1, after=after
        )
    page = rows[:limit]
    more = len(rows) > limit
    return MeasurePage(
        controller_id=controller_id,
        from_=span.start,
        to=span.end,
        items=[MeasureOut.from_row(r) for r in page],
        next_cursor=encode_cursor(
            "traffic-measures", [page[-1].bin_start.isoformat(), str(page[-1].phase)]
        )
        if more
        else None,
    )


def _short(span: TimeRange, limit: timedelta, field: str = "to") -> None:
    if span.end - span.start > limit:
        raise InvalidParameterError(
            field, f"the range may span at most {limit}, got {span.end - span.start}"
        )


@router.get("/controllers/{controller_id}/detectors/health")
def detectors_health(
    pool: Pool,
    _caller: Reader,
    controller_id: ControllerId,
    from_: From = None,
    to: To = None,
) -> DetectorHealthList:
    """Per detector over `[from, to)` (at most 31 days) of stored 15-minute bins:
    actuations, longest occupancy, bins stuck on or without activity, latest status."""
    span = resolve_range(from_, to, datetime.now(UTC))
    _short(span, HEALTH_MAX_SPAN)
    with pool.connection() as conn:
        _config(conn, controller_id)
        rows = repo.load_health(conn, controller_id, span.start, span.end)
    by_channel: dict[int, list[repo.HealthRow]] = {}
    for r in rows:
        by_channel.setdefault(r.channel, []).append(r)
    out = []
    for channel, hs in sorted(by_channel.items()):
        last = hs[-1]
        out.append(
            DetectorHealthOut(
                channel=channel,
                phase=last.phase,
                kind=last.kind,
                actuations=sum(h.actuations for h in hs),
                longest_on_s=max(h.longest_on_s for h in hs),
                bins=len(hs),
                bins_stuck_on=sum(1 for h in hs if h.status == "stuck_on"),
                bins_no_activity=sum(1 for h in hs if h.status == "no_activity"),
                status=last.status,
                status_at=_utc(last.bin_start),
                status_at_local=last.bin_start.astimezone(BERLIN).isoformat(),
            )
        )
    return DetectorHealthList(
        controller_id=controller_id, from_=span.start, to=span.end, detectors=out
    )


@router.get("/controllers/{controller_id}/modes")
def modes(
    pool: Pool,
    _caller: Reader,
    controller_id: ControllerId,
    from_: From = None,
    to: To = None,
) -> ModeList:
    """The control modes the controller reported (event 131) in `[from, to)`, led by the
    one in force at `from`: adaptive control on (`adaptive`) or off (`fixed`, `plan`)."""
    span = resolve_range(from_, to, datetime.now(UTC))
    with pool.connection() as conn:
        _config(conn, controller_id)
        rows = repo.load_modes(conn, controller_id, span.start, span.end)
    return ModeList(
        controller_id=controller_id,
        from_=span.start,
        to=span.end,
        items=[
            ModeOut(
                ts=_utc(m.ts),
                ts_local=m.ts.astimezone(BERLIN).isoformat(),
                pattern=m.pattern,
                mode=m.mode,
            )
            for m in rows
        ],
    )


@router.get("/controllers/{controller_id}/purdue")
def purdue_diagram(
    pool: Pool,
    _caller: Reader,
    controller_id: ControllerId,
    phase: Annotated[int, Query(ge=1, le=16, description="the phase to draw")],
    from_: Annotated[
        datetime | None,
        Query(alias="from", description="start, ISO 8601 with offset; default: 1 h before `to`"),
    ] = None,
    to: To = None,
    speed_kmh: Annotated[
        float,
        Query(
            gt=0,
            le=130,
            description="approach speed moving advance-detector arrivals to the stop line",
        ),
    ] = DEFAULT_SPEED_KMH,
) -> PurdueOut:
    """Points of a Purdue coordination diagram of one phase: every complete cycle beginning
    green in `[from, to)` (at most 2 hours) with its green, yellow and red, and every
    arrival as seconds since its cycle's begin green. Computed from the raw events."""
    now = datetime.now(UTC)
    if from_ is None and to is not None and to.utcoffset() is not None:
        from_ = to - timedelta(hours=1)
    elif from_ is None and to is None:
        from_ = now - timedelta(hours=1)
    span = resolve_range(from_, to, now)
    _short(span, PURDUE_MAX_SPAN)
    ctx = timedelta(seconds=StoreOptions().context_s)
    with pool.connection() as conn:
        config = _config(conn, controller_id)
        _check_phase(config, phase)
        events = repo.load_events(conn, controller_id, span.start - ctx, span.end + ctx)
    diagram = purdue(
        clean(events, config).events,
        config,
        phase,
        span.start.timestamp(),
        span.end.timestamp(),
        speed_kmh=speed_kmh,
    )
    return PurdueOut(
        controller_id=controller_id,
        phase=phase,
        from_=span.start,
        to=span.end,
        speed_kmh=speed_kmh,
        pct_on_green=diagram.pct_on_green,
        cycles=[
            PurdueCycleOut(
                start=_utc(c.start),
                start_local=local_iso(_utc(c.start)) or "",
                green_s=c.green_s,
                yellow_end_s=c.yellow_end_s,
                length_s=c.length_s,
            )
            for c in diagram.cycles
        ],
        arrivals=[
            PurdueArrivalOut(
                ts=_utc(a.ts),
                cycle_start=_utc(a.cycle_start),
                offset_s=round(a.offset_s, 3),
                on_green=a.on_green,
            )
            for a in diagram.arrivals
        ],
    )
