"""The lifecycle of a roadwork: which state may follow which, and who may move it.

```
draft ──submit──▶ submitted ──start_consultation──▶ in_consultation
                    │  ▲                                │
                    │  └──resubmit── modification_requested ◀──request_modification
                    ├──approve / refuse (also from in_consultation)
approved ──schedule──▶ scheduled ──start──▶ in_progress ──complete──▶ completed
cancel (promoter): from any state before in_progress     revoke (authority): approved,
emergency_start (emergency works only): draft, submitted,  scheduled, in_progress
  in_consultation, approved ──▶ in_progress
```

`refused`, `completed`, `cancelled` and `revoked` are final. Pure: the service applies a
checked transition and records it with its actor.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cityops.roadworks.errors import IllegalTransitionError, NotEditableError, NotPermittedError
from cityops.roadworks.model import TERMINAL_STATUSES, Category, Role, Status

__all__ = [
    "EDITABLE_STATUSES",
    "REVIEWED_FIELDS",
    "TRANSITIONS",
    "Transition",
    "check_editable",
    "check_transition",
    "next_transitions",
    "status_after_change",
]

_ROLE_NAMES = {Role.PROMOTER: "the promoter", Role.AUTHORITY: "the road authority",
               Role.SYSTEM: "the system"}


@dataclass(frozen=True, slots=True)
class Transition:
    name: str
    sources: frozenset[Status]
    target: Status
    roles: frozenset[Role]
    description: str
    emergency_only: bool = False


def _t(name: str, sources: Iterable[Status], target: Status, roles: Iterable[Role],
       description: str, *, emergency_only: bool = False) -> Transition:
    return Transition(name, frozenset(sources), target, frozenset(roles), description,
                      emergency_only)


_P, _A = Role.PROMOTER, Role.AUTHORITY
_S = Status

TRANSITIONS: tuple[Transition, ...] = (
    _t("submit", [_S.DRAFT], _S.SUBMITTED, [_P], "apply for approval"),
    _t("resubmit", [_S.MODIFICATION_REQUESTED], _S.SUBMITTED, [_P],
       "apply again after the requested modification"),
    _t("start_consultation", [_S.SUBMITTED], _S.IN_CONSULTATION, [_A],
       "ask police, transit, fire service and other promoters for comments"),
    _t("request_modification", [_S.SUBMITTED, _S.IN_CONSULTATION], _S.MODIFICATION_REQUESTED,
       [_A], "send back to the promoter for changes"),
    _t("approve", [_S.SUBMITTED, _S.IN_CONSULTATION], _S.APPROVED, [_A], "grant the permit"),
    _t("refuse", [_S.SUBMITTED, _S.IN_CONSULTATION], _S.REFUSED, [_A], "refuse the permit"),
    _t("schedule", [_S.APPROVED], _S.SCHEDULED, [_P, _A], "confirm the dates"),
    _t("start", [_S.SCHEDULED], _S.IN_PROGRESS, [_P], "report the start on site"),
    _t("emergency_start", [_S.DRAFT, _S.SUBMITTED, _S.IN_CONSULTATION, _S.APPROVED],
       _S.IN_PROGRESS, [_P], "report an emergency repair that started at once",
       emergency_only=True),
    _t("complete", [_S.IN_PROGRESS], _S.COMPLETED, [_P], "report the end on site"),
    _t("cancel", [_S.DRAFT, _S.SUBMITTED, _S.IN_CONSULTATION, _S.MODIFICATION_REQUESTED,
                  _S.APPROVED, _S.SCHEDULED], _S.CANCELLED, [_P], "withdraw the work"),
    _t("revoke", [_S.APPROVED, _S.SCHEDULED, _S.IN_PROGRESS], _S.REVOKED, [_A],
       "withdraw the permit"),
)

_BY_EDGE: dict[tuple[Status, Status], Transition] = {
    (source, t.target): t for t in TRANSITIONS for source in t.sources
}

#: States in which the content of a work may still be changed.
EDITABLE_STATUSES = frozenset(Status) - TERMINAL_STATUSES


def next_transitions(
    status: Status, *, role: Role | None = None, category: Category | None = None
) -> list[Transition]:
    """Transitions possible from `status` (for `role` and `category` when given)."""
    return [
        t
        for t in TRANSITIONS
        if status in t.sources
        and (role is None or role in t.roles)
        and (category is None or not t.emergency_only or category is Category.EMERGENCY)
    ]


def check_transition(
    status: Status, target: Status, role: Role, category: Category, *, reference: str = ""
) -> Transition:
    """The transition from `status` to `target`, or an error saying why it is refused.

    Raises IllegalTransitionError (no such step from this state) or NotPermittedError (the step
    exists but `role` may not take it).
    """
    who = f"roadwork {reference}" if reference else "the roadwork"
    if status in TERMINAL_STATUSES:
        raise IllegalTransitionError(
            f"{who} is {status.value}, a final state: it cannot become {target.value}",
            from_status=status, to_status=target,
        )
    possible = next_transitions(status, category=category)
    allowed = [f"{t.target.value} ({t.name})" for t in possible]
    if target == status:
        raise IllegalTransitionError(
            f"{who} is already {status.value}", from_status=status, to_status=target,
            allowed=allowed,
        )
    transition = _BY_EDGE.get((status, target))
    if transition is None:
        raise IllegalTransitionError(
            f"{who} cannot go from {status.value} to {target.value}; from {status.value} "
            f"it can become: {', '.join(allowed)}",
            from_status=status, to_status=target, allowed=allowed,
        )
    if transition.emergency_only and category is not Category.EMERGENCY:
        raise IllegalTransitionError(
            f"{who} is a {category.value} work: only emergency works may start before they "
            f"are scheduled ({status.value} -> {target.value}); from {status.value} it can "
            f"become: {', '.join(allowed)}",
            from_status=status, to_status=target, allowed=allowed,
        )
    if role not in transition.roles:
        may = " or ".join(_ROLE_NAMES[r] for r in sorted(transition.roles))
        raise NotPermittedError(
            f"only {may} may {transition.name.replace('_', ' ')} {who} "
            f"({status.value} -> {target.value}); you act as {role.value}"
        )
    return transition


def check_editable(status: Status, *, reference: str = "") -> None:
    """Raise NotEditableError when a work in `status` can no longer be changed."""
    if status not in EDITABLE_STATUSES:
        who = f"roadwork {reference}" if reference else "the roadwork"
        raise NotEditableError(
            f"{who} is {status.value}, a final state: it can no longer be changed")


#: What the permit was granted for: when a promoter changes one of these after approval,
#: the permit no longer covers the work (dates, where, what is closed, what the public
#: reads). Contacts, contractor and working hours are the promoter's own business.
REVIEWED_FIELDS = frozenset({
    "planned_start", "planned_end", "footprint", "streets", "measures", "lanes_affected",
    "detour", "detour_description", "category", "title", "description", "public_text",
    "is_public", "night_works", "excavation", "bus_lines", "waste_collection_affected",
})
_PERMITTED = frozenset({Status.APPROVED, Status.SCHEDULED})


def status_after_change(
    status: Status, role: Role, changed: Iterable[str], *, reference: str = ""
) -> Status:
    """The status a work has after an edit of the fields `changed`.

    Before approval every change is part of the application. After approval (approved,
    scheduled) a promoter's change to what the permit covers sends the work back to review
    (submitted), as permit systems do; on site (in progress) the promoter must ask the
    coordinating office, whose corrections are possible in every open state. Raises
    NotEditableError for what may not be changed at all.
    """
    check_editable(status, reference=reference)
    reviewed = sorted(REVIEWED_FIELDS.intersection(changed))
    if role is not Role.PROMOTER or not reviewed:
        return status
    if status in _PERMITTED:
        return Status.SUBMITTED
    if status is Status.IN_PROGRESS:
        who = f"roadwork {reference}" if reference else "the roadwork"
        raise NotEditableError(
            f"{who} is in progress under its permit: changes to {', '.join(reviewed)} go "
            "through the coordinating office (road authority)"
        )
    return status
