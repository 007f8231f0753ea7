"""The editing API of the roadworks registry, for promoters and city staff.

Everything under `/api/v1/roadworks/manage`. Who may do what is decided by
`cityops.api.auth`: a `roadworks_editor` acts for its organisation as promoter and may
see and change only works whose promoter is that organisation; city staff (dispatcher,
admin) may do everything and alone decide on coordination findings. Which role may take
which lifecycle step is the domain's rule (`cityops.roadworks.lifecycle`); city staff act
as the road authority, or as the promoter for steps only a promoter takes (e.g. submit on
a promoter's behalf), which the audit history records.

Changes are optimistic: `GET` returns the work's version as its ETag; send it back as
`If-Match` (or `expected_version`) and a change made meanwhile by someone else is
refused (409) instead of overwritten. Every write is one transaction in the service:
a refused request leaves nothing behind.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from pydantic import StringConstraints

from cityops.api.auth import (
    Principal,
    current_principal,
    is_roadworks_staff,
    require_roadworks_editor,
    require_roadworks_staff,
)
from cityops.api.errors import InvalidParameterError
from cityops.api.etags import if_match_version
from cityops.api.roadworks.context import Ctx, Pool, Reference, RoadworksApi, roadworks_api
from cityops.api.roadworks.schemas import (
    AuditOut,
    DecisionIn,
    FindingOut,
    PreviewFindingOut,
    TransitionIn,
    WorkOut,
    WorkPage,
)
from cityops.api.schemas import STORABLE, ErrorBody, cursor_int, decode_cursor, encode_cursor
from cityops.roadworks import store_works as repo
from cityops.roadworks.errors import InvalidPayloadError, PayloadTooLargeError
from cityops.roadworks.lifecycle import Transition, next_transitions
from cityops.roadworks.model import (
    Actor,
    Finding,
    FindingStatus,
    Roadwork,
    RoadworkSpec,
    Role,
    Sector,
    Status,
)
from cityops.roadworks.schemas import (
    RoadworkIn,
    load_json,
    parse_spec,
    parse_spec_json,
    spec_to_payload,
)
from cityops.roadworks.store_sql import Conn
from cityops.roadworks.validation import LIMITS

__all__ = ["router"]

logger = logging.getLogger(__name__)

PREFIX: Final = "/api/v1/roadworks/manage"

_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorBody, "description": "the caller may not do this (to this work)"},
    404: {"model": ErrorBody, "description": "no such work or finding"},
    409: {"model": ErrorBody, "description": "illegal transition, not editable, changed "
          "meanwhile (stale version) or finding obsolete"},
    413: {"model": ErrorBody, "description": "body, a text or a list over the limit"},
    422: {"model": ErrorBody, "description": "invalid payload, one detail per field"},
}
router = APIRouter(prefix=PREFIX, tags=["roadworks (editing)"], responses=_RESPONSES)

Caller = Annotated[Principal, Depends(current_principal)]
ShortText = Annotated[str, StringConstraints(max_length=LIMITS.short_text), STORABLE]
IfMatch = Annotated[str | None, Header(
    description='the ETag of the version you edited, e.g. "v3"; refused with 409 when the '
    "work changed meanwhile")]


async def _body(request: Request, ctx: Annotated[RoadworksApi, Depends(roadworks_api)]
                ) -> bytes:
    """The request body, refused with 413 as soon as it exceeds the limit (the declared
    length is checked first, so an oversized upload is not read at all)."""
    limit = ctx.settings.max_payload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        logger.info("refused %s %s: body of %s bytes", request.method, request.url.path,
                    declared)
        raise PayloadTooLargeError("body", f"is {declared} bytes, more than the limit of "
                              f"{limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            logger.info("refused %s %s: body over %d bytes", request.method,
                        request.url.path, limit)
            raise PayloadTooLargeError("body", f"is more than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


Body = Annotated[bytes, Depends(_body)]


# -- helpers ----------------------------------------------------------------------------


def _actor(ctx: RoadworksApi, caller: Principal, role: Role | None = None) -> Actor:
    """The caller as the domain's actor: an editor is its organisation's promoter; city
    staff act for the road authority (or as `role` when given)."""
    if is_roadworks_staff(caller):
        organisation = caller.organisation or ctx.settings.contact_name
        return Actor(caller.subject, organisation, role or Role.AUTHORITY)
    require_roadworks_editor(caller)
    return Actor(caller.subject, caller.organisation or "", Role.PROMOTER)


def _transitions(work: Roadwork, caller: Principal) -> list[Transition]:
    """What the caller may do next with the work."""
    role = None if is_roadworks_staff(caller) else Role.PROMOTER
    return next_transitions(work.status, role=role, category=work.spec.category)


def _out(work: Roadwork, caller: Principal, response: Response) -> WorkOut:
    response.headers["ETag"] = f'"v{work.version}"'
    response.headers["Cache-Control"] = "no-store"
    return WorkOut.of(work, _transitions(work, caller))


def _version(if_match: str | None, body_version: int | None = None) -> int | None:
    version = if_match_version(if_match, "work")
    if version is None:
        return body_version
    if body_version is not None and body_version != version:
        raise InvalidParameterError(
            "expected_version", f"{body_version} contradicts If-Match {if_match}",
            location="body")
    return version


def _own_work(ctx: RoadworksApi, conn: Conn, reference: str, caller: Principal
              ) -> Roadwork:
    work = ctx.service.get_by_reference(conn, reference)
    require_roadworks_editor(caller, work.spec.promoter)
    return work


def _check_promoter(caller: Principal, spec: RoadworkSpec) -> None:
    """An editor may register works only for its own organisation."""
    require_roadworks_editor(caller, spec.promoter)


def _merge(old: RoadworkSpec, body: bytes, ctx: RoadworksApi) -> RoadworkSpec:
    """A JSON merge patch (RFC 7396, top level) over the current payload."""
    patch = load_json(body)
    if not isinstance(patch, dict):
        raise InvalidPayloadError("body", f"must be a JSON object, got {type(patch).__name__}")
    if not patch:
        raise InvalidPayloadError("body", "names no field to change")
    return parse_spec({**spec_to_payload(old), **patch}, ctx.service.frame)


# -- works ------------------------------------------------------------------------------


@router.get("/works", summary="Works the caller may edit")
def list_works(
    ctx: Ctx,
    pool: Pool,
    caller: Caller,
    status: Annotated[list[Status] | None, Query(description="one or more states")] = None,
    promoter: Annotated[ShortText | None, Query(description="city staff only")] = None,
    sector: Sector | None = None,
    street: Annotated[ShortText | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
) -> WorkPage:
    """All works (any state) of the caller's organisation, or of every promoter for city
    staff, by start."""
    _actor(ctx, caller)
    if not is_roadworks_staff(caller):
        if promoter is not None:
            require_roadworks_editor(caller, promoter)
        promoter = caller.organisation
    offset = 0
    if cursor:
        (text,) = decode_cursor("roadworks-manage", cursor, 1)
        offset = cursor_int(text)
    filt = repo.WorkFilter(
        statuses=frozenset(status) if status else None, promoter=promoter, sector=sector,
        street=street, limit=limit + 1, offset=offset,
    )
    with pool.connection() as conn:
        works = ctx.service.list_works(conn, filt)
    page = works[:limit]
    more = len(works) > limit
    return WorkPage(
        items=[WorkOut.of(w, _transitions(w, caller)) for w in page],
        next_cursor=encode_cursor("roadworks-manage", [str(offset + limit)]) if more else None,
    )


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """A JSON schema with its `$defs` references replaced by the definitions, so it can
    stand alone in the OpenAPI document."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline(v, defs) for v in schema]
    return schema


