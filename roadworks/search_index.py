"""The public works in memory, for the public search: filter, order, count and page
without a database query per search.

`PublicIndex` holds what `store_public.search_public_keys` filters on for every public work
(effective period, in progress without a reported end, sector, impact class, street
keys, footprint) as arrays sorted by (effective start, id), plus an STRtree of the
footprints. Built from one read of the registry (`store_public.public_index_rows`) and
valid for that data version only; the caller rebuilds it when the version changes.

`search` means exactly what the SQL search means (`store_public._public_where`, tested
against it): public works on site during the window, i.e. whose effective period
overlaps it, or that are in progress without a reported end while the window contains
now; footprint intersecting the box; an affected street with that key; any of the
sectors; any of the impact classes; ordered by effective start and id, after a keyset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import shapely

from cityops.roadworks.labels import street_key

__all__ = ["IndexRow", "IndexedWork", "PublicIndex", "SearchPage"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(at: datetime) -> int:
    """Microseconds since the epoch, exact (timestamps have microsecond resolution)."""
    d = at - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


@dataclass(frozen=True, slots=True)
class IndexRow:
    """One public work as the index needs it (see `store_public.public_index_rows`)."""

    id: int
    key: str  # row versions of the work and its streets (store_public.PublicKey.key)
    start: datetime  # effective start
    end: datetime  # effective end
    open_in_progress: bool  # in progress, end not reported
    sector: str
    impact: str
    street_keys: tuple[str, ...]
    footprint: bytes  # WKB


@dataclass(frozen=True, slots=True)
class IndexedWork:
    """A work of a page: id, row key, effective start (order and cursor) and, when in
    progress without a reported end, the effective end (overdue from then)."""

    id: int
    key: str
    start: datetime
    overdue_from: datetime | None


@dataclass(frozen=True, slots=True)
class SearchPage:
    works: list[IndexedWork]
    more: bool
    total: int


class PublicIndex:
    """The public works of one data version (see the module)."""

    def __init__(self, version: str, rows: Sequence[IndexRow]) -> None:
        self.version = version
        order = sorted(rows, key=lambda r: (r.start, r.id))
        self._rows = order
        n = len(order)
        self._id = np.fromiter((r.id for r in order), dtype=np.int64, count=n)
        self._start = np.fromiter((_us(r.start) for r in order), dtype=np.int64, count=n)
        self._end = np.fromiter((_us(r.end) for r in order), dtype=np.int64, count=n)
        self._open = np.fromiter((r.open_in_progress for r in order), dtype=bool, count=n)
        self._sector = np.array([r.sector for r in order], dtype=object)
        self._impact = np.array([r.impact for r in order], dtype=object)
        self._streets: dict[str, npt.NDArray[np.int64]] = {}
        by_key: dict[str, list[int]] = {}
        for i, r in enumerate(order):
            for k in set(r.street_keys):
                by_key.setdefault(k, []).append(i)
        self._streets = {k: np.array(v, dtype=np.int64) for k, v in by_key.items()}
        self._shapes = shapely.from_wkb([r.footprint for r in order])
        self._bounds = shapely.bounds(self._shapes).reshape(n, 4)

    def __len__(self) -> int:
        return len(self._rows)

    def search(
        self,
        *,
        window_start: datetime,
        window_end: datetime,
        now: datetime,
        bbox: tuple[float, float, float, float] | None = None,
        street: str | None = None,
        sectors: frozenset[str] = frozenset(),
        impacts: frozenset[str] = frozenset(),
        limit: int,
        after: tuple[datetime, int] | None = None,
    ) -> SearchPage:
        """A page of the works on site during the window (see the module), by effective
        start and id, after the keyset `after`; `total` counts all matches."""
        w0, w1, t = _us(window_start), _us(window_end), _us(now)
        mask = self._start < w1
        on_site = self._end > w0
        if w1 > t > w0:  # the window contains now: open works in progress stay on site
            on_site |= self._open
        mask &= on_site
        if bbox is not None:
            self._intersecting(mask, bbox)
        if street is not None:
            inside = np.zeros(len(self._rows), dtype=bool)
            inside[self._streets.get(street_key(street), np.array([], dtype=np.int64))] = True
            mask &= inside
        if sectors:
            mask &= np.isin(self._sector, sorted(sectors))
        if impacts:
            mask &= np.isin(self._impact, sorted(impacts))
        total = int(mask.sum())
        if after is not None:
            a_start, a_id = _us(after[0]), after[1]
            mask &= (self._start > a_start) | ((self._start == a_start) & (self._id > a_id))
        found = np.flatnonzero(mask)[: limit + 1]
        works = [self._work(int(i)) for i in found[:limit]]
        return SearchPage(works, len(found) > limit, total)

    def _intersecting(
        self, mask: npt.NDArray[np.bool_], bbox: tuple[float, float, float, float]
    ) -> None:
        """Narrow `mask` to footprints intersecting the box: envelopes that overlap it,
        then, for those not inside it, the exact test (GEOS, as ST_Intersects)."""
        x0, y0, x1, y1 = bbox
        b = self._bounds
        mask &= (b[:, 0] <= x1) & (b[:, 2] >= x0) & (b[:, 1] <= y1) & (b[:, 3] >= y0)
        near = np.flatnonzero(mask)
        nb = b[near]
        edge = near[~((nb[:, 0] >= x0) & (nb[:, 1] >= y0) & (nb[:, 2] <= x1) & (nb[:, 3] <= y1))]
        if edge.size:
            box = shapely.box(x0, y0, x1, y1)
            shapely.prepare(box)
            mask[edge[~shapely.intersects(box, self._shapes[edge])]] = False

    def _work(self, i: int) -> IndexedWork:
        r = self._rows[i]
        return IndexedWork(r.id, r.key, r.start, r.end if r.open_in_progress else None)
