"""One re-plan of one fraction, from the triggers to the route versions to send, as one
pure pipeline: every decision between the core's steps is taken here, in order.

    build the problem (problem.py) -> solve warm and cold (solve.py) -> if a fire bin
    cannot be reached in time: relax its deadline and solve again from that answer ->
    trucks on closed streets -> stabilize (stability.py) -> unfold the pinned visits ->
    check -> if keeping drivers' orders fails the check: the engine's routes, checked ->
    the trucks that need a new version -> their route documents (documents.py)

The service (``service.py``) loads the day's state, calls :func:`replan_fraction`, stores
the versions of :func:`route_versions` and pushes them; it never decides in between.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from datetime import datetime
from time import monotonic

from cityops.ingest.contract import RouteCommand
from cityops.routing.check import check_plan
from cityops.routing.model import Engine, Plan
from cityops.routing.network import RoadNetwork
from cityops.routing.planning import plan_to_routes
from cityops.routing.replan.day import DayState
from cityops.routing.replan.documents import idle_route, with_fraction
from cityops.routing.replan.options import ReplanOptions
from cityops.routing.replan.problem import Replan, build_replan, relax_urgent
from cityops.routing.replan.solve import Solved, solve_replan
from cityops.routing.replan.stability import changed_trucks, stabilize, unfold
from cityops.routing.replan.triggers import Trigger, TriggerKind

__all__ = ["Outcome", "ReplanReport", "Solving", "replan_fraction", "route_versions"]

logger = logging.getLogger(__name__)

#: Called between the steps with what comes next and how long it may take (seconds
#: beyond the usual): the service's heartbeat.
Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class Solving:
    """How a re-plan is solved: the engine, its time limit and seed, and the process pool
    of the cold solve (None: warm and cold one after the other, see ``solve_replan``)."""

    engine: Engine
    time_limit_s: float
    seed: int = 0
    pool: Executor | None = None


@dataclass(frozen=True)
class Outcome:
    """What the pipeline decided. ``plan``: the answer to ``replan.problem`` as sent (the
    stable one, or the engine's when keeping orders failed the check); ``whole``: the same
    as a plan of the whole day (pinned visits first); ``kept``: trucks that kept their
    order; ``violations``: why it is not sent (empty: it is); ``changed``: the trucks that
    get a new version; ``phases_ms``: build, solve, check."""

    replan: Replan
    solved: Solved
    plan: Plan
    whole: Plan
    kept: tuple[str, ...]
    violations: tuple[str, ...]
    changed: tuple[str, ...]
    phases_ms: Mapping[str, float]

    @property
    def receivers(self) -> list[str]:
        """The trucks that get a version: the changed ones, then the retired ones."""
        retired = sorted(self.replan.retired - set(self.changed))
        return [] if self.violations else [*self.changed, *retired]


def replan_fraction(
    state: DayState,
    fraction: str,
    triggers: Sequence[Trigger],
    *,
    network: RoadNetwork,
    solving: Solving,
    options: ReplanOptions,
    drives_closed: Collection[str] = (),
    progress: Progress | None = None,
) -> Outcome:
    """Re-plan `fraction` for `triggers` on ``state``. ``drives_closed``: the trucks whose
    current route drives a street the active closures remove (they get a new version even
    when their stops and ETAs stay, so the route on the tablet avoids it)."""
    phases: dict[str, float] = {}
    clock = monotonic()

    def lap(name: str, then: str, grace_s: float = 0.0) -> None:
        nonlocal clock
        now = monotonic()
        phases[name] = (now - clock) * 1000
        clock = now
        if progress is not None:
            progress(f"re-plan of {fraction}: {then}", grace_s)

    replan = build_replan(state, fraction, triggers, network=network, options=options)
    # the solve may run twice (see relax_urgent), each up to the time limit
    lap("build", "solving", grace_s=2 * solving.time_limit_s)
    solved = _solve(solving, replan)
    missed = replan.urgent & {u.stop_id for u in solved.plan.unserved}
    if missed:
        logger.warning(
            "%s: no truck can reach %s within %d min; planned as soon as possible",
            fraction,
            ", ".join(sorted(missed)),
            options.fire_within_s // 60,
        )
        replan = relax_urgent(replan)
        solved = _solve(solving, replan, initial=solved.plan)
    plan = solved.plan
    closed: list[str] = []
    if any(t.kind is TriggerKind.CLOSURE for t in triggers):
        closed = [r.vehicle_id for r in plan.routes if r.vehicle_id in drives_closed]
    stable, kept = stabilize(replan, plan, options, forced=closed)
    whole = unfold(replan, stable)
    lap("solve", "checking")
    violations = tuple(str(v) for v in check_plan(replan.whole, whole))
    if violations and kept:
        logger.warning(
            "%s: keeping the current order of %s fails the check (%s); sending the engine's routes",
            fraction,
            ", ".join(kept),
            violations[0],
        )
        kept, whole = [], unfold(replan, plan)
        violations = tuple(str(v) for v in check_plan(replan.whole, whole))
    else:
        plan = stable
    lap("check", "storing")
    changed: list[str] = []
    if violations:
        logger.error(
            "re-plan of %s (%s) fails the feasibility check, not sent: %s",
            fraction,
            replan.reason,
            "; ".join(violations[:10]),
        )
    else:
        changed = changed_trucks(replan, whole, eta_tolerance_s=options.eta_tolerance_s)
        changed.extend(t for t in closed if t not in changed)
    return Outcome(replan, solved, plan, whole, tuple(kept), violations, tuple(changed), phases)


def _solve(solving: Solving, replan: Replan, initial: Plan | None = None) -> Solved:
    return solve_replan(
        solving.engine,
        replan,
        time_limit_s=solving.time_limit_s,
        seed=solving.seed,
        initial=initial,
        pool=solving.pool,
    )


def route_versions(
    outcome: Outcome, versions: Mapping[str, int], *, network: RoadNetwork, now: datetime
) -> list[RouteCommand]:
    """The versions to send, numbered by `versions` (per truck of ``outcome.receivers``):
    the changed trucks' new routes, and a version without stops where the truck stands for
    a retired truck ("breakdown") or a changed one left without visits."""
    replan, whole = outcome.replan, outcome.whole
    reason = replan.reason
    moving = replace(
        whole,
        routes=tuple(r for r in whole.routes if r.vehicle_id in outcome.changed and r.visits),
    )
    out = plan_to_routes(
        problem=replan.whole,
        plan=moving,
        locations=replan.locations,
        network=network,
        axis=replan.axis,
        versions=versions,
        reason=reason,
        created_at=now,
    )
    with_route = {r.truck_id for r in out}
    for t in outcome.receivers:
        if t in with_route:
            continue
        out.append(
            idle_route(
                truck_id=t,
                day=replan.axis.day,
                version=versions[t],
                at=now,
                where=replan.positions[t],
                load_l=replan.loads.get(t, 0),
                reason="breakdown" if t in replan.retired else reason,
            )
        )
    return [with_fraction(r, replan.fraction) for r in out]


@dataclass(frozen=True)
class ReplanReport:
    """One re-plan of one fraction, for logs, tests and the benchmark."""

    fraction: str
    reason: str
    triggers: tuple[Trigger, ...]
    replan: Replan
    plan: Plan  # the answer to replan.problem (the work after the pinned visits)
    routes: tuple[RouteCommand, ...]  # the new versions (empty when nothing changed)
    violations: tuple[str, ...]
    pushed: int
    phases_ms: Mapping[str, float]  # load, build, solve, check, store, push
    first_event_mono: float  # time.monotonic() when the window's first trigger arrived
    published_mono: float  # time.monotonic() when the last version was acknowledged
    whole: Plan | None = None  # the plan as sent: pinned visits first (replan.whole's)
    kept: tuple[str, ...] = ()  # trucks that kept their order (see replan.stabilize)
    solved: Solved | None = None  # the candidates' scores and which one won

    @classmethod
    def of(
        cls,
        outcome: Outcome,
        triggers: Sequence[Trigger],
        routes: tuple[RouteCommand, ...],
        pushed: int,
        phases_ms: Mapping[str, float],
        first_event_mono: float,
    ) -> ReplanReport:
        """The report of `outcome` once its `routes` are stored and `pushed` of them
        acknowledged (now)."""
        replan = outcome.replan
        return cls(
            fraction=replan.fraction,
            reason=replan.reason,
            triggers=tuple(triggers),
            replan=replan,
            plan=outcome.plan,
            routes=routes,
            violations=outcome.violations,
            pushed=pushed,
            phases_ms=phases_ms,
            first_event_mono=first_event_mono,
            published_mono=monotonic(),
            whole=outcome.whole,
            kept=outcome.kept,
            solved=outcome.solved,
        )

    def log_sent(self) -> None:
        """Log the versions sent, the phases' times, and the triggers' bins left unserved."""
        phases = self.phases_ms
        logger.info(
            "re-plan %s [%s]: %s; solve %.0f ms, %d unserved, %.0f ms since the first event (%s)",
            self.fraction,
            self.reason,
            ", ".join(f"{r.truck_id} v{r.version}" for r in self.routes) or "no route changed",
            phases["solve"],
            len(self.plan.unserved),
            (self.published_mono - self.first_event_mono) * 1000,
            ", ".join(f"{k} {v:.0f}" for k, v in phases.items()),
        )
        named = {t.bin_id for t in self.triggers}
        for u in self.plan.unserved:
            if u.stop_id in named:
                logger.warning("re-plan %s: %s not served: %s", self.fraction, u.stop_id, u.reason)