_SPEC_SCHEMA: Final = RoadworkIn.model_json_schema()
_SPEC_BODY: Final = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": _inline(_SPEC_SCHEMA, _SPEC_SCHEMA.get("$defs", {}))}}}}


@router.post("/works", status_code=201, summary="Register a work (as a draft)",
             openapi_extra=_SPEC_BODY)
def create_work(body: Body, ctx: Ctx, pool: Pool, caller: Caller, response: Response
                ) -> WorkOut:
    """A new work in state `draft` (private to its promoter, not yet coordinated). The
    payload is `RoadworkIn`; geometries are GeoJSON in WGS84 inside the city."""
    actor = _actor(ctx, caller)
    spec = parse_spec_json(body, ctx.service.frame, max_bytes=ctx.settings.max_payload_bytes)
    _check_promoter(caller, spec)
    with pool.connection() as conn:
        work = ctx.service.create(conn, spec, actor)
    response.headers["Location"] = f"{PREFIX}/works/{work.reference}"
    return _out(work, caller, response)


@router.get("/works/{reference}", summary="One work with its version")
def get_work(reference: Reference, ctx: Ctx, pool: Pool, caller: Caller, response: Response
             ) -> WorkOut:
    with pool.connection() as conn:
        work = _own_work(ctx, conn, reference, caller)
    return _out(work, caller, response)


