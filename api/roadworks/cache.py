"""Rendered public roadworks responses, kept per data version of the registry.

The public search and the open-data feeds are read far more often than the registry
changes. `RoadworksCache` keeps, per API process:

* whole responses (`Rendered`: the bytes, their ETag, the data version they were made
  from and until when they stay true as time passes), keyed by the normalised request;
  a request is answered from here after one cheap read of the data version
  (`repository.data_version`), and with `304 Not Modified` when the client has it;
* the JSON of single public works (`Fragment`), keyed by work and the row versions of
  the work and its streets, so that a page of a search nobody asked before is assembled
  from works rendered once instead of rendered again.

Both are bounded (least recently used entries go first) and safe to use from the
threads that run the routes.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from cityops.roadworks.search_index import PublicIndex

__all__ = ["Fragment", "Rendered", "RoadworksCache", "etag_of"]


def etag_of(data: bytes) -> str:
    """A strong ETag: a digest of the bytes sent."""
    return f'"{hashlib.sha256(data).hexdigest()[:32]}"'


@dataclass(frozen=True, slots=True)
class Rendered:
    """A response as sent: body, media type, ETag, extra headers; `version` is the data
    version it was made from, `valid_until` when the time alone changes it (None: only
    a change of the data does)."""

    body: bytes
    media_type: str
    etag: str
    version: str
    valid_until: datetime | None
    headers: tuple[tuple[str, str], ...] = ()

    def fresh(self, version: str, now: datetime) -> bool:
        return version == self.version and (self.valid_until is None or now < self.valid_until)


@dataclass(frozen=True, slots=True)
class Fragment:
    """A public work's JSON in two halves around its time-dependent `overdue` flag."""

    key: str  # row versions of the work and its streets (repository.PublicKey.key)
    head: str
    tail: str


class _Lru:
    """A dict with a bound on entries and on their total weight, oldest used first out."""

    def __init__(self, max_entries: int, max_weight: int) -> None:
        self._items: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._weight = 0
        self.max_entries, self.max_weight = max_entries, max_weight

    def get(self, key: Hashable) -> object | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Hashable, value: object, weight: int) -> None:
        if weight > self.max_weight:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._weight -= old[1]
            self._items[key] = (value, weight)
            self._weight += weight
            while len(self._items) > self.max_entries or self._weight > self.max_weight:
                _, (_, w) = self._items.popitem(last=False)
                self._weight -= w

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class RoadworksCache:
    """What the public roadworks routes keep between requests (see the module)."""

    max_responses: int = 2_000
    max_response_bytes: int = 128 * 1024 * 1024
    max_fragments: int = 200_000
    max_fragment_bytes: int = 256 * 1024 * 1024
    #: Render every public work in the background when the works are loaded (see
    #: `cityops.api.roadworks.public._prerender`).
    prerender: bool = True
    #: The public works in memory for the search, of the data version it names.
    index: PublicIndex | None = field(default=None, init=False, repr=False)
    _responses: _Lru = field(init=False, repr=False)
    _fragments: _Lru = field(init=False, repr=False)
    _locks: dict[Hashable, threading.Lock] = field(init=False, repr=False)
    _guard: threading.Lock = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._responses = _Lru(self.max_responses, self.max_response_bytes)
        self._fragments = _Lru(self.max_fragments, self.max_fragment_bytes)
        self._locks = {}
        self._guard = threading.Lock()

    def response(self, key: Hashable) -> Rendered | None:
        found = self._responses.get(key)
        return found if isinstance(found, Rendered) else None

    def keep_response(self, key: Hashable, rendered: Rendered) -> None:
        self._responses.put(key, rendered, len(rendered.body) + 200)

    def fragments(self, keys: Iterable[tuple[int, str]]) -> dict[int, Fragment]:
        """The kept fragments of these (work id, key) pairs whose key still matches."""
        out: dict[int, Fragment] = {}
        for work_id, key in keys:
            found = self._fragments.get(work_id)
            if isinstance(found, Fragment) and found.key == key:
                out[work_id] = found
        return out

    def keep_fragment(self, work_id: int, fragment: Fragment) -> None:
        weight = len(fragment.head) + len(fragment.tail) + len(fragment.key) + 100
        self._fragments.put(work_id, fragment, weight)

    def lock(self, key: Hashable) -> threading.Lock:
        """A lock per key, so that one thread renders an expensive response (a feed) while
        the others asking for it wait and then take the kept result."""
        with self._guard:
            if len(self._locks) > 1000:
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            return self._locks.setdefault(key, threading.Lock())

    @property
    def sizes(self) -> tuple[int, int]:
        """(responses, fragments) kept."""
        return len(self._responses), len(self._fragments)
