"""The device registry over HTTP, for admins: create, read, update and retire devices.

`/api/v1/registry/{kind}` with kind `bins`, `trucks`, `sites` or `signal-controllers`.
A record is validated and written exactly as a row of a registry import file
(`cityops.ingest.registry_files.parse_rows`, `registry_store.import_records`): the same
field rules, city bounds, depot and sensor checks, versions and audit (the caller as actor,
`api` as source). Changes are optimistic: `GET` returns the version as ETag (`"v3"`); `PUT`
of an existing record needs `If-Match` (428 without, 412 when someone changed it
meanwhile); `PUT` with `If-None-Match: *` only creates. `DELETE` retires: the device leaves
the registry views, so the next plan no longer has it and `cityops mqtt credentials`
removes its account. Retired records stay readable with `include_retired=true`.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from cityops.api.auth import Principal, current_principal
from cityops.api.errors import (
    NotFoundError,
    PreconditionFailedError,
    PreconditionRequiredError,
    RecordInvalidError,
)
from cityops.api.etags import etag, if_match_version
from cityops.api.schemas import decode_cursor, encode_cursor
from cityops.ingest.city import City
from cityops.ingest.contract import DEVICE_ID_PATTERN
from cityops.ingest.registry_files import RowProblem, parse_rows
from cityops.ingest.registry_model import ID_FIELD, as_json
from cityops.ingest.registry_store import (
    ImportReport,
    import_records,
    load_records,
    lock,
    retire,
)

__all__ = ["router"]

logger = logging.getLogger(__name__)
PREFIX = "/api/v1/registry"
router = APIRouter(prefix=PREFIX, tags=["registry"])

KindPath = Literal["bins", "trucks", "sites", "signal-controllers"]
_KIND = {"bins": "bin", "trucks": "truck", "sites": "site",
         "signal-controllers": "signal_controller"}
MAX_BODY_BYTES = 256 * 1024

Id = Annotated[str, Path(pattern=DEVICE_ID_PATTERN, description="the city's own id")]
Caller = Annotated[Principal, Depends(current_principal)]
IfMatch = Annotated[str | None, Header(
    description='the ETag of the version you edited, e.g. "v3"; needed to change a record')]
IfNoneMatch = Annotated[str | None, Header(description='"*": create only, never replace')]


class RecordOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: str
    id: str
    version: int
    retired: bool
    record: dict[str, Any] = Field(description="the fields as in the registry files")


class RecordPage(BaseModel):
    items: list[RecordOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


def _pool(request: Request) -> Any:
    return request.app.state.pool


def _city(request: Request) -> City:
    city: City = request.app.state.city
    return city


def _out(kind: str, rid: str, stored: tuple[Any, bool, int]) -> RecordOut:
    record, retired, version = stored
    return RecordOut(kind=kind, id=rid, version=version, retired=retired,
                     record=as_json(record))


def _etag(response: Response, version: int) -> None:
    response.headers["ETag"] = etag(version)
    response.headers["Cache-Control"] = "no-store"


def _expected(if_match: str | None) -> int | None:
    return if_match_version(if_match, "record")


@router.get("/{kind}", summary="Registry records of one kind")
def list_records(
    kind: KindPath,
    request: Request,
    include_retired: Annotated[bool, Query(description="also retired devices")] = False,
    limit: Annotated[int, Query(ge=1, le=1000, description="page size")] = 100,
    cursor: Annotated[str | None, Query(max_length=400,
                                        description="`next_cursor` of the previous page")
                      ] = None,
) -> RecordPage:
    """Records in id order, a page at a time."""
    k = _KIND[kind]
    after = decode_cursor(f"registry-{kind}", cursor, 1)[0] if cursor else None
    with _pool(request).connection() as conn:
        stored = load_records(conn, k, include_retired=include_retired)
    # the order of Python's string comparison, the same one the cursor is compared in
    ids = sorted(rid for rid in stored if after is None or rid > after)
    page = ids[:limit]
    more = len(ids) > limit
    return RecordPage(items=[_out(k, rid, stored[rid]) for rid in page],
                      next_cursor=encode_cursor(f"registry-{kind}", [page[-1]]) if more else None)


@router.get("/{kind}/{record_id}", summary="One registry record, with its version as ETag")
def get_record(kind: KindPath, record_id: Id, request: Request, response: Response
               ) -> RecordOut:
    k = _KIND[kind]
    with _pool(request).connection() as conn:
        stored = load_records(conn, k, include_retired=True, ids=[record_id]).get(record_id)
    if stored is None:
        raise NotFoundError(f"no {k} {record_id!r} in the registry")
    _etag(response, stored[2])
    return _out(k, record_id, stored)


async def _json_body(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise RecordInvalidError(f"body is more than {MAX_BODY_BYTES} bytes",
                                 [{"location": "body", "field": "body",
                                   "message": "too large"}])
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise RecordInvalidError(f"body is not valid JSON: {reason}",
                                 [{"location": "body", "field": "body",
                                   "message": reason}]) from None
    if not isinstance(data, dict):
        raise RecordInvalidError("body must be a JSON object of the record's fields",
                                 [{"location": "body", "field": "body",
                                   "message": "not an object"}])
    return data


def _invalid(problems: list[RowProblem]) -> RecordInvalidError:
    details = [{"location": "body", "field": p.column.split(" ")[0] or "body",
                "message": p.reason} for p in problems]
    first = problems[0]
    return RecordInvalidError(f"invalid record: {first.column or 'body'}: {first.reason}",
                              details)


@router.put(
    "/{kind}/{record_id}",
    summary="Create or change a registry record",
    status_code=200,
    responses={201: {"description": "created"}, 412: {"description": "changed meanwhile"},
               428: {"description": "If-Match is needed to change a record"}},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object"}}}}},
)
def put_record(
    kind: KindPath, record_id: Id, request: Request, response: Response, caller: Caller,
    data: Annotated[dict[str, Any], Depends(_json_body)],
    if_match: IfMatch = None, if_none_match: IfNoneMatch = None,
) -> RecordOut:
    """The record's fields as in the registry files (`bin_id` may be left out; when given
    it must be the one in the path). Creating answers 201, changing 200."""
    k = _KIND[kind]
    id_field = ID_FIELD[k]
    if k == "signal_controller" and "id" in data and id_field not in data:
        data[id_field] = data.pop("id")
    if data.setdefault(id_field, record_id) != record_id:
        raise RecordInvalidError(f"{id_field} in the body is not the one in the path",
                                 [{"location": "body", "field": id_field,
                                   "message": f"must be {record_id!r}"}])
    parsed = parse_rows(k, [data], "api")
    if parsed.problems:
        raise _invalid(parsed.problems)
    expected = _expected(if_match)
    city = _city(request)
    with _pool(request).connection() as conn, conn.transaction():
        lock(conn, k, record_id)
        row = load_records(conn, k, include_retired=True, ids=[record_id]).get(record_id)
        if row is None and expected is not None:
            raise PreconditionFailedError(
                f"{k} {record_id!r} does not exist; If-Match names a version of it")
        if row is not None:
            if if_none_match is not None and if_none_match.strip() == "*":
                raise PreconditionFailedError(f"{k} {record_id!r} exists (If-None-Match: *)")
            if if_match is None:
                raise PreconditionRequiredError(
                    f"{k} {record_id!r} exists: send its ETag as If-Match to change it")
            if expected is not None and expected != row[2]:
                raise PreconditionFailedError(
                    f"{k} {record_id!r} is at version {row[2]}, not {expected}: reload it")
        report: ImportReport = import_records(
            conn, [parsed], city, actor=f"api:{caller.subject}", locked=True)
        if report.problems:
            raise _invalid(report.problems)
        stored = load_records(conn, k, include_retired=True, ids=[record_id])[record_id]
    if row is None:
        response.status_code = 201
        response.headers["Location"] = f"{PREFIX}/{kind}/{record_id}"
    logger.info("registry %s %s %s by %s (version %d)", k, record_id,
                "created" if row is None else "changed", caller.subject, stored[2])
    _etag(response, stored[2])
    return _out(k, record_id, stored)


@router.delete(
    "/{kind}/{record_id}",
    summary="Retire a device",
    status_code=204,
    responses={412: {"description": "changed meanwhile"},
               409: {"description": "sites are not retired"}},
)
def retire_record(kind: Literal["bins", "trucks", "signal-controllers"], record_id: Id,
                  request: Request, caller: Caller, if_match: IfMatch = None) -> Response:
    """Takes the device out of service: out of the next plans and of the MQTT accounts."""
    k = _KIND[kind]
    expected = _expected(if_match)
    with _pool(request).connection() as conn:
        version = retire(conn, k, record_id, actor=f"api:{caller.subject}", source="api",
                         expected_version=expected)
    return Response(status_code=204, headers={"ETag": f'"v{version}"'})
