"""The lifecycle: every legal transition, every illegal one refused with a message."""

from __future__ import annotations

import itertools

import pytest

from cityops.roadworks.errors import IllegalTransitionError, NotEditableError, NotPermittedError
from cityops.roadworks.lifecycle import (
    EDITABLE_STATUSES,
    TRANSITIONS,
    Transition,
    check_editable,
    check_transition,
    next_transitions,
    status_after_change,
)
from cityops.roadworks.model import TERMINAL_STATUSES, Category, Role, Status

LEGAL = [(source, t) for t in TRANSITIONS for source in sorted(t.sources)]


@pytest.mark.parametrize(("source", "transition"), LEGAL,
                         ids=[f"{s.value}-{t.name}" for s, t in LEGAL])
def test_every_legal_transition(source: Status, transition: Transition) -> None:
    category = Category.EMERGENCY if transition.emergency_only else Category.STANDARD
    for role in transition.roles:
        got = check_transition(source, transition.target, role, category)
        assert got is transition


def test_the_table_covers_the_issue() -> None:
    edges = {(s, t.target) for s, t in LEGAL}
    assert (Status.DRAFT, Status.SUBMITTED) in edges
    assert (Status.IN_CONSULTATION, Status.MODIFICATION_REQUESTED) in edges
    assert (Status.MODIFICATION_REQUESTED, Status.SUBMITTED) in edges
    assert (Status.IN_CONSULTATION, Status.APPROVED) in edges
    assert (Status.IN_CONSULTATION, Status.REFUSED) in edges
    assert (Status.APPROVED, Status.SCHEDULED) in edges
    assert (Status.SCHEDULED, Status.IN_PROGRESS) in edges
    assert (Status.IN_PROGRESS, Status.COMPLETED) in edges
    assert (Status.SCHEDULED, Status.CANCELLED) in edges
    assert (Status.IN_PROGRESS, Status.REVOKED) in edges
    # every state is reachable from draft
    reached, frontier = {Status.DRAFT}, [Status.DRAFT]
    while frontier:
        s = frontier.pop()
        for t in next_transitions(s):
            if t.target not in reached:
                reached.add(t.target)
                frontier.append(t.target)
    assert reached == set(Status)


@pytest.mark.parametrize(("source", "target"), [
    (s, t) for s, t in itertools.product(Status, Status)
    if (s, t) not in {(src, tr.target) for src, tr in LEGAL}
])
def test_every_illegal_transition_is_refused(source: Status, target: Status) -> None:
    for role, category in itertools.product(Role, Category):
        with pytest.raises(IllegalTransitionError) as err:
            check_transition(source, target, role, category, reference="RW-2025-00007")
        assert "RW-2025-00007" in err.value.message
        assert err.value.from_status == source
        assert err.value.to_status == target


def test_messages_say_why() -> None:
    with pytest.raises(IllegalTransitionError,
                       match=r"cannot go from draft to approved; from draft "
                       r"it can become: submitted \(submit\), cancelled \(cancel\)"):
        check_transition(Status.DRAFT, Status.APPROVED, Role.AUTHORITY, Category.STANDARD)
    with pytest.raises(IllegalTransitionError, match="completed, a final state"):
        check_transition(Status.COMPLETED, Status.IN_PROGRESS, Role.PROMOTER, Category.MAJOR)
    with pytest.raises(IllegalTransitionError, match="is already approved"):
        check_transition(Status.APPROVED, Status.APPROVED, Role.AUTHORITY, Category.STANDARD)
    with pytest.raises(IllegalTransitionError, match="only emergency works may start before"):
        check_transition(Status.DRAFT, Status.IN_PROGRESS, Role.PROMOTER, Category.STANDARD)
    with pytest.raises(IllegalTransitionError) as info:
        check_transition(Status.SCHEDULED, Status.COMPLETED, Role.PROMOTER, Category.STANDARD)
    err = info.value
    assert err.allowed == ("in_progress (start)", "cancelled (cancel)", "revoked (revoke)")
    assert err.details == [{"from": "scheduled", "to": "completed", "allowed": list(err.allowed)}]


