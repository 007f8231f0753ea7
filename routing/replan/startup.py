"""What the re-planner prepares before the first event, so a re-plan pays for neither: the
process of the cold solves (:class:`ColdPool`) and the network's memory of today's places
(:func:`warm_network`)."""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import BrokenExecutor, Executor, Future, ProcessPoolExecutor
from typing import Any, Final, ParamSpec, TypeVar

from cityops.ingest.contract import RouteCommand
from cityops.routing.network import RoadNetwork
from cityops.routing.solver import OrToolsEngine

__all__ = ["ColdPool", "start_cold_pool", "warm_network"]

logger = logging.getLogger(__name__)

_BEGIN_S: Final = 1.0

_P = ParamSpec("_P")
_T = TypeVar("_T")
#: In the cold-solve process: set when a call begins (see ColdPool).
_begun: Any = None


def _init_worker(begun: Any) -> None:
    global _begun  # the worker process's one piece of state, set once
    _begun = begun


def _begin(fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    if _begun is not None:
        _begun.set()
    return fn(*args, **kwargs)


class ColdPool(Executor):
    """One spawned worker process for the cold solves, whose `submit` returns once the
    process has begun the call.

    Why wait: the caller's next step, the warm solve, holds the GIL for the whole time
    limit (OR-Tools does not release it), and the pool's feeder thread needs the GIL to
    send the call; without the wait the cold solve sometimes began only after the warm
    one, doubling the solve time (2 s instead of 1 s in 2 of 40 benchmark events)."""

    def __init__(self) -> None:
        spawn = multiprocessing.get_context("spawn")
        self._begun = spawn.Event()
        self._pool = ProcessPoolExecutor(
            max_workers=1, mp_context=spawn, initializer=_init_worker, initargs=(self._begun,)
        )

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        self._begun.clear()
        future = self._pool.submit(_begin, fn, *args, **kwargs)
        if not self._begun.wait(_BEGIN_S) and not future.done():
            logger.warning("the cold solve has not begun after %.1f s", _BEGIN_S)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def start_cold_pool(timeout_s: float) -> ColdPool | None:
    """One worker process for the cold solves, started (spawned: the service runs
    threads) and its imports done before the first event, so a re-plan pays neither.
    None when it cannot start: warm and cold solves then run one after the other."""
    pool = ColdPool()
    try:
        pool.submit(_load_solver).result(timeout=timeout_s)
    except (BrokenExecutor, OSError, TimeoutError) as exc:
        logger.error("replanner: no process for cold solves (%s); solving in turn", exc)
        pool.shutdown(wait=False, cancel_futures=True)
        return None
    return pool


def _load_solver() -> str:
    """Run in the cold-solve process once: import the engine's module (seconds of
    imports) before it is needed."""
    return OrToolsEngine().name


def warm_network(
    network: RoadNetwork,
    routes: Sequence[RouteCommand],
    places: Iterable[tuple[float, float]],
) -> None:
    """Compute what the first re-plan would: the cost rows of `places` (the sites) and of
    every place on today's routes, and the streets along them."""
    started = time.monotonic()
    places = list(places)
    legs: list[tuple[int, int]] = []
    for r in routes:
        nodes = [network.nearest_node(s.lat, s.lon) for s in r.stops if s.kind != "break"]
        legs.extend(itertools.pairwise(nodes))
        places.extend((s.lat, s.lon) for s in r.stops)
    unique = sorted({network.nearest_node(lat, lon) for lat, lon in places})
    for weight in ("time", "length"):
        network.matrix(unique, unique, weight)
    for a, b in legs:
        network.shortest_path(a, b, "time")
    logger.info(
        "replanner warmed up: %d places, %d legs of %d routes in %.1f s",
        len(unique),
        len(legs),
        len(routes),
        time.monotonic() - started,
    )
