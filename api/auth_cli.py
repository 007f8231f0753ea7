"""`cityops auth`: API keys for machines and development tokens.

`create-key` prints the clear key once (only its hash is stored); `list-keys` shows keys
without secrets; `revoke-key` takes effect on the next request; `token` signs an HS256
token with CITYOPS_AUTH_JWT_SECRET (for development and the standalone install; a city
with an identity provider issues tokens there).
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta

import psycopg

from cityops.api.auth import LOGIN_ROLES
from cityops.api.credentials import create_key, list_keys, revoke_key
from cityops.api.security import AuthConfig, issue_token
from cityops.ingest.config import Settings, load_settings
from cityops.ingest.db import connect

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    auth = sub.add_parser(
        "auth",
        help="API keys (create, list, revoke) and development tokens",
        description="Manage API keys (stored hashed) and sign development tokens. Roles: "
        + ", ".join(LOGIN_ROLES)
        + "; see docs/operations.md, 'Authentication and roles'.",
    )
    asub = auth.add_subparsers(dest="auth_command", metavar="ACTION", required=True)

    ck = asub.add_parser("create-key", help="create an API key and print it (once)")
    ck.add_argument("--name", required=True, help="who or what uses it, e.g. 'tablet T01'")
    ck.add_argument(
        "--role",
        action="append",
        required=True,
        choices=LOGIN_ROLES,
        help="a role of the key (repeat for several)",
    )
    ck.add_argument("--organisation", help="organisation of a roadworks_editor key")
    ck.add_argument("--truck", help="truck id of a truck key, e.g. T01")
    ck.set_defaults(func=_cmd_create)

    lk = asub.add_parser("list-keys", help="list API keys (never their secrets)")
    lk.set_defaults(func=_cmd_list)

    rk = asub.add_parser("revoke-key", help="revoke an API key at once")
    rk.add_argument("key_id", help="the key id (the part after 'cok_')")
    rk.set_defaults(func=_cmd_revoke)

    tk = asub.add_parser("token", help="sign a development token (HS256)")
    tk.add_argument("--role", action="append", required=True, choices=LOGIN_ROLES)
    tk.add_argument("--sub", required=True, help="the subject (user or service name)")
    tk.add_argument("--ttl", type=float, default=3600.0, help="lifetime in seconds (1 h)")
    tk.add_argument("--organisation", help="organisation of a roadworks_editor")
    tk.add_argument("--truck", help="truck id of a truck")
    tk.set_defaults(func=_cmd_token)


def _fail(message: str) -> int:
    print(f"cityops auth: {message}", file=sys.stderr)
    return 2


def _connect(settings: Settings) -> psycopg.Connection[tuple[object, ...]]:
    return connect(settings.database_url, autocommit=True, application_name="cityops-auth")


def _cmd_create(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        with _connect(settings) as conn:
            new = create_key(
                conn, args.name, args.role, organisation=args.organisation, truck_id=args.truck
            )
    except ValueError as exc:
        return _fail(str(exc))
    except psycopg.errors.UndefinedTable:
        return _fail("no api_keys table: run 'cityops db migrate' first")
    k = new.key
    print(
        f"created API key {k.key_id} ({k.name}), roles {', '.join(k.roles)}"
        + (f", organisation {k.organisation}" if k.organisation else "")
        + (f", truck {k.truck_id}" if k.truck_id else ""),
        file=sys.stderr,
    )
    print("store it now; it is not shown again. Send it as 'X-API-Key: <key>'.", file=sys.stderr)
    print(new.clear)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    settings = load_settings()
    with _connect(settings) as conn:
        keys = list_keys(conn)
    print(
        f"{'key id':<13} {'state':<8} {'roles':<28} {'binding':<20} {'created':<17} "
        f"{'last used':<17} name"
    )
    for k in keys:
        binding = k.truck_id or k.organisation or "-"
        used = f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "never"
        state = "revoked" if k.revoked_at else "active"
        print(
            f"{k.key_id:<13} {state:<8} {','.join(k.roles):<28} {binding:<20} "
            f"{k.created_at:%Y-%m-%d %H:%M} {used:<17} {k.name}"
        )
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    settings = load_settings()
    with _connect(settings) as conn:
        if not revoke_key(conn, args.key_id):
            return _fail(f"no active key {args.key_id!r}")
    print(f"revoked {args.key_id}")
    return 0


def _cmd_token(args: argparse.Namespace) -> int:
    settings = load_settings()
    if settings.auth_jwt_secret is None:
        return _fail("set CITYOPS_AUTH_JWT_SECRET (e.g. `openssl rand -base64 48`) to sign tokens")
    if args.ttl <= 0:
        return _fail("--ttl must be positive")
    try:
        token = issue_token(
            AuthConfig.from_settings(settings),
            args.sub,
            args.role,
            ttl=timedelta(seconds=args.ttl),
            organisation=args.organisation,
            truck_id=args.truck,
        )
    except ValueError as exc:
        return _fail(str(exc))
    print(token)
    return 0