@router.put("/works/{reference}", summary="Replace a work's content",
            openapi_extra=_SPEC_BODY)
def replace_work(reference: Reference, body: Body, ctx: Ctx, pool: Pool, caller: Caller,
                 response: Response, if_match: IfMatch = None) -> WorkOut:
    """The whole payload again (as for create); coordination runs again."""
    expected = _version(if_match)
    actor = _actor(ctx, caller)
    spec = parse_spec_json(body, ctx.service.frame, max_bytes=ctx.settings.max_payload_bytes)
    with pool.connection() as conn:
        work = _own_work(ctx, conn, reference, caller)
        _check_promoter(caller, spec)
        work = ctx.service.update(conn, work.id, spec, actor, expected_version=expected)
    return _out(work, caller, response)


@router.patch("/works/{reference}", summary="Change some fields of a work",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/merge-patch+json": {"schema": {"type": "object"}}}}})
def patch_work(reference: Reference, body: Body, ctx: Ctx, pool: Pool, caller: Caller,
               response: Response, if_match: IfMatch = None) -> WorkOut:
    """A JSON merge patch of top-level fields (e.g. `{"planned_end": "..."}`); a geometry
    or list given replaces the old one whole."""
    expected = _version(if_match)
    actor = _actor(ctx, caller)
    with pool.connection() as conn:
        work = _own_work(ctx, conn, reference, caller)
        spec = _merge(work.spec, body, ctx)
        _check_promoter(caller, spec)
        work = ctx.service.update(conn, work.id, spec, actor, expected_version=expected)
    return _out(work, caller, response)


@router.post("/works/{reference}/transitions", summary="Move a work in its lifecycle")
def transition(reference: Reference, step: TransitionIn, ctx: Ctx, pool: Pool,
               caller: Caller, response: Response, if_match: IfMatch = None) -> WorkOut:
    """E.g. `{"to": "approved", "note": "..."}`; `at` for a start or end that happened
    earlier. 409 names the states the work can go to."""
    expected = _version(if_match, step.expected_version)
    with pool.connection() as conn:
        work = _own_work(ctx, conn, reference, caller)
        actor = _actor(ctx, caller, _staff_role(work, step.to) if is_roadworks_staff(caller)
                       else None)
        work = ctx.service.transition(conn, work.id, step.to, actor, at=step.at,
                                      note=step.note or None, expected_version=expected)
    return _out(work, caller, response)


@router.post("/works/{reference}/submit", summary="Apply for approval")
def submit(reference: Reference, ctx: Ctx, pool: Pool, caller: Caller, response: Response,
           if_match: IfMatch = None) -> WorkOut:
    """From draft (or after a requested modification) to submitted; coordination runs and
    its findings are listed at `/works/{reference}/findings`."""
    expected = _version(if_match)
    with pool.connection() as conn:
        work = _own_work(ctx, conn, reference, caller)
        actor = _actor(ctx, caller, Role.PROMOTER)
        work = ctx.service.transition(conn, work.id, Status.SUBMITTED, actor,
                                      expected_version=expected)
    return _out(work, caller, response)


def _staff_role(work: Roadwork, target: Status) -> Role:
    """City staff take a step as the authority when it may, else as the promoter."""
    for t in next_transitions(work.status, category=work.spec.category):
        if t.target is target:
            return Role.AUTHORITY if Role.AUTHORITY in t.roles else Role.PROMOTER
    return Role.AUTHORITY  # no such step: the lifecycle explains why


@router.get("/works/{reference}/history", summary="The audit history of a work")
def history(reference: Reference, ctx: Ctx, pool: Pool, caller: Caller) -> list[AuditOut]:
    with pool.connection() as conn:
        work = _own_work(ctx, conn, reference, caller)
        entries = ctx.service.history(conn, work.id)
    return [AuditOut.of(e) for e in entries]


@router.get("/works/{reference}/findings", summary="Coordination findings of a work")
def work_findings(
    reference: Reference, ctx: Ctx, pool: Pool, caller: Caller,
    include_obsolete: bool = False,
) -> list[FindingOut]:
    """Clashes, dig-once opportunities, protection periods and parallel closures found for
    the work, with German explanations and any decision."""
    with pool.connection() as conn:
        work = _own_work(ctx, conn, reference, caller)
        found = ctx.service.findings(conn, work.id, None if include_obsolete else _CURRENT)
    return [FindingOut.of(f) for f in found]


_CURRENT: Final = (FindingStatus.OPEN, FindingStatus.ACCEPTED, FindingStatus.RESOLVED)


@router.post("/preview", summary="What coordination would find for a payload",
             openapi_extra=_SPEC_BODY)
def preview(body: Body, ctx: Ctx, pool: Pool, caller: Caller) -> list[PreviewFindingOut]:
    """Checks a payload as if it were submitted; nothing is stored."""
    _actor(ctx, caller)
    spec = parse_spec_json(body, ctx.service.frame, max_bytes=ctx.settings.max_payload_bytes)
    _check_promoter(caller, spec)
    with pool.connection() as conn:
        drafts = ctx.service.preview(conn, spec)
        ids = sorted({i for f in drafts for i in (f.work_a, f.work_b) if i})
        others = ctx.service.list_works(conn, repo.WorkFilter(ids=ids)) if ids else []
    refs = {w.id: w.reference for w in others}
    return [PreviewFindingOut.of(f, refs) for f in drafts]


# -- findings ---------------------------------------------------------------------------


@router.get("/findings", summary="Coordination findings")
def list_findings(
    ctx: Ctx, pool: Pool, caller: Caller,
    status: Annotated[list[FindingStatus] | None, Query(
        description="default: open, accepted and resolved")] = None,
) -> list[FindingOut]:
    """Every finding for city staff; for an editor those that involve its works."""
    _actor(ctx, caller)
    with pool.connection() as conn:
        found = ctx.service.findings(conn, None, status or _CURRENT)
        if not is_roadworks_staff(caller):
            own = ctx.service.list_works(conn, repo.WorkFilter(promoter=caller.organisation))
            found = _involving(found, {w.id for w in own})
    return [FindingOut.of(f) for f in found]


def _involving(found: Iterable[Finding], ids: set[int]) -> list[Finding]:
    return [f for f in found if f.work_a in ids or (f.work_b is not None and f.work_b in ids)]


@router.put("/findings/{finding_id}/decision", summary="Decide on a finding")
def decide(
    finding_id: Annotated[int, Path(ge=1, le=2**31 - 1)], decision: DecisionIn, ctx: Ctx,
    pool: Pool, caller: Caller,
) -> FindingOut:
    """Attach `accepted` (known and tolerated) or `resolved` (acted upon) with a note; may
    be changed later. City staff only; recorded in the history of both works."""
    require_roadworks_staff(caller, "decide on coordination findings")
    actor = _actor(ctx, caller)
    with pool.connection() as conn:
        found = ctx.service.decide_finding(conn, finding_id, decision.decision,
                                           decision.note, actor)
    return FindingOut.of(found)
