"""Use cases of the roadworks registry: what the editing API, the CLI and the seed call.

Every write validates first, then runs in one transaction that (1) takes the registry's
advisory lock, so coordination always sees every committed work, (2) writes the change,
(3) records it in the audit history with its actor, (4) re-runs coordination for
the work and stores the findings, and (5) keeps the work's row in `street_closures` (what
routing avoids) in step (`closures.sync_work_closure`). Any error rolls everything back: nothing is
half-written.

Pass an autocommit connection (as the API's pool gives) or an idle one: each call runs
in its own transaction and commits it. To combine several calls atomically, wrap them in
an outer `with conn.transaction():` (the calls then become savepoints of it).

The actor is a parameter so the API can enforce who may edit what (a promoter only its
own works: not checked here yet); the lifecycle already checks which role may take which
transition.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from cityops.roadworks import store_coordination, store_sql, store_works
from cityops.roadworks.closures import sync_work_closure
from cityops.roadworks.config import RoadworksSettings
from cityops.roadworks.coordination import (
    CoordinationRules,
    coordinate,
    segment_of,
    subject_of,
)
from cityops.roadworks.errors import (
    InvalidPayloadError,
    InvalidPeriodError,
    InvalidStateError,
    StaleVersionError,
)
from cityops.roadworks.geometry import BBox, CityFrame, check_geometry
from cityops.roadworks.lifecycle import check_editable, check_transition, status_after_change
from cityops.roadworks.model import (
    COORDINATED_STATUSES,
    Actor,
    AuditEntry,
    Category,
    Decision,
    Finding,
    FindingDraft,
    FindingStatus,
    Period,
    ResurfacedSegment,
    Roadwork,
    RoadworkSpec,
    Status,
)
from cityops.roadworks.schemas import spec_to_payload
from cityops.roadworks.validation import LIMITS, validate_spec

__all__ = ["RoadworksService"]

logger = logging.getLogger(__name__)

Conn = store_sql.Conn
#: How far in the future a reported start or end may lie (clock skew of field devices).
_FUTURE_SKEW = timedelta(minutes=5)
_EMERGENCY_BACKDATE = timedelta(days=7)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RoadworksService:
    """The registry's use cases over a city frame and coordination rules."""

    frame: CityFrame
    rules: CoordinationRules = dataclasses.field(default_factory=CoordinationRules)
    clock: Callable[[], datetime] = _utcnow

    @classmethod
    def from_settings(
        cls, settings: RoadworksSettings, clock: Callable[[], datetime] = _utcnow
    ) -> RoadworksService:
        return cls(settings.frame(), settings.rules(), clock)

    # -- reads ----------------------------------------------------------------------------

    def get(self, conn: Conn, work_id: int) -> Roadwork:
        with conn.transaction():
            return store_works.get_work(conn, work_id)

    def get_by_reference(self, conn: Conn, reference: str) -> Roadwork:
        with conn.transaction():
            return store_works.get_work_by_reference(conn, reference)

    def list_works(self, conn: Conn, filt: store_works.WorkFilter | None = None) -> list[Roadwork]:
        with conn.transaction():
            return store_works.list_works(conn, filt)

    def public_works(
        self, conn: Conn, *, bbox: BBox | None = None, street: str | None = None,
        now: datetime | None = None,
    ) -> list[Roadwork]:
        """What the public feeds show: public works (approved, scheduled, in progress,
        public flag set) not yet over, optionally of an area or a street. A work in
        progress is shown until its end is reported, even past its planned end."""
        now = now or self.clock()
        until = now + timedelta(days=LIMITS.max_duration.days + 366)
        with conn.transaction():
            current = store_works.list_works(conn, store_works.WorkFilter(
                public_only=True, bbox=bbox, street=street, active=Period(now, until),
            ))
            # Started and not reported finished: still on site, even past the planned end.
            overdue = store_works.list_works(conn, store_works.WorkFilter(
                public_only=True, bbox=bbox, street=street,
                statuses=frozenset({Status.IN_PROGRESS}),
            ))
        seen = {w.id for w in current}
        merged = current + [w for w in overdue if w.id not in seen]
        return sorted(merged, key=lambda w: (w.effective_period.start, w.id))

    def findings(
        self, conn: Conn, work_id: int | None = None,
        statuses: Iterable[FindingStatus] | None = None,
    ) -> list[Finding]:
        """Stored findings (of one work, when given), obsolete ones included unless
        `statuses` says otherwise."""
        with conn.transaction():
            return store_coordination.list_findings(conn, work_id=work_id, statuses=statuses)

    def history(self, conn: Conn, work_id: int) -> list[AuditEntry]:
        with conn.transaction():
            store_works.get_work(conn, work_id)  # RoadworkNotFoundError for an unknown id
            return store_works.audit_history(conn, work_id)

    def preview(self, conn: Conn, spec: RoadworkSpec) -> list[FindingDraft]:
        """What coordination would find for a spec as if it were submitted; nothing is
        stored. The previewed work has id 0 in the findings."""
        valid = validate_spec(spec, self.frame)
        now = self.clock()
        work = Roadwork(id=0, reference="(neu)", status=Status.SUBMITTED, spec=valid.spec,
                        district=valid.district, area_m2=valid.area_m2, version=0,
                        created_at=now, updated_at=now, created_by="")
        with conn.transaction():
            return [self._to_lonlat(f) for f in self._find(conn, work)]

    # -- writes ---------------------------------------------------------------------------

    def create(
        self, conn: Conn, spec: RoadworkSpec, actor: Actor, *, reference: str | None = None,
        note: str | None = None,
    ) -> Roadwork:
        """Register a new work as a draft; `reference` only for imports and demo data."""
        _check_actor(actor)
        valid = validate_spec(spec, self.frame)
        now = self.clock()
        with conn.transaction():
            store_works.lock_registry(conn)
            ref = reference or store_works.next_reference(conn, now)
            work_id = store_works.insert_work(
                conn, reference=ref, status=Status.DRAFT, spec=valid.spec,
                area_m2=valid.area_m2, district=valid.district, actor=actor, at=now,
            )
            store_works.insert_audit(conn, work_id, actor=actor, at=now, action="created",
                                     to_status=Status.DRAFT, changes=_jsonable(valid.spec),
                                     note=note)
            work = store_works.get_work(conn, work_id)
            sync_work_closure(conn, work)
        logger.info("roadwork %s created by %s (%s)", work.reference, actor.name,
                    actor.organisation)
        return work

    def update(
        self, conn: Conn, work_id: int, spec: RoadworkSpec, actor: Actor, *,
        expected_version: int | None = None, note: str | None = None,
    ) -> Roadwork:
        """Replace a work's content; coordination runs again. No change, no new version."""
        _check_actor(actor)
        valid = validate_spec(spec, self.frame)
        now = self.clock()
        with conn.transaction():
            store_works.lock_registry(conn)
            work = store_works.get_work(conn, work_id, for_update=True)
            check_editable(work.status, reference=work.reference)
            _check_version(work, expected_version)
            changes = _diff(_jsonable(work.spec), _jsonable(valid.spec))
            if not changes:
                return work
            status = status_after_change(work.status, actor.role, changes,
                                         reference=work.reference)
            if status is not work.status:
                note = note or "nach der Genehmigung geändert: erneut zur Prüfung"
            store_works.update_work(conn, work_id, spec=valid.spec, area_m2=valid.area_m2,
                                    district=valid.district, at=now,
                                    status=status if status is not work.status else None)
            store_works.insert_audit(conn, work_id, actor=actor, at=now, action="updated",
                                     from_status=work.status, to_status=status,
                                     changes=changes, note=note)
            work = store_works.get_work(conn, work_id)
            self._coordinate(conn, work, now)
            sync_work_closure(conn, work)
        logger.info("roadwork %s updated by %s: %s", work.reference, actor.name,
                    ", ".join(sorted(changes)))
        return work

    def transition(
        self, conn: Conn, work_id: int, target: Status, actor: Actor, *,
        at: datetime | None = None, note: str | None = None,
        expected_version: int | None = None,
    ) -> Roadwork:
        """Move a work to `target` if the lifecycle allows it for the actor's role.

        `at` is when a start or end happened on site (default: now); it may lie in the
        past but not in the future. Raises IllegalTransitionError or NotPermittedError.
        """
        _check_actor(actor)
        now = self.clock()
        with conn.transaction():
            store_works.lock_registry(conn)
            work = store_works.get_work(conn, work_id, for_update=True)
            _check_version(work, expected_version)
            before = work.status
            step = check_transition(work.status, Status(target), actor.role,
                                    work.spec.category, reference=work.reference)
            when = self._reported_time(work, step.target, at, now)
            changes: dict[str, object] = {}
            actual_start = actual_end = None
            if step.target is Status.IN_PROGRESS:
                actual_start = when
                changes["actual_start"] = when.isoformat()
            elif step.target is Status.COMPLETED:
                actual_end = when
                changes["actual_end"] = when.isoformat()
            store_works.update_work(conn, work_id, status=step.target, actual_start=actual_start,
                                    actual_end=actual_end, at=now)
            store_works.insert_audit(conn, work_id, actor=actor, at=now,
                                     action=f"transition:{step.name}", from_status=work.status,
                                     to_status=step.target, changes=changes, note=note)
            work = store_works.get_work(conn, work_id)
            self._coordinate(conn, work, now)
            sync_work_closure(conn, work)
        logger.info("roadwork %s: %s -> %s (%s by %s)", work.reference, before, step.target,
                    step.name, actor.name)
        return work

    def submit(self, conn: Conn, work_id: int, actor: Actor, *, note: str | None = None
               ) -> Roadwork:
        """Apply for approval (from draft, or again after a requested modification)."""
        return self.transition(conn, work_id, Status.SUBMITTED, actor, note=note)

    def report_start(self, conn: Conn, work_id: int, actor: Actor, *,
                     at: datetime | None = None, note: str | None = None) -> Roadwork:
        return self.transition(conn, work_id, Status.IN_PROGRESS, actor, at=at, note=note)

    def report_end(self, conn: Conn, work_id: int, actor: Actor, *,
                   at: datetime | None = None, note: str | None = None) -> Roadwork:
        return self.transition(conn, work_id, Status.COMPLETED, actor, at=at, note=note)

    def decide_finding(
        self, conn: Conn, finding_id: int, decision: Decision, note: str, actor: Actor
    ) -> Finding:
        """Attach a decision (accepted or resolved, with a note) to a finding; may be
        changed later. Recorded in the history of the works involved."""
        _check_actor(actor)
        decision = Decision(decision)
        text = (note or "").strip()
        if not text:
            raise InvalidPayloadError("note", "explain the decision in a note")
        if len(text) > LIMITS.public_text:
            raise InvalidPayloadError("note", f"is longer than {LIMITS.public_text} characters")
        now = self.clock()
        with conn.transaction():
            store_works.lock_registry(conn)
            finding = store_coordination.get_finding(conn, finding_id, for_update=True)
            if finding.status is FindingStatus.OBSOLETE:
                raise InvalidStateError(
                    f"finding {finding_id} is obsolete: it no longer applies after a change "
                    "to the works, so there is nothing to decide"
                )
            store_coordination.decide_finding(conn, finding_id, decision, text, actor, now)
            for work_id in (finding.work_a, finding.work_b):
                if work_id is not None:
                    store_works.insert_audit(
                        conn, work_id, actor=actor, at=now, action=f"finding:{decision.value}",
                        changes={"finding_id": finding_id, "kind": finding.kind.value,
                                 "decision": decision.value}, note=text,
                    )
            decided = store_coordination.get_finding(conn, finding_id)
        logger.info("finding %d (%s) %s by %s", finding_id, finding.kind, decision, actor.name)
        return decided

    def add_resurfaced_segment(
        self, conn: Conn, street: str, line: Any, resurfaced_on: date, actor: Actor, *,
        note: str | None = None,
    ) -> ResurfacedSegment:
        """Record a resurfaced street segment; works digging there are checked again."""
        _check_actor(actor)
        if not street.strip():
            raise InvalidPayloadError("street", "must not be empty")
        line = check_geometry(line, field="geometry", kinds=("LineString",), frame=self.frame)
        now = self.clock()
        if resurfaced_on > now.date() + timedelta(days=366):
            raise InvalidPeriodError("resurfaced_on", f"{resurfaced_on} is too far in the future")
        with conn.transaction():
            store_works.lock_registry(conn)
            segment_id = store_coordination.insert_segment(conn, street=street.strip(), line=line,
                                                           resurfaced_on=resurfaced_on, note=note,
                                                           actor=actor, at=now)
            segment = store_coordination.get_segment(conn, segment_id)
            reach = self.rules.protection_tolerance_m + 5
            for work in self._works_near(conn, line, reach):
                self._coordinate(conn, work, now)
        return segment

    def recheck(self, conn: Conn, work_id: int) -> list[Finding]:
        """Run coordination for one work again (e.g. after the rules changed)."""
        now = self.clock()
        with conn.transaction():
            store_works.lock_registry(conn)
            work = store_works.get_work(conn, work_id, for_update=True)
            kept = self._coordinate(conn, work, now)
            return store_coordination.list_findings(conn, ids=kept)

    def recheck_all(self, conn: Conn) -> int:
        """Run coordination for every coordinated work; returns the current findings."""
        now = self.clock()
        kept: set[int] = set()
        with conn.transaction():
            store_works.lock_registry(conn)
            works = store_works.list_works(conn, store_works.WorkFilter())
            for work in works:
                kept.update(self._coordinate(conn, work, now))
        return len(kept)

    # -- internals ------------------------------------------------------------------------

    def _coordinate(self, conn: Conn, work: Roadwork, now: datetime) -> list[int]:
        if work.status not in COORDINATED_STATUSES:
            return store_coordination.sync_findings(conn, work.id, [], now)
        found = [self._to_lonlat(f) for f in self._find(conn, work)]
        return store_coordination.sync_findings(conn, work.id, found, now)

    def _find(self, conn: Conn, work: Roadwork) -> list[FindingDraft]:
        rules, projector = self.rules, self.frame.projector
        period = work.effective_period
        window = Period(period.start - rules.window, period.end + rules.window)
        reach = rules.reach_m + 2 * LIMITS.street_distance_m
        others = store_works.candidates(conn, work, reach, window)
        segments = store_coordination.segments_near(conn, work.spec.footprint,
                                                    rules.protection_tolerance_m + 5)
        return coordinate(
            subject_of(work, projector),
            [subject_of(o, projector) for o in others],
            [segment_of(s, projector) for s in segments],
            rules,
        )

    def _to_lonlat(self, finding: FindingDraft) -> FindingDraft:
        if finding.location is None:
            return finding
        return dataclasses.replace(
            finding, location=self.frame.projector.to_lonlat(finding.location)
        )

    def _works_near(self, conn: Conn, geom: Any, distance_m: float) -> list[Roadwork]:
        x0, y0, x1, y1 = geom.bounds
        pad = distance_m / 40_000.0
        box = BBox(x0 - pad, y0 - pad, x1 + pad, y1 + pad)
        near = store_works.WorkFilter(statuses=COORDINATED_STATUSES, bbox=box)
        return store_works.list_works(conn, near)

    @staticmethod
    def _reported_time(work: Roadwork, target: Status, at: datetime | None,
                       now: datetime) -> datetime:
        if target not in (Status.IN_PROGRESS, Status.COMPLETED):
            return now
        when = now if at is None else at
        if when.tzinfo is None or when.utcoffset() is None:
            raise InvalidPeriodError("at", f"{when.isoformat()} has no time zone")
        if when > now + _FUTURE_SKEW:
            raise InvalidPeriodError("at", f"{when.isoformat()} is in the future; report a start "
                                "or end when it has happened")
        # Not before the application: an emergency repair is registered once it has begun,
        # so it may be reported up to a week back; any other work starts after it applied.
        earliest = work.created_at - (
            _EMERGENCY_BACKDATE if work.spec.category is Category.EMERGENCY else timedelta(0)
        )
        if when < earliest:
            raise InvalidPeriodError(
                "at", f"{when.isoformat()} is before the work was registered "
                f"({work.created_at.isoformat()}); report when it happened on site"
            )
        if target is Status.COMPLETED and work.actual_start and when < work.actual_start:
            raise InvalidPeriodError(
                "at", f"the end {when.isoformat()} is before the reported start "
                f"{work.actual_start.isoformat()}"
            )
        return when


def _check_actor(actor: Actor) -> None:
    if not actor.name.strip() or not actor.organisation.strip():
        raise InvalidPayloadError("actor", "name and organisation of the actor are required")


def _check_version(work: Roadwork, expected: int | None) -> None:
    if expected is not None and expected != work.version:
        raise StaleVersionError(work.reference, expected, work.version)


def _jsonable(spec: RoadworkSpec) -> dict[str, Any]:
    return spec_to_payload(spec)


def _diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, object]:
    return {k: {"from": old.get(k), "to": v} for k, v in new.items() if old.get(k) != v}
