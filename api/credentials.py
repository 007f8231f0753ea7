"""API keys for machines, and the `Authenticator` that turns a request's credentials into a
`Principal` (bearer token or API key).

An API key reads `cok_<key id>_<secret>`: the 12-character key id is the table's primary
key, so a key is found with one indexed lookup, and only the SHA-256 of the secret part
is stored. The secret is 32 random bytes, so a plain hash suffices (no password-style
stretching is needed against guessing); hashes are compared in constant time. The clear
key is shown once, when it is created, and cannot be recovered from the database.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final

import psycopg
from psycopg.rows import class_row
from psycopg_pool import ConnectionPool

from cityops.api.auth import LOGIN_ROLES, Principal
from cityops.api.errors import UnauthenticatedError
from cityops.ingest.contract import DEVICE_ID_PATTERN

if TYPE_CHECKING:
    from cityops.api.security import TokenVerifier

__all__ = [
    "ApiKey",
    "Authenticator",
    "NewKey",
    "create_key",
    "list_keys",
    "parse_api_key",
    "revoke_key",
    "verify_key",
]

logger = logging.getLogger(__name__)

Conn = psycopg.Connection[tuple[object, ...]]

KEY_PREFIX: Final = "cok"
_KEY_ID_ALPHABET: Final = string.ascii_lowercase + string.digits
_KEY_RE: Final = re.compile(r"^cok_([a-z0-9]{12})_([A-Za-z0-9_\-]{43})$")
_TRUCK_RE: Final = re.compile(DEVICE_ID_PATTERN)
# last_used_at is written at most this often per key, so a busy key costs no write per call.
_TOUCH_EVERY: Final = "1 minute"


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    key_id: str
    name: str
    roles: list[str]
    organisation: str | None
    truck_id: str | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    def principal(self) -> Principal:
        return Principal(
            subject=f"apikey:{self.key_id}",
            roles=frozenset(self.roles),
            truck_id=self.truck_id,
            organisation=self.organisation,
        )


@dataclass(frozen=True)
class _StoredKey(ApiKey):
    key_hash: bytes
    stale: bool  # last_used_at is due for an update


@dataclass(frozen=True)
class NewKey:
    key: ApiKey
    clear: str  # shown once, never stored


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse_api_key(text: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    m = _KEY_RE.match(text.strip())
    return (m[1], m[2]) if m else None


def create_key(
    conn: Conn,
    name: str,
    roles: Sequence[str],
    *,
    organisation: str | None = None,
    truck_id: str | None = None,
) -> NewKey:
    """Store a new key; the returned clear key is the only copy."""
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise ValueError("name must be 1 to 200 characters")
    unknown = set(roles) - set(LOGIN_ROLES)
    if not roles or unknown:
        raise ValueError(f"roles must be among {', '.join(LOGIN_ROLES)}, got {list(roles)}")
    if "truck" in roles and not truck_id:
        raise ValueError("a key with the role truck must be bound to a truck (--truck)")
    if truck_id is not None and not _TRUCK_RE.match(truck_id):
        raise ValueError(f"not a truck id: {truck_id!r}")
    if "roadworks_editor" in roles and not (organisation or "").strip():
        raise ValueError("a roadworks_editor key must be bound to an organisation")
    key_id = "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(12))
    secret = secrets.token_urlsafe(32)
    with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        row = cur.execute(
            "INSERT INTO api_keys (key_id, key_hash, name, roles, organisation, truck_id) "
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING key_id, name, roles, organisation, "
            "truck_id, created_at, revoked_at, last_used_at",
            (
                key_id,
                _hash(secret),
                name,
                sorted(set(roles)),
                organisation.strip() if organisation else None,
                truck_id,
            ),
        ).fetchone()
    assert row is not None
    logger.info("API key %s (%s) created with roles %s", key_id, name, ",".join(row.roles))
    return NewKey(row, f"{KEY_PREFIX}_{key_id}_{secret}")


def list_keys(conn: Conn) -> list[ApiKey]:
    with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        return cur.execute(
            "SELECT key_id, name, roles, organisation, truck_id, created_at, revoked_at, "
            "last_used_at FROM api_keys ORDER BY created_at, key_id"
        ).fetchall()


def revoke_key(conn: Conn, key_id: str) -> bool:
    """Revoke a key at once; False when there is no such key or it was revoked already."""
    row = conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL "
        "RETURNING key_id",
        (key_id,),
    ).fetchone()
    if row is not None:
        logger.info("API key %s revoked", key_id)
    return row is not None


def verify_key(conn: Conn, clear: str) -> Principal:
    """The principal of a valid, unrevoked key; raises `UnauthenticatedError` otherwise."""
    parsed = parse_api_key(clear)
    if parsed is None:
        raise UnauthenticatedError("malformed API key", invalid=True)
    key_id, secret = parsed
    with conn.cursor(row_factory=class_row(_StoredKey)) as cur:
        row = cur.execute(
            "SELECT key_id, name, roles, organisation, truck_id, created_at, revoked_at, "
            "last_used_at, key_hash, last_used_at IS NULL OR last_used_at < now() - "
            f"interval '{_TOUCH_EVERY}' AS stale FROM api_keys WHERE key_id = %s",
            (key_id,),
        ).fetchone()
    # Hash and compare either way, so an unknown id costs the same as a wrong secret.
    stored = row.key_hash if row is not None else bytes(32)
    if not hmac.compare_digest(_hash(secret), stored) or row is None:
        raise UnauthenticatedError("unknown API key", invalid=True)
    if row.revoked_at is not None:
        raise UnauthenticatedError("API key revoked", invalid=True)
    if row.stale:
        conn.execute("UPDATE api_keys SET last_used_at = now() WHERE key_id = %s", (key_id,))
    return row.principal()


class Authenticator:
    """Finds the caller of a request: `Authorization: Bearer <jwt>`, `Authorization: ApiKey
    <key>` or `X-API-Key: <key>`. Built once per app; keys are looked up in its pool."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    def authenticate(self, headers: Mapping[str, str], pool: ConnectionPool) -> Principal:
        authorization = headers.get("authorization")
        api_key = headers.get("x-api-key")
        if authorization and api_key:
            raise UnauthenticatedError(
                "send either Authorization or X-API-Key, not both", invalid=True
            )
        if api_key:
            return self._key(api_key, pool)
        if not authorization:
            raise UnauthenticatedError(
                "authentication required: send 'Authorization: Bearer <token>' or "
                "'X-API-Key: <key>'"
            )
        scheme, _, credentials = authorization.strip().partition(" ")
        credentials = credentials.strip()
        if not credentials:
            raise UnauthenticatedError("empty credentials in Authorization", invalid=True)
        if scheme.casefold() == "bearer":
            if not self.verifier.config.accepts_tokens:
                raise UnauthenticatedError(
                    "bearer tokens are not configured here; use an API key", invalid=True
                )
            return self.verifier.verify(credentials)
        if scheme.casefold() == "apikey":
            return self._key(credentials, pool)
        raise UnauthenticatedError(f"unsupported authorization scheme {scheme!r}", invalid=True)

    @staticmethod
    def _key(clear: str, pool: ConnectionPool) -> Principal:
        with pool.connection() as conn:
            return verify_key(conn, clear)