def test_roles_are_enforced() -> None:
    with pytest.raises(NotPermittedError, match=r"only the road authority may approve the roadwork "
                       r"\(in_consultation -> approved\); you act as promoter"):
        check_transition(Status.IN_CONSULTATION, Status.APPROVED, Role.PROMOTER,
                         Category.STANDARD)
    with pytest.raises(NotPermittedError, match="only the promoter may submit"):
        check_transition(Status.DRAFT, Status.SUBMITTED, Role.AUTHORITY, Category.STANDARD)
    with pytest.raises(NotPermittedError, match="only the road authority may revoke"):
        check_transition(Status.IN_PROGRESS, Status.REVOKED, Role.PROMOTER, Category.STANDARD)
    # both may confirm the dates
    for role in (Role.PROMOTER, Role.AUTHORITY):
        check_transition(Status.APPROVED, Status.SCHEDULED, role, Category.STANDARD)


def test_next_transitions_for_a_role_and_category() -> None:
    names = [t.name for t in next_transitions(Status.DRAFT, role=Role.PROMOTER,
                                              category=Category.STANDARD)]
    assert names == ["submit", "cancel"]
    names = [t.name for t in next_transitions(Status.DRAFT, role=Role.PROMOTER,
                                              category=Category.EMERGENCY)]
    assert names == ["submit", "emergency_start", "cancel"]
    assert next_transitions(Status.DRAFT, role=Role.AUTHORITY) == []
    assert all(next_transitions(s) == [] for s in TERMINAL_STATUSES)


def test_editable_states() -> None:
    for status in EDITABLE_STATUSES:
        check_editable(status)
    for status in TERMINAL_STATUSES:
        with pytest.raises(NotEditableError, match=f"RW-1 is {status.value}, a final state"):
            check_editable(status, reference="RW-1")


# -- edits after approval (issue 14) ----------------------------------------------------------


@pytest.mark.parametrize("status", [Status.APPROVED, Status.SCHEDULED])
def test_a_promoters_change_to_what_the_permit_covers_goes_back_to_review(
    status: Status,
) -> None:
    for fields in (["planned_end"], ["footprint"], ["measures"], ["title"], ["public_text"]):
        assert status_after_change(status, Role.PROMOTER, fields) is Status.SUBMITTED
    # the promoter's own business keeps the permit
    assert status_after_change(status, Role.PROMOTER, ["public_contact"]) is status
    assert status_after_change(status, Role.PROMOTER, ["contractor", "working_hours"]) is status
    # the coordinating office corrects without a new review
    assert status_after_change(status, Role.AUTHORITY, ["planned_end", "title"]) is status


def test_on_site_the_promoter_asks_the_office() -> None:
    with pytest.raises(NotEditableError, match="coordinating office"):
        status_after_change(Status.IN_PROGRESS, Role.PROMOTER, ["title"], reference="RW-1")
    assert status_after_change(Status.IN_PROGRESS, Role.PROMOTER, ["contractor"]) is (
        Status.IN_PROGRESS
    )
    assert status_after_change(Status.IN_PROGRESS, Role.AUTHORITY, ["planned_end"]) is (
        Status.IN_PROGRESS
    )


@pytest.mark.parametrize(
    "status", [Status.DRAFT, Status.SUBMITTED, Status.IN_CONSULTATION,
               Status.MODIFICATION_REQUESTED]
)
def test_before_approval_every_change_is_part_of_the_application(status: Status) -> None:
    assert status_after_change(status, Role.PROMOTER, ["planned_end", "title"]) is status


def test_final_states_stay_unchanged() -> None:
    for status in (Status.COMPLETED, Status.CANCELLED, Status.REFUSED, Status.REVOKED):
        with pytest.raises(NotEditableError):
            status_after_change(status, Role.AUTHORITY, ["title"])
