"""The data plane of the API: health, bins with their latest state and readings, devices
with their online state, and counts.

Endpoints are thin: parsing lives in `cityops.api.schemas`, SQL in
`cityops.api.repository`; errors become responses in `cityops.api.errors`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from cityops.api.auth import require_roles
from cityops.api.errors import InvalidParameterError
from cityops.api.limits import public_rate_limit
from cityops.api.repository import BinFilter, Repository
from cityops.api.schemas import (
    AUTH_RESPONSES,
    PUBLIC_RESPONSES,
    BinOut,
    BinPage,
    BucketName,
    DeviceKind,
    DeviceOut,
    DevicePage,
    DeviceState,
    FillBucketOut,
    Fraction,
    HealthOut,
    ReadingOut,
    ReadingsOut,
    StatsOut,
    Text,
    choose_bucket,
    cursor_time,
    decode_cursor,
    encode_cursor,
    parse_bbox,
    resolve_range,
)

__all__ = ["router"]


def _repository(request: Request) -> Repository:
    repo: Repository = request.app.state.repository
    return repo


Repo = Annotated[Repository, Depends(_repository)]
Limit = Annotated[int, Query(ge=1, le=1000, description="page size")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page")]


# Bins and their readings: the dispatchers who plan collections (and admins). Devices
# and counts: also traffic engineers, whose signal controllers are devices too.
_BINS = [Depends(require_roles("dispatcher", "admin"))]
_FLEET = [Depends(require_roles("dispatcher", "traffic_engineer", "admin"))]

router = APIRouter()


@router.get(
    "/health",
    tags=["health"],
    dependencies=[Depends(public_rate_limit)],
    responses=PUBLIC_RESPONSES,
)
def health(repo: Repo) -> HealthOut:
    """Liveness and database reachability; 503 when the database cannot be used."""
    mode = repo.storage_mode()
    return HealthOut(storage_mode=mode.value)


@router.get("/api/v1/bins", tags=["bins"], dependencies=_BINS, responses=AUTH_RESPONSES)
def list_bins(
    repo: Repo,
    min_fill: Annotated[
        float | None, Query(ge=0, le=100, description="only bins at least this full (%)")
    ] = None,
    fraction: Annotated[Fraction | None, Query(description="waste fraction")] = None,
    district: Annotated[Text | None, Query(max_length=200)] = None,
    bbox: Annotated[
        str | None,
        Query(
            description="min_lon,min_lat,max_lon,max_lat (WGS84)",
            examples=["13.30,52.45,13.50,52.55"],
        ),
    ] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> BinPage:
    """Bins with their latest state, in bin_id order."""
    filt = BinFilter(
        min_fill=min_fill,
        fraction=fraction,
        district=district,
        bbox=parse_bbox(bbox) if bbox is not None else None,
    )
    after = decode_cursor("bins", cursor, 1)[0] if cursor else None
    rows = repo.list_bins(filt, after=after, limit=limit + 1)
    page = rows[:limit]
    more = len(rows) > limit
    return BinPage(
        items=[BinOut.from_row(r) for r in page],
        next_cursor=encode_cursor("bins", [page[-1].bin_id]) if more else None,
    )


@router.get("/api/v1/bins/{bin_id}", tags=["bins"], dependencies=_BINS, responses=AUTH_RESPONSES)
def get_bin(repo: Repo, bin_id: Annotated[Text, Path(max_length=200)]) -> BinOut:
    """One bin with its latest state."""
    return BinOut.from_row(repo.get_bin(bin_id))


@router.get(
    "/api/v1/bins/{bin_id}/readings",
    tags=["bins"],
    dependencies=_BINS,
    responses=AUTH_RESPONSES,
)
def bin_readings(
    repo: Repo,
    bin_id: Annotated[Text, Path(max_length=200)],
    from_: Annotated[
        datetime | None,
        Query(
            alias="from",
            description="start (inclusive), ISO 8601 with offset; default: 24 h before `to`",
        ),
    ] = None,
    to: Annotated[
        datetime | None,
        Query(description="end (exclusive), ISO 8601 with offset; default: now"),
    ] = None,
    bucket: Annotated[
        BucketName | None,
        Query(
            description="raw, 15m, 1h or 1d (Berlin days); default: raw up to 2 days, else 1h"
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="raw readings per page")] = 1000,
    cursor: Cursor = None,
) -> ReadingsOut:
    """Fill readings of one bin over a time range, raw or as avg/min/max per bucket."""
    span = resolve_range(from_, to, datetime.now(UTC))
    chosen = choose_bucket(bucket, span)
    if chosen == "raw":
        after = _reading_cursor(cursor) if cursor else None
        rows = repo.raw_readings(bin_id, span.start, span.end, after=after, limit=limit + 1)
        page = rows[:limit]
        more = len(rows) > limit
        return ReadingsOut(
            bin_id=bin_id,
            from_=span.start,
            to=span.end,
            bucket="raw",
            readings=[ReadingOut.from_row(r) for r in page],
            next_cursor=encode_cursor("readings", [page[-1].ts.isoformat()]) if more else None,
        )
    if cursor:
        raise InvalidParameterError("cursor", "only raw readings are paginated")
    buckets = repo.bucketed_readings(bin_id, span.start, span.end, chosen)
    return ReadingsOut(
        bin_id=bin_id,
        from_=span.start,
        to=span.end,
        bucket=chosen,
        buckets=[FillBucketOut.from_row(b) for b in buckets],
    )


@router.get("/api/v1/devices", tags=["devices"], dependencies=_FLEET, responses=AUTH_RESPONSES)
def list_devices(
    request: Request,
    repo: Repo,
    kind: Annotated[DeviceKind | None, Query()] = None,
    state: Annotated[
        DeviceState | None,
        Query(description="online, offline (reported or silent too long) or unknown"),
    ] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> DevicePage:
    """Registered devices with their online/offline state."""
    stale: timedelta = request.app.state.device_stale_after
    key = decode_cursor("devices", cursor, 2) if cursor else None
    rows = repo.list_devices(
        kind=kind,
        state=state,
        stale_after=stale,
        after=(key[0], key[1]) if key else None,
        limit=limit + 1,
    )
    page = rows[:limit]
    more = len(rows) > limit
    return DevicePage(
        items=[DeviceOut.from_row(r) for r in page],
        next_cursor=encode_cursor("devices", [page[-1].kind, page[-1].device_id])
        if more
        else None,
        stale_after_s=int(stale.total_seconds()),
    )


@router.get("/api/v1/stats", tags=["stats"], dependencies=_FLEET, responses=AUTH_RESPONSES)
def stats(repo: Repo) -> StatsOut:
    """Counts for the demo: bins, devices, time-series rows, dead letters by reason."""
    return StatsOut.from_stats(repo.stats())


def _reading_cursor(cursor: str) -> datetime:
    (text,) = decode_cursor("readings", cursor, 1)
    return cursor_time(text)
